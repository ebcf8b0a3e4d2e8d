"""server/executor/opcodes.py: what a worker answers is held to the limits before any commit
(pure logic)."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from server.executor.opcodes import checked, cut
from server.types import (
    ErrorInfo,
    InvokeFunction,
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


def test_a_planned_steps_job_cannot_plan_nor_park_for_another_step() -> None:
    for op in (StepsPlanned((StepId("a"), StepId("b"))),
               WaitForEvent(StepId("w"), "w", "a/b", "", 1),
               InvokeFunction(StepId("i"), "i", "app-f", b"{}"),
               Sleep(StepId("s"), "s", 1)):
        failure = _failure(checked(op, OUT, EVENT, target_step="h"))
        assert (failure.step_id, failure.error.name) == ("h", "UnexpectedInParallelStep")
        assert checked(op, OUT, EVENT) is op


def test_a_planned_steps_job_may_sleep_wait_or_invoke_for_its_own_step() -> None:
    for op in (WaitForEvent(StepId("h"), "h", "a/b", "", 1),
               InvokeFunction(StepId("h"), "h", "app-f", b"{}"),
               Sleep(StepId("h"), "h", 1)):
        assert checked(op, OUT, EVENT, target_step="h") is op


BIG = 1 << 20


def test_a_step_output_is_stored_in_canonical_form() -> None:
    op = checked(StepCompleted(StepId("s"), "s", b' { "a" : [1, "\\u00e9"] } '), BIG, BIG)
    assert op == StepCompleted(StepId("s"), "s", '{"a":[1,"é"]}'.encode())
    same = StepCompleted(StepId("s"), "s", b'{"a":1}')
    assert checked(same, BIG, BIG) is same


def test_a_nan_or_overflowing_output_fails_the_step_naming_the_rule() -> None:
    for output in (b'{"x":NaN}', b"[Infinity]", b'{"x":1e999}'):
        failure = _failure(checked(StepCompleted(StepId("s"), "s", output), BIG, BIG))
        assert failure.error.name == "OutputError" and "finite" in failure.error.message
    run = checked(RunCompleted(b"-1e999"), BIG, BIG)
    assert isinstance(run, RunFailed) and run.non_retriable and "finite" in run.error.message


def test_a_deep_output_fails_the_step_instead_of_raising_recursion_error() -> None:
    for levels in (65, 1000, 100_000):
        deep = b"[" * levels + b"]" * levels
        failure = _failure(checked(StepCompleted(StepId("s"), "s", deep), BIG, BIG))
        assert "nests deeper than 64" in failure.error.message
        run = checked(RunCompleted(deep), BIG, BIG)
        assert isinstance(run, RunFailed) and "nests deeper" in run.error.message


def test_an_output_with_a_bom_or_an_unsafe_integer_fails_the_step() -> None:
    bom = _failure(checked(StepCompleted(StepId("s"), "s", b"\xef\xbb\xbf{}"), BIG, BIG))
    assert "byte order mark" in bom.error.message
    big = _failure(checked(StepCompleted(StepId("s"), "s", b"[%d]" % 2**60), BIG, BIG))
    assert "beyond" in big.error.message


def test_invoke_and_sent_event_data_are_canonical_objects() -> None:
    op = checked(InvokeFunction(StepId("i"), "i", "app-f", b'{ "a" : 1 }'), BIG, BIG)
    assert isinstance(op, InvokeFunction) and op.data_json == b'{"a":1}'
    deep = b'{"a":' * 70 + b"1" + b"}" * 70
    assert "nests deeper" in _failure(checked(
        InvokeFunction(StepId("i"), "i", "app-f", deep), BIG, BIG)).error.message
    assert "object" in _failure(checked(
        InvokeFunction(StepId("i"), "i", "app-f", b"[1]"), BIG, BIG)).error.message
    sent = checked(SendEvents(StepId("s"), "s", (OutgoingEvent("a/b", b'{ }'),)), BIG, BIG)
    assert isinstance(sent, SendEvents) and sent.events[0].data_json == b"{}"
    bad = SendEvents(StepId("s"), "s", (OutgoingEvent("a/b", b"{}"),
                                        OutgoingEvent("a/c", b'{"x":NaN}')))
    assert _failure(checked(bad, BIG, BIG)).error.message.startswith("events[1] data NaN")


def test_a_step_cannot_send_plaits_internal_events() -> None:
    forged = SendEvents(StepId("s"), "s", (OutgoingEvent("inngest/function.finished",
                                                          b'{"correlation_id":"x"}'),))
    failure = _failure(checked(forged, BIG, BIG))
    assert failure.error.name == "SendEventError" and "inngest/" in failure.error.message


def test_step_and_run_errors_are_cut_to_the_error_limit_on_a_character_boundary() -> None:
    huge = ErrorInfo("E" * 5000, "é" * 100_000, "😀" * 100_000)
    step = checked(StepFailed(StepId("s"), "s", huge, retry_after_ms=5), BIG, BIG,
                   max_error_bytes=1000)
    run = checked(RunFailed(huge, non_retriable=True), BIG, BIG, max_error_bytes=1000)
    assert isinstance(step, StepFailed) and isinstance(run, RunFailed)
    assert step.retry_after_ms == 5 and run.non_retriable
    for error in (step.error, run.error):
        for text in (error.name, error.message, error.stack):
            assert len(text.encode()) <= 1000 and text.endswith("…")
    small = StepFailed(StepId("s"), "s", ErrorInfo("E", "m", "st"))
    assert checked(small, BIG, BIG, max_error_bytes=1000) is small


@given(st.text(max_size=300), st.integers(1, 400))
def test_a_cut_text_fits_the_limit_and_is_a_prefix(text: str, limit: int) -> None:
    out = cut(text, limit)
    assert len(out.encode()) <= limit
    assert out == text or text.startswith(out.removesuffix("…"))


@given(st.binary(max_size=200) | st.text(alphabet='[]{}"\\,:1eN.-', max_size=200).map(str.encode))
def test_any_output_bytes_become_a_canonical_output_or_a_final_step_failure(raw: bytes) -> None:
    op = checked(StepCompleted(StepId("s"), "s", raw), BIG, BIG)
    if isinstance(op, StepCompleted):
        assert json.dumps(json.loads(op.output_json), separators=(",", ":"),
                          ensure_ascii=False).encode() == op.output_json
    else:
        assert _failure(op).error.name == "OutputError"


def test_a_wait_whose_if_is_over_the_cel_budget_fails_its_step_from_either_transport() -> None:
    nested = "[1].all(a, [2].all(b, [3].all(c, [4].exists(d, d == async.data.n))))"
    failure = _failure(checked(WaitForEvent(StepId("w"), "w", "order.paid", nested, 10),
                               OUT, EVENT))
    assert failure.error.name == "ExpressionError"
    assert failure.error.message.startswith("if: ")
    fine = WaitForEvent(StepId("w"), "w", "order.paid", "event.data.id == async.data.id", 10)
    assert checked(fine, OUT, EVENT) is fine
