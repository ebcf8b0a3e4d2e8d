"""Protobuf ↔ dataclasses for the worker stream; the only place below the servicer that
touches plait_proto messages."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from plait_proto.v1 import event_pb2, function_pb2, queue_pb2

from server import canonjson
from server.canonjson import canonical_object
from server.errors import InvalidArgument
from server.runner.expressions import compile_expression
from server.types import (
    AppId,
    AppRegistration,
    BatchConfig,
    CancelOn,
    ConcurrencyLimit,
    ConcurrencyScope,
    CronTrigger,
    DebounceConfig,
    ErrorInfo,
    EventTrigger,
    FlowControl,
    FunctionConfig,
    FunctionId,
    InvokeFunction,
    Job,
    JobId,
    JobResult,
    LeaseId,
    Opcode,
    OutgoingEvent,
    RateLimitConfig,
    RunCompleted,
    RunFailed,
    SendEvents,
    SingletonConfig,
    SingletonMode,
    Sleep,
    StepCompleted,
    StepFailed,
    StepId,
    StepsPlanned,
    ThrottleConfig,
    Trigger,
    WaitForEvent,
)

MAX_CONCURRENT_JOBS = 10_000
MAX_PLANNED_STEPS = 100
MAX_SENT_EVENTS = 100
# Stored events hold canonjson's rules; internal ones nest a run's event a few levels down.
STORED_MAX_DEPTH = canonjson.MAX_DEPTH + 16


def registration_from_pb(msg: queue_pb2.Register, default_retries: int) -> AppRegistration:
    app_id = AppId(msg.app_id)
    functions = []
    for i, fd in enumerate(msg.functions):
        triggers: list[Trigger] = []
        for j, t in enumerate(fd.triggers):
            kind = t.WhichOneof("kind")
            if kind == "event":
                triggers.append(EventTrigger(t.event.event, t.event.expression))
            elif kind == "cron":
                triggers.append(CronTrigger(t.cron.cron))
            else:
                raise InvalidArgument(f"functions[{i}].triggers[{j}]", "must set event or cron")
        functions.append(FunctionConfig(
            id=FunctionId(f"{app_id}-{fd.id}"), app_id=app_id, slug=fd.id, name=fd.name or fd.id,
            triggers=tuple(triggers),
            retries=fd.retries if fd.HasField("retries") else default_retries,
            start_timeout_ms=_timeout_ms(fd.timeouts.start_ms, f"functions[{i}].timeouts.start_ms"),
            finish_timeout_ms=_timeout_ms(fd.timeouts.finish_ms,
                                          f"functions[{i}].timeouts.finish_ms"),
            cancel_on=_cancel_on(fd.cancel_on, f"functions[{i}].cancel_on"),
            flow=_flow(fd, f"functions[{i}]"),
        ))
    if not 1 <= msg.max_concurrent_jobs <= MAX_CONCURRENT_JOBS:
        raise InvalidArgument(
            "register.max_concurrent_jobs",
            f"{msg.max_concurrent_jobs} is not in 1..{MAX_CONCURRENT_JOBS}")
    return AppRegistration(app_id, tuple(functions), msg.language, msg.sdk_name, msg.sdk_version)


def _cancel_on(
    items: Sequence[function_pb2.CancelOn], at: str
) -> tuple[CancelOn, ...]:
    return tuple(CancelOn(c.event, c.if_expression,
                          _timeout_ms(c.timeout_ms, f"{at}[{k}].timeout_ms"))
                 for k, c in enumerate(items))


_SCOPES = {
    function_pb2.CONCURRENCY_SCOPE_UNSPECIFIED: ConcurrencyScope.FN,
    function_pb2.CONCURRENCY_SCOPE_FN: ConcurrencyScope.FN,
    function_pb2.CONCURRENCY_SCOPE_ENV: ConcurrencyScope.ENV,
    function_pb2.CONCURRENCY_SCOPE_ACCOUNT: ConcurrencyScope.ACCOUNT,
}
_MODES = {
    function_pb2.SINGLETON_MODE_SKIP: SingletonMode.SKIP,
    function_pb2.SINGLETON_MODE_CANCEL: SingletonMode.CANCEL,
}


def _flow(fd: function_pb2.FunctionDefinition, at: str) -> FlowControl:
    """The definition's flow control; ranges and keys are checked by the registry."""
    concurrency = []
    for k, c in enumerate(fd.concurrency):
        scope = _SCOPES.get(c.scope)
        if scope is None:
            raise InvalidArgument(f"{at}.concurrency[{k}].scope", f"unknown value {c.scope}")
        concurrency.append(ConcurrencyLimit(c.limit, c.key, scope))
    singleton = None
    if fd.HasField("singleton"):
        mode = _MODES.get(fd.singleton.mode)
        if mode is None:
            raise InvalidArgument(f"{at}.singleton.mode",
                                  f"{fd.singleton.mode} is not SINGLETON_MODE_SKIP or _CANCEL")
        singleton = SingletonConfig(mode, fd.singleton.key)
    t, r, d, b = fd.throttle, fd.rate_limit, fd.debounce, fd.batch_events
    return FlowControl(
        concurrency=tuple(concurrency),
        throttle=ThrottleConfig(t.limit, t.period_ms, t.burst or 1, t.key)
        if fd.HasField("throttle") else None,
        rate_limit=RateLimitConfig(r.limit, r.period_ms, r.key)
        if fd.HasField("rate_limit") else None,
        debounce=DebounceConfig(d.period_ms, d.key, d.timeout_ms)
        if fd.HasField("debounce") else None,
        batch=BatchConfig(b.max_size, b.timeout_ms, b.key, b.if_expression)
        if fd.HasField("batch_events") else None,
        priority_run=fd.priority_run, idempotency=fd.idempotency, singleton=singleton,
    )


