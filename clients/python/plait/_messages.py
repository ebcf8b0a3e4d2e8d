"""What the worker stream carries, as frozen dataclasses; `_convert` maps them to protobuf."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from plait._flow import FlowSpec
from plait._triggers import TriggerCron, TriggerEvent

# The largest message the worker accepts or sends; announced at registration, so the server
# keeps each job under it and leaves out memoised steps for the worker to fetch.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One event of a batched run."""

    id: str
    name: str
    data_json: bytes
    ts_ms: int


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
    # Set on the job of one planned (parallel) step: run only that step.
    target_step: str = ""
    # Memoised steps the server left out of `steps` (the message would have been too large):
    # the worker reads them through StateService.GetSteps before running the function.
    fetch_steps: tuple[str, ...] = ()
    # A batched run's events in order (the first is `event_*`); empty for a run of one event.
    events: tuple[JobEvent, ...] = ()


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


@dataclass(frozen=True, slots=True)
class StepsPlanned:
    """Several new steps were reached at once: none ran; each runs as its own job. `race`:
    the function runs again when the first of them ends (Step.race), not the last."""

    step_ids: tuple[str, ...]
    race: bool = False


@dataclass(frozen=True, slots=True)
class InvokeFunction:
    step_id: str
    name: str
    function_id: str
    data_json: bytes
    timeout_until_ms: int


@dataclass(frozen=True, slots=True)
class EventInput:
    name: str
    data_json: bytes


@dataclass(frozen=True, slots=True)
class SendEvents:
    step_id: str
    name: str
    events: tuple[EventInput, ...]


Opcode = (
    StepCompleted
    | StepFailed
    | Sleep
    | RunCompleted
    | RunFailed
    | WaitForEvent
    | StepsPlanned
    | InvokeFunction
    | SendEvents
)


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
    cancel_on: tuple[CancelOn, ...] = ()
    flow: FlowSpec = field(default_factory=FlowSpec)


@dataclass(frozen=True, slots=True)
class Timeouts:
    """A function's run timeouts in seconds; None is no limit. A run past one fails.

    `start_s`: longest wait from the run's creation to its first attempt. `finish_s`: longest
    time from the first attempt to the run's end.
    """

    start_s: float | None = None
    finish_s: float | None = None


def positive_ms(duration: object, what: str) -> int:
    """A positive duration (seconds or a timedelta) in ms, at least 1; ValueError naming
    `what` for anything else."""
    seconds = duration.total_seconds() if isinstance(duration, timedelta) else duration
    if (isinstance(seconds, bool) or not isinstance(seconds, int | float)
            or not 0 < seconds < math.inf):
        raise ValueError(
            f"{what} has value {duration!r}. Expected a positive number of seconds, "
            "a positive timedelta or None."
        )
    return max(1, round(seconds * 1000))


@dataclass(frozen=True, slots=True)
class CancelOn:
    """Cancels a run when an event named `event` arrives for which the CEL `if_exp` holds.

    `if_exp` sees `event` (the run's triggering event) and `async` (the cancelling event);
    empty matches every such event. `timeout` (seconds or a timedelta from the run's creation)
    ends the window in which the event cancels the run; None means always.
    """

    event: str
    if_exp: str = ""
    timeout: float | timedelta | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.event, str) or not self.event:
            raise ValueError(
                f"CancelOn event has value {self.event!r}. It must be a non-empty event name.")
        if not isinstance(self.if_exp, str):
            raise TypeError(
                f"CancelOn if_exp has value {self.if_exp!r}. Expected a CEL expression string.")
        if self.timeout is not None:
            positive_ms(self.timeout, "CancelOn timeout")

    @property
    def timeout_ms(self) -> int:
        """The window in ms from the run's creation; 0 for always."""
        return 0 if self.timeout is None else positive_ms(self.timeout, "CancelOn timeout")


@dataclass(frozen=True, slots=True)
class SendEvent:
    """An event a function sends from a step (`step.send_event`): a name and a JSON object."""

    name: str
    data: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(
                f"SendEvent name has value {self.name!r}. It must be a non-empty event name.")
        if len(self.name.encode()) > 256:
            raise ValueError(
                f"SendEvent name has {len(self.name.encode())} bytes. The limit is 256 bytes.")
        if self.data is not None and not isinstance(self.data, dict):
            raise TypeError(
                f"SendEvent data has value {self.data!r}. Expected a dict (a JSON object) or None."
            )


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
    max_receive_message_bytes: int = MAX_MESSAGE_BYTES


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
