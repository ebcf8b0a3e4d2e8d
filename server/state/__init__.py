"""Run state in Redis: memoised step results, status, and the atomic opcode commits."""

from server.state.store import Applied, Outcome, RunState, StateStore, UnfinishedRun
from server.state.waits import WaitEntry

__all__ = ["Applied", "Outcome", "RunState", "StateStore", "UnfinishedRun", "WaitEntry"]
