"""step.invoke on the gRPC worker SDK: another function's run (in another app) answers the
step with its output, its failure, or a timeout; on the embedded backend and on Redis +
PostgreSQL."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import grpc
import pytest
from plait import App, Context, NonRetriableError, Step, StepError, SyncStep, TriggerEvent
from plait_proto.v1 import run_pb2

from tests.e2e.conftest import Running, running_worker

COMPLETED = run_pb2.RUN_STATUS_COMPLETED
FAILED = run_pb2.RUN_STATUS_FAILED


async def test_invoke_returns_the_invoked_functions_output(plait: Running) -> None:
    billing = App("inv-billing")
    seen: list[tuple[str, dict[str, Any]]] = []
    ran: Counter[str] = Counter()

    @billing.function("charge", trigger=TriggerEvent("inv-billing/charge"))
    async def charge(ctx: Context, step: Step) -> dict[str, int]:
        def total() -> int:
            seen.append((ctx.event.name, dict(ctx.event.data)))
            return int(ctx.event.data["amount"]) * 2

        return {"charged": await step.run("total", total)}

    shop = App("inv-shop")

    @shop.function("order", trigger=TriggerEvent("inv-shop/order"))
    async def order(ctx: Context, step: Step) -> dict[str, Any]:
        by_object = await step.invoke("by-object", function=charge, data={"amount": 3})
        by_id = await step.invoke("by-id", function="inv-billing-charge", data={"amount": 5},
                                  timeout=60)
        ran["after"] += 1
        return {"by_object": by_object, "by_id": by_id}

    async with running_worker(billing, plait.client), running_worker(shop, plait.client):
        event_id = await plait.client.send("inv-shop/order", {})
        done = await plait.client.finished_run_of(event_id, timeout_s=30)

    assert done.status == COMPLETED, done.error
    assert json.loads(done.output_json) == {"by_object": {"charged": 6}, "by_id": {"charged": 10}}
    assert ran["after"] == 1
    assert sorted((name, data["amount"]) for name, data in seen) == [
        ("inngest/function.invoked", 3), ("inngest/function.invoked", 5)]


async def test_a_failing_invoked_function_fails_the_invoke_step_with_its_error(
    plait: Running,
) -> None:
    app = App("inv-fail")
    attempts: list[int] = []

    @app.function("child", trigger=TriggerEvent("inv-fail/child"))
    def child(ctx: Context, step: SyncStep) -> None:
        attempts.append(ctx.attempt)
        raise NonRetriableError(f"no stock for {ctx.event.data['sku']}")

    @app.function("parent", trigger=TriggerEvent("inv-fail/parent"))
    async def parent(ctx: Context, step: Step) -> dict[str, str]:
        try:
            await step.invoke("reserve", function=child, data={"sku": "A1"})
        except StepError as exc:
            return {"name": exc.name, "message": exc.message}
        return {"name": "", "message": "the invoke did not fail"}

    @app.function("uncaught", trigger=TriggerEvent("inv-fail/uncaught"))
    async def uncaught(ctx: Context, step: Step) -> None:
        await step.invoke("reserve", function="inv-fail-child", data={"sku": "B2"})

    async with running_worker(app, plait.client):
        event_id = await plait.client.send("inv-fail/parent", {})
        done = await plait.client.finished_run_of(event_id, timeout_s=30)
        failed_id = await plait.client.send("inv-fail/uncaught", {})
        failed = await plait.client.finished_run_of(failed_id, timeout_s=30)

    assert done.status == COMPLETED, done.error
    assert json.loads(done.output_json) == {
        "name": "NonRetriableError", "message": "no stock for A1"}
    assert failed.status == FAILED
    assert (failed.error.name, failed.error.message) == ("NonRetriableError", "no stock for B2")
    assert attempts == [0, 0]


async def test_an_invoke_that_outlives_its_timeout_fails_with_a_timeout_error(
    plait: Running,
) -> None:
    app = App("inv-slow")

    @app.function("child", trigger=TriggerEvent("inv-slow/child"))
    async def child(ctx: Context, step: Step) -> str:
        await step.sleep("long", 60)
        return "too late"

    @app.function("parent", trigger=TriggerEvent("inv-slow/parent"))
    async def parent(ctx: Context, step: Step) -> str:
        try:
            return str(await step.invoke("call", function=child, timeout=0.5))
        except StepError as exc:
            return exc.name

    async with running_worker(app, plait.client):
        event_id = await plait.client.send("inv-slow/parent", {})
        done = await plait.client.finished_run_of(event_id, timeout_s=30)

    assert done.status == COMPLETED, done.error
    assert json.loads(done.output_json) == "InvokeTimeoutError"


async def test_invoking_an_unknown_function_fails_the_step_and_hand_sent_invokes_are_harmless(
    plait: Running,
) -> None:
    app = App("inv-lost")

    @app.function("parent", trigger=TriggerEvent("inv-lost/parent"))
    async def parent(ctx: Context, step: Step) -> list[str]:
        try:
            await step.invoke("call", function="nowhere-fn", timeout=60)
        except StepError as exc:
            return [exc.name, exc.message]
        return []

    async with running_worker(app, plait.client):
        # `inngest/function.invoked` sent by hand is refused at the door (names under
        # inngest/ are Plait's own), and the next event is still served.
        for data in ({"_inngest": "x"}, {"_inngest": {"fn_id": 5}}, {"_inngest": {}}, {}):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await plait.client.send("inngest/function.invoked", data)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "events[0].name" in (refused.value.details() or "")
        event_id = await plait.client.send("inv-lost/parent", {})
        done = await plait.client.finished_run_of(event_id, timeout_s=30)

    assert done.status == COMPLETED, done.error
    name, message = json.loads(done.output_json)
    assert name == "FunctionNotFoundError" and "nowhere-fn" in message