def _timeout_ms(value: int, field: str) -> int:
    if value < 0:
        raise InvalidArgument(field, f"{value} must not be negative (0 means no timeout)")
    return value


class EventCache:
    """Event messages by run id: a run's jobs share one event, parsed once."""

    def __init__(self, size: int = 20_000) -> None:
        self._size = size
        self._items: OrderedDict[str, event_pb2.Event] = OrderedDict()

    def get(self, run_id: str, event_json: bytes) -> event_pb2.Event:
        found = self._items.get(run_id)
        if found is not None:
            return found
        event = _event_pb(event_json)
        self._items[run_id] = event
        if len(self._items) > self._size:
            self._items.popitem(last=False)
        return event


def _event_pb(event_json: bytes) -> event_pb2.Event:
    """A run's stored event as the worker's message; ValueError (one of the drivers'
    DATA_ERRORS: the run fails, sending again cannot help) if it was stored damaged or
    before the rules of server/canonjson.py."""
    try:
        raw = canonjson.loads(event_json, "event", max_depth=STORED_MAX_DEPTH, big_ints=True)
        if not isinstance(raw, dict):
            raise InvalidArgument("event", "must be a JSON object")
        ts = raw.get("ts", 0)
        return event_pb2.Event(
            id=str(raw.get("id", "")), name=str(raw.get("name", "")),
            data_json=canonjson.dumps(raw.get("data", {}), "event.data"),
            ts_ms=ts if isinstance(ts, int) and 0 <= ts < 2**63 else 0,
        )
    except InvalidArgument as e:
        raise ValueError(f"the job's {e.message}") from None


def job_to_pb(job: Job, slug: str, event: event_pb2.Event) -> queue_pb2.Job:
    """The job's message; a batched run's events go in `events` (ValueError, one of the
    drivers' DATA_ERRORS, when one was stored damaged)."""
    return queue_pb2.Job(
        job_id=job.job_id, lease_id=job.lease_id, run_id=job.run_id,
        function_id=job.function_id, function_slug=slug, attempt=job.attempt,
        max_attempts=job.max_attempts, event=event, steps=job.steps,
        lease_expires_at_ms=job.lease_expires_at_ms, traceparent=job.traceparent,
        tracestate=job.tracestate, target_step=job.target_step,
        events=[_event_pb(e) for e in job.events],
    )


def _error(msg: function_pb2.ErrorInfo) -> ErrorInfo:
    return ErrorInfo(msg.name or "Error", msg.message, msg.stack)


MAX_STEP_ID_BYTES = 512


def _step_id(field: str, step_id: str) -> StepId:
    if not step_id or len(step_id.encode()) > MAX_STEP_ID_BYTES:
        raise InvalidArgument(field, f"must be 1..{MAX_STEP_ID_BYTES} bytes")
    return StepId(step_id)


