"""The vocabulary of the server: ids and the frozen dataclasses passed between modules.

Protobuf stops at the edges (drivers, API servicers); everything below speaks these types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import NewType

# Events Plait itself sends (server/events/internal.py).
FUNCTION_FINISHED = "inngest/function.finished"
FUNCTION_FAILED = "inngest/function.failed"
FUNCTION_CANCELLED = "inngest/function.cancelled"
FUNCTION_INVOKED = "inngest/function.invoked"

RunId = NewType("RunId", str)
EventId = NewType("EventId", str)
FunctionId = NewType("FunctionId", str)  # global: "{app_id}-{slug}"
AppId = NewType("AppId", str)
JobId = NewType("JobId", str)
LeaseId = NewType("LeaseId", str)
StepId = NewType("StepId", str)
ConnectionId = NewType("ConnectionId", str)


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # Flow control started nothing for the event (rate limit, idempotency, singleton skip).
    SKIPPED = "skipped"

    @property
    def terminal(self) -> bool:
        return self in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED,
                        RunStatus.SKIPPED)


class StepStatus(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    SLEEPING = "sleeping"


@dataclass(frozen=True, slots=True)
class Event:
    id: EventId
    name: str
    data_json: bytes
    ts_ms: int
    idempotency_key: str = ""
    # W3C traceparent of the request that sent the event ("" when none or invalid).
    traceparent: str = ""


@dataclass(frozen=True, slots=True)
class EventTrigger:
    event: str
    expression: str = ""


@dataclass(frozen=True, slots=True)
class CronTrigger:
    cron: str


Trigger = EventTrigger | CronTrigger


@dataclass(frozen=True, slots=True)
class CancelOn:
    """An event that cancels a run: `event` named, `if_expression` true (CEL over `event`, the
    run's event, and `async`, the new one), within `timeout_ms` of the run's creation (0: ever)."""

    event: str
    if_expression: str = ""
    timeout_ms: int = 0


# Flow control (issue 12). Configuration as registered; durations in ms; `key` fields are CEL
# over `event`, evaluated once when a run is created ("" = one limit for the whole scope).


class ConcurrencyScope(StrEnum):
    FN = "fn"
    ENV = "env"
    ACCOUNT = "account"


class SingletonMode(StrEnum):
    SKIP = "skip"
    CANCEL = "cancel"


@dataclass(frozen=True, slots=True)
class ConcurrencyLimit:
    """At most `limit` jobs of runs sharing a key hold a lease at once."""

    limit: int
    key: str = ""
    scope: ConcurrencyScope = ConcurrencyScope.FN


@dataclass(frozen=True, slots=True)
class ThrottleConfig:
    """Run starts per key: `limit` per `period_ms`, `burst` more at once; delays, drops none."""

    limit: int
    period_ms: int
    burst: int = 1
    key: str = ""


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    """Runs per key: `limit` per `period_ms`; events past it start nothing (run Skipped)."""

    limit: int
    period_ms: int
    key: str = ""


@dataclass(frozen=True, slots=True)
class DebounceConfig:
    """One run per key with the last event of a quiet `period_ms`; `timeout_ms` (0: none)
    caps the delay from the first event."""

    period_ms: int
    key: str = ""
    timeout_ms: int = 0


@dataclass(frozen=True, slots=True)
class BatchConfig:
    """One run for up to `max_size` events per key, started when full or `timeout_ms` after
    its first event; only events `if_expression` accepts are batched."""

    max_size: int
    timeout_ms: int
    key: str = ""
    if_expression: str = ""


@dataclass(frozen=True, slots=True)
class SingletonConfig:
    """At most one active run per key: `skip` new ones, or `cancel` the active one."""

    mode: SingletonMode
    key: str = ""


@dataclass(frozen=True, slots=True)
class FlowControl:
    concurrency: tuple[ConcurrencyLimit, ...] = ()  # at most two
    throttle: ThrottleConfig | None = None
    rate_limit: RateLimitConfig | None = None
    debounce: DebounceConfig | None = None
    batch: BatchConfig | None = None
    priority_run: str = ""  # CEL over `event`: seconds, -600..600, ahead (+) or behind (-)
    idempotency: str = ""  # CEL key over `event`: one run per key per 24 h
    singleton: SingletonConfig | None = None

    @property
    def configured(self) -> bool:
        return self != FlowControl()


@dataclass(frozen=True, slots=True)
class FunctionConfig:
    """A function as registered, validated."""

    id: FunctionId
    app_id: AppId
    slug: str
    name: str
    triggers: tuple[Trigger, ...]
    retries: int = 3
    # Where an HTTP SDK app serves the function ("…?fnId=…&stepId=step"); "" for gRPC workers.
    url: str = ""
    # Longest wait from creation to the first attempt, and from then to the end; 0: none.
    start_timeout_ms: int = 0
    finish_timeout_ms: int = 0
    cancel_on: tuple[CancelOn, ...] = ()
    flow: FlowControl = FlowControl()


@dataclass(frozen=True, slots=True)
class AppRegistration:
    app_id: AppId
    functions: tuple[FunctionConfig, ...]
    language: str = ""
    sdk_name: str = ""
    sdk_version: str = ""


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    name: str
    message: str
    stack: str = ""


@dataclass(frozen=True, slots=True)
class Job:
    """A leased job, with everything a driver needs to run it."""

    job_id: JobId
    lease_id: LeaseId
    run_id: RunId
    function_id: FunctionId
    attempt: int
    max_attempts: int
    event_json: bytes  # {"id","name","data","ts"}
    steps: dict[str, bytes] = field(default_factory=dict)  # step id -> memo JSON
    lease_expires_at_ms: int = 0
    traceparent: str = ""
    tracestate: str = ""
    # The planned step this job runs on its own (parallel steps); "" for the run's main job.
    target_step: str = ""
    # A batched run's events in order, each as event_json (flow control's batchEvents); empty
    # for every other run, whose one event is event_json.
    events: tuple[bytes, ...] = ()


# Opcodes: what a job did, whichever transport carried the answer.


@dataclass(frozen=True, slots=True)
class StepCompleted:
    step_id: StepId
    name: str
    output_json: bytes


@dataclass(frozen=True, slots=True)
class StepFailed:
    step_id: StepId
    name: str
    error: ErrorInfo
    non_retriable: bool = False
    retry_after_ms: int = 0


@dataclass(frozen=True, slots=True)
class Sleep:
    step_id: StepId
    name: str
    until_ms: int


@dataclass(frozen=True, slots=True)
class RunCompleted:
    output_json: bytes


@dataclass(frozen=True, slots=True)
class RunFailed:
    error: ErrorInfo
    non_retriable: bool = False
    retry_after_ms: int = 0


@dataclass(frozen=True, slots=True)
class StepsPlanned:
    """Steps found but not run (parallel steps): each runs as its own job, then the function
    runs again with all of them memoised. `parked` are sleeps, waits and invokes of the same
    group that the server starts at once, each parked in a job of its own until it ends (an
    Inngest SDK's group answers them with the planned steps); `race`: the function runs again
    when the first step of the group ends, not the last (the SDKs' `parallelMode: "race"`)."""

    step_ids: tuple[StepId, ...]
    parked: tuple[Sleep | WaitForEvent | InvokeFunction, ...] = ()
    race: bool = False


@dataclass(frozen=True, slots=True)
class WaitForEvent:
    """The run waits for an event `name` matching `if_expression` (CEL over `event`, the run's
    event, and `async`, the awaited one) until `timeout_until_ms`, when the step is null."""

    step_id: StepId
    name: str
    event: str
    if_expression: str
    timeout_until_ms: int


@dataclass(frozen=True, slots=True)
class InvokeFunction:
    """The run calls `function_id` (a global id, any app) with `data_json` (a JSON object) as
    its event's data; the step's memo becomes the child's output or error, or a timeout error
    at `timeout_until_ms` (0: no timeout)."""

    step_id: StepId
    name: str
    function_id: str
    data_json: bytes
    timeout_until_ms: int = 0


@dataclass(frozen=True, slots=True)
class OutgoingEvent:
    name: str
    data_json: bytes


@dataclass(frozen=True, slots=True)
class SendEvents:
    """A send-event step: the events are sent once, atomically with the step's memo
    `{"ids": [...]}`."""

    step_id: StepId
    name: str
    events: tuple[OutgoingEvent, ...]


Opcode = (
    StepCompleted | StepFailed | Sleep | RunCompleted | RunFailed | StepsPlanned | WaitForEvent
    | InvokeFunction | SendEvents
)


@dataclass(frozen=True, slots=True)
class JobResult:
    job_id: JobId
    lease_id: LeaseId
    opcodes: tuple[Opcode, ...]
