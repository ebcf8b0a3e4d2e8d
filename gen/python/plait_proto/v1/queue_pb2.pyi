from plait_proto.v1 import event_pb2 as _event_pb2
from plait_proto.v1 import function_pb2 as _function_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ConnectRequest(_message.Message):
    __slots__ = ("register", "results", "heartbeat", "drain")
    REGISTER_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    DRAIN_FIELD_NUMBER: _ClassVar[int]
    register: Register
    results: JobResults
    heartbeat: Heartbeat
    drain: Drain
    def __init__(self, register: _Optional[_Union[Register, _Mapping]] = ..., results: _Optional[_Union[JobResults, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., drain: _Optional[_Union[Drain, _Mapping]] = ...) -> None: ...

class ConnectResponse(_message.Message):
    __slots__ = ("registered", "jobs", "cancel", "drain")
    REGISTERED_FIELD_NUMBER: _ClassVar[int]
    JOBS_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    DRAIN_FIELD_NUMBER: _ClassVar[int]
    registered: Registered
    jobs: Jobs
    cancel: Cancel
    drain: Drain
    def __init__(self, registered: _Optional[_Union[Registered, _Mapping]] = ..., jobs: _Optional[_Union[Jobs, _Mapping]] = ..., cancel: _Optional[_Union[Cancel, _Mapping]] = ..., drain: _Optional[_Union[Drain, _Mapping]] = ...) -> None: ...

class Register(_message.Message):
    __slots__ = ("app_id", "functions", "language", "sdk_name", "sdk_version", "max_concurrent_jobs", "instance_id", "max_receive_message_bytes")
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    FUNCTIONS_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    SDK_NAME_FIELD_NUMBER: _ClassVar[int]
    SDK_VERSION_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_JOBS_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_RECEIVE_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    app_id: str
    functions: _containers.RepeatedCompositeFieldContainer[_function_pb2.FunctionDefinition]
    language: str
    sdk_name: str
    sdk_version: str
    max_concurrent_jobs: int
    instance_id: str
    max_receive_message_bytes: int
    def __init__(self, app_id: _Optional[str] = ..., functions: _Optional[_Iterable[_Union[_function_pb2.FunctionDefinition, _Mapping]]] = ..., language: _Optional[str] = ..., sdk_name: _Optional[str] = ..., sdk_version: _Optional[str] = ..., max_concurrent_jobs: _Optional[int] = ..., instance_id: _Optional[str] = ..., max_receive_message_bytes: _Optional[int] = ...) -> None: ...

class Registered(_message.Message):
    __slots__ = ("connection_id", "lease_ms", "heartbeat_interval_ms", "function_ids")
    CONNECTION_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_MS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_IDS_FIELD_NUMBER: _ClassVar[int]
    connection_id: str
    lease_ms: int
    heartbeat_interval_ms: int
    function_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, connection_id: _Optional[str] = ..., lease_ms: _Optional[int] = ..., heartbeat_interval_ms: _Optional[int] = ..., function_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class Jobs(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("job_id", "lease_id", "run_id", "function_id", "function_slug", "attempt", "max_attempts", "event", "steps", "lease_expires_at_ms", "traceparent", "tracestate", "target_step", "fetch_steps", "events")
    class StepsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_ID_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_SLUG_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    TRACESTATE_FIELD_NUMBER: _ClassVar[int]
    TARGET_STEP_FIELD_NUMBER: _ClassVar[int]
    FETCH_STEPS_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    lease_id: str
    run_id: str
    function_id: str
    function_slug: str
    attempt: int
    max_attempts: int
    event: _event_pb2.Event
    steps: _containers.ScalarMap[str, bytes]
    lease_expires_at_ms: int
    traceparent: str
    tracestate: str
    target_step: str
    fetch_steps: _containers.RepeatedScalarFieldContainer[str]
    events: _containers.RepeatedCompositeFieldContainer[_event_pb2.Event]
    def __init__(self, job_id: _Optional[str] = ..., lease_id: _Optional[str] = ..., run_id: _Optional[str] = ..., function_id: _Optional[str] = ..., function_slug: _Optional[str] = ..., attempt: _Optional[int] = ..., max_attempts: _Optional[int] = ..., event: _Optional[_Union[_event_pb2.Event, _Mapping]] = ..., steps: _Optional[_Mapping[str, bytes]] = ..., lease_expires_at_ms: _Optional[int] = ..., traceparent: _Optional[str] = ..., tracestate: _Optional[str] = ..., target_step: _Optional[str] = ..., fetch_steps: _Optional[_Iterable[str]] = ..., events: _Optional[_Iterable[_Union[_event_pb2.Event, _Mapping]]] = ...) -> None: ...

class JobResults(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[JobResult]
    def __init__(self, results: _Optional[_Iterable[_Union[JobResult, _Mapping]]] = ...) -> None: ...

class JobResult(_message.Message):
    __slots__ = ("job_id", "lease_id", "opcodes")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    OPCODES_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    lease_id: str
    opcodes: _containers.RepeatedCompositeFieldContainer[Opcode]
    def __init__(self, job_id: _Optional[str] = ..., lease_id: _Optional[str] = ..., opcodes: _Optional[_Iterable[_Union[Opcode, _Mapping]]] = ...) -> None: ...

class Opcode(_message.Message):
    __slots__ = ("step_completed", "step_failed", "sleep", "run_completed", "run_failed", "wait_for_event", "steps_planned", "invoke", "send_events")
    STEP_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    STEP_FAILED_FIELD_NUMBER: _ClassVar[int]
    SLEEP_FIELD_NUMBER: _ClassVar[int]
    RUN_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    RUN_FAILED_FIELD_NUMBER: _ClassVar[int]
    WAIT_FOR_EVENT_FIELD_NUMBER: _ClassVar[int]
    STEPS_PLANNED_FIELD_NUMBER: _ClassVar[int]
    INVOKE_FIELD_NUMBER: _ClassVar[int]
    SEND_EVENTS_FIELD_NUMBER: _ClassVar[int]
    step_completed: StepCompleted
    step_failed: StepFailed
    sleep: Sleep
    run_completed: RunCompleted
    run_failed: RunFailed
    wait_for_event: WaitForEvent
    steps_planned: StepsPlanned
    invoke: InvokeFunction
    send_events: SendEvents
    def __init__(self, step_completed: _Optional[_Union[StepCompleted, _Mapping]] = ..., step_failed: _Optional[_Union[StepFailed, _Mapping]] = ..., sleep: _Optional[_Union[Sleep, _Mapping]] = ..., run_completed: _Optional[_Union[RunCompleted, _Mapping]] = ..., run_failed: _Optional[_Union[RunFailed, _Mapping]] = ..., wait_for_event: _Optional[_Union[WaitForEvent, _Mapping]] = ..., steps_planned: _Optional[_Union[StepsPlanned, _Mapping]] = ..., invoke: _Optional[_Union[InvokeFunction, _Mapping]] = ..., send_events: _Optional[_Union[SendEvents, _Mapping]] = ...) -> None: ...

class StepsPlanned(_message.Message):
    __slots__ = ("step_ids", "race")
    STEP_IDS_FIELD_NUMBER: _ClassVar[int]
    RACE_FIELD_NUMBER: _ClassVar[int]
    step_ids: _containers.RepeatedScalarFieldContainer[str]
    race: bool
    def __init__(self, step_ids: _Optional[_Iterable[str]] = ..., race: _Optional[bool] = ...) -> None: ...

class InvokeFunction(_message.Message):
    __slots__ = ("step_id", "name", "function_id", "data_json", "timeout_until_ms")
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_JSON_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_UNTIL_MS_FIELD_NUMBER: _ClassVar[int]
    step_id: str
    name: str
    function_id: str
    data_json: bytes
    timeout_until_ms: int
    def __init__(self, step_id: _Optional[str] = ..., name: _Optional[str] = ..., function_id: _Optional[str] = ..., data_json: _Optional[bytes] = ..., timeout_until_ms: _Optional[int] = ...) -> None: ...

class SendEvents(_message.Message):
    __slots__ = ("step_id", "name", "events")
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    step_id: str
    name: str
    events: _containers.RepeatedCompositeFieldContainer[_event_pb2.EventInput]
    def __init__(self, step_id: _Optional[str] = ..., name: _Optional[str] = ..., events: _Optional[_Iterable[_Union[_event_pb2.EventInput, _Mapping]]] = ...) -> None: ...

class StepCompleted(_message.Message):
    __slots__ = ("step_id", "name", "output_json")
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    step_id: str
    name: str
    output_json: bytes
    def __init__(self, step_id: _Optional[str] = ..., name: _Optional[str] = ..., output_json: _Optional[bytes] = ...) -> None: ...

class StepFailed(_message.Message):
    __slots__ = ("step_id", "name", "error", "non_retriable", "retry_after_ms")
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    NON_RETRIABLE_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    step_id: str
    name: str
    error: _function_pb2.ErrorInfo
    non_retriable: bool
    retry_after_ms: int
    def __init__(self, step_id: _Optional[str] = ..., name: _Optional[str] = ..., error: _Optional[_Union[_function_pb2.ErrorInfo, _Mapping]] = ..., non_retriable: _Optional[bool] = ..., retry_after_ms: _Optional[int] = ...) -> None: ...

class Sleep(_message.Message):
    __slots__ = ("step_id", "name", "until_ms")
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    UNTIL_MS_FIELD_NUMBER: _ClassVar[int]
    step_id: str
    name: str
    until_ms: int
    def __init__(self, step_id: _Optional[str] = ..., name: _Optional[str] = ..., until_ms: _Optional[int] = ...) -> None: ...

class WaitForEvent(_message.Message):
    __slots__ = ("step_id", "name", "event", "if_expression", "timeout_until_ms")
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    IF_EXPRESSION_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_UNTIL_MS_FIELD_NUMBER: _ClassVar[int]
    step_id: str
    name: str
    event: str
    if_expression: str
    timeout_until_ms: int
    def __init__(self, step_id: _Optional[str] = ..., name: _Optional[str] = ..., event: _Optional[str] = ..., if_expression: _Optional[str] = ..., timeout_until_ms: _Optional[int] = ...) -> None: ...

class RunCompleted(_message.Message):
    __slots__ = ("output_json",)
    OUTPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    output_json: bytes
    def __init__(self, output_json: _Optional[bytes] = ...) -> None: ...

class RunFailed(_message.Message):
    __slots__ = ("error", "non_retriable", "retry_after_ms")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    NON_RETRIABLE_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    error: _function_pb2.ErrorInfo
    non_retriable: bool
    retry_after_ms: int
    def __init__(self, error: _Optional[_Union[_function_pb2.ErrorInfo, _Mapping]] = ..., non_retriable: _Optional[bool] = ..., retry_after_ms: _Optional[int] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Drain(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Cancel(_message.Message):
    __slots__ = ("job_ids",)
    JOB_IDS_FIELD_NUMBER: _ClassVar[int]
    job_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, job_ids: _Optional[_Iterable[str]] = ...) -> None: ...
