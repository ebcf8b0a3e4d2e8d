"""History records to and from ManagementService protobuf messages; the API's only pb2 glue."""

from __future__ import annotations

from collections.abc import Mapping, Set
from typing import Any

from plait_proto.v1 import event_pb2, function_pb2, management_pb2, run_pb2

from server.errors import InvalidArgument
from server.history.store import (
    AppRecord,
    EventRecord,
    FunctionRecord,
    RunRecord,
    StepAttemptRecord,
)
from server.telemetry.spans import SpanRow
from server.types import (
    ConcurrencyScope,
    CronTrigger,
    ErrorInfo,
    FlowControl,
    FunctionConfig,
    RunStatus,
    SingletonMode,
    StepStatus,
    Trigger,
)

_RUN_STATUS: dict[RunStatus, run_pb2.RunStatus] = {
    RunStatus.QUEUED: run_pb2.RUN_STATUS_QUEUED,
    RunStatus.RUNNING: run_pb2.RUN_STATUS_RUNNING,
    RunStatus.COMPLETED: run_pb2.RUN_STATUS_COMPLETED,
    RunStatus.FAILED: run_pb2.RUN_STATUS_FAILED,
    RunStatus.CANCELLED: run_pb2.RUN_STATUS_CANCELLED,
    RunStatus.SKIPPED: run_pb2.RUN_STATUS_SKIPPED,
}
_RUN_STATUS_FROM_PB: dict[int, RunStatus] = {int(pb): s for s, pb in _RUN_STATUS.items()}

_STEP_STATUS: dict[StepStatus, run_pb2.StepStatus] = {
    StepStatus.COMPLETED: run_pb2.STEP_STATUS_COMPLETED,
    StepStatus.FAILED: run_pb2.STEP_STATUS_FAILED,
    StepStatus.SLEEPING: run_pb2.STEP_STATUS_SLEEPING,
}


def run_status_to_pb(status: RunStatus) -> run_pb2.RunStatus:
    return _RUN_STATUS[status]


def run_status_from_pb(field: str, value: int) -> RunStatus | None:
    """None for RUN_STATUS_UNSPECIFIED, i.e. "any status" in a filter."""
    if value == run_pb2.RUN_STATUS_UNSPECIFIED:
        return None
    status = _RUN_STATUS_FROM_PB.get(value)
    if status is None:
        raise InvalidArgument(field, f"unknown RunStatus value {value}")
    return status


def error_to_pb(error: ErrorInfo) -> function_pb2.ErrorInfo:
    return function_pb2.ErrorInfo(name=error.name, message=error.message, stack=error.stack)


def app_to_pb(app: AppRecord) -> management_pb2.App:
    return management_pb2.App(
        id=app.id,
        language=app.language,
        sdk_name=app.sdk_name,
        sdk_version=app.sdk_version,
        updated_at_ms=app.updated_at_ms,
        function_count=app.function_count,
    )


def _trigger_to_pb(trigger: Trigger) -> function_pb2.Trigger:
    if isinstance(trigger, CronTrigger):
        return function_pb2.Trigger(cron=function_pb2.CronTrigger(cron=trigger.cron))
    return function_pb2.Trigger(
        event=function_pb2.EventTrigger(event=trigger.event, expression=trigger.expression)
    )


def definition_to_pb(config: FunctionConfig) -> function_pb2.FunctionDefinition:
    return function_pb2.FunctionDefinition(
        id=config.slug,
        name=config.name,
        triggers=[_trigger_to_pb(t) for t in config.triggers],
        retries=config.retries,
        timeouts=function_pb2.Timeouts(start_ms=config.start_timeout_ms,
                                       finish_ms=config.finish_timeout_ms),
        cancel_on=[function_pb2.CancelOn(event=c.event, if_expression=c.if_expression,
                                         timeout_ms=c.timeout_ms) for c in config.cancel_on],
        **_flow_to_pb(config.flow),
    )


_SCOPES = {
    ConcurrencyScope.FN: function_pb2.CONCURRENCY_SCOPE_FN,
    ConcurrencyScope.ENV: function_pb2.CONCURRENCY_SCOPE_ENV,
    ConcurrencyScope.ACCOUNT: function_pb2.CONCURRENCY_SCOPE_ACCOUNT,
}
_MODES = {
    SingletonMode.SKIP: function_pb2.SINGLETON_MODE_SKIP,
    SingletonMode.CANCEL: function_pb2.SINGLETON_MODE_CANCEL,
}


