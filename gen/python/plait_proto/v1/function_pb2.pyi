from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FunctionDefinition(_message.Message):
    __slots__ = ("id", "name", "triggers", "retries", "timeouts", "cancel_on")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TRIGGERS_FIELD_NUMBER: _ClassVar[int]
    RETRIES_FIELD_NUMBER: _ClassVar[int]
    TIMEOUTS_FIELD_NUMBER: _ClassVar[int]
    CANCEL_ON_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    triggers: _containers.RepeatedCompositeFieldContainer[Trigger]
    retries: int
    timeouts: Timeouts
    cancel_on: _containers.RepeatedCompositeFieldContainer[CancelOn]
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., triggers: _Optional[_Iterable[_Union[Trigger, _Mapping]]] = ..., retries: _Optional[int] = ..., timeouts: _Optional[_Union[Timeouts, _Mapping]] = ..., cancel_on: _Optional[_Iterable[_Union[CancelOn, _Mapping]]] = ...) -> None: ...

class CancelOn(_message.Message):
    __slots__ = ("event", "if_expression", "timeout_ms")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    IF_EXPRESSION_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    event: str
    if_expression: str
    timeout_ms: int
    def __init__(self, event: _Optional[str] = ..., if_expression: _Optional[str] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class Timeouts(_message.Message):
    __slots__ = ("start_ms", "finish_ms")
    START_MS_FIELD_NUMBER: _ClassVar[int]
    FINISH_MS_FIELD_NUMBER: _ClassVar[int]
    start_ms: int
    finish_ms: int
    def __init__(self, start_ms: _Optional[int] = ..., finish_ms: _Optional[int] = ...) -> None: ...

class Trigger(_message.Message):
    __slots__ = ("event", "cron")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    CRON_FIELD_NUMBER: _ClassVar[int]
    event: EventTrigger
    cron: CronTrigger
    def __init__(self, event: _Optional[_Union[EventTrigger, _Mapping]] = ..., cron: _Optional[_Union[CronTrigger, _Mapping]] = ...) -> None: ...

class EventTrigger(_message.Message):
    __slots__ = ("event", "expression")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    EXPRESSION_FIELD_NUMBER: _ClassVar[int]
    event: str
    expression: str
    def __init__(self, event: _Optional[str] = ..., expression: _Optional[str] = ...) -> None: ...

class CronTrigger(_message.Message):
    __slots__ = ("cron",)
    CRON_FIELD_NUMBER: _ClassVar[int]
    cron: str
    def __init__(self, cron: _Optional[str] = ...) -> None: ...

class Function(_message.Message):
    __slots__ = ("id", "app_id", "definition", "updated_at_ms", "paused")
    ID_FIELD_NUMBER: _ClassVar[int]
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    DEFINITION_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    id: str
    app_id: str
    definition: FunctionDefinition
    updated_at_ms: int
    paused: bool
    def __init__(self, id: _Optional[str] = ..., app_id: _Optional[str] = ..., definition: _Optional[_Union[FunctionDefinition, _Mapping]] = ..., updated_at_ms: _Optional[int] = ..., paused: _Optional[bool] = ...) -> None: ...

class ErrorInfo(_message.Message):
    __slots__ = ("name", "message", "stack")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STACK_FIELD_NUMBER: _ClassVar[int]
    name: str
    message: str
    stack: str
    def __init__(self, name: _Optional[str] = ..., message: _Optional[str] = ..., stack: _Optional[str] = ...) -> None: ...
