from plait_proto.v1 import event_pb2 as _event_pb2
from plait_proto.v1 import run_pb2 as _run_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetRunStateRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class GetRunStateResponse(_message.Message):
    __slots__ = ("run_id", "function_id", "status", "event", "steps", "output_json", "error_json")
    class StepsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    ERROR_JSON_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    function_id: str
    status: _run_pb2.RunStatus
    event: _event_pb2.Event
    steps: _containers.ScalarMap[str, bytes]
    output_json: bytes
    error_json: bytes
    def __init__(self, run_id: _Optional[str] = ..., function_id: _Optional[str] = ..., status: _Optional[_Union[_run_pb2.RunStatus, str]] = ..., event: _Optional[_Union[_event_pb2.Event, _Mapping]] = ..., steps: _Optional[_Mapping[str, bytes]] = ..., output_json: _Optional[bytes] = ..., error_json: _Optional[bytes] = ...) -> None: ...

class GetStepsRequest(_message.Message):
    __slots__ = ("run_id", "job_id", "lease_id", "step_ids", "max_response_bytes")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_IDS_FIELD_NUMBER: _ClassVar[int]
    MAX_RESPONSE_BYTES_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    job_id: str
    lease_id: str
    step_ids: _containers.RepeatedScalarFieldContainer[str]
    max_response_bytes: int
    def __init__(self, run_id: _Optional[str] = ..., job_id: _Optional[str] = ..., lease_id: _Optional[str] = ..., step_ids: _Optional[_Iterable[str]] = ..., max_response_bytes: _Optional[int] = ...) -> None: ...

class GetStepsResponse(_message.Message):
    __slots__ = ("steps", "remaining_step_ids", "function_id")
    class StepsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    STEPS_FIELD_NUMBER: _ClassVar[int]
    REMAINING_STEP_IDS_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_ID_FIELD_NUMBER: _ClassVar[int]
    steps: _containers.ScalarMap[str, bytes]
    remaining_step_ids: _containers.RepeatedScalarFieldContainer[str]
    function_id: str
    def __init__(self, steps: _Optional[_Mapping[str, bytes]] = ..., remaining_step_ids: _Optional[_Iterable[str]] = ..., function_id: _Optional[str] = ...) -> None: ...
