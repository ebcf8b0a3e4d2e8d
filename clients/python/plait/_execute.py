"""Runs one job: replays the function from the top up to its next new step; returns the opcode."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from plait._app import App, _Function
from plait._context import Context, Event, run_logger
from plait._encode import OutputError, dumps, error_info, is_non_retriable, retry_after_ms
from plait._errors import _Interrupt
from plait._messages import ErrorInfo, Job, Opcode, RunCompleted, RunFailed
from plait._step import Step, SyncStep, _Run
from plait._tracing import trace_context


async def execute(app: App, job: Job) -> Opcode:
    """The job's one opcode. Never raises but CancelledError, when the job is cancelled."""
    function = app._lookup(job.function_slug, job.function_id)
    if function is None:
        known = ", ".join(repr(s.id) for s in app._specs()) or "none"
        wanted = job.function_slug or job.function_id
        return _fatal(
            "FunctionNotFound",
            f"function {wanted!r} is not served by app {app.id!r} (it serves {known})",
        )
    event = _event(job.event_id, job.event_name, job.event_data_json, job.event_ts_ms)
    if isinstance(event, RunFailed):
        return event
    events: list[Event] = []
    for e in job.events:
        batched = _event(e.id, e.name, e.data_json, e.ts_ms)
        if isinstance(batched, RunFailed):
            return batched
        events.append(batched)
    run = _Run(job.steps, asyncio.get_running_loop(), job.target_step, asyncio.current_task())
    ctx = Context(
        run_id=job.run_id,
        function_id=job.function_id,
        attempt=job.attempt,
        event=event,
        logger=run_logger(job.run_id, job.function_id, job.attempt, lambda: run.replaying),
        events=tuple(events) or (event,),
    )
    try:
        with trace_context(job.traceparent, job.tracestate):
            return await _replay(function, ctx, run)
    finally:
        # Steps parked in tasks the function left behind (a sibling raised) end now.
        run.finished.set()


async def _replay(function: _Function, ctx: Context, run: _Run) -> Opcode:
    try:
        if function.is_async:
            output = await function.handler(ctx, Step(run))
        else:
            output = await asyncio.to_thread(function.handler, ctx, SyncStep(run))
    except _Interrupt:
        pass
    except asyncio.CancelledError:
        # A sync function's thread cannot be stopped; this makes its next step end it unrun.
        run.cancelled = True
        raise
    except Exception as exc:
        if run.outcome is None:
            return RunFailed(error_info(exc), is_non_retriable(exc), retry_after_ms(exc))
    except BaseExceptionGroup as group:
        # A TaskGroup whose steps ended the job: the interrupts come back grouped.
        if group.subgroup(_Interrupt) is None:
            raise
    else:
        if run.outcome is None:
            return _completed(function, output)
    # A step answered for the job, even if the function then caught the interrupt and went on.
    if run.outcome is None:
        return _fatal("InternalError", "the function stopped at a step that gave no result")
    return run.outcome


def _completed(function: _Function, output: Any) -> Opcode:
    try:
        return RunCompleted(dumps(output, f"function {function.spec.id!r}"))
    except OutputError as exc:
        return RunFailed(error_info(exc), non_retriable=True)


def _event(event_id: str, name: str, data_json: bytes, ts_ms: int) -> Event | RunFailed:
    try:
        data = json.loads(data_json or b"{}")
    except ValueError as exc:
        return _fatal("InvalidEvent", f"event {event_id!r} data is not valid JSON: {exc}")
    if not isinstance(data, dict):
        return _fatal("InvalidEvent", f"event {event_id!r} data is not a JSON object")
    return Event(id=event_id, name=name, data=data, ts_ms=ts_ms)


def _fatal(name: str, message: str) -> RunFailed:
    return RunFailed(ErrorInfo(name, message), non_retriable=True)
