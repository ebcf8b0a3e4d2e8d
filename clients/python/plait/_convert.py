"""The one place protobuf meets the SDK: worker-stream messages to and from dataclasses."""

from __future__ import annotations

from plait_proto.v1 import event_pb2, function_pb2, queue_pb2

from plait._flow import FlowSpec
from plait._messages import (
    Cancel,
    Drain,
    ErrorInfo,
    FunctionSpec,
    Heartbeat,
    Incoming,
    InvokeFunction,
    Job,
    JobEvent,
    JobResult,
    Jobs,
    Opcode,
    Outgoing,
    Register,
    Registered,
    Results,
    RunCompleted,
    RunFailed,
    SendEvents,
    Sleep,
    StepCompleted,
    StepFailed,
    StepsPlanned,
    WaitForEvent,
    positive_ms,
)
from plait._triggers import TriggerEvent


def request_to_pb(msg: Outgoing) -> queue_pb2.ConnectRequest:
    match msg:
        case Results():
            results = [_result_to_pb(r) for r in msg.results]
            return queue_pb2.ConnectRequest(results=queue_pb2.JobResults(results=results))
        case Heartbeat():
            return queue_pb2.ConnectRequest(heartbeat=queue_pb2.Heartbeat())
        case Drain():
            return queue_pb2.ConnectRequest(drain=queue_pb2.Drain())
        case Register():
            return queue_pb2.ConnectRequest(register=register_to_pb(msg))


def register_to_pb(msg: Register) -> queue_pb2.Register:
    return queue_pb2.Register(
        app_id=msg.app_id,
        functions=[function_to_pb(f) for f in msg.functions],
        language=msg.language,
        sdk_name=msg.sdk_name,
        sdk_version=msg.sdk_version,
        max_concurrent_jobs=msg.max_concurrent_jobs,
        instance_id=msg.instance_id,
        max_receive_message_bytes=msg.max_receive_message_bytes,
    )


def function_to_pb(spec: FunctionSpec) -> function_pb2.FunctionDefinition:
    triggers = [
        function_pb2.Trigger(
            event=function_pb2.EventTrigger(event=t.event, expression=t.expression)
        )
        if isinstance(t, TriggerEvent)
        else function_pb2.Trigger(cron=function_pb2.CronTrigger(cron=t.cron))
        for t in spec.triggers
    ]
    definition = function_pb2.FunctionDefinition(id=spec.id, name=spec.name, triggers=triggers)
    if spec.retries is not None:
        # `retries` is proto3-optional: left unset, the server applies its default.
        definition.retries = spec.retries
    if spec.timeouts is not None:
        if spec.timeouts.start_s is not None:
            definition.timeouts.start_ms = max(1, round(spec.timeouts.start_s * 1000))
        if spec.timeouts.finish_s is not None:
            definition.timeouts.finish_ms = max(1, round(spec.timeouts.finish_s * 1000))
    for c in spec.cancel_on:
        definition.cancel_on.append(
            function_pb2.CancelOn(event=c.event, if_expression=c.if_exp, timeout_ms=c.timeout_ms)
        )
    _flow_to_pb(spec.flow, definition)
    return definition


_SCOPES = {
    "fn": function_pb2.CONCURRENCY_SCOPE_FN,
    "env": function_pb2.CONCURRENCY_SCOPE_ENV,
    "account": function_pb2.CONCURRENCY_SCOPE_ACCOUNT,
}
_MODES = {"skip": function_pb2.SINGLETON_MODE_SKIP, "cancel": function_pb2.SINGLETON_MODE_CANCEL}


def _flow_to_pb(flow: FlowSpec, definition: function_pb2.FunctionDefinition) -> None:
    for c in flow.concurrency:
        definition.concurrency.append(
            function_pb2.ConcurrencyLimit(limit=c.limit, key=c.key, scope=_SCOPES[c.scope]))
    if (t := flow.throttle) is not None:
        definition.throttle.CopyFrom(function_pb2.Throttle(
            limit=t.limit, period_ms=positive_ms(t.period, "Throttle period"), burst=t.burst,
            key=t.key))
    if (r := flow.rate_limit) is not None:
        definition.rate_limit.CopyFrom(function_pb2.RateLimit(
            limit=r.limit, period_ms=positive_ms(r.period, "RateLimit period"), key=r.key))
    if (d := flow.debounce) is not None:
        definition.debounce.CopyFrom(function_pb2.Debounce(
            period_ms=positive_ms(d.period, "Debounce period"), key=d.key,
            timeout_ms=0 if d.timeout is None else positive_ms(d.timeout, "Debounce timeout")))
    if (b := flow.batch_events) is not None:
        definition.batch_events.CopyFrom(function_pb2.BatchEvents(
            max_size=b.max_size, timeout_ms=positive_ms(b.timeout, "Batch timeout"), key=b.key,
            if_expression=b.if_exp))
    definition.priority_run = flow.priority
    definition.idempotency = flow.idempotency
    if (s := flow.singleton) is not None:
        definition.singleton.CopyFrom(function_pb2.Singleton(mode=_MODES[s.mode], key=s.key))


