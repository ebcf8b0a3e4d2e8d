from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ConcurrencyScope(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONCURRENCY_SCOPE_UNSPECIFIED: _ClassVar[ConcurrencyScope]
    CONCURRENCY_SCOPE_FN: _ClassVar[ConcurrencyScope]
    CONCURRENCY_SCOPE_ENV: _ClassVar[ConcurrencyScope]
    CONCURRENCY_SCOPE_ACCOUNT: _ClassVar[ConcurrencyScope]

class SingletonMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SINGLETON_MODE_UNSPECIFIED: _ClassVar[SingletonMode]
    SINGLETON_MODE_SKIP: _ClassVar[SingletonMode]
    SINGLETON_MODE_CANCEL: _ClassVar[SingletonMode]
CONCURRENCY_SCOPE_UNSPECIFIED: ConcurrencyScope
CONCURRENCY_SCOPE_FN: ConcurrencyScope
CONCURRENCY_SCOPE_ENV: ConcurrencyScope
CONCURRENCY_SCOPE_ACCOUNT: ConcurrencyScope
SINGLETON_MODE_UNSPECIFIED: SingletonMode
SINGLETON_MODE_SKIP: SingletonMode
SINGLETON_MODE_CANCEL: SingletonMode

class FunctionDefinition(_message.Message):
    __slots__ = ("id", "name", "triggers", "retries", "timeouts", "cancel_on", "concurrency", "throttle", "rate_limit", "debounce", "batch_events", "priority_run", "idempotency", "singleton")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TRIGGERS_FIELD_NUMBER: _ClassVar[int]
    RETRIES_FIELD_NUMBER: _ClassVar[int]
    TIMEOUTS_FIELD_NUMBER: _ClassVar[int]
    CANCEL_ON_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    THROTTLE_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMIT_FIELD_NUMBER: _ClassVar[int]
    DEBOUNCE_FIELD_NUMBER: _ClassVar[int]
    BATCH_EVENTS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_RUN_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_FIELD_NUMBER: _ClassVar[int]
    SINGLETON_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    triggers: _containers.RepeatedCompositeFieldContainer[Trigger]
    retries: int
    timeouts: Timeouts
    cancel_on: _containers.RepeatedCompositeFieldContainer[CancelOn]
    concurrency: _containers.RepeatedCompositeFieldContainer[ConcurrencyLimit]
    throttle: Throttle
    rate_limit: RateLimit
    debounce: Debounce
    batch_events: BatchEvents
    priority_run: str
    idempotency: str
    singleton: Singleton
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., triggers: _Optional[_Iterable[_Union[Trigger, _Mapping]]] = ..., retries: _Optional[int] = ..., timeouts: _Optional[_Union[Timeouts, _Mapping]] = ..., cancel_on: _Optional[_Iterable[_Union[CancelOn, _Mapping]]] = ..., concurrency: _Optional[_Iterable[_Union[ConcurrencyLimit, _Mapping]]] = ..., throttle: _Optional[_Union[Throttle, _Mapping]] = ..., rate_limit: _Optional[_Union[RateLimit, _Mapping]] = ..., debounce: _Optional[_Union[Debounce, _Mapping]] = ..., batch_events: _Optional[_Union[BatchEvents, _Mapping]] = ..., priority_run: _Optional[str] = ..., idempotency: _Optional[str] = ..., singleton: _Optional[_Union[Singleton, _Mapping]] = ...) -> None: ...

class ConcurrencyLimit(_message.Message):
    __slots__ = ("limit", "key", "scope")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    limit: int
    key: str
    scope: ConcurrencyScope
    def __init__(self, limit: _Optional[int] = ..., key: _Optional[str] = ..., scope: _Optional[_Union[ConcurrencyScope, str]] = ...) -> None: ...

class Throttle(_message.Message):
    __slots__ = ("limit", "period_ms", "burst", "key")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PERIOD_MS_FIELD_NUMBER: _ClassVar[int]
    BURST_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    limit: int
    period_ms: int
    burst: int
    key: str
    def __init__(self, limit: _Optional[int] = ..., period_ms: _Optional[int] = ..., burst: _Optional[int] = ..., key: _Optional[str] = ...) -> None: ...

class RateLimit(_message.Message):
    __slots__ = ("limit", "period_ms", "key")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PERIOD_MS_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    limit: int
    period_ms: int
    key: str
    def __init__(self, limit: _Optional[int] = ..., period_ms: _Optional[int] = ..., key: _Optional[str] = ...) -> None: ...

class Debounce(_message.Message):
    __slots__ = ("period_ms", "key", "timeout_ms")
    PERIOD_MS_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    period_ms: int
    key: str
    timeout_ms: int
    def __init__(self, period_ms: _Optional[int] = ..., key: _Optional[str] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class BatchEvents(_message.Message):
    __slots__ = ("max_size", "timeout_ms", "key", "if_expression")
    MAX_SIZE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    IF_EXPRESSION_FIELD_NUMBER: _ClassVar[int]
    max_size: int
    timeout_ms: int
    key: str
    if_expression: str
    def __init__(self, max_size: _Optional[int] = ..., timeout_ms: _Optional[int] = ..., key: _Optional[str] = ..., if_expression: _Optional[str] = ...) -> None: ...

class Singleton(_message.Message):
    __slots__ = ("mode", "key")
    MODE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    mode: SingletonMode
    key: str
    def __init__(self, mode: _Optional[_Union[SingletonMode, str]] = ..., key: _Optional[str] = ...) -> None: ...

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
    __slots__ = ("id", "app_id", "definition", "updated_at_ms", "paused", "trigger_errors")
    ID_FIELD_NUMBER: _ClassVar[int]
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    DEFINITION_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_ERRORS_FIELD_NUMBER: _ClassVar[int]
    id: str
    app_id: str
    definition: FunctionDefinition
    updated_at_ms: int
    paused: bool
    trigger_errors: _containers.RepeatedCompositeFieldContainer[TriggerError]
    def __init__(self, id: _Optional[str] = ..., app_id: _Optional[str] = ..., definition: _Optional[_Union[FunctionDefinition, _Mapping]] = ..., updated_at_ms: _Optional[int] = ..., paused: _Optional[bool] = ..., trigger_errors: _Optional[_Iterable[_Union[TriggerError, _Mapping]]] = ...) -> None: ...

class TriggerError(_message.Message):
    __slots__ = ("cron", "error")
    CRON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    cron: str
    error: str
    def __init__(self, cron: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class ErrorInfo(_message.Message):
    __slots__ = ("name", "message", "stack")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STACK_FIELD_NUMBER: _ClassVar[int]
    name: str
    message: str
    stack: str
    def __init__(self, name: _Optional[str] = ..., message: _Optional[str] = ..., stack: _Optional[str] = ...) -> None: ...
