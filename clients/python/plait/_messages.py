"""What the worker stream carries, as frozen dataclasses; `_convert` maps them to protobuf."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from plait._triggers import TriggerCron, TriggerEvent


@dataclass(frozen=True, slots=True)
class Job:
    """One leased unit of work: run the function until it reaches its next new step."""

    job_id: str
    lease_id: str
    run_id: str
    function_id: str
    function_slug: str
    event_id: str = ""
    event_name: str = ""
    event_data_json: bytes = b"{}"
    event_ts_ms: int = 0
    steps: Mapping[str, bytes] = field(default_factory=dict)
    attempt: int = 0
    max_attempts: int = 0
    lease_expires_at_ms: int = 0
    traceparent: str = ""
    tracestate: str = ""


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    name: str
    message: str
    stack: str = ""


@dataclass(frozen=True, slots=True)
class StepCompleted:
    step_id: str
    name: str
    output_json: bytes


@dataclass(frozen=True, slots=True)
class StepFailed:
    step_id: str
    name: str
    error: ErrorInfo
    non_retriable: bool = False
    retry_after_ms: int = 0


@dataclass(frozen=True, slots=True)
class Sleep:
    step_id: str
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
class WaitForEvent:
    step_id: str
    name: str
    event: str
    if_expression: str
    timeout_until_ms: int


Opcode = StepCompleted | StepFailed | Sleep | RunCompleted | RunFailed | WaitForEvent


@dataclass(frozen=True, slots=True)
class JobResult:
    job_id: str
    lease_id: str
    opcode: Opcode


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    """A function as the worker declares it at registration."""

    id: str
    name: str
    triggers: tuple[TriggerEvent | TriggerCron, ...]
    retries: int | None = None
    timeouts: Timeouts | None = None


@dataclass(frozen=True, slots=True)
class Timeouts:
    """A function's run timeouts in seconds; None is no limit. A run past one fails.

    `start_s`: longest wait from the run's creation to its first attempt. `finish_s`: longest
    time from the first attempt to the run's end.
    """

    start_s: float | None = None
    finish_s: float | None = None


# Worker -> server.


@dataclass(frozen=True, slots=True)
class Register:
    app_id: str
    functions: tuple[FunctionSpec, ...]
    sdk_version: str
    max_concurrent_jobs: int
    instance_id: str
    language: str = "python"
    sdk_name: str = "plait-python"


@dataclass(frozen=True, slots=True)
class Results:
    results: tuple[JobResult, ...]


@dataclass(frozen=True, slots=True)
class Heartbeat:
    pass


@dataclass(frozen=True, slots=True)
class Drain:
    pass


Outgoing = Register | Results | Heartbeat | Drain

# Server -> worker.


@dataclass(frozen=True, slots=True)
class Registered:
    connection_id: str
    lease_ms: int
    heartbeat_interval_ms: int
    function_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Jobs:
    jobs: tuple[Job, ...]


@dataclass(frozen=True, slots=True)
class Cancel:
    job_ids: tuple[str, ...]


Incoming = Registered | Jobs | Cancel | Drain
