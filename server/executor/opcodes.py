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
)


def _problem(payload: bytes, limit: int) -> str:
    if len(payload) > limit:
        return f"output is {len(payload)} bytes, over the limit of {limit}"
    try:
        json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return "output is not valid JSON"
    return ""


def checked(op: Opcode, max_output_bytes: int) -> Opcode:
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
        problem = _problem(op.data_json, max_output_bytes)
        if problem:
            return StepFailed(op.step_id, op.name,
                              ErrorInfo("InvokeError", problem.replace("output", "data", 1)),
                              non_retriable=True)
    elif isinstance(op, SendEvents):
        size = sum(len(e.data_json) for e in op.events)
        if size > max_output_bytes:
            return StepFailed(op.step_id, op.name, ErrorInfo(
                "SendEventError", f"events are {size} bytes, over the limit of "
                f"{max_output_bytes}"), non_retriable=True)
    return op