def response_from_pb(msg: queue_pb2.ConnectResponse) -> Incoming | None:
    """The message as a dataclass; None for a kind this SDK does not know (a newer server)."""
    kind = msg.WhichOneof("message")
    if kind == "jobs":
        return Jobs(tuple(job_from_pb(j) for j in msg.jobs.jobs))
    if kind == "cancel":
        return Cancel(tuple(msg.cancel.job_ids))
    if kind == "drain":
        return Drain()
    if kind == "registered":
        r = msg.registered
        ids = tuple(r.function_ids)
        return Registered(r.connection_id, r.lease_ms, r.heartbeat_interval_ms, ids)
    return None


def job_from_pb(job: queue_pb2.Job) -> Job:
    event: event_pb2.Event = job.event
    return Job(
        job_id=job.job_id,
        lease_id=job.lease_id,
        run_id=job.run_id,
        function_id=job.function_id,
        function_slug=job.function_slug,
        event_id=event.id,
        event_name=event.name,
        event_data_json=event.data_json,
        event_ts_ms=event.ts_ms,
        steps=dict(job.steps),
        attempt=job.attempt,
        max_attempts=job.max_attempts,
        lease_expires_at_ms=job.lease_expires_at_ms,
        traceparent=job.traceparent,
        tracestate=job.tracestate,
        target_step=job.target_step,
        fetch_steps=tuple(job.fetch_steps),
        events=tuple(JobEvent(e.id, e.name, e.data_json, e.ts_ms) for e in job.events),
    )


def _result_to_pb(result: JobResult) -> queue_pb2.JobResult:
    return queue_pb2.JobResult(
        job_id=result.job_id, lease_id=result.lease_id, opcodes=[_opcode_to_pb(result.opcode)]
    )


def _opcode_to_pb(op: Opcode) -> queue_pb2.Opcode:
    match op:
        case StepCompleted():
            return queue_pb2.Opcode(
                step_completed=queue_pb2.StepCompleted(
                    step_id=op.step_id, name=op.name, output_json=op.output_json
                )
            )
        case StepFailed():
            return queue_pb2.Opcode(
                step_failed=queue_pb2.StepFailed(
                    step_id=op.step_id,
                    name=op.name,
                    error=_error_to_pb(op.error),
                    non_retriable=op.non_retriable,
                    retry_after_ms=op.retry_after_ms,
                )
            )
        case Sleep():
            return queue_pb2.Opcode(
                sleep=queue_pb2.Sleep(step_id=op.step_id, name=op.name, until_ms=op.until_ms)
            )
        case WaitForEvent():
            return queue_pb2.Opcode(
                wait_for_event=queue_pb2.WaitForEvent(
                    step_id=op.step_id,
                    name=op.name,
                    event=op.event,
                    if_expression=op.if_expression,
                    timeout_until_ms=op.timeout_until_ms,
                )
            )
        case StepsPlanned():
            return queue_pb2.Opcode(steps_planned=queue_pb2.StepsPlanned(
                step_ids=op.step_ids, race=op.race))
        case InvokeFunction():
            return queue_pb2.Opcode(
                invoke=queue_pb2.InvokeFunction(
                    step_id=op.step_id,
                    name=op.name,
                    function_id=op.function_id,
                    data_json=op.data_json,
                    timeout_until_ms=op.timeout_until_ms,
                )
            )
        case SendEvents():
            events = [event_pb2.EventInput(name=e.name, data_json=e.data_json) for e in op.events]
            return queue_pb2.Opcode(
                send_events=queue_pb2.SendEvents(step_id=op.step_id, name=op.name, events=events)
            )
        case RunCompleted():
            completed = queue_pb2.RunCompleted(output_json=op.output_json)
            return queue_pb2.Opcode(run_completed=completed)
        case RunFailed():
            return queue_pb2.Opcode(
                run_failed=queue_pb2.RunFailed(
                    error=_error_to_pb(op.error),
                    non_retriable=op.non_retriable,
                    retry_after_ms=op.retry_after_ms,
                )
            )


def _error_to_pb(error: ErrorInfo) -> function_pb2.ErrorInfo:
    return function_pb2.ErrorInfo(name=error.name, message=error.message, stack=error.stack)
