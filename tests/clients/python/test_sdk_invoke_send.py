"""`step.invoke`, `step.send_event` and `cancel_on=`: their opcodes, their memos on replay,
what goes over the wire, and the checks of their arguments."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from fake_queue_server import FakeServer
from plait import (
    App,
    CancelOn,
    Context,
    SendEvent,
    Step,
    StepError,
    SyncStep,
    TriggerEvent,
    Worker,
)
from plait._convert import function_to_pb, job_from_pb, request_to_pb
from plait._execute import execute
from plait._messages import (
    EventInput,
    InvokeFunction,
    Job,
    JobResult,
    Results,
    RunCompleted,
    RunFailed,
    SendEvents,
    StepsPlanned,
)
from plait_proto.v1 import event_pb2, queue_pb2

TRIGGER = TriggerEvent("test/run")


def data(value: Any) -> bytes:
    return json.dumps({"data": value}).encode()


def failure(name: str, message: str) -> bytes:
    return json.dumps({"error": {"name": name, "message": message, "stack": "tb"}}).encode()


def job(function: str = "f", steps: dict[str, bytes] | None = None, target: str = "") -> Job:
    return Job("job-1", "lease-1", "run-1", f"app-{function}", function, steps=steps or {},
               target_step=target)


def output(opcode: object) -> Any:
    assert isinstance(opcode, RunCompleted), opcode
    return json.loads(opcode.output_json)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# step.invoke


async def test_invoke_by_global_id_answers_the_invoke_opcode() -> None:
    app = App("app")

    @app.function("f", trigger=TRIGGER)
    async def f(ctx: Context, step: Step) -> Any:
        return await step.invoke("charge", function="billing-charge", data={"amount": 3})

    assert await execute(app, job()) == InvokeFunction(
        "charge", "charge", "billing-charge", b'{"amount":3}', 0)


async def test_invoke_takes_a_declared_function_and_a_timeout() -> None:
    billing = App("billing")

    @billing.function("charge", trigger=TriggerEvent("billing/charge"))
    async def charge(ctx: Context, step: Step) -> None:
        pass

    app = App("app")

    @app.function("f", trigger=TRIGGER)
    async def f(ctx: Context, step: Step) -> Any:
        await step.invoke("one", function=charge, timeout=timedelta(minutes=1))
        return await step.invoke("two", function=charge, timeout=2.5)

    before = now_ms()
    first = await execute(app, job())
    second = await execute(app, job(steps={"one": data(None)}))
    after = now_ms()

    assert isinstance(first, InvokeFunction) and isinstance(second, InvokeFunction)
    assert (first.function_id, first.data_json) == ("billing-charge", b"{}")
    assert before + 60_000 <= first.timeout_until_ms <= after + 60_000
    assert before + 2_500 <= second.timeout_until_ms <= after + 2_500


async def test_a_memoised_invoke_returns_the_childs_output() -> None:
    app = App("app")

    @app.function("f", trigger=TRIGGER)
    async def f(ctx: Context, step: Step) -> Any:
        got = await step.invoke("charge", function="billing-charge")
        return {"got": got}

    opcode = await execute(app, job(steps={"charge": data({"receipt": 7})}))

    assert output(opcode) == {"got": {"receipt": 7}}


async def test_a_memoised_invoke_error_raises_step_error() -> None:
    app = App("app")

    @app.function("f", trigger=TRIGGER)
    async def f(ctx: Context, step: Step) -> str:
        try:
            await step.invoke("charge", function="billing-charge")
        except StepError as exc:
            return f"{exc.name}: {exc.message}"
        return "charged"

    @app.function("g", trigger=TRIGGER)
    async def g(ctx: Context, step: Step) -> None:
        await step.invoke("charge", function="billing-charge")

    memo = {"charge": failure("InvokeTimeoutError", "timed out")}
    caught = await execute(app, job(steps=memo))
    uncaught = await execute(app, job("g", steps=memo))

    assert output(caught) == "InvokeTimeoutError: timed out"
    assert isinstance(uncaught, RunFailed) and uncaught.non_retriable
    assert (uncaught.error.name, uncaught.error.message) == ("InvokeTimeoutError", "timed out")


async def test_sync_invoke_answers_and_replays() -> None:
    app = App("app")

    @app.function("f", trigger=TRIGGER)
    def f(ctx: Context, step: SyncStep) -> Any:
        return step.invoke("charge", function="billing-charge", data={"n": 1}, timeout=1)

    first = await execute(app, job())
    done = await execute(app, job(steps={"charge": data([1, 2])}))

    assert isinstance(first, InvokeFunction)
    assert (first.function_id, first.data_json) == ("billing-charge", b'{"n":1}')
    assert first.timeout_until_ms > 0
    assert output(done) == [1, 2]


async def test_an_invoke_among_parallel_steps_is_planned_and_its_job_invokes() -> None:
    app = App("app")

    @app.function("f", trigger=TRIGGER)
    async def f(ctx: Context, step: Step) -> None:
        await asyncio.gather(step.invoke("call", function="x-y"), step.run("a", lambda: 1))

    assert await execute(app, job()) == StepsPlanned(("call", "a"))
    opcode = await execute(app, job(target="call"))

    assert isinstance(opcode, InvokeFunction) and opcode.step_id == "call"


# step.send_event


async def test_send_event_answers_the_send_opcode_with_one_or_many_events() -> None:
    app = App("app")

    @app.function("f", trigger=TRIGGER)
    async def f(ctx: Context, step: Step) -> list[list[str]]:
        one = await step.send_event("one", SendEvent("shop/paid", {"order": 1}))
        many = await step.send_event("many", [SendEvent("shop/a"), SendEvent("shop/b", {"x": 2})])
        return [one, many]

    first = await execute(app, job())
    second = await execute(app, job(steps={"one": data({"ids": ["e1"]})}))
    done = await execute(app, job(steps={
        "one": data({"ids": ["e1"]}), "many": data({"ids": ["e2", "e3"]})}))

    assert first == SendEvents("one", "one", (EventInput("shop/paid", b'{"order":1}'),))
    assert second == SendEvents(
        "many", "many", (EventInput("shop/a", b"{}"), EventInput("shop/b", b'{"x":2}')))
    assert output(done) == [["e1"], ["e2", "e3"]]


async def test_sync_send_event_answers_and_replays() -> None:
    app = App("app")

    @app.function("f", trigger=TRIGGER)
    def f(ctx: Context, step: SyncStep) -> list[str]:
        return step.send_event("notify", SendEvent("shop/notify"))

    first = await execute(app, job())
    done = await execute(app, job(steps={"notify": data({"ids": ["e9"]})}))

    assert first == SendEvents("notify", "notify", (EventInput("shop/notify", b"{}"),))
    assert output(done) == ["e9"]


# cancel_on


def test_cancel_on_is_sent_in_the_function_definition() -> None:
    app = App("shop")

    @app.function("pay", trigger=TriggerEvent("shop/pay"), cancel_on=[
        CancelOn("shop/cancelled", if_exp="event.data.id == async.data.id", timeout=90),
        CancelOn("shop/closed", timeout=timedelta(milliseconds=1500)),
        CancelOn("shop/all"),
    ])
    async def pay(ctx: Context, step: Step) -> None:
        pass

    @app.function("single", trigger=TriggerEvent("shop/x"), cancel_on=CancelOn("shop/stop"))
    async def single(ctx: Context, step: Step) -> None:
        pass

    pay_pb, single_pb = (function_to_pb(s) for s in app._specs())

    assert [(c.event, c.if_expression, c.timeout_ms) for c in pay_pb.cancel_on] == [
        ("shop/cancelled", "event.data.id == async.data.id", 90_000),
        ("shop/closed", "", 1_500),
        ("shop/all", "", 0),
    ]
    assert [c.event for c in single_pb.cancel_on] == ["shop/stop"]


@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    fake = FakeServer()
    await fake.start()
    yield fake
    await fake.stop()


async def test_the_worker_registers_cancel_on_and_runs_a_planned_steps_job(
    server: FakeServer,
) -> None:
    app = App("app")

    @app.function("f", trigger=TRIGGER, cancel_on=[CancelOn("app/stop", "async.data.x == 1")])
    async def f(ctx: Context, step: Step) -> list[int]:
        return list(await asyncio.gather(step.run("a", lambda: 1), step.run("b", lambda: 2)))

    worker = Worker(app, server.address, shutdown_grace_s=1)
    task = asyncio.create_task(worker.arun())
    try:
        conn = await server.connection()
        register = await conn.register()
        planned_job = queue_pb2.Job(
            job_id="run-1", lease_id="l1", run_id="run-1", function_id="app-f",
            function_slug="f", event=event_pb2.Event(id="e", name="test/run", data_json=b"{}"))
        target_job = queue_pb2.Job(
            job_id="run-1:b", lease_id="l2", run_id="run-1", function_id="app-f",
            function_slug="f", event=event_pb2.Event(id="e", name="test/run", data_json=b"{}"),
            target_step="b")
        conn.send(jobs=queue_pb2.Jobs(jobs=[planned_job]))
        [planned] = await conn.results(1)
        conn.send(jobs=queue_pb2.Jobs(jobs=[target_job]))
        [ran] = await conn.results(1)
    finally:
        async with asyncio.timeout(10):
            await worker.stop()
            await task

    [cancel] = register.functions[0].cancel_on
    assert (cancel.event, cancel.if_expression, cancel.timeout_ms) == (
        "app/stop", "async.data.x == 1", 0)
    assert list(planned.opcodes[0].steps_planned.step_ids) == ["a", "b"]
    assert (ran.job_id, ran.opcodes[0].step_completed.step_id) == ("run-1:b", "b")
    assert ran.opcodes[0].step_completed.output_json == b"2"


def test_the_new_opcodes_and_target_step_convert_to_and_from_protobuf() -> None:
    results = Results((
        JobResult("j1", "l1", InvokeFunction("s", "n", "a-f", b'{"x":1}', 123)),
        JobResult("j2", "l2", SendEvents("s", "n", (EventInput("e", b"{}"),))),
        JobResult("j3", "l3", StepsPlanned(("a", "b"))),
    ))

    invoke, send, planned = request_to_pb(results).results.results

    i = invoke.opcodes[0].invoke
    assert (i.step_id, i.name, i.function_id, i.data_json, i.timeout_until_ms) == (
        "s", "n", "a-f", b'{"x":1}', 123)
    assert [(e.name, e.data_json) for e in send.opcodes[0].send_events.events] == [("e", b"{}")]
    assert list(planned.opcodes[0].steps_planned.step_ids) == ["a", "b"]
    assert job_from_pb(queue_pb2.Job(job_id="j", target_step="b")).target_step == "b"


# Argument checks


def _app_calling(call: Any) -> App:
    app = App("app")

    @app.function("f", trigger=TRIGGER)
    async def f(ctx: Context, step: Step) -> None:
        await call(step)

    return app


async def _not_declared(ctx: Context, step: Step) -> None:
    pass


@pytest.mark.parametrize(("call", "message"), [
    (lambda s: s.invoke("i", function=""), "step.invoke function has value ''"),
    (lambda s: s.invoke("i", function=_not_declared), "step.invoke function has value <function"),
    (lambda s: s.invoke("i", function=42), "step.invoke function has value 42"),
    (lambda s: s.invoke("i", function="a-b", data=[1]), r"step.invoke data has value \[1\]"),
    (lambda s: s.invoke("i", function="a-b", data={"x": object()}),
     "step.invoke data is not JSON-serialisable"),
    (lambda s: s.invoke("i", function="a-b", timeout=0), "step.invoke timeout has value 0"),
    (lambda s: s.invoke("i", function="a-b", timeout="1s"), "step.invoke timeout has value '1s'"),
    (lambda s: s.invoke("i", function="a-b", timeout=timedelta(0)),
     "step.invoke timeout has value"),
    (lambda s: s.invoke("i", function="a-b", timeout=float("inf")),
     "step.invoke timeout has value inf"),
    (lambda s: s.send_event("s", []), "step.send_event events has 0 events"),
    (lambda s: s.send_event("s", [SendEvent("e")] * 101), "step.send_event events has 101"),
    (lambda s: s.send_event("s", "shop/paid"), "step.send_event events has value 'shop/paid'"),
    (lambda s: s.send_event("s", [SendEvent("e"), {"name": "e"}]),
     r"step.send_event events\[1\] has value"),
    (lambda s: s.send_event("s", SendEvent("e", {"x": float("nan")})),
     r"step.send_event events\[0\].data is not JSON-serialisable"),
])
async def test_bad_arguments_fail_the_run_naming_the_argument(call: Any, message: str) -> None:
    opcode = await execute(_app_calling(call), job())

    assert isinstance(opcode, RunFailed), opcode
    assert re.search(message, opcode.error.message), opcode.error.message


async def test_a_function_declared_twice_must_be_invoked_by_id() -> None:
    app = App("app")

    async def shared(ctx: Context, step: Step) -> None:
        pass

    app.function("one", trigger=TRIGGER)(shared)
    app.function("two", trigger=TRIGGER)(shared)
    invoker = _app_calling(lambda s: s.invoke("i", function=shared))

    opcode = await execute(invoker, job())

    assert isinstance(opcode, RunFailed)
    assert "declared as several functions (app-one, app-two)" in opcode.error.message


def test_bad_declarations_are_refused_naming_the_argument() -> None:
    app = App("app")

    with pytest.raises(ValueError, match="SendEvent name has value ''"):
        SendEvent("")
    with pytest.raises(TypeError, match=r"SendEvent data has value \[1\]"):
        SendEvent("e", [1])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="CancelOn event has value ''"):
        CancelOn("")
    with pytest.raises(TypeError, match="CancelOn if_exp has value 3"):
        CancelOn("e", 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="CancelOn timeout has value -1"):
        CancelOn("e", timeout=-1)
    with pytest.raises(ValueError, match="CancelOn timeout has value"):
        CancelOn("e", timeout=timedelta(0))
    with pytest.raises(ValueError, match="CancelOn timeout has value nan"):
        CancelOn("e", timeout=float("nan"))
    with pytest.raises(ValueError, match="function 'f' cancel_on has 11 entries"):
        app.function("f", trigger=TRIGGER, cancel_on=[CancelOn("e")] * 11)
    with pytest.raises(TypeError, match="function 'f' cancel_on has an item 'e'"):
        app.function("f", trigger=TRIGGER, cancel_on=["e"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="function 'f' cancel_on has value 'e'"):
        app.function("f", trigger=TRIGGER, cancel_on="e")  # type: ignore[arg-type]
