"""Checks opcodes from any transport before they are applied: sizes, the JSON rules of
server/canonjson.py (what is stored is the canonical form), and error sizes.

A bad step output becomes a non-retriable step failure that says why, so a worker bug shows
up in the run's history instead of corrupting its state.
"""

from __future__ import annotations

import dataclasses
import json

from server.canonjson import canonical, canonical_object
from server.errors import InvalidArgument
from server.runner.expressions import compile_expression
from server.types import (
    ErrorInfo,
    InvokeFunction,
    Job,
    Opcode,
    OutgoingEvent,
    RunCompleted,
    RunFailed,
    SendEvents,
    Sleep,
    StepCompleted,
    StepFailed,
    StepId,
    StepsPlanned,
    WaitForEvent,
)

MAX_EVENT_NAME_BYTES = 256
# Event names only Plait sends (as server/events/ingest.py refuses them from senders).
INTERNAL_PREFIX = "inngest/"
DEFAULT_MAX_ERROR_BYTES = 64 * 1024
_CUT_MARK = "…"


def _canonical(payload: bytes, limit: int, what: str, *, obj: bool = False) -> tuple[bytes, str]:
    """(canonical bytes, "") or (b"", the problem, starting with `what`)."""
    if len(payload) > limit:
        return b"", f"{what} is {len(payload)} bytes, over the limit of {limit}"
    try:
        return (canonical_object if obj else canonical)(payload, what), ""
    except InvalidArgument as e:
        return b"", f"{what} {e.reason}"


def cut(text: str, limit: int) -> str:
    """`text` in at most `limit` UTF-8 bytes, cut on a character boundary and marked with …"""
    if len(text) * 4 <= limit:  # no character takes more than 4 bytes
        return text
    raw = text.encode("utf-8", "replace")
    if len(raw) <= limit:
        return text
    mark = _CUT_MARK if limit >= len(_CUT_MARK.encode()) else ""
    return raw[:limit - len(mark.encode())].decode("utf-8", "ignore") + mark


def _cut_error(error: ErrorInfo, limit: int) -> ErrorInfo:
    name, message, stack = (cut(error.name, limit), cut(error.message, limit),
                            cut(error.stack, limit))
    if (name, message, stack) == (error.name, error.message, error.stack):
        return error
    return ErrorInfo(name, message, stack)


def _failed_step(op: StepCompleted | InvokeFunction | SendEvents | WaitForEvent, name: str,
                 problem: str) -> StepFailed:
    return StepFailed(op.step_id, op.name, ErrorInfo(name, problem), non_retriable=True)


def _sent(op: SendEvents, max_event_bytes: int) -> Opcode:
    events = []
    for i, event in enumerate(op.events):
        data, problem = _canonical(event.data_json or b"{}", max_event_bytes, "data", obj=True)
        if not problem and len(event.name.encode()) > MAX_EVENT_NAME_BYTES:
            problem = f"name is longer than {MAX_EVENT_NAME_BYTES} bytes"
        if not problem and event.name.startswith(INTERNAL_PREFIX):
            problem = (f"name {event.name[:64]!r} is under {INTERNAL_PREFIX!r}, which only "
                       "Plait's own events use")
        if problem:
            return _failed_step(op, "SendEventError", f"events[{i}] {problem}")
        events.append(event if data == event.data_json else OutgoingEvent(event.name, data))
    if all(a is b for a, b in zip(events, op.events, strict=True)):
        return op
    return dataclasses.replace(op, events=tuple(events))


def checked(op: Opcode, max_output_bytes: int, max_event_bytes: int,
            target_step: str = "", max_error_bytes: int = DEFAULT_MAX_ERROR_BYTES) -> Opcode:
    """`op` with its JSON in canonical form and its error cut to `max_error_bytes` per field,
    or the non-retriable failure that says what is wrong with it. Events an opcode sends are
    held to the ingest's rules here, so none is refused after the commit.
    `target_step` is set for a planned step's job (parallel steps, on either transport),
    which runs its one step: a step.run, a send, or a sleep, wait or invoke that parks the job
    (server/state/lua/sleep.lua). It cannot plan steps (the script would refuse it, leaving
    the job to expire and come back), nor park for another step."""
    if target_step and (isinstance(op, StepsPlanned) or (
            isinstance(op, Sleep | WaitForEvent | InvokeFunction) and op.step_id != target_step)):
        kind = type(op).__name__
        return StepFailed(StepId(target_step), target_step, ErrorInfo(
            "UnexpectedInParallelStep", f"the job of parallel step {target_step!r} answered "
            f"{kind}" + ("" if isinstance(op, StepsPlanned) else f" for step {op.step_id!r}")
            + ": a step run in parallel answers for itself and cannot plan steps"),
            non_retriable=True)
    if isinstance(op, StepCompleted):
        output, problem = _canonical(op.output_json or b"null", max_output_bytes, "output")
        if problem:
            return _failed_step(op, "OutputError", problem)
        return op if output == op.output_json else StepCompleted(op.step_id, op.name, output)
    if isinstance(op, RunCompleted):
        output, problem = _canonical(op.output_json or b"null", max_output_bytes, "output")
        if problem:
            return RunFailed(ErrorInfo("OutputError", problem), non_retriable=True)
        return op if output == op.output_json else RunCompleted(output)
    if isinstance(op, StepFailed | RunFailed):
        error = _cut_error(op.error, max_error_bytes)
        return op if error is op.error else dataclasses.replace(op, error=error)
    if isinstance(op, InvokeFunction):
        data, problem = _canonical(op.data_json or b"{}", max_event_bytes, "data", obj=True)
        if problem:
            return _failed_step(op, "InvokeError", problem)
        return op if data == op.data_json else dataclasses.replace(op, data_json=data)
    if isinstance(op, SendEvents):
        return _sent(op, max_event_bytes)
    if isinstance(op, WaitForEvent) and op.if_expression:
        # The cost budget of every CEL `if`, whichever transport carried the wait: one over it
        # would otherwise be refused only when an event came, and the wait would time out.
        try:
            compile_expression("if", op.if_expression)
        except InvalidArgument as e:
            return _failed_step(op, "ExpressionError", e.message)
    return op


def ended_step(job: Job) -> Opcode | None:
    """What a leased planned step's job answers without a driver when its step is already
    memoised: a sleep, wait or invoke of a parallel group parks its job, memoised as null,
    until its time (a match ends it earlier, server/state/lua/resume_wait.lua); then this
    answer ends the job like a completed step, with the answer the job keeps for that time
    (step_completed.lua: null, or an invoke's timeout error) and the prelude's advance. None
    for any other job."""
    memo_json = job.steps.get(job.target_step) if job.target_step else None
    if memo_json is None:
        return None
    step_id = StepId(job.target_step)
    try:
        memo = json.loads(memo_json)
    except ValueError:
        memo = None
    if isinstance(memo, dict) and isinstance(memo.get("error"), dict):
        error = memo["error"]
        return StepFailed(step_id, job.target_step, ErrorInfo(
            str(error.get("name") or "Error"), str(error.get("message") or ""),
            str(error.get("stack") or "")), non_retriable=True)
    data = memo.get("data") if isinstance(memo, dict) else None
    return StepCompleted(step_id, job.target_step,
                         json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode())
