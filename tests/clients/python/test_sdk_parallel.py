"""Parallel steps: new steps reached at once are planned by a main job and each runs in a
job of its own (`target_step`), then the function sees all their results."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fake_queue_server import eventually
from plait import App, Context, Step, SyncStep, TriggerEvent
from plait._execute import execute
from plait._messages import (
    InvokeFunction,
    Job,
    RunCompleted,
    RunFailed,
    Sleep,
    StepCompleted,
    StepFailed,
    StepsPlanned,
    WaitForEvent,
)

TRIGGER = TriggerEvent("test/run")


def data(value: Any) -> bytes:
    return json.dumps({"data": value}).encode()


def job(steps: dict[str, bytes] | None = None, target: str = "", function: str = "f") -> Job:
    return Job(
        job_id="job-1", lease_id="lease-1", run_id="run-1", function_id=f"app-{function}",
        function_slug=function, event_id="evt-1", event_name="test/run",
        steps=steps or {}, target_step=target,
    )


def output(opcode: object) -> Any:
    assert isinstance(opcode, StepCompleted | RunCompleted), opcode
    return json.loads(opcode.output_json)


def same(value: int) -> int:
    return value


def gather_app(ran: list[str], names: tuple[str, ...] = ("a", "b")) -> App:
    app = App("app")

    async def body(name: str) -> str:
        ran.append(name)
        await asyncio.sleep(0)
        return name.upper()

    @app.function("f", trigger=TRIGGER)
    async def f(ctx: Context, step: Step) -> dict[str, Any]:
        results = await asyncio.gather(*(step.run(n, body, n) for n in names))
        last = await step.run("last", body, "last")
        return {"parallel": list(results), "last": last}

    return app


async def test_a_main_job_plans_two_new_steps_reached_at_once_and_runs_neither() -> None:
    ran: list[str] = []

    opcode = await execute(gather_app(ran), job())

    assert opcode == StepsPlanned(("a", "b"))
    assert ran == []


async def test_three_new_steps_are_planned_in_call_order() -> None:
    ran: list[str] = []

    opcode = await execute(gather_app(ran, ("c", "a", "b")), job())

    assert opcode == StepsPlanned(("c", "a", "b"))
    assert ran == []


async def test_a_planned_steps_job_runs_exactly_its_target() -> None:
    ran: list[str] = []
    app = gather_app(ran, ("a", "b", "c"))

    b = await execute(app, job(target="b"))
    c = await execute(app, job({"a": data("A")}, target="c"))

    assert b == StepCompleted("b", "b", b'"B"')
    assert c == StepCompleted("c", "c", b'"C"')
    assert ran == ["b", "c"]


async def test_the_main_job_goes_on_once_every_planned_step_is_memoised() -> None:
    ran: list[str] = []
    app = gather_app(ran, ("a", "b", "c"))
    memo = {"a": data("A"), "b": data("B"), "c": data("C")}

    last = await execute(app, job(memo))
    done = await execute(app, job({**memo, "last": data("LAST")}))

    assert last == StepCompleted("last", "last", b'"LAST"')
    assert output(done) == {"parallel": ["A", "B", "C"], "last": "LAST"}
    assert ran == ["last"]


async def test_with_one_step_memoised_the_other_new_one_runs_in_the_main_job() -> None:
    ran: list[str] = []

    opcode = await execute(gather_app(ran), job({"a": data("A")}))

    assert opcode == StepCompleted("b", "b", b'"B"')
    assert ran == ["b"]


async def test_a_single_step_is_run_not_planned() -> None:
    ran: list[str] = []
    app = App("app")

    async def body(name: str) -> str:
        ran.append(name)
        return name

    @app.function("seq", trigger=TRIGGER)
    async def seq(ctx: Context, step: Step) -> None:
        await step.run("a", body, "a")
        await step.run("b", body, "b")

    @app.function("alone", trigger=TRIGGER)
    async def alone(ctx: Context, step: Step) -> None:
        await asyncio.gather(step.run("only", body, "only"))

    assert await execute(app, job(function="seq")) == StepCompleted("a", "a", b'"a"')
    assert await execute(app, job(function="alone")) == StepCompleted("only", "only", b'"only"')
    assert ran == ["a", "only"]


async def test_a_sequential_step_does_not_wait_for_siblings() -> None:
    # A step the function awaits itself starts its body at once, without turning the loop.
    app = App("app")
    turns = 0

    async def ticker() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    @app.function("f", trigger=TRIGGER)
    async def f(ctx: Context, step: Step) -> None:
        tick = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        before = turns

        async def body() -> int:
            return turns - before

        try:
            await step.run("a", body)
        finally:
            tick.cancel()

    opcode = await execute(app, job())

    assert opcode == StepCompleted("a", "a", b"0")


async def test_a_task_group_of_new_steps_is_planned_and_its_targets_run() -> None:
    app = App("app")
    ran: list[str] = []

    async def body(name: str) -> str:
        ran.append(name)
        return name

    @app.function("f", trigger=TRIGGER)
    async def f(ctx: Context, step: Step) -> list[str]:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(step.run(n, body, n)) for n in ("x", "y")]
        return [t.result() for t in tasks]

    planned = await execute(app, job())
    y = await execute(app, job(target="y"))
    done = await execute(app, job({"x": data("x"), "y": data("y")}))

    assert planned == StepsPlanned(("x", "y"))
    assert y == StepCompleted("y", "y", b'"y"')
    assert output(done) == ["x", "y"]
    assert ran == ["y"]


async def test_chains_in_parallel_plan_the_next_new_step_of_each() -> None:
    app = App("app")
    ran: list[str] = []

    def body(name: str) -> str:
        ran.append(name)
        return name

    async def chain(step: Step, prefix: str) -> str:
        first = await step.run(f"{prefix}1", body, f"{prefix}1")
        return first + await step.run(f"{prefix}2", body, f"{prefix}2")

    @app.function("f", trigger=TRIGGER)
    async def f(ctx: Context, step: Step) -> list[str]:
        return list(await asyncio.gather(chain(step, "x"), chain(step, "y")))

    first = await execute(app, job())
    second = await execute(app, job({"x1": data("x1"), "y1": data("y1")}))

    assert first == StepsPlanned(("x1", "y1"))
    assert second == StepsPlanned(("x2", "y2"))
    assert ran == []


async def test_repeated_ids_in_parallel_are_planned_with_their_suffixes() -> None:
    app = App("app")

    @app.function("f", trigger=TRIGGER)
    async def f(ctx: Context, step: Step) -> list[int]:
        return list(await asyncio.gather(*(step.run("item", same, i) for i in range(3))))

    planned = await execute(app, job())
    second = await execute(app, job(target="item:1"))

    assert planned == StepsPlanned(("item", "item:1", "item:2"))
    assert second == StepCompleted("item:1", "item", b"1")


async def test_at_most_100_steps_are_planned_per_job() -> None:
    app = App("app")

    @app.function("f", trigger=TRIGGER)
    async def f(ctx: Context, step: Step) -> list[int]:
        return list(await asyncio.gather(*(step.run(f"s{i}", same, i) for i in range(120))))

    first = await execute(app, job())
    second = await execute(app, job({f"s{i}": data(i) for i in range(100)}))

    assert first == StepsPlanned(tuple(f"s{i}" for i in range(100)))
    assert second == StepsPlanned(tuple(f"s{i}" for i in range(100, 120)))


async def test_sleeps_waits_and_invokes_among_new_steps_are_planned_too() -> None:
    app = App("app")
    ran: list[str] = []

    async def body() -> str:
        ran.append("a")
        return "a"

    @app.function("f", trigger=TRIGGER)
    async def f(ctx: Context, step: Step) -> list[Any]:
        a, _, event, child = await asyncio.gather(
            step.run("a", body), step.sleep("nap", 5),
            step.wait_for_event("w", event="test/go", timeout=60),
            step.invoke("i", function="app-child", data={"n": 1}))
        return [a, event is not None, child]

    planned = await execute(app, job())
    run_a = await execute(app, job(target="a"))
    nap = await execute(app, job(target="nap"))
    wait = await execute(app, job(target="w"))
    invoke = await execute(app, job(target="i"))
    done = await execute(app, job({"a": data("a"), "nap": data(None),
                                   "w": data({"name": "test/go"}), "i": data(7)}))

    assert planned == StepsPlanned(("a", "nap", "w", "i"))
    assert run_a == StepCompleted("a", "a", b'"a"')
    assert isinstance(nap, Sleep) and nap.step_id == "nap"
    assert isinstance(wait, WaitForEvent) and wait.step_id == "w" and wait.event == "test/go"
    assert isinstance(invoke, InvokeFunction) and invoke.step_id == "i"
    assert isinstance(done, RunCompleted) and json.loads(done.output_json) == ["a", True, 7]
    assert ran == ["a"]


async def test_a_failing_target_answers_its_failure() -> None:
    app = App("app")

    def broken() -> None:
        raise ValueError("no stock")

    @app.function("f", trigger=TRIGGER)
    async def f(ctx: Context, step: Step) -> None:
        await asyncio.gather(step.run("ok", lambda: 1), step.run("bad", broken))

    opcode = await execute(app, job(target="bad"))

    assert isinstance(opcode, StepFailed)
    assert (opcode.step_id, opcode.error.name, opcode.error.message) == (
        "bad", "ValueError", "no stock")


async def test_a_target_not_reachable_without_another_new_step_runs_that_step() -> None:
    # The function no longer reaches the target first (its code changed): the new step in
    # the way runs, as in a main job, and the server then runs the main job again.
    ran: list[str] = []
    app = App("app")

    def body(name: str) -> str:
        ran.append(name)
        return name

    @app.function("f", trigger=TRIGGER)
    async def f(ctx: Context, step: Step) -> None:
        await step.run("a", body, "a")
        await step.run("b", body, "b")

    opcode = await execute(app, job(target="b"))

    assert opcode == StepCompleted("a", "a", b'"a"')
    assert ran == ["a"]


async def test_a_sync_function_honours_its_target() -> None:
    app = App("app")
    ran: list[str] = []

    def body(name: str) -> str:
        ran.append(name)
        return name

    @app.function("f", trigger=TRIGGER)
    def f(ctx: Context, step: SyncStep) -> list[str]:
        return [step.run("a", body, "a"), step.run("b", body, "b")]

    opcode = await execute(app, job({"a": data("a")}, target="b"))

    assert opcode == StepCompleted("b", "b", b'"b"')
    assert ran == ["b"]


async def test_new_steps_left_behind_by_a_failing_function_end_with_the_job() -> None:
    # "a" replays its stored failure, so gather raises while "b" is still gathering siblings:
    # the job answers the run's failure and "b" must not start its body afterwards.
    app = App("app")
    ran: list[str] = []

    @app.function("f", trigger=TRIGGER)
    async def f(ctx: Context, step: Step) -> None:
        await asyncio.gather(step.run("a", ran.append, "a"), step.run("b", ran.append, "b"))

    before = asyncio.all_tasks()
    memo = {"a": json.dumps({"error": {"name": "E", "message": "m"}}).encode()}
    opcode = await execute(app, job(memo))
    await eventually(lambda: not asyncio.all_tasks() - before, "the left-behind step to end")

    assert isinstance(opcode, RunFailed) and opcode.error.name == "E"
    assert ran == []
