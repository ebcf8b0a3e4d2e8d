"""Parallel steps on the gRPC worker SDK: steps reached at once (asyncio.gather) are planned,
each runs once in a job of its own, at the same time, and the function then sees every
result; on the embedded backend and on Redis + PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

from plait import App, Context, Step, TriggerEvent
from plait_proto.v1 import run_pb2

from tests.e2e.conftest import Running, running_worker

COMPLETED = run_pb2.RUN_STATUS_COMPLETED
STEP_COMPLETED = run_pb2.STEP_STATUS_COMPLETED
# How long a step body waits for its siblings to start: only steps run as planned jobs at the
# same time all get there; steps run one job after another would fail the run instead.
SIBLINGS_TIMEOUT_S = 15


async def test_steps_gathered_run_once_each_in_parallel_then_the_function_goes_on(
    plait: Running,
) -> None:
    app = App("par")
    ran: Counter[str] = Counter()
    started: set[str] = set()
    all_started = asyncio.Event()

    async def body(name: str) -> str:
        ran[name] += 1
        started.add(name)
        if started >= {"a", "b", "c"}:
            all_started.set()
        await asyncio.wait_for(all_started.wait(), SIBLINGS_TIMEOUT_S)
        return name.upper()

    def final(results: list[str]) -> str:
        ran["final"] += 1
        return "+".join(results)

    @app.function("fan", trigger=TriggerEvent("par/fan"), retries=0)
    async def fan(ctx: Context, step: Step) -> dict[str, object]:
        results = await asyncio.gather(
            step.run("a", body, "a"), step.run("b", body, "b"), step.run("c", body, "c"))
        joined = await step.run("final", final, list(results))
        return {"parallel": list(results), "final": joined}

    async with running_worker(app, plait.client):
        event_id = await plait.client.send("par/fan", {})
        done = await plait.client.finished_run_of(event_id, timeout_s=30)

    assert done.status == COMPLETED, done.error
    assert json.loads(done.output_json) == {"parallel": ["A", "B", "C"], "final": "A+B+C"}
    assert ran == {"a": 1, "b": 1, "c": 1, "final": 1}
    completed = Counter(s.step_id for s in done.steps if s.status == STEP_COMPLETED)
    assert completed == {"a": 1, "b": 1, "c": 1, "final": 1}


async def test_a_parallel_step_that_fails_once_is_retried_alone(plait: Running) -> None:
    app = App("par-retry")
    ran: Counter[str] = Counter()

    def steady() -> str:
        ran["steady"] += 1
        return "steady"

    def flaky() -> str:
        ran["flaky"] += 1
        if ran["flaky"] == 1:
            raise RuntimeError("first attempt fails")
        return "flaky"

    @app.function("fan", trigger=TriggerEvent("par-retry/fan"), retries=2)
    async def fan(ctx: Context, step: Step) -> list[str]:
        return list(await asyncio.gather(step.run("steady", steady), step.run("flaky", flaky)))

    async with running_worker(app, plait.client):
        event_id = await plait.client.send("par-retry/fan", {})
        done = await plait.client.finished_run_of(event_id, timeout_s=30)

    assert done.status == COMPLETED, done.error
    assert json.loads(done.output_json) == ["steady", "flaky"]
    assert ran == {"steady": 1, "flaky": 2}
    assert [(s.step_id, s.attempt, s.status) for s in done.steps if s.step_id == "flaky"] == [
        ("flaky", 0, run_pb2.STEP_STATUS_FAILED), ("flaky", 1, STEP_COMPLETED)]
