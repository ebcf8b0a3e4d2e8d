"""Start and finish timeouts fail runs, on the embedded backend and on Redis + PostgreSQL."""

from __future__ import annotations

import asyncio
import time

from plait import App, Context, Step, Timeouts, TriggerEvent
from plait_proto.v1 import run_pb2

from tests.e2e.conftest import Running, registered, running_worker
from tests.e2e.harness import eventually

FAILED = run_pb2.RUN_STATUS_FAILED


async def test_a_run_that_waits_longer_than_its_start_timeout_fails(plait: Running) -> None:
    app = App("tstart")
    ran: list[str] = []

    @app.function("late", trigger=TriggerEvent("tstart/go"), timeouts=Timeouts(start_s=1))
    async def late(ctx: Context, step: Step) -> None:
        ran.append(ctx.run_id)

    # Registered, then no worker until the run's start deadline has passed.
    async with running_worker(app, plait.client):
        await registered(plait.client, ["tstart-late"])
    event_id = await plait.client.send("tstart/go", {})
    (run,) = await eventually(lambda: plait.client.runs_of_event(event_id), lambda r: len(r) == 1,
                              what="the run")
    deadline_s = (run.created_at_ms + 1000) / 1000
    await eventually(_now_s, lambda now: now > deadline_s, what="the start deadline")
    async with running_worker(app, plait.client):
        run = await plait.client.finished_run_of(event_id)

    assert run.status == FAILED
    assert run.error.name == "StartTimeoutError"
    assert "start timeout" in run.error.message
    assert ran == []


async def test_a_run_that_takes_longer_than_its_finish_timeout_fails(plait: Running) -> None:
    app = App("tfinish")

    @app.function("slow", trigger=TriggerEvent("tfinish/go"), timeouts=Timeouts(finish_s=1))
    async def slow(ctx: Context, step: Step) -> str:
        await step.run("nap", asyncio.sleep, 3)
        return "done"

    async with running_worker(app, plait.client):
        event_id = await plait.client.send("tfinish/go", {})
        run = await plait.client.finished_run_of(event_id)

    assert run.status == FAILED
    assert run.error.name == "FinishTimeoutError"
    assert "finish timeout" in run.error.message


async def _now_s() -> float:
    return time.time()
