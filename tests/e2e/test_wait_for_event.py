"""Wait for event on the gRPC worker SDK, on the embedded backend and on Redis + PostgreSQL."""

from __future__ import annotations

import json

from plait import App, Context, Step, SyncStep, TriggerEvent
from plait_proto.v1 import run_pb2

from tests.e2e.conftest import Running, running_worker
from tests.e2e.harness import eventually

COMPLETED = run_pb2.RUN_STATUS_COMPLETED


def _waiting(run: run_pb2.Run) -> bool:
    # The wait's step record is written by the same script that registers the wait.
    return any(s.step_id == "paid" for s in run.steps)


async def test_a_wait_is_resumed_by_a_later_matching_event(plait: Running) -> None:
    app = App("wfe")

    @app.function("order", trigger=TriggerEvent("wfe/order"))
    async def order(ctx: Context, step: Step) -> dict[str, object]:
        paid = await step.wait_for_event(
            "paid", event="wfe/paid", timeout=60, if_exp="async.data.order == event.data.order")
        return {"paid": None if paid is None else {"name": paid.name, "data": paid.data}}

    async with running_worker(app, plait.client):
        event_id = await plait.client.send("wfe/order", {"order": 7})
        (run,) = await eventually(lambda: plait.client.runs_of_event(event_id), len,
                                  what="the run")
        await eventually(lambda: plait.client.run(run.id), _waiting, what="the wait")
        await plait.client.send("wfe/paid", {"order": 8})  # another order's: no match
        await plait.client.send("wfe/paid", {"order": 7, "amount": 3})
        done = await plait.client.finished_run_of(event_id)

    assert done.status == COMPLETED
    assert json.loads(done.output_json) == {
        "paid": {"name": "wfe/paid", "data": {"order": 7, "amount": 3}}}


async def test_a_wait_times_out_to_none(plait: Running) -> None:
    app = App("wfe-timeout")

    @app.function("order", trigger=TriggerEvent("wfe-timeout/order"))
    def order(ctx: Context, step: SyncStep) -> dict[str, object]:
        paid = step.wait_for_event("paid", event="wfe-timeout/paid", timeout=0.5)
        return {"timed_out": paid is None}

    async with running_worker(app, plait.client):
        event_id = await plait.client.send("wfe-timeout/order", {})
        done = await plait.client.finished_run_of(event_id)

    assert done.status == COMPLETED
    assert json.loads(done.output_json) == {"timed_out": True}
