"""Checks opcodes from any transport before they are applied: sizes and JSON validity.

A bad step output becomes a non-retriable step failure that says why, so a worker bug shows
up in the run's history instead of corrupting its state.
"""

from __future__ import annotations

import json

from server.types import (
    ErrorInfo,
    InvokeFunction,
    Opcode,
    RunCompleted,
    RunFailed,
    SendEvents,
    StepCompleted,
    StepFailed,
    StepId,
    StepsPlanned,
    WaitForEvent,
)


def _problem(payload: bytes, limit: int) -> str:
    if len(payload) > limit:
        return f"output is {len(payload)} bytes, over the limit of {limit}"
    try:
        json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return "output is not valid JSON"
    return ""


MAX_EVENT_NAME_BYTES = 256


def checked(op: Opcode, max_output_bytes: int, max_event_bytes: int,
            target_step: str = "") -> Opcode:
    """`op`, or the non-retriable failure that says what is wrong with it. Events an
    opcode sends are held to the ingest's limits here, so none is refused after the commit.
    `target_step` is set for a planned step's job, which runs one step and cannot plan,
    wait or invoke (the scripts would refuse it, leaving the job to expire and come back)."""
    if target_step and isinstance(op, StepsPlanned | WaitForEvent | InvokeFunction):
        kind = type(op).__name__
        return StepFailed(StepId(target_step), target_step, ErrorInfo(
            "UnsupportedInParallelStep", f"a parallel step's job answered {kind}: a step run in "
            "parallel cannot plan steps, wait for an event or invoke"), non_retriable=True)
    if isinstance(op, StepCompleted):
        problem = _problem(op.output_json or b"null", max_output_bytes)
        if problem:
            return StepFailed(op.step_id, op.name, ErrorInfo("OutputError", problem),
                              non_retriable=True)
        if not op.output_json:
            return StepCompleted(op.step_id, op.name, b"null")
    elif isinstance(op, RunCompleted):
        problem = _problem(op.output_json or b"null", max_output_bytes)
        if problem:
            return RunFailed(ErrorInfo("OutputError", problem), non_retriable=True)
        if not op.output_json:
            return RunCompleted(b"null")
    elif isinstance(op, InvokeFunction):
        problem = _problem(op.data_json or b"{}", max_event_bytes)
        if problem:
            return StepFailed(op.step_id, op.name,
                              ErrorInfo("InvokeError", problem.replace("output", "data", 1)),
                              non_retriable=True)
    elif isinstance(op, SendEvents):
        for i, event in enumerate(op.events):
            problem = _problem(event.data_json or b"{}", max_event_bytes)
            if not problem and len(event.name.encode()) > MAX_EVENT_NAME_BYTES:
                problem = f"name is longer than {MAX_EVENT_NAME_BYTES} bytes"
            if problem:
                return StepFailed(op.step_id, op.name, ErrorInfo(
                    "SendEventError", f"events[{i}] " + problem.replace("output", "data", 1)),
                    non_retriable=True)
    return op
