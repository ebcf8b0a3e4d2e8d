"""History: runs, steps, events, apps and functions in SQL, fed from the Redis history streams."""

from server.history.db import migrate, open_database
from server.history.store import (
    AppRecord,
    EventRecord,
    FunctionRecord,
    RunRecord,
    StepAttemptRecord,
)
from server.history.writer import HistoryWriter

__all__ = [
    "AppRecord",
    "EventRecord",
    "FunctionRecord",
    "HistoryWriter",
    "RunRecord",
    "StepAttemptRecord",
    "migrate",
    "open_database",
]
