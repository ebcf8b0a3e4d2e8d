"""server/executor/opcodes.py: what a worker answers is held to the limits before any commit
(pure logic)."""

from __future__ import annotations

from server.executor.opcodes import checked
from server.types import (
    InvokeFunction,
    OutgoingEvent,
    RunCompleted,
    SendEvents,
    StepCompleted,
    StepFailed,
    StepId,
    StepsPlanned,
    WaitForEvent,
)

OUT, EVENT = 100, 50


def _failure(op: object) -> StepFailed:
    assert isinstance(op, StepFailed) and op.non_retriable
    return op


def test_outputs_must_be_json_within_the_limit() -> None:
    assert checked(StepCompleted(StepId("s"), "s", b""), OUT, EVENT) == StepCompleted(
        StepId("s"), "s", b"null")
    assert "not valid JSON" in _failure(
        checked(StepCompleted(StepId("s"), "s", b"{"), OUT, EVENT)).error.message
    assert "over the limit" in _failure(
        checked(StepCompleted(StepId("s"), "s", b'"' + b"x" * OUT + b'"'), OUT, EVENT)
    ).error.message
    assert checked(RunCompleted(b"1"), OUT, EVENT) == RunCompleted(b"1")


def test_an_invoke_payload_is_held_to_the_event_limit() -> None:
    ok = InvokeFunction(StepId("i"), "i", "app-f", b'{"a":1}')
    assert checked(ok, OUT, EVENT) is ok
    big = InvokeFunction(StepId("i"), "i", "app-f", b'{"a":"' + b"x" * EVENT + b'"}')
    failure = _failure(checked(big, OUT, EVENT))
    assert failure.error.name == "InvokeError" and "data is" in failure.error.message


def test_sent_events_are_held_to_the_ingests_limits_naming_the_event() -> None:
    ok = SendEvents(StepId("s"), "s", (OutgoingEvent("a/b", b"{}"),))
    assert checked(ok, OUT, EVENT) is ok
    big = SendEvents(StepId("s"), "s", (OutgoingEvent("a/b", b"{}"),
                                        OutgoingEvent("a/c", b'{"a":"' + b"x" * EVENT + b'"}')))
    assert _failure(checked(big, OUT, EVENT)).error.message.startswith("events[1] data is")
    named = SendEvents(StepId("s"), "s", (OutgoingEvent("n" * 300, b"{}"),))
    assert "name is longer" in _failure(checked(named, OUT, EVENT)).error.message


def test_a_planned_steps_job_cannot_plan_wait_or_invoke() -> None:
    for op in (StepsPlanned((StepId("a"), StepId("b"))),
               WaitForEvent(StepId("w"), "w", "a/b", "", 1),
               InvokeFunction(StepId("i"), "i", "app-f", b"{}")):
        failure = _failure(checked(op, OUT, EVENT, target_step="h"))
        assert (failure.step_id, failure.error.name) == ("h", "UnsupportedInParallelStep")
        assert checked(op, OUT, EVENT) is op
