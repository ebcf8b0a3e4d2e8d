"""Token scopes and registration guards: worker tokens serve and send, admin tokens manage, a
worker token may be limited to apps, no registration wipes an app, /metrics needs a token in
production, and production does not start open without --insecure."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest
from plait import App, Context, Step, TriggerEvent, Worker
from plait_proto.v1 import (
    event_pb2,
    event_pb2_grpc,
    management_pb2,
    management_pb2_grpc,
    queue_pb2,
    queue_pb2_grpc,
    run_pb2,
    state_pb2,
    state_pb2_grpc,
)

from server.app import PlaitServer
from server.config import Mode, Settings
from server.errors import ConfigError
from tests.e2e.conftest import running_server
from tests.e2e.harness import eventually

SIGNING_KEY = "signkey-test-" + "5e" * 16
WORKER = (("authorization", "Bearer worker-1"),)
ONLY_A = (("authorization", "Bearer only-a"),)
ADMIN = (("authorization", "Bearer admin-1"),)


def secured(settings: Settings) -> Settings:
    # Production runs as `plait start` would accept: tokens, an event key, a signing key.
    return dataclasses.replace(settings, insecure=False, signing_key=SIGNING_KEY,
                               grpc_tokens="worker-1, only-a@scoped-a|scoped-x",
                               admin_tokens="admin-1", metrics_token="scrape")


def _app(app_id: str, event: str) -> App:
    app = App(app_id)

    @app.function("f", trigger=TriggerEvent(event))
    async def f(ctx: Context, step: Step) -> str:
        return await step.run("s", lambda: app_id)

    return app


async def _register_raw(channel: grpc.aio.Channel, register: queue_pb2.Register,
                        metadata: Any) -> queue_pb2.ConnectResponse:
    """Sends one Register and returns the first answer (or raises the call's error)."""
    async def requests() -> AsyncIterator[queue_pb2.ConnectRequest]:
        yield queue_pb2.ConnectRequest(register=register)
        await asyncio.Event().wait()  # held open until the call ends

    call = queue_pb2_grpc.QueueServiceStub(channel).Connect(requests(), metadata=metadata)
    try:
        async with asyncio.timeout(20):
            return await call.read()  # type: ignore[no-any-return]
    finally:
        call.cancel()


async def test_a_worker_token_serves_and_sends_but_management_needs_an_admin_token(
    settings: Settings,
) -> None:
    async with running_server(secured(settings)) as plait:
        channel = plait.client.channel
        management = management_pb2_grpc.ManagementServiceStub(channel)
        calls = [management.ListApps(management_pb2.ListAppsRequest(), metadata=WORKER),
                 management.CancelRun(management_pb2.CancelRunRequest(run_id="x"),
                                      metadata=WORKER),
                 management.ListRuns(management_pb2.ListRunsRequest(), metadata=ONLY_A)]
        for pending in calls:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await pending
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "admin token" in (caught.value.details() or "")

        worker = Worker(_app("scoped", "scoped/go"), server=plait.client.target,
                        token="worker-1", shutdown_grace_s=1)
        task = asyncio.create_task(worker.arun())
        try:
            async def listed() -> set[str]:
                reply = await management.ListFunctions(management_pb2.ListFunctionsRequest(),
                                                       metadata=ADMIN)
                return {f.id for f in reply.functions}

            await eventually(listed, lambda ids: "scoped-f" in ids, 20, "registration")
            events = event_pb2_grpc.EventServiceStub(channel)
            sent = await events.SendEvents(event_pb2.SendEventsRequest(
                events=[event_pb2.EventInput(name="scoped/go")]), metadata=WORKER)

            async def runs() -> management_pb2.GetEventResponse:
                return await management.GetEvent(  # type: ignore[no-any-return]
                    management_pb2.GetEventRequest(event_id=sent.ids[0]), metadata=ADMIN)

            got = await eventually(
                runs, lambda e: bool(e.runs) and e.runs[0].status == run_pb2.RUN_STATUS_COMPLETED,
                20, "the run")
            assert json.loads(got.runs[0].output_json) == "scoped"
            state = await state_pb2_grpc.StateServiceStub(channel).GetRunState(
                state_pb2.GetRunStateRequest(run_id=got.runs[0].id), metadata=WORKER)
            assert state.function_id == "scoped-f"
        finally:
            await worker.stop()
            await task


async def test_a_token_limited_to_apps_may_not_register_or_read_another_app(
    settings: Settings,
) -> None:
    async with running_server(secured(settings)) as plait:
        channel = plait.client.channel
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _register_raw(channel, queue_pb2.Register(
                app_id="scoped-b", max_concurrent_jobs=1), ONLY_A)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "register.app_id" in (caught.value.details() or "")
        # The SDK takes the refusal as final rather than retrying forever.
        refused = Worker(_app("scoped-b", "b/go"), server=plait.client.target, token="only-a")
        with pytest.raises(Exception, match="PERMISSION_DENIED"):
            async with asyncio.timeout(20):
                await refused.arun()

        # Its own app runs end to end; another app's run state stays closed to it.
        allowed = Worker(_app("scoped-a", "a/go"), server=plait.client.target, token="only-a",
                         shutdown_grace_s=1)
        # An app whose id starts like the allowed one: the scope is by app, not by prefix.
        other = Worker(_app("scoped-a-other", "o/go"), server=plait.client.target,
                       token="admin-1", shutdown_grace_s=1)
        tasks = [asyncio.create_task(w.arun()) for w in (allowed, other)]
        try:
            management = management_pb2_grpc.ManagementServiceStub(channel)

            async def listed() -> set[str]:
                reply = await management.ListFunctions(management_pb2.ListFunctionsRequest(),
                                                       metadata=ADMIN)
                return {f.id for f in reply.functions}

            await eventually(listed, lambda ids: {"scoped-a-f", "scoped-a-other-f"} <= ids, 20,
                             "registration")
            events = event_pb2_grpc.EventServiceStub(channel)
            sent = await events.SendEvents(event_pb2.SendEventsRequest(events=[
                event_pb2.EventInput(name="a/go"), event_pb2.EventInput(name="o/go")]),
                metadata=ONLY_A)

            async def run_of(event_id: str) -> list[run_pb2.Run]:
                try:
                    reply = await management.GetEvent(
                        management_pb2.GetEventRequest(event_id=event_id), metadata=ADMIN)
                except grpc.aio.AioRpcError as e:
                    if e.code() == grpc.StatusCode.NOT_FOUND:
                        return []
                    raise
                return list(reply.runs)

            done = run_pb2.RUN_STATUS_COMPLETED
            (mine,) = await eventually(lambda: run_of(sent.ids[0]),
                                       lambda rs: bool(rs) and rs[0].status == done, 20, "a/go")
            (theirs,) = await eventually(lambda: run_of(sent.ids[1]),
                                         lambda rs: bool(rs) and rs[0].status == done, 20, "o/go")
            state = state_pb2_grpc.StateServiceStub(channel)
            assert (await state.GetRunState(state_pb2.GetRunStateRequest(run_id=mine.id),
                                            metadata=ONLY_A)).function_id == "scoped-a-f"
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await state.GetRunState(state_pb2.GetRunStateRequest(run_id=theirs.id),
                                        metadata=ONLY_A)
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        finally:
            for w in (allowed, other):
                await w.stop()
            await asyncio.gather(*tasks)


async def test_a_registration_with_no_functions_does_not_wipe_an_app(settings: Settings) -> None:
    async with running_server(settings) as plait:
        worker = Worker(_app("keep", "keep/go"), server=plait.client.target, shutdown_grace_s=1)
        task = asyncio.create_task(worker.arun())
        try:
            async def listed() -> set[str]:
                reply = await plait.client.management.ListFunctions(
                    management_pb2.ListFunctionsRequest())
                return {f.id for f in reply.functions}

            await eventually(listed, lambda ids: "keep-f" in ids, 20, "registration")
        finally:
            await worker.stop()
            await task
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _register_raw(plait.client.channel,
                                queue_pb2.Register(app_id="keep", max_concurrent_jobs=1), ())
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "register.functions" in (caught.value.details() or "")
        assert "keep-f" in await listed()
        # The SDK gives up at once on an app declared without its functions.
        empty = Worker(App("keep"), server=plait.client.target)
        with pytest.raises(Exception, match="FAILED_PRECONDITION"):
            async with asyncio.timeout(20):
                await empty.arun()
        # A new app may still register with nothing (it wipes nothing).
        reply = await _register_raw(plait.client.channel,
                                    queue_pb2.Register(app_id="fresh", max_concurrent_jobs=1), ())
        assert reply.WhichOneof("message") == "registered"


def _inngest_body(app_id: str, functions: list[dict[str, Any]]) -> dict[str, Any]:
    return {"appname": app_id, "deploy_type": "ping", "url": "http://127.0.0.1:9/api",
            "v": "0.1", "sdk": "py:v0.5.19", "framework": "fast_api", "functions": functions}


async def test_an_inngest_registration_with_no_functions_does_not_wipe_an_app(
    settings: Settings,
) -> None:
    fn = {"id": "wipe-hello", "name": "hello", "triggers": [{"event": "wipe/hello"}],
          "steps": {"step": {"id": "step", "name": "step",
                             "runtime": {"type": "http",
                                         "url": "http://127.0.0.1:9/api?fnId=wipe-hello"}}}}
    async with running_server(secured(settings)) as plait:
        headers = ({"Authorization": f"Bearer {SIGNING_KEY}"}
                   if settings.mode is Mode.PRODUCTION else {})
        url = f"http://127.0.0.1:{plait.endpoints.http_port}/fn/register"
        async with httpx.AsyncClient(timeout=30, headers=headers) as http:
            first = await http.post(url, json=_inngest_body("wipe", [fn]))
            assert first.status_code == 200, first.text
            wiped = await http.post(url, json=_inngest_body("wipe", []))
            assert wiped.status_code == 412, wiped.text
            assert wiped.json()["error"].startswith("functions: is empty")
        reply = await plait.client.management.ListFunctions(
            management_pb2.ListFunctionsRequest(), metadata=ADMIN)
        assert "wipe-hello" in {f.id for f in reply.functions}


async def test_metrics_need_the_metrics_or_an_admin_token_in_production(
    settings: Settings,
) -> None:
    async with running_server(secured(settings)) as plait:
        url = f"http://127.0.0.1:{plait.endpoints.http_port}/metrics"
        async with httpx.AsyncClient(timeout=30) as http:
            bare = await http.get(url)
            wrong = await http.get(url, headers={"Authorization": "Bearer worker-1"})
            scrape = await http.get(url, headers={"Authorization": "Bearer scrape"})
            admin = await http.get(url, headers={"Authorization": "Bearer admin-1"})
    if settings.mode is Mode.PRODUCTION:
        assert (bare.status_code, wrong.status_code) == (401, 401)
        assert "authorization" in bare.json()["error"]
    else:  # dev stays open
        assert (bare.status_code, wrong.status_code) == (200, 200)
    assert (scrape.status_code, admin.status_code) == (200, 200)
    assert b"# TYPE" in scrape.content


async def test_production_does_not_start_open_without_insecure(settings: Settings) -> None:
    if settings.mode is not Mode.PRODUCTION:
        pytest.skip("dev mode is open by design")
    server = PlaitServer(dataclasses.replace(settings, insecure=False))
    with pytest.raises(ConfigError, match=r"--grpc-tokens .*--signing-key .*--insecure"):
        await server.start()
    await server.stop(grace_s=1)
