"""Acceptance of the durable core, on the embedded backend and on Redis + PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from plait import App, Context, NonRetriableError, Step, TriggerEvent
from plait_proto.v1 import event_pb2, management_pb2, run_pb2

from tests.e2e.conftest import Running, running_worker
from tests.e2e.harness import eventually

COMPLETED = run_pb2.RUN_STATUS_COMPLETED
FAILED = run_pb2.RUN_STATUS_FAILED


def _steps(run: run_pb2.Run) -> list[tuple[str, int, int]]:
    return [(s.step_id, s.attempt, s.status) for s in run.steps]


async def test_a_flaky_three_step_function_completes_with_each_body_run_once(
    plait: Running,
) -> None:
    app = App("core")
    bodies: dict[str, int] = {"one": 0, "two": 0, "three": 0}

    def one(x: int) -> int:
        bodies["one"] += 1
        return x + 1

    async def two(x: int) -> int:
        bodies["two"] += 1
        if bodies["two"] <= 2:
            raise RuntimeError(f"flaky attempt {bodies['two']}")
        return x * 10

    @app.function("three-steps", trigger=TriggerEvent("core/start"), retries=3)
    async def three_steps(ctx: Context, step: Step) -> dict[str, Any]:
        a = await step.run("one", one, ctx.event.data["x"])
        b = await step.run("two", two, a)
        c = await step.run("three", lambda: b + 5)
        bodies["three"] += 1
        return {"result": c}

    async with running_worker(app, plait.client):
        event_id = await plait.client.send("core/start", {"x": 1})
        run = await plait.client.finished_run_of(event_id)

    assert run.status == COMPLETED
    assert json.loads(run.output_json) == {"result": 25}
    assert bodies == {"one": 1, "two": 3, "three": 1}
    step_rows = await eventually(
        lambda: plait.client.run(run.id), lambda r: len(r.steps) >= 5, what="step history")
    done, failed = run_pb2.STEP_STATUS_COMPLETED, run_pb2.STEP_STATUS_FAILED
    assert sorted(_steps(step_rows)) == sorted([
        ("one", 0, done), ("two", 0, failed), ("two", 1, failed), ("two", 2, done),
        ("three", 0, done),
    ])
    flaky = [s for s in step_rows.steps if s.step_id == "two" and s.status == failed]
    assert "flaky attempt" in flaky[0].error.message

    # The run's trace, rebuilt from history, is served with the run: one trace, a root first.
    traced = await plait.client.management.GetRun(management_pb2.GetRunRequest(run_id=run.id))
    root, *rest = traced.spans
    assert root.kind == "run" and root.parent_span_id == "" and root.end_ms > 0
    assert {s.trace_id for s in traced.spans} == {root.trace_id}
    attempts = [s for s in rest if s.kind == "step"]
    assert all(s.parent_span_id == root.span_id for s in attempts)
    assert [s.status for s in attempts if s.attributes.get("plait.step.id") == "two"] == [
        "error", "error", "ok"]


async def test_a_non_retriable_error_fails_the_run_without_retry(plait: Running) -> None:
    app = App("core")
    calls = 0

    def refuse() -> None:
        nonlocal calls
        calls += 1
        raise NonRetriableError("card declined")

    @app.function("charge", trigger=TriggerEvent("core/charge"), retries=5)
    async def charge(ctx: Context, step: Step) -> None:
        await step.run("charge", refuse)

    async with running_worker(app, plait.client):
        run = await plait.client.finished_run_of(await plait.client.send("core/charge"))

    assert run.status == FAILED
    assert calls == 1
    assert "card declined" in run.error.message


async def test_a_sleep_completes_after_its_duration_without_holding_a_worker_slot(
    plait: Running,
) -> None:
    app = App("core")

    @app.function("sleeper", trigger=TriggerEvent("core/sleep"))
    async def sleeper(ctx: Context, step: Step) -> str:
        # Long enough that the other run finishes first even on a loaded machine.
        await step.sleep("nap", 3)
        return "rested"

    @app.function("quick", trigger=TriggerEvent("core/quick"))
    async def quick(ctx: Context, step: Step) -> str:
        return await step.run("q", lambda: "done")

    async with running_worker(app, plait.client, max_jobs=1):
        sleeping = await plait.client.send("core/sleep")
        await eventually(lambda: plait.client.runs_of_event(sleeping),
                         lambda rs: len(rs) == 1 and rs[0].status == run_pb2.RUN_STATUS_RUNNING,
                         what="the sleeper to start")
        quick_run = await plait.client.finished_run_of(await plait.client.send("core/quick"))
        slept = await plait.client.finished_run_of(sleeping)

    assert slept.status == COMPLETED and json.loads(slept.output_json) == "rested"
    assert slept.ended_at_ms - slept.started_at_ms >= 3000
    # The only slot ran another function while the sleeper slept.
    assert quick_run.status == COMPLETED and quick_run.ended_at_ms < slept.ended_at_ms


async def test_a_flooded_function_does_not_starve_another(plait: Running) -> None:
    app = App("fair")
    order: list[str] = []

    @app.function("flood", trigger=TriggerEvent("fair/flood"))
    async def flood(ctx: Context, step: Step) -> None:
        order.append("flood")

    @app.function("small", trigger=TriggerEvent("fair/small"))
    async def small(ctx: Context, step: Step) -> None:
        order.append("small")

    async with running_worker(app, plait.client, max_jobs=20):
        await plait.client.send_many("fair/flood", [{"i": i} for i in range(1000)])
        small_ids = await plait.client.send_many("fair/small", [{"i": i} for i in range(10)])
        for event_id in small_ids:
            await plait.client.finished_run_of(event_id, timeout_s=60)
        await eventually(lambda: _count(order), lambda n: n == 1010, 60, "every run")

    last_small = max(i for i, name in enumerate(order) if name == "small")
    assert order.count("small") == 10
    assert last_small < 500, f"the small function waited behind {last_small} flood runs"


async def _count(order: list[str]) -> int:
    return len(order)


async def test_event_ids_come_back_in_order_and_events_are_stored(plait: Running) -> None:
    ids = await plait.client.send_many("core/many", [{"i": i} for i in range(20)])
    assert len(ids) == 20 and len(set(ids)) == 20
    assert ids == sorted(ids)  # ULIDs minted in request order
    started = time.monotonic()
    for event_id in (ids[0], ids[-1]):
        reply = await plait.client.management.GetEvent(
            management_pb2.GetEventRequest(event_id=event_id))
        assert reply.event.name == "core/many"
    assert time.monotonic() - started < 60
    await asyncio.sleep(0)


async def test_a_cancelled_sleeping_run_never_resumes(plait: Running) -> None:
    app = App("core")
    woke: list[str] = []

    @app.function("long-nap", trigger=TriggerEvent("core/nap"))
    async def long_nap(ctx: Context, step: Step) -> None:
        await step.sleep("nap", 60)
        woke.append(ctx.run_id)

    async with running_worker(app, plait.client):
        event_id = await plait.client.send("core/nap")
        (run,) = await eventually(
            lambda: plait.client.runs_of_event(event_id),
            lambda rs: len(rs) == 1 and rs[0].status == run_pb2.RUN_STATUS_RUNNING,
            what="the nap to start")
        await eventually(lambda: plait.client.run(run.id), lambda r: len(r.steps) == 1,
                         what="the sleep to be recorded")
        reply = await plait.client.management.CancelRun(
            management_pb2.CancelRunRequest(run_id=run.id))
        assert reply.status == run_pb2.RUN_STATUS_CANCELLED
        cancelled = await plait.client.finished_run_of(event_id)
    assert cancelled.status == run_pb2.RUN_STATUS_CANCELLED
    assert woke == []


async def test_bulk_events_stream_in_and_start_runs(plait: Running) -> None:
    app = App("core")
    seen: list[int] = []

    @app.function("count", trigger=TriggerEvent("core/bulk"))
    async def count(ctx: Context, step: Step) -> None:
        seen.append(ctx.event.data["i"])

    async def messages() -> AsyncIterator[event_pb2.StreamEventsRequest]:
        for chunk in range(3):
            yield event_pb2.StreamEventsRequest(events=[
                event_pb2.EventInput(name="core/bulk",
                                     data_json=json.dumps({"i": chunk * 10 + i}).encode())
                for i in range(10)])

    async with running_worker(app, plait.client):
        reply = await plait.client.events.StreamEvents(messages())
        assert len(reply.ids) == 30
        await eventually(lambda: _count_ints(seen), lambda n: n == 30, what="30 runs")
    assert sorted(seen) == list(range(30))


async def _count_ints(seen: list[int]) -> int:
    return len(seen)
