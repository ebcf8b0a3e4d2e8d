"""A run's spans, built from what history records: the same spans go to OTLP and the dashboard.

Each attempt's record says when it ended and carries when its job became runnable and when it
was leased (the Lua scripts keep both on the job), so its spans are born complete, with ids
derived from the run and the lease (`ids.py`). The root spans the run from creation to end.
SQL keeps no span rows: `server/history/spans.py` rebuilds them from the run and its step
attempts with the same functions, so OTLP and the database always agree.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from server.history.records import Record, RunEnded, StepRecorded
from server.telemetry.ids import SpanKind, span_id, trace_id
from server.types import ErrorInfo, RunStatus, StepStatus

__all__ = ["Attempt", "Run", "SpanBatch", "SpanRow", "attempt_spans", "root_span"]

# Attribute names: Plait's own under plait.*, OpenTelemetry's semantic conventions elsewhere.
RUN_ID = "plait.run.id"
FUNCTION_ID = "plait.function.id"
APP_ID = "plait.app.id"
EVENT_ID = "plait.event.id"
STEP_ID = "plait.step.id"
STEP_NAME = "plait.step.name"
ATTEMPT = "plait.attempt"
OUTCOME = "plait.outcome"
RUN_STATUS = "plait.run.status"
LEASE_ID = "plait.lease.id"
TRANSPORT = "plait.transport"
ERROR_TYPE = "error.type"

STATUS_UNSET = "unset"
STATUS_OK = "ok"
STATUS_ERROR = "error"

# The step id of the attempts that ran the function to its end (state/store.py's name).
FUNCTION_STEP_ID = "$function"

Attributes = Mapping[str, str | int]


@dataclass(frozen=True, slots=True)
class SpanRow:
    """One span; times in Unix ms."""

    trace: int
    span: int
    parent: int  # 0 for a run's root
    run_id: str
    kind: str  # SpanKind
    name: str
    start_ms: int
    end_ms: int | None  # None while a run is going on
    outcome: str = ""
    status: str = STATUS_UNSET
    status_message: str = ""
    attributes: Attributes = field(default_factory=dict)
    links: tuple[str, ...] = ()  # W3C traceparents this span links to (an event's sender)
    error: ErrorInfo | None = None  # a failure's exception (exported as an event)

    @property
    def id(self) -> str:
        return f"{self.span:016x}"

    @property
    def trace_id(self) -> str:
        return f"{self.trace:032x}"

    @property
    def parent_id(self) -> str:
        return f"{self.parent:016x}" if self.parent else ""


def error_of(text: str | None) -> ErrorInfo | None:
    """A stored `{"name","message","stack"}`; text that is not such JSON is the message."""
    if not text:
        return None
    try:
        raw = json.loads(text)
    except ValueError:
        return ErrorInfo("Error", text)
    if not isinstance(raw, dict):
        return ErrorInfo("Error", text)
    return ErrorInfo(str(raw.get("name") or "Error"), str(raw.get("message", "")),
                     str(raw.get("stack", "") or ""))


def _base(run_id: str, function_id: str, app_id: str) -> dict[str, str | int]:
    out: dict[str, str | int] = {RUN_ID: run_id}
    if function_id:
        out[FUNCTION_ID] = function_id
    if app_id:
        out[APP_ID] = app_id
    return out


@dataclass(frozen=True, slots=True)
class Run:
    """What the root span of a run is made of (a runs row, or the records of one)."""

    run_id: str
    function_id: str
    app_id: str
    event_id: str
    created_ms: int
    ended_ms: int | None
    status: str  # RunStatus value
    error_json: str | None = None
    sender: str = ""  # the traceparent the run's event was sent with


def root_span(run: Run) -> SpanRow:
    error = error_of(run.error_json) if run.status == RunStatus.FAILED.value else None
    status = {RunStatus.COMPLETED.value: STATUS_OK, RunStatus.FAILED.value: STATUS_ERROR}.get(
        run.status, STATUS_UNSET) if run.ended_ms is not None else STATUS_UNSET
    attributes = _base(run.run_id, run.function_id, run.app_id)
    if run.event_id:
        attributes[EVENT_ID] = run.event_id
    if run.ended_ms is not None:
        attributes[RUN_STATUS] = run.status
    return SpanRow(
        trace=trace_id(run.run_id), span=span_id(run.run_id, SpanKind.RUN), parent=0,
        run_id=run.run_id, kind=SpanKind.RUN,
        name=f"run {run.function_id}" if run.function_id else "run",
        start_ms=run.created_ms, end_ms=run.ended_ms,
        outcome=run.status if run.ended_ms is not None else "", status=status,
        status_message=error.message if error else "", attributes=attributes,
        links=(run.sender,) if run.sender else (), error=error,
    )


@dataclass(frozen=True, slots=True)
class Attempt:
    """One job that ran to an outcome (a step record, a step attempt row, a run's end)."""

    run_id: str
    function_id: str
    app_id: str
    step_id: str
    name: str
    attempt: int
    outcome: str  # completed, failed, sleeping
    error_json: str | None
    lease_id: str
    ready_ms: int | None  # None: the job was relocked, it never waited in the queue
    started_ms: int
    ended_ms: int
    until_ms: int | None = None  # a sleep's wake-up time


def attempt_spans(a: Attempt) -> list[SpanRow]:
    """The attempt's span, the queue wait before it, and the sleep it reached."""
    trace, root = trace_id(a.run_id), span_id(a.run_id, SpanKind.RUN)
    base = _base(a.run_id, a.function_id, a.app_id)
    failed = a.outcome == StepStatus.FAILED.value
    error = error_of(a.error_json) if failed else None
    attributes = {**base, STEP_ID: a.step_id, STEP_NAME: a.name, ATTEMPT: a.attempt,
                  OUTCOME: a.outcome, LEASE_ID: a.lease_id}
    if error is not None:
        attributes[ERROR_TYPE] = error.name
    spans = [SpanRow(
        trace=trace, span=span_id(a.run_id, SpanKind.STEP, a.lease_id), parent=root,
        run_id=a.run_id, kind=SpanKind.STEP,
        name="function" if a.step_id == FUNCTION_STEP_ID else f"step {a.name}",
        start_ms=a.started_ms, end_ms=max(a.started_ms, a.ended_ms), outcome=a.outcome,
        status=STATUS_ERROR if failed else STATUS_OK,
        status_message=error.message if error else "", attributes=attributes, error=error,
    )]
    if a.ready_ms is not None:
        spans.append(SpanRow(
            trace=trace, span=span_id(a.run_id, SpanKind.QUEUE, a.lease_id), parent=root,
            run_id=a.run_id, kind=SpanKind.QUEUE, name="queue.wait",
            start_ms=min(a.ready_ms, a.started_ms), end_ms=a.started_ms,
            attributes={**base, ATTEMPT: a.attempt, LEASE_ID: a.lease_id},
        ))
    if a.until_ms is not None:
        spans.append(SpanRow(
            trace=trace, span=span_id(a.run_id, SpanKind.SLEEP, a.lease_id), parent=root,
            run_id=a.run_id, kind=SpanKind.SLEEP, name=f"sleep {a.name}",
            start_ms=a.ended_ms, end_ms=max(a.ended_ms, a.until_ms), outcome="slept",
            attributes={**base, STEP_ID: a.step_id, STEP_NAME: a.name},
        ))
    return spans


def attempt_of(record: StepRecorded | RunEnded) -> Attempt | None:
    """The attempt a record ended; None when it carries no attempt (or predates the fields)."""
    if record.started_ms is None or not record.lease_id:
        return None
    if isinstance(record, StepRecorded):
        return Attempt(record.run_id, record.function_id, record.app_id, record.step_id,
                       record.name, record.attempt, record.status.value, record.error_json,
                       record.lease_id, record.ready_ms, record.started_ms, record.ts_ms,
                       record.until_ms)
    if record.status is not RunStatus.COMPLETED:
        return None  # a failed run's last attempt was recorded as a step
    return Attempt(record.run_id, record.function_id, record.app_id, FUNCTION_STEP_ID,
                   "function", record.attempt, RunStatus.COMPLETED.value, None,
                   record.lease_id, record.ready_ms, record.started_ms, record.ts_ms)


@dataclass
class SpanBatch:
    """The attempt spans of one batch of history records (roots come from the runs rows)."""

    spans: dict[int, SpanRow] = field(default_factory=dict)

    def add(self, record: Record) -> None:
        if isinstance(record, StepRecorded | RunEnded):
            attempt = attempt_of(record)
            if attempt is not None:
                for span in attempt_spans(attempt):
                    self.spans[span.span] = span
