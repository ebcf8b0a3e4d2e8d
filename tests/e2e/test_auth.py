"""gRPC bearer tokens: without a valid one every call is UNAUTHENTICATED; with one it works."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator

import grpc
import pytest
from plait import App, Context, Step, TriggerEvent, Worker
from plait_proto.v1 import (
    event_pb2,
    event_pb2_grpc,
    management_pb2,
    queue_pb2,
    queue_pb2_grpc,
    run_pb2,
)

from server.config import Settings
from tests.e2e.conftest import running_server
from tests.e2e.harness import eventually


async def test_grpc_calls_need_a_valid_token_when_tokens_are_set(settings: Settings) -> None:
    # "other" is an admin token: management calls need one, and it is a worker token too.
    secured = dataclasses.replace(settings, grpc_tokens="s3cret", admin_tokens="other")
    async with running_server(secured) as plait:
        channel = plait.client.channel
        events = event_pb2_grpc.EventServiceStub(channel)
        for metadata in [(), (("authorization", "Bearer wrong"),), (("authorization", "s3cret"),)]:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await events.SendEvents(event_pb2.SendEventsRequest(
                    events=[event_pb2.EventInput(name="x")]), metadata=metadata)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await plait.client.management.ListApps(management_pb2.ListAppsRequest())
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED

        async def register() -> AsyncIterator[queue_pb2.ConnectRequest]:
            yield queue_pb2.ConnectRequest(register=queue_pb2.Register(app_id="a"))
            await asyncio.sleep(10)

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in queue_pb2_grpc.QueueServiceStub(channel).Connect(register()):
                pass
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED

        good = (("authorization", "Bearer other"),)
        app = App("authed")

        @app.function("f", trigger=TriggerEvent("authed/go"))
        async def f(ctx: Context, step: Step) -> str:
            return await step.run("s", lambda: "ok")

        worker = Worker(app, server=plait.client.target, token="s3cret", shutdown_grace_s=1)
        task = asyncio.create_task(worker.arun())
        try:
            async def listed() -> bool:
                reply = await plait.client.management.ListFunctions(
                    management_pb2.ListFunctionsRequest(), metadata=good)
                return any(fn.id == "authed-f" for fn in reply.functions)

            await eventually(listed, bool, 20, "registration")
            reply = await events.SendEvents(event_pb2.SendEventsRequest(
                events=[event_pb2.EventInput(name="authed/go")]), metadata=good)
            async def event() -> management_pb2.GetEventResponse:
                return await plait.client.management.GetEvent(
                    management_pb2.GetEventRequest(event_id=reply.ids[0]), metadata=good)

            got = await eventually(
                event,
                lambda e: bool(e.runs) and e.runs[0].status == run_pb2.RUN_STATUS_COMPLETED,
                20, "the run")
            assert json.loads(got.runs[0].output_json) == "ok"
        finally:
            await worker.stop()
            await task
