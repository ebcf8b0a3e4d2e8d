"""The worker stream's messages → opcodes and function configs: bad input names its field
(pure logic)."""

from __future__ import annotations

import pytest
from plait_proto.v1 import event_pb2, function_pb2, queue_pb2

from server.drivers.grpc._convert import EventCache, opcode_from_pb, registration_from_pb
from server.errors import InvalidArgument
from server.executor.opcodes import checked
from server.types import (
    CancelOn,
    InvokeFunction,
    OutgoingEvent,
    SendEvents,
    StepFailed,
    StepsPlanned,
)


def test_planned_steps_invoke_and_send_events_convert() -> None:
    planned = opcode_from_pb(queue_pb2.Opcode(
        steps_planned=queue_pb2.StepsPlanned(step_ids=["a", "b"])), "op")
    assert planned == StepsPlanned(("a", "b"))
    race = opcode_from_pb(queue_pb2.Opcode(
        steps_planned=queue_pb2.StepsPlanned(step_ids=["a", "b"], race=True)), "op")
    assert race == StepsPlanned(("a", "b"), race=True)
    invoke = opcode_from_pb(queue_pb2.Opcode(invoke=queue_pb2.InvokeFunction(
        step_id="i", function_id="app-f", data_json=b'{"x":1}', timeout_until_ms=5)), "op")
    assert invoke == InvokeFunction("i", "i", "app-f", b'{"x":1}', 5)
    empty = opcode_from_pb(queue_pb2.Opcode(invoke=queue_pb2.InvokeFunction(
        step_id="i", function_id="app-f")), "op")
    assert isinstance(empty, InvokeFunction) and empty.data_json == b"{}"
    send = opcode_from_pb(queue_pb2.Opcode(send_events=queue_pb2.SendEvents(
        step_id="s", events=[event_pb2.EventInput(name="a/b", data_json=b'{"n":1}')])), "op")
    assert send == SendEvents("s", "s", (OutgoingEvent("a/b", b'{"n":1}'),))


@pytest.mark.parametrize(("op", "field"), [
    (queue_pb2.Opcode(steps_planned=queue_pb2.StepsPlanned(step_ids=["a"])),
     "op.steps_planned.step_ids"),
    (queue_pb2.Opcode(steps_planned=queue_pb2.StepsPlanned(step_ids=["a", "a"])),
     "op.steps_planned.step_ids"),
    (queue_pb2.Opcode(steps_planned=queue_pb2.StepsPlanned(step_ids=["a", ""])),
     "op.steps_planned.step_ids[1]"),
    (queue_pb2.Opcode(invoke=queue_pb2.InvokeFunction(step_id="i")), "op.invoke.function_id"),
    (queue_pb2.Opcode(invoke=queue_pb2.InvokeFunction(
        step_id="i", function_id="f", data_json=b"[1]")), "op.invoke.data_json"),
    (queue_pb2.Opcode(invoke=queue_pb2.InvokeFunction(
        step_id="i", function_id="f", timeout_until_ms=-1)), "op.invoke.timeout_until_ms"),
    (queue_pb2.Opcode(send_events=queue_pb2.SendEvents(step_id="s")), "op.send_events.events"),
    (queue_pb2.Opcode(send_events=queue_pb2.SendEvents(
        step_id="s", events=[event_pb2.EventInput(name="")])), "op.send_events.events[0].name"),
    (queue_pb2.Opcode(send_events=queue_pb2.SendEvents(
        step_id="s", events=[event_pb2.EventInput(name="a", data_json=b"{")])),
     "op.send_events.events[0].data_json"),
])
def test_bad_opcodes_name_their_field(op: queue_pb2.Opcode, field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        opcode_from_pb(op, "op")
    assert caught.value.field == field


def test_cancel_on_is_read_from_the_registration() -> None:
    reg = registration_from_pb(queue_pb2.Register(
        app_id="app", max_concurrent_jobs=1, functions=[function_pb2.FunctionDefinition(
            id="f", triggers=[function_pb2.Trigger(event=function_pb2.EventTrigger(event="a"))],
            cancel_on=[function_pb2.CancelOn(event="c", if_expression="event.x == async.x",
                                             timeout_ms=10)])]), 3)
    assert reg.functions[0].cancel_on == (CancelOn("c", "event.x == async.x", 10),)
    with pytest.raises(InvalidArgument) as caught:
        registration_from_pb(queue_pb2.Register(
            app_id="app", max_concurrent_jobs=1, functions=[function_pb2.FunctionDefinition(
                id="f", cancel_on=[function_pb2.CancelOn(event="c", timeout_ms=-1)])]), 3)
    assert caught.value.field == "functions[0].cancel_on[0].timeout_ms"


DEEP = b"[" * 1000 + b"]" * 1000


@pytest.mark.parametrize(("data", "rule"), [
    (b'{"a":' + DEEP + b"}", "nests deeper"), (b"\xef\xbb\xbf{}", "byte order mark"),
    (b'{"x":NaN}', "finite"), (b'{"x":1e999}', "finite"), (b'{"x":%d}' % 2**60, "beyond"),
])
def test_invoke_and_sent_event_data_breaking_a_json_rule_is_invalid_argument(
    data: bytes, rule: str
) -> None:
    for op, field in (
        (queue_pb2.Opcode(invoke=queue_pb2.InvokeFunction(
            step_id="i", function_id="f", data_json=data)), "op.invoke.data_json"),
        (queue_pb2.Opcode(send_events=queue_pb2.SendEvents(
            step_id="s", events=[event_pb2.EventInput(name="a", data_json=data)])),
         "op.send_events.events[0].data_json"),
    ):
        with pytest.raises(InvalidArgument) as caught:
            opcode_from_pb(op, "op")
        assert caught.value.field == field and rule in caught.value.reason


def test_invoke_data_is_kept_in_canonical_form() -> None:
    invoke = opcode_from_pb(queue_pb2.Opcode(invoke=queue_pb2.InvokeFunction(
        step_id="i", function_id="f", data_json=b' { "x" : 1 } ')), "op")
    assert isinstance(invoke, InvokeFunction) and invoke.data_json == b'{"x":1}'


def test_a_deep_step_output_from_a_worker_is_a_final_step_failure_not_an_exception() -> None:
    op = opcode_from_pb(queue_pb2.Opcode(step_completed=queue_pb2.StepCompleted(
        step_id="s", output_json=DEEP)), "op")
    failed = checked(op, 1 << 20, 1 << 20)
    assert isinstance(failed, StepFailed) and failed.non_retriable
    assert "nests deeper" in failed.error.message


@pytest.mark.parametrize("event_json", [
    b'{"id":"e","name":"a","data":' + DEEP + b"}", b'{"data":{"x":NaN}}', b"[]", b"{",
])
def test_a_stored_event_that_cannot_be_sent_is_a_value_error(event_json: bytes) -> None:
    with pytest.raises(ValueError, match="the job's event"):
        EventCache().get("r", event_json)


def test_a_stored_event_becomes_the_workers_message() -> None:
    event = EventCache().get("r", '{"id":"e","name":"a","data":{"é":1},"ts":7}'.encode())
    assert (event.id, event.name, event.ts_ms) == ("e", "a", 7)
    assert event.data_json == '{"é":1}'.encode()
