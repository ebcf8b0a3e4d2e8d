"""step.send_event on the gRPC worker SDK: the events are sent once, however often the
function replays (a later step fails and is retried), and trigger other functions; on the
embedded backend and on Redis + PostgreSQL."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from plait import App, Context, SendEvent, Step, TriggerEvent
from plait_proto.v1 import management_pb2, run_pb2

from tests.e2e.conftest import Running, running_worker
from tests.e2e.harness import eventually

COMPLETED = run_pb2.RUN_STATUS_COMPLETED


async def test_a_sent_event_triggers_another_function_once_despite_a_later_retry(
    plait: Running,
) -> None:
    app = App("se")
    ran: Counter[str] = Counter()
    notified: list[tuple[str, dict[str, Any]]] = []

    def flaky() -> str:
        ran["flaky"] += 1
        if ran["flaky"] == 1:
            raise RuntimeError("fails once, after the send")
        return "ok"

    @app.function("order", trigger=TriggerEvent("se/order"), retries=2)
    async def order(ctx: Context, step: Step) -> dict[str, Any]:
        ran["replays"] += 1
        ids = await step.send_event(
            "notify", SendEvent("se/notified", {"order": ctx.event.data["order"]}))
        result = await step.run("flaky", flaky)
        return {"ids": ids, "flaky": result}

    @app.function("notified", trigger=TriggerEvent("se/notified"))
    async def on_notified(ctx: Context, step: Step) -> None:
        notified.append((ctx.event.id, dict(ctx.event.data)))

    async with running_worker(app, plait.client):
        event_id = await plait.client.send("se/order", {"order": 7})
        done = await plait.client.finished_run_of(event_id, timeout_s=30)
        assert done.status == COMPLETED, done.error
        (sent_id,) = json.loads(done.output_json)["ids"]
        (handler_run,) = await eventually(
            lambda: plait.client.runs_of_event(sent_id),
            lambda runs: len(runs) == 1 and runs[0].status == COMPLETED,
            what="the run of the sent event")
        # The parent ended after its retry: every event it sent is stored by now.
        sent = await plait.client.management.ListEvents(
            management_pb2.ListEventsRequest(name="se/notified"))

    assert json.loads(done.output_json)["flaky"] == "ok"
    assert ran["flaky"] == 2 and ran["replays"] >= 3  # the function replayed past the send
    assert [e.id for e in sent.events] == [sent_id]
    assert notified == [(sent_id, {"order": 7})]
    assert handler_run.function_id == "se-notified"
