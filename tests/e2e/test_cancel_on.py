"""cancel_on on the gRPC worker SDK: an event whose `if` matches a run cancels it while it
sleeps; a run the `if` does not match goes on; on the embedded backend and on Redis +
PostgreSQL."""

from __future__ import annotations

from plait import App, CancelOn, Context, Step, TriggerEvent
from plait_proto.v1 import run_pb2

from tests.e2e.conftest import Running, running_worker
from tests.e2e.harness import eventually

COMPLETED = run_pb2.RUN_STATUS_COMPLETED
CANCELLED = run_pb2.RUN_STATUS_CANCELLED


def _sleeping(run: run_pb2.Run) -> bool:
    return any(s.step_id == "nap" and s.status == run_pb2.STEP_STATUS_SLEEPING
               for s in run.steps)


async def test_a_matching_cancel_event_cancels_a_sleeping_run_and_others_go_on(
    plait: Running,
) -> None:
    app = App("co")
    woke: list[int] = []

    @app.function("order", trigger=TriggerEvent("co/order"), cancel_on=[
        CancelOn("co/cancelled", if_exp="event.data.id == async.data.id")])
    async def order(ctx: Context, step: Step) -> str:
        await step.sleep("nap", ctx.event.data["nap_s"])
        woke.append(ctx.event.data["id"])
        return "woke"

    async with running_worker(app, plait.client):
        matched = await plait.client.send("co/order", {"id": 1, "nap_s": 60})
        other = await plait.client.send("co/order", {"id": 2, "nap_s": 3})
        runs = {}
        for event_id in (matched, other):
            (run,) = await eventually(lambda e=event_id: plait.client.runs_of_event(e), len,
                                      what="the run")
            runs[event_id] = run.id
            await eventually(lambda r=run.id: plait.client.run(r), _sleeping, what="the nap")
        await plait.client.send("co/cancelled", {"id": 1})
        cancelled = await plait.client.finished_run_of(matched)
        went_on = await plait.client.finished_run_of(other, timeout_s=30)

    assert cancelled.status == CANCELLED
    assert went_on.status == COMPLETED
    assert woke == [2]
