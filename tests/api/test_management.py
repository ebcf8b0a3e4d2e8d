"""ManagementService over a real grpc.aio server, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from plait_proto.v1 import management_pb2 as pb
from plait_proto.v1 import management_pb2_grpc, run_pb2
from sqlalchemy.ext.asyncio import AsyncEngine

from server.api.management import ManagementServicer
from server.errors import NotFound
from server.history import store
from server.history.db import open_database
from server.history.models import RUNS, STEP_ATTEMPTS
from server.types import (
    AppId,
    AppRegistration,
    CronTrigger,
    Event,
    EventId,
    EventTrigger,
    FunctionConfig,
    FunctionId,
    RunId,
    RunStatus,
)


def ulid(n: int) -> str:
    return f"01J{n:023d}"


class Canceller:
    """Stands in for the run-state cancel: records calls, knows one run."""

    def __init__(self) -> None:
        self.calls: list[RunId] = []

    async def __call__(self, run_id: RunId) -> RunStatus:
        self.calls.append(run_id)
        if run_id != ulid(1):
            raise NotFound(f"run {run_id!r} not found")
        return RunStatus.CANCELLED


@pytest.fixture
def canceller() -> Canceller:
    return Canceller()


@pytest.fixture
async def stub(
    engine: AsyncEngine, canceller: Canceller
) -> AsyncIterator[management_pb2_grpc.ManagementServiceAsyncStub]:
    server = grpc.aio.server()
    management_pb2_grpc.add_ManagementServiceServicer_to_server(
        ManagementServicer(engine, canceller), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield management_pb2_grpc.ManagementServiceStub(channel)  # type: ignore[misc]
    finally:
        await channel.close()
        await server.stop(None)


async def seed(engine: AsyncEngine) -> None:
    charge = FunctionConfig(
        FunctionId("shop-charge"),
        AppId("shop"),
        "charge",
        "Charge",
        (EventTrigger("shop/order", "event.data.total > 0"), CronTrigger("0 * * * *")),
        5,
    )
    await store.upsert_app(
        engine, AppRegistration(AppId("shop"), (charge,), "python", "plait-python", "1.0"), 1_000
    )
    await store.insert_events(
        engine,
        [Event(EventId(ulid(n)), "shop/order", b'{"total": %d}' % n, 10 + n) for n in (1, 2, 3)],
        2_000,
    )
    async with engine.begin() as conn:
        await conn.execute(
            RUNS.insert(),
            [
                {
                    "id": ulid(n),
                    "function_id": "shop-charge",
                    "app_id": "shop",
                    "event_id": ulid(1),
                    "status": status,
                    "created_at_ms": n,
                    "started_at_ms": None,
                    "ended_at_ms": None,
                    "output_json": None,
                    "error_json": None,
                }
                for n, status in [(1, "running"), (2, "queued"), (3, "running")]
            ],
        )
        await conn.execute(
            RUNS.insert().values(
                id=ulid(4),
                function_id="shop-charge",
                app_id="shop",
                event_id=ulid(2),
                status="failed",
                created_at_ms=4,
                started_at_ms=5,
                ended_at_ms=9,
                error_json='{"name": "ValueError", "message": "boom", "stack": "trace"}',
            )
        )
        await conn.execute(
            STEP_ATTEMPTS.insert().values(
                id="0-1-0",
                run_id=ulid(4),
                step_id="s1",
                name="Step 1",
                attempt=0,
                status="failed",
                error_json='{"name": "E", "message": "m"}',
                ended_at_ms=7,
            )
        )
        await conn.execute(
            STEP_ATTEMPTS.insert().values(
                id="0-1-1",
                run_id=ulid(4),
                step_id="s1",
                name="Step 1",
                attempt=1,
                status="completed",
                output_json='{"ok": 1}',
                ended_at_ms=8,
            )
        )


async def test_apps_and_functions_are_listed(stub: Any, engine: AsyncEngine) -> None:
    await seed(engine)
    apps = (await stub.ListApps(pb.ListAppsRequest())).apps
    assert [(a.id, a.language, a.sdk_version, a.function_count, a.updated_at_ms) for a in apps] == [
        ("shop", "python", "1.0", 1, 1_000)
    ]

    got = await stub.GetApp(pb.GetAppRequest(app_id="shop"))
    assert got.app.sdk_name == "plait-python"
    [fn] = got.functions
    assert (fn.id, fn.app_id, fn.updated_at_ms) == ("shop-charge", "shop", 1_000)
    assert (fn.definition.id, fn.definition.name, fn.definition.retries) == ("charge", "Charge", 5)
    assert fn.definition.triggers[0].event.event == "shop/order"
    assert fn.definition.triggers[0].event.expression == "event.data.total > 0"
    assert fn.definition.triggers[1].cron.cron == "0 * * * *"

    assert [f.id for f in (await stub.ListFunctions(pb.ListFunctionsRequest())).functions] == [
        "shop-charge"
    ]
    other = await stub.ListFunctions(pb.ListFunctionsRequest(app_id="other"))
    assert list(other.functions) == []
    one = await stub.GetFunction(pb.GetFunctionRequest(function_id="shop-charge"))
    assert one.function == fn


async def test_events_are_paged_newest_first(stub: Any, engine: AsyncEngine) -> None:
    await seed(engine)
    first = await stub.ListEvents(pb.ListEventsRequest(page_size=2))
    assert [e.id for e in first.events] == [ulid(3), ulid(2)]
    assert first.events[0].data_json == b'{"total": 3}'
    second = await stub.ListEvents(
        pb.ListEventsRequest(page_size=2, page_token=first.next_page_token)
    )
    assert [e.id for e in second.events] == [ulid(1)]
    assert second.next_page_token == ""
    exact = await stub.ListEvents(pb.ListEventsRequest(page_size=3))
    assert exact.next_page_token == ""
    assert list((await stub.ListEvents(pb.ListEventsRequest(name="nope"))).events) == []


async def test_an_event_comes_with_the_runs_it_started(stub: Any, engine: AsyncEngine) -> None:
    await seed(engine)
    got = await stub.GetEvent(pb.GetEventRequest(event_id=ulid(1).lower()))
    assert (got.event.id, got.event.name, got.event.ts_ms) == (ulid(1), "shop/order", 11)
    assert [r.id for r in got.runs] == [ulid(1), ulid(2), ulid(3)]


async def test_runs_are_paged_and_filtered(stub: Any, engine: AsyncEngine) -> None:
    await seed(engine)
    first = await stub.ListRuns(pb.ListRunsRequest(page_size=3))
    assert [r.id for r in first.runs] == [ulid(4), ulid(3), ulid(2)]
    rest = await stub.ListRuns(pb.ListRunsRequest(page_size=3, page_token=first.next_page_token))
    assert [r.id for r in rest.runs] == [ulid(1)]
    running = await stub.ListRuns(
        pb.ListRunsRequest(status=run_pb2.RUN_STATUS_RUNNING, function_id="shop-charge")
    )
    assert [r.id for r in running.runs] == [ulid(3), ulid(1)]
    assert all(r.status == run_pb2.RUN_STATUS_RUNNING for r in running.runs)
    assert list(first.runs[0].steps) == []


async def test_a_run_comes_with_its_step_attempts(stub: Any, engine: AsyncEngine) -> None:
    await seed(engine)
    run = (await stub.GetRun(pb.GetRunRequest(run_id=ulid(4)))).run
    assert run.status == run_pb2.RUN_STATUS_FAILED
    assert (run.created_at_ms, run.started_at_ms, run.ended_at_ms) == (4, 5, 9)
    assert (run.error.name, run.error.message, run.error.stack) == ("ValueError", "boom", "trace")
    assert [(s.attempt, s.status, s.output_json, s.error.message) for s in run.steps] == [
        (0, run_pb2.STEP_STATUS_FAILED, b"", "m"),
        (1, run_pb2.STEP_STATUS_COMPLETED, b'{"ok": 1}', ""),
    ]
    queued = (await stub.GetRun(pb.GetRunRequest(run_id=ulid(2)))).run
    assert (queued.started_at_ms, queued.ended_at_ms, queued.HasField("error")) == (0, 0, False)


async def test_cancel_run_calls_the_injected_cancel(stub: Any, canceller: Canceller) -> None:
    got = await stub.CancelRun(pb.CancelRunRequest(run_id=ulid(1)))
    assert got.status == run_pb2.RUN_STATUS_CANCELLED
    assert canceller.calls == [ulid(1)]
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stub.CancelRun(pb.CancelRunRequest(run_id=ulid(9)))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("rpc", "request_", "message"),
    [
        ("GetRun", pb.GetRunRequest(), "run_id: must be a ULID"),
        ("GetRun", pb.GetRunRequest(run_id="not-a-ulid"), "run_id: must be a ULID"),
        ("GetRun", pb.GetRunRequest(run_id="81J00000000000000000000001"), "run_id: must be a ULID"),
        ("CancelRun", pb.CancelRunRequest(run_id="x"), "run_id: must be a ULID"),
        ("GetEvent", pb.GetEventRequest(event_id="01J0000000000000000000000U"), "event_id"),
        ("GetApp", pb.GetAppRequest(), "app_id: must not be empty"),
        ("GetFunction", pb.GetFunctionRequest(), "function_id: must not be empty"),
        ("ListRuns", pb.ListRunsRequest(page_size=1001), "page_size: must be 0..1000"),
        ("ListRuns", pb.ListRunsRequest(page_size=-1), "page_size"),
        ("ListEvents", pb.ListEventsRequest(page_size=5000), "page_size"),
        ("ListEvents", pb.ListEventsRequest(page_token="garbage"), "page_token"),
        ("ListRuns", pb.ListRunsRequest(status=42), "status: unknown RunStatus value 42"),  # type: ignore[arg-type]
    ],
)
async def test_bad_requests_are_invalid_arguments(
    stub: Any, canceller: Canceller, rpc: str, request_: Any, message: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await getattr(stub, rpc)(request_)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in e.value.details()
    assert canceller.calls == []


@pytest.mark.parametrize(
    ("rpc", "request_", "name"),
    [
        ("GetApp", pb.GetAppRequest(app_id="ghost"), "ghost"),
        ("GetFunction", pb.GetFunctionRequest(function_id="ghost-fn"), "ghost-fn"),
        ("GetEvent", pb.GetEventRequest(event_id=ulid(99)), ulid(99)),
        ("GetRun", pb.GetRunRequest(run_id=ulid(99)), ulid(99)),
    ],
)
async def test_unknown_ids_are_not_found(stub: Any, rpc: str, request_: Any, name: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await getattr(stub, rpc)(request_)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert name in e.value.details()


async def test_an_unreachable_database_is_unavailable(canceller: Canceller) -> None:
    down = await open_database("postgresql+asyncpg://postgres@127.0.0.1:1/plait")
    server = grpc.aio.server()
    management_pb2_grpc.add_ManagementServiceServicer_to_server(
        ManagementServicer(down, canceller), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub: Any = management_pb2_grpc.ManagementServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await stub.ListApps(pb.ListAppsRequest())
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(None)
        await down.dispose()
