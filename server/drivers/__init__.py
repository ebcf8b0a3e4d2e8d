"""Drivers carry leased jobs to workers and bring their opcodes back to the executor."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from server.types import ErrorInfo, FunctionId, Job, RunFailed, RunId

# Errors of a job's own data while it is sent: JSON that cannot be decoded or encoded (a
# NaN, a stray byte, nesting past the recursion limit). Sending it again cannot succeed.
DATA_ERRORS: tuple[type[Exception], ...] = (ValueError, TypeError, RecursionError)


def undeliverable(error: Exception) -> RunFailed:
    """The non-retriable failure of a run whose job cannot be sent, naming the error."""
    return RunFailed(ErrorInfo(
        "JobEncodingError",
        f"the job could not be sent to the worker: {type(error).__name__}: {error}"[:1000]),
        non_retriable=True)


class Driver(Protocol):
    def capacity(self) -> dict[FunctionId, int]:
        """Free slots per function this driver can run now."""
        ...

    def total_capacity(self) -> int:
        """Free slots overall (a slot may serve several functions)."""
        ...

    async def dispatch(self, jobs: Sequence[Job]) -> list[Job]:
        """Sends jobs to workers; returns those it could not place. A driver hands a job it
        placed but could not deliver back through Executor.release (with why) or, for a
        fault of the job's data, Executor.dispatch_failed: never straight to the queue. It
        may raise only before it has placed any of `jobs`: the executor then dispatches them
        one by one, confining the error to the job that causes it."""
        ...

    async def cancel(self, run_id: RunId) -> bool:
        """Tells the worker running the run's job to stop; True when one was told."""
        ...


__all__ = ["DATA_ERRORS", "Driver", "undeliverable"]
