"""Every waiting run says why (issue 12 item 5): the run hash's `why`, written by flow
control's scripts (set by hand here), in GetRun, ListRuns, GetEvent and the REST run; on
SQLite and PostgreSQL, with real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest
from plait_proto.v1 import management_pb2 as pb
from plait_proto.v1 import management_pb2_grpc, run_pb2, state_pb2, state_pb2_grpc
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.routing import Route

from server.api.inngest.rest import RestRoutes
from server.api.management import ManagementServicer
from server.api.state_service import StateServicer
from server.api.waiting import WHY_FIELD, WaitingReasons
from server.config import Settings
from server.history import store
from server.history.models import RUNS
from server.keys import Keys
from server.state import StateStore
from server.types import (
    AppId,
    AppRegistration,
    Event,
    EventId,
    EventTrigger,
    FunctionConfig,
    FunctionId,
    RunId,
    RunStatus,
)

KEYS = Keys(shards=3)  # the run's key is found through its shard
EVENT = "01J00000000000000000000009"
WHY = 'concurrency limit on key "acme"'


def ulid(n: int) -> str:
    return f"01J{n:023d}"


QUEUED, HELD_NOT, DONE, SKIPPED = ulid(1), ulid(2), ulid(3), ulid(4)


async def _cancel(run_id: RunId) -> RunStatus:
    return RunStatus.CANCELLED


async def _seed(engine: AsyncEngine, redis: Redis) -> None:
    fn = FunctionConfig(FunctionId("shop-f"), AppId("shop"), "f", "f",
                        (EventTrigger("shop/e"),), 3)
    await store.upsert_app(engine, AppRegistration(AppId("shop"), (fn,)), 1)
    await store.insert_events(engine, [Event(EventId(EVENT), "shop/e", b"{}", 1)], 1)
    rows = [(QUEUED, "queued"), (HELD_NOT, "queued"), (DONE, "completed"),
            (SKIPPED, "skipped")]
    async with engine.begin() as conn:
        await conn.execute(RUNS.insert(), [
            {"id": run_id, "function_id": "shop-f", "app_id": "shop", "event_id": EVENT,
             "status": status, "created_at_ms": n, "started_at_ms": None,
             "ended_at_ms": None if status == "queued" else n + 1, "output_json": None,
             "error_json": ('{"name":"FlowControlSkipped","message":"rate limited",'
                            '"stack":""}' if status == "skipped" else None)}
            for n, (run_id, status) in enumerate(rows, 1)])
    for run_id in (QUEUED, DONE):  # a stale `why` of an ended run is not shown
        await redis.hset(KEYS.for_run(run_id).run(run_id), WHY_FIELD, WHY)
    await redis.hset(KEYS.for_run(HELD_NOT).run(HELD_NOT), "status", "queued")


@pytest.fixture
async def stub(engine: AsyncEngine, redis: Redis) -> AsyncIterator[Any]:
    await _seed(engine, redis)
    server = grpc.aio.server()
    management_pb2_grpc.add_ManagementServiceServicer_to_server(
        ManagementServicer(engine, _cancel, None, WaitingReasons(redis, KEYS)), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield management_pb2_grpc.ManagementServiceStub(channel)  # type: ignore[misc]
    finally:
        await channel.close()
        await server.stop(None)


async def test_get_run_says_what_holds_a_queued_run(stub: Any) -> None:
    run = (await stub.GetRun(pb.GetRunRequest(run_id=QUEUED))).run
    assert run.status == run_pb2.RUN_STATUS_QUEUED
    assert run.waiting_reason == WHY
    assert (await stub.GetRun(pb.GetRunRequest(run_id=HELD_NOT))).run.waiting_reason == ""


async def test_list_runs_and_get_event_carry_each_runs_reason(stub: Any) -> None:
    runs = (await stub.ListRuns(pb.ListRunsRequest())).runs
    assert {r.id: r.waiting_reason for r in runs} == {
        QUEUED: WHY, HELD_NOT: "", DONE: "", SKIPPED: ""}
    event_runs = (await stub.GetEvent(pb.GetEventRequest(event_id=EVENT))).runs
    assert {r.id: r.waiting_reason for r in event_runs}[QUEUED] == WHY


async def test_a_skipped_run_is_listed_as_skipped_with_its_reason(stub: Any) -> None:
    run = (await stub.GetRun(pb.GetRunRequest(run_id=SKIPPED))).run
    assert run.status == run_pb2.RUN_STATUS_SKIPPED
    assert (run.error.name, run.error.message) == ("FlowControlSkipped", "rate limited")
    skipped = await stub.ListRuns(pb.ListRunsRequest(status=run_pb2.RUN_STATUS_SKIPPED))
    assert [r.id for r in skipped.runs] == [SKIPPED]


async def test_runs_are_still_shown_without_reasons_when_redis_does_not_answer(
    engine: AsyncEngine, redis: Redis,
) -> None:
    await _seed(engine, redis)
    gone = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    try:
        servicer = ManagementServicer(engine, _cancel, None, WaitingReasons(gone, KEYS))
        runs = await servicer._runs_to_pb(await store.list_runs(engine, None, None, 10, None))
    finally:
        await gone.aclose()
    assert {r.id for r in runs} == {QUEUED, HELD_NOT, DONE, SKIPPED}
    assert {r.waiting_reason for r in runs} == {""}


async def test_the_rest_run_and_an_events_runs_carry_the_reason(
    engine: AsyncEngine, redis: Redis,
) -> None:
    await _seed(engine, redis)
    rest = RestRoutes(engine, None, _cancel, None, WaitingReasons(redis, KEYS))  # type: ignore[arg-type]
    app = Starlette(routes=[Route("/v1/runs/{run_id}", rest.get_run),
                            Route("/v1/events/{event_id}/runs", rest.event_runs)])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://test") as client:
        run = (await client.get(f"/v1/runs/{QUEUED}")).json()["data"]
        assert (run["status"], run["waiting_reason"]) == ("Scheduled", WHY)
        skipped = (await client.get(f"/v1/runs/{SKIPPED}")).json()["data"]
        assert (skipped["status"], skipped["waiting_reason"]) == ("Skipped", None)
        runs = (await client.get(f"/v1/events/{EVENT}/runs")).json()["data"]
        assert {r["run_id"]: r["waiting_reason"] for r in runs} == {
            QUEUED: WHY, HELD_NOT: None, DONE: None, SKIPPED: None}


async def test_the_live_state_of_a_skipped_run_reads_as_skipped(redis: Redis) -> None:
    run_id = ulid(7)
    await redis.hset(KEYS.for_run(run_id).run(run_id), mapping={
        "status": "skipped", "fn": "shop-f",
        "event": '{"id":"e","name":"shop/e","data":{},"ts":1}',
        "error": '{"name":"FlowControlSkipped","message":"rate limited","stack":""}'})
    server = grpc.aio.server()
    state_pb2_grpc.add_StateServiceServicer_to_server(
        StateServicer(StateStore(redis, KEYS, Settings())), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        stub: Any = state_pb2_grpc.StateServiceStub(channel)  # type: ignore[misc]
        reply = await stub.GetRunState(state_pb2.GetRunStateRequest(run_id=run_id))
    finally:
        await channel.close()
        await server.stop(None)
    assert reply.status == run_pb2.RUN_STATUS_SKIPPED