def _flow_to_pb(flow: FlowControl) -> dict[str, Any]:
    """FunctionDefinition's flow control fields, as keyword arguments (unset when off)."""
    out: dict[str, Any] = {
        "concurrency": [function_pb2.ConcurrencyLimit(limit=c.limit, key=c.key,
                                                      scope=_SCOPES[c.scope])
                        for c in flow.concurrency],
        "priority_run": flow.priority_run,
        "idempotency": flow.idempotency,
    }
    if (t := flow.throttle) is not None:
        out["throttle"] = function_pb2.Throttle(limit=t.limit, period_ms=t.period_ms,
                                                burst=t.burst, key=t.key)
    if (r := flow.rate_limit) is not None:
        out["rate_limit"] = function_pb2.RateLimit(limit=r.limit, period_ms=r.period_ms,
                                                   key=r.key)
    if (d := flow.debounce) is not None:
        out["debounce"] = function_pb2.Debounce(period_ms=d.period_ms, key=d.key,
                                                timeout_ms=d.timeout_ms)
    if (b := flow.batch) is not None:
        out["batch_events"] = function_pb2.BatchEvents(
            max_size=b.max_size, timeout_ms=b.timeout_ms, key=b.key,
            if_expression=b.if_expression)
    if (s := flow.singleton) is not None:
        out["singleton"] = function_pb2.Singleton(mode=_MODES[s.mode], key=s.key)
    return out


def function_to_pb(function: FunctionRecord, paused: Set[str],
                   disabled: Mapping[str, Mapping[str, str]] | None = None,
                   ) -> function_pb2.Function:
    """`disabled`: per function id, its cron triggers the scheduler disabled -> why; only
    the function's current triggers are shown (a re-registration may have dropped one)."""
    errors = (disabled or {}).get(function.config.id, {})
    return function_pb2.Function(
        id=function.config.id,
        app_id=function.config.app_id,
        definition=definition_to_pb(function.config),
        updated_at_ms=function.updated_at_ms,
        paused=function.config.id in paused,
        trigger_errors=[function_pb2.TriggerError(cron=t.cron, error=errors[t.cron])
                        for t in function.config.triggers
                        if isinstance(t, CronTrigger) and t.cron in errors],
    )


def event_to_pb(event: EventRecord) -> event_pb2.Event:
    return event_pb2.Event(
        id=event.id,
        name=event.name,
        data_json=event.data_json,
        ts_ms=event.ts_ms,
        idempotency_key=event.idempotency_key,
    )


def step_to_pb(step: StepAttemptRecord) -> run_pb2.StepAttempt:
    msg = run_pb2.StepAttempt(
        step_id=step.step_id,
        name=step.name,
        attempt=step.attempt,
        status=_STEP_STATUS[step.status],
        output_json=step.output_json or b"",
        ended_at_ms=step.ended_at_ms,
    )
    if step.error is not None:
        msg.error.CopyFrom(error_to_pb(step.error))
    return msg


def run_to_pb(run: RunRecord, waiting_reason: str = "") -> run_pb2.Run:
    """The run with whatever steps the record carries (GetRun has them, lists do not), and
    what holds it when it is queued behind flow control."""
    msg = run_pb2.Run(
        id=run.id,
        function_id=run.function_id,
        app_id=run.app_id,
        event_id=run.event_id,
        status=run_status_to_pb(run.status),
        created_at_ms=run.created_at_ms,
        started_at_ms=run.started_at_ms or 0,
        ended_at_ms=run.ended_at_ms or 0,
        output_json=run.output_json or b"",
        steps=[step_to_pb(s) for s in run.steps],
        waiting_reason=waiting_reason,
    )
    if run.error is not None:
        msg.error.CopyFrom(error_to_pb(run.error))
    return msg


def span_to_pb(span: SpanRow) -> run_pb2.Span:
    return run_pb2.Span(
        trace_id=span.trace_id, span_id=span.id,
        parent_span_id=f"{span.parent:016x}" if span.parent else "", name=span.name,
        kind=str(span.kind), start_ms=span.start_ms, end_ms=span.end_ms or 0,
        outcome=span.outcome, status=span.status,
        attributes={k: str(v) for k, v in span.attributes.items()},
    )