def opcode_from_pb(msg: queue_pb2.Opcode, at: str) -> Opcode:
    kind = msg.WhichOneof("op")
    if kind == "step_completed":
        c = msg.step_completed
        return StepCompleted(_step_id(f"{at}.step_completed.step_id", c.step_id),
                             c.name or c.step_id, c.output_json)
    if kind == "step_failed":
        f = msg.step_failed
        return StepFailed(_step_id(f"{at}.step_failed.step_id", f.step_id),
                          f.name or f.step_id, _error(f.error),
                          f.non_retriable, max(0, f.retry_after_ms))
    if kind == "sleep":
        s = msg.sleep
        if s.until_ms <= 0:
            raise InvalidArgument(f"{at}.sleep.until_ms", "must be a Unix time in ms")
        return Sleep(_step_id(f"{at}.sleep.step_id", s.step_id), s.name or s.step_id, s.until_ms)
    if kind == "wait_for_event":
        return _wait_for_event(msg.wait_for_event, f"{at}.wait_for_event")
    if kind == "steps_planned":
        return _steps_planned(msg.steps_planned, f"{at}.steps_planned")
    if kind == "invoke":
        return _invoke(msg.invoke, f"{at}.invoke")
    if kind == "send_events":
        return _send_events(msg.send_events, f"{at}.send_events")
    if kind == "run_completed":
        return RunCompleted(msg.run_completed.output_json)
    if kind == "run_failed":
        r = msg.run_failed
        return RunFailed(_error(r.error), r.non_retriable, max(0, r.retry_after_ms))
    raise InvalidArgument(at, "must set one opcode")


def result_from_pb(msg: queue_pb2.JobResult, at: str) -> JobResult:
    if not msg.job_id:
        raise InvalidArgument(f"{at}.job_id", "must not be empty")
    if len(msg.opcodes) != 1:
        raise InvalidArgument(f"{at}.opcodes", "must hold exactly one opcode")
    ops = tuple(opcode_from_pb(o, f"{at}.opcodes[{i}]") for i, o in enumerate(msg.opcodes))
    return JobResult(JobId(msg.job_id), LeaseId(msg.lease_id), ops)


def _wait_for_event(w: queue_pb2.WaitForEvent, at: str) -> WaitForEvent:
    if not w.event:
        raise InvalidArgument(f"{at}.event", "must not be empty")
    if w.timeout_until_ms <= 0:
        raise InvalidArgument(f"{at}.timeout_until_ms", "must be a Unix time in ms")
    if w.if_expression:
        compile_expression(f"{at}.if_expression", w.if_expression)
    return WaitForEvent(_step_id(f"{at}.step_id", w.step_id), w.name or w.step_id, w.event,
                        w.if_expression, w.timeout_until_ms)


def _steps_planned(p: queue_pb2.StepsPlanned, at: str) -> StepsPlanned:
    if not 2 <= len(p.step_ids) <= MAX_PLANNED_STEPS:
        raise InvalidArgument(f"{at}.step_ids",
                              f"{len(p.step_ids)} ids, must be 2..{MAX_PLANNED_STEPS}")
    ids = tuple(_step_id(f"{at}.step_ids[{i}]", s) for i, s in enumerate(p.step_ids))
    if len(set(ids)) != len(ids):
        raise InvalidArgument(f"{at}.step_ids", "must not repeat an id")
    return StepsPlanned(ids, race=p.race)


def _json_object(raw: bytes, field: str) -> bytes:
    """A JSON object under canonjson's rules, in canonical form; InvalidArgument names the
    field. (Step and run outputs are checked by the executor: a bad one fails the step.)"""
    return canonical_object(raw, field) if raw else b"{}"


def _invoke(i: queue_pb2.InvokeFunction, at: str) -> InvokeFunction:
    if not i.function_id:
        raise InvalidArgument(f"{at}.function_id", "must not be empty")
    if i.timeout_until_ms < 0:
        raise InvalidArgument(f"{at}.timeout_until_ms", "must be a Unix time in ms, or 0")
    return InvokeFunction(_step_id(f"{at}.step_id", i.step_id), i.name or i.step_id,
                          i.function_id, _json_object(i.data_json, f"{at}.data_json"),
                          i.timeout_until_ms)


def _send_events(s: queue_pb2.SendEvents, at: str) -> SendEvents:
    if not 1 <= len(s.events) <= MAX_SENT_EVENTS:
        raise InvalidArgument(f"{at}.events",
                              f"{len(s.events)} events, must be 1..{MAX_SENT_EVENTS}")
    events = []
    for k, e in enumerate(s.events):
        if not e.name:
            raise InvalidArgument(f"{at}.events[{k}].name", "must not be empty")
        data = _json_object(e.data_json, f"{at}.events[{k}].data_json")
        events.append(OutgoingEvent(e.name, data))
    return SendEvents(_step_id(f"{at}.step_id", s.step_id), s.name or s.step_id, tuple(events))
