from plait_proto.v1 import event_pb2 as _event_pb2
from plait_proto.v1 import run_pb2 as _run_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
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
