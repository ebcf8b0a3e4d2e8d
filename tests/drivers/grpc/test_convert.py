"""The worker stream's messages → opcodes and function configs: bad input names its field
(pure logic)."""

from __future__ import annotations

import pytest
from plait_proto.v1 import event_pb2, function_pb2, queue_pb2

from server.drivers.grpc._convert import opcode_from_pb, registration_from_pb
from server.errors import InvalidArgument
from server.types import CancelOn, InvokeFunction, OutgoingEvent, SendEvents, StepsPlanned


def test_planned_steps_invoke_and_send_events_convert() -> None:
    planned = opcode_from_pb(queue_pb2.Opcode(
        steps_planned=queue_pb2.StepsPlanned(step_ids=["a", "b"])), "op")
    assert planned == StepsPlanned(("a", "b"))
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
