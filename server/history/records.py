"""History records: what the Lua scripts append to each shard's history stream.

The scripts write these flat string fields with XADD in the same atomic step as the state
change they describe, so history can never miss a step; the history writer drains the stream
into SQL in batches, off the step path. `decode` is the one reader of that format.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.types import RunStatus, StepStatus


@dataclass(frozen=True, slots=True)
class RunCreated:
    run_id: str
    function_id: str
    app_id: str
    event_id: str
    ts_ms: int


@dataclass(frozen=True, slots=True)
class RunStarted:
    run_id: str
    ts_ms: int


@dataclass(frozen=True, slots=True)
class StepRecorded:
    run_id: str
    step_id: str
    name: str
    attempt: int
    status: StepStatus
    output_json: str  # "" unless completed
    error_json: str  # "" unless failed: {"name","message","stack"}
    ts_ms: int


@dataclass(frozen=True, slots=True)
class RunEnded:
    run_id: str
    status: RunStatus  # completed, failed or cancelled
    output_json: str
    error_json: str
    ts_ms: int


Record = RunCreated | RunStarted | StepRecorded | RunEnded


def _s(fields: dict[str, str], name: str) -> str:
    return fields.get(name, "")


def decode(fields: dict[str, str]) -> Record | None:
    """Turns one stream entry's fields into a record; None for an unknown kind."""
    kind = _s(fields, "k")
    ts = int(_s(fields, "ts") or 0)
    if kind == "run":
        return RunCreated(_s(fields, "run"), _s(fields, "fn"), _s(fields, "app"),
                          _s(fields, "event"), ts)
    if kind == "start":
        return RunStarted(_s(fields, "run"), ts)
    if kind == "step":
        return StepRecorded(
            _s(fields, "run"), _s(fields, "step"), _s(fields, "name"),
            int(_s(fields, "attempt") or 0), StepStatus(_s(fields, "status")),
            _s(fields, "output"), _s(fields, "error"), ts,
        )
    if kind == "end":
        return RunEnded(_s(fields, "run"), RunStatus(_s(fields, "status")),
                        _s(fields, "output"), _s(fields, "error"), ts)
    return None
