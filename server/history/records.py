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
    function_id: str = ""


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
    # The attempt, for its spans (server/telemetry/spans.py); empty in entries written before
    # these fields existed.
    function_id: str = ""
    app_id: str = ""
    lease_id: str = ""  # the lease the attempt ran under: its span ids derive from it
    ready_ms: int | None = None  # when the job became runnable; None when it was relocked
    started_ms: int | None = None  # when the job was leased
    until_ms: int | None = None  # a sleep's wake-up time


@dataclass(frozen=True, slots=True)
class RunEnded:
    run_id: str
    status: RunStatus  # completed, failed or cancelled
    output_json: str
    error_json: str
    ts_ms: int
    function_id: str = ""
    app_id: str = ""
    # An end by a completed function carries its last job's attempt, which has no step
    # record; attempts that failed were recorded as steps before the end.
    lease_id: str = ""
    ready_ms: int | None = None
    started_ms: int | None = None
    attempt: int = 0


@dataclass(frozen=True, slots=True)
class EventsEmitted:
    """Events a run sends (send-event and invoke steps), committed with the step's memo; the
    history writer hands them to the ingest after its commit, with their ids, so a re-read
    entry sends nothing twice."""

    run_id: str
    events_json: str  # JSON array of {"id", "name", "data", "ts"}
    ts_ms: int


Record = RunCreated | RunStarted | StepRecorded | RunEnded | EventsEmitted


def _s(fields: dict[str, str], name: str) -> str:
    # PostgreSQL text cannot hold a NUL: one from a worker (a step name, an error message)
    # would fail its batch at every retry and stall the shard's history. Shown as U+FFFD.
    value = fields.get(name, "")
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def _ms(fields: dict[str, str], name: str) -> int | None:
    raw = fields.get(name, "")
    # Lua may render a number it computed as "1.7e+12"; float() reads both forms.
    return int(float(raw)) if raw else None


def decode(fields: dict[str, str]) -> Record | None:
    """Turns one stream entry's fields into a record; None for an unknown kind."""
    kind = _s(fields, "k")
    ts = int(_s(fields, "ts") or 0)
    if kind == "run":
        return RunCreated(_s(fields, "run"), _s(fields, "fn"), _s(fields, "app"),
                          _s(fields, "event"), ts)
    if kind == "start":
        return RunStarted(_s(fields, "run"), ts, function_id=_s(fields, "fn"))
    if kind == "step":
        return StepRecorded(
            _s(fields, "run"), _s(fields, "step"), _s(fields, "name"),
            int(_s(fields, "attempt") or 0), StepStatus(_s(fields, "status")),
            _s(fields, "output"), _s(fields, "error"), ts,
            function_id=_s(fields, "fn"), app_id=_s(fields, "app"), lease_id=_s(fields, "lease"),
            ready_ms=_ms(fields, "ready"), started_ms=_ms(fields, "started"),
            until_ms=_ms(fields, "until"),
        )
    if kind == "emit":
        return EventsEmitted(_s(fields, "run"), _s(fields, "events"), ts)
    if kind == "end":
        return RunEnded(_s(fields, "run"), RunStatus(_s(fields, "status")),
                        _s(fields, "output"), _s(fields, "error"), ts,
                        function_id=_s(fields, "fn"), app_id=_s(fields, "app"),
                        lease_id=_s(fields, "lease"), ready_ms=_ms(fields, "ready"),
                        started_ms=_ms(fields, "started"),
                        attempt=int(_s(fields, "attempt") or 0))
    return None
