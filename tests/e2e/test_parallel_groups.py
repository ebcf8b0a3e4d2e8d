"""Parallel groups that hold sleeps, waits and invokes on the gRPC worker SDK: every branch of
an `asyncio.gather` is planned, each parks or runs in a job of its own, and the function goes
on when the whole group is done; on the embedded backend and on Redis + PostgreSQL.

Race mode (resume at the first branch to end): `step.race(...)` plans the group with the
worker protocol's StepsPlanned `race` flag (the Inngest SDK path: tests/compat/
test_sdk_parallel.py)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

from plait import App, Context, Step, TriggerEvent
from plait_proto.v1 import run_pb2

from tests.e2e.conftest import Running, running_worker
from tests.e2e.harness import eventually

COMPLETED = run_pb2.RUN_STATUS_COMPLETED


def _recorded(*step_ids: str) -> Any:
    # A wait's step record is written by the same script that registers the wait.
    def check(run: run_pb2.Run) -> bool:
        return {s.step_id for s in run.steps} >= set(step_ids)
    return check


async def test_a_run_waits_for_two_events_at_once_and_goes_on_with_both(plait: Running) -> None:
    app = App("pg-waits")
    after: Counter[str] = Counter()

    @app.function("pair", trigger=TriggerEvent("pg-waits/start"), retries=0)
    async def pair(ctx: Context, step: Step) -> dict[str, Any]:
        left, right = await asyncio.gather(
            step.wait_for_event("left", event="pg-waits/left", timeout=60,
                                if_exp="async.data.k == event.data.k"),
            step.wait_for_event("right", event="pg-waits/right", timeout=60,
                                if_exp="async.data.k == event.data.k"))
        after["after"] += 1
        return {"left": left and left.data, "right": right and right.data}

    async with running_worker(app, plait.client):
        event_id = await plait.client.send("pg-waits/start", {"k": 1})
        (run,) = await eventually(lambda: plait.client.runs_of_event(event_id), len,
                                  what="the run")
        await eventually(lambda: plait.client.run(run.id), _recorded("left", "right"),
                         what="both waits")
        await plait.client.send("pg-waits/right", {"k": 1, "side": "r"})
        await plait.client.send("pg-waits/left", {"k": 1, "side": "l"})
        done = await plait.client.finished_run_of(event_id, timeout_s=30)

    assert done.status == COMPLETED, done.error
    assert json.loads(done.output_json) == {"left": {"k": 1, "side": "l"},
                                            "right": {"k": 1, "side": "r"}}
    assert after == {"after": 1}


async def test_a_sleep_and_a_step_run_in_parallel(plait: Running) -> None:
    app = App("pg-sleep")
    ran: Counter[str] = Counter()

    def work() -> str:
        ran["work"] += 1
        return "worked"

    @app.function("nap", trigger=TriggerEvent("pg-sleep/start"), retries=0)
    async def nap(ctx: Context, step: Step) -> list[Any]:
        results = await asyncio.gather(step.sleep("nap", 0.3), step.run("work", work))
        ran["after"] += 1
        return list(results)

    async with running_worker(app, plait.client):
        event_id = await plait.client.send("pg-sleep/start", {})
        done = await plait.client.finished_run_of(event_id, timeout_s=30)

    assert done.status == COMPLETED, done.error
    assert json.loads(done.output_json) == [None, "worked"]
    assert ran == {"work": 1, "after": 1}


async def test_two_invokes_at_once(plait: Running) -> None:
    app = App("pg-inv")
    ran: Counter[str] = Counter()

    @app.function("double", trigger=TriggerEvent("pg-inv/double"), retries=0)
    async def double(ctx: Context, step: Step) -> int:
        ran["child"] += 1
        return int(ctx.event.data["n"]) * 2

    @app.function("parent", trigger=TriggerEvent("pg-inv/parent"), retries=0)
    async def parent(ctx: Context, step: Step) -> list[Any]:
        results = await asyncio.gather(
            step.invoke("one", function=double, data={"n": 1}, timeout=60),
            step.invoke("two", function=double, data={"n": 2}, timeout=60))
        ran["after"] += 1
        return list(results)

    async with running_worker(app, plait.client):
        event_id = await plait.client.send("pg-inv/parent", {})
        done = await plait.client.finished_run_of(event_id, timeout_s=30)

    assert done.status == COMPLETED, done.error
    assert json.loads(done.output_json) == [2, 4]
    assert ran == {"child": 2, "after": 1}


async def test_a_race_of_a_wait_against_a_long_sleep_ends_when_the_event_comes(
    plait: Running,
) -> None:
    app = App("pg-race")
    after: Counter[str] = Counter()

    @app.function("race", trigger=TriggerEvent("pg-race/start"), retries=0)
    async def race(ctx: Context, step: Step) -> dict[str, Any]:
        got, slept = await step.race(
            step.wait_for_event("answer", event="pg-race/answer", timeout=3600,
                                if_exp="async.data.k == event.data.k"),
            step.sleep("nap", 3600))
        after["after"] += 1
        return {"answer": got and got.data, "slept": slept}

    async with running_worker(app, plait.client):
        event_id = await plait.client.send("pg-race/start", {"k": 7})
        (run,) = await eventually(lambda: plait.client.runs_of_event(event_id), len,
                                  what="the run")
        await eventually(lambda: plait.client.run(run.id), _recorded("answer", "nap"),
                         what="the wait and the sleep")
        await plait.client.send("pg-race/answer", {"k": 7})
        # Without the race the run would go on only after the hour's sleep.
        done = await plait.client.finished_run_of(event_id, timeout_s=30)

    assert done.status == COMPLETED, done.error
    assert json.loads(done.output_json) == {"answer": {"k": 7}, "slept": None}
    assert after == {"after": 1}
