"""The reconciler: an event that reached SQL but not the stream (its ingest died between the two
writes) still starts its runs, once; the accepted ledger appends each event id once."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from plait import App, Context, Step, TriggerEvent
from plait_proto.v1 import run_pb2
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine
from ulid import ULID

from server.config import Settings
from server.events import ingest as ingest_module
from server.events.ingest import EventIngest, EventInput
from server.events.reconcile import GRACE_MS, LEDGER_KEEP_MS, WINDOW_MS, Reconciler
from server.history import migrate, open_database, store
from server.history.db import insert
from server.history.models import RUNS
from server.keys import Keys
from server.types import Event, EventId
from tests.e2e.conftest import running_server, running_worker
from tests.e2e.harness import settings_for

KEYS = Keys()


def now_ms() -> int:
    return int(time.time() * 1000)


def lost_event(name: str, at_ms: int, data: bytes = b"{}") -> Event:
    """An event as ingest builds it, with an id of the time it was received."""
    ulid = ULID.from_timestamp(at_ms / 1000)
    return Event(id=EventId(str(ulid)), name=name, data_json=data, ts_ms=at_ms)


async def die_after_the_insert(engine: AsyncEngine, event: Event, received_at_ms: int) -> None:
    """What an ingest that dies between its two writes leaves: the SQL row, no stream entry."""
    await store.insert_events(engine, [event], received_at_ms)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = await open_database(f"sqlite+aiosqlite:///{tmp_path}/plait.db")
    await migrate(engine)
    yield engine
    await engine.dispose()


async def stream_ids(redis: Redis) -> list[str]:
    return [fields[b"id"].decode() for _, fields in await redis.xrange(KEYS.events)]


async def test_an_event_only_in_sql_is_appended_once_however_often_reconciled(
    engine: AsyncEngine, redis: Redis
) -> None:
    t = now_ms()
    event = lost_event("lost/one", t, b'{"n":1}')
    await die_after_the_insert(engine, event, t)

    first, second = Reconciler(engine, redis, KEYS), Reconciler(engine, redis, KEYS)
    assert await first.reconcile(t + GRACE_MS) == 1
    assert await first.reconcile(t + GRACE_MS + 1) == 0
    assert await second.reconcile(t + GRACE_MS + 2) == 0  # another runner process

    entries = await redis.xrange(KEYS.events)
    assert [f[b"id"].decode() for _, f in entries] == [event.id]
    assert entries[0][1][b"name"] == b"lost/one"
    assert b'"data":{"n":1}' in entries[0][1][b"e"]
    assert await redis.zscore(KEYS.events_accepted, event.id) is not None


async def test_an_event_younger_than_the_grace_is_left_to_its_ingest(
    engine: AsyncEngine, redis: Redis
) -> None:
    t = now_ms()
    await die_after_the_insert(engine, lost_event("lost/young", t), t)
    assert await Reconciler(engine, redis, KEYS).reconcile(t + GRACE_MS - 1) == 0
    assert await stream_ids(redis) == []


async def test_an_event_older_than_the_window_is_not_looked_at(
    engine: AsyncEngine, redis: Redis
) -> None:
    t = now_ms() - WINDOW_MS - 60_000
    await die_after_the_insert(engine, lost_event("lost/old", t), t)
    assert await Reconciler(engine, redis, KEYS).reconcile(now_ms()) == 0


async def test_accepted_events_are_never_appended_again(
    engine: AsyncEngine, redis: Redis
) -> None:
    ids = await EventIngest(engine, redis, KEYS, Settings()).accept(
        [EventInput("ok/a"), EventInput("ok/b")])
    assert await Reconciler(engine, redis, KEYS).reconcile(now_ms() + GRACE_MS) == 0
    assert await stream_ids(redis) == ids


async def test_an_event_sent_twice_with_one_id_reaches_the_stream_once(
    engine: AsyncEngine, redis: Redis
) -> None:
    ingest = EventIngest(engine, redis, KEYS, Settings())
    event_id = str(ULID())
    first = await ingest.accept([EventInput("seeded/x", id=event_id)])
    again = await ingest.accept([EventInput("seeded/x", id=event_id)])
    assert first == again == [event_id]
    assert await stream_ids(redis) == [event_id]


async def test_an_event_whose_runs_history_recorded_is_not_started_again(
    engine: AsyncEngine, redis: Redis
) -> None:
    # A Redis without persistence restarted empty: the ledger forgot an event that did reach
    # the runners. Its runs are in history, so appending it again would run them twice.
    t = now_ms()
    event = lost_event("ran/before", t)
    await die_after_the_insert(engine, event, t)
    async with engine.begin() as conn:
        await conn.execute(insert(engine, RUNS).values(
            id=str(ULID()), event_id=event.id, status="completed"))
    assert await Reconciler(engine, redis, KEYS).reconcile(t + GRACE_MS) == 0
    assert await stream_ids(redis) == []


async def test_a_later_pass_still_finds_an_event_whose_insert_committed_late(
    engine: AsyncEngine, redis: Redis
) -> None:
    t = now_ms()
    reconciler = Reconciler(engine, redis, KEYS)
    assert await reconciler.reconcile(t + GRACE_MS) == 0
    # Received at t, committed only after the pass above had looked at time t.
    event = lost_event("slow/commit", t)
    await die_after_the_insert(engine, event, t)
    assert await reconciler.reconcile(t + GRACE_MS + 5_000) == 1
    assert await stream_ids(redis) == [event.id]


async def test_the_ledger_forgets_ids_older_than_it_keeps(
    engine: AsyncEngine, redis: Redis
) -> None:
    t = now_ms()
    await redis.zadd(KEYS.events_accepted, {"old": t - LEDGER_KEEP_MS - 1, "new": t - 1})
    await Reconciler(engine, redis, KEYS).reconcile(t)
    assert await redis.zrange(KEYS.events_accepted, 0, -1) == [b"new"]


@pytest.fixture(params=["embedded", "production"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    if request.param == "embedded":
        return settings_for("embedded", tmp_path)
    return settings_for("production", tmp_path, request.getfixturevalue("redis_url"),
                        request.getfixturevalue("database_url"))


async def test_an_event_whose_ingest_died_before_the_stream_still_starts_its_run(
    settings: Settings,
) -> None:
    app = App("recon")

    @app.function("lost", trigger=TriggerEvent("recon/lost"))
    async def lost(ctx: Context, step: Step) -> dict[str, object]:
        n = await step.run("read", lambda: ctx.event.data["n"])
        return {"n": n}

    async with running_server(settings) as plait:
        engine = await open_database(plait.endpoints.database_url)
        try:
            async with running_worker(app, plait.client):
                # Received a grace ago, so the server's next pass (within seconds) takes it.
                t = now_ms() - GRACE_MS
                event = lost_event("recon/lost", t, b'{"n":7}')
                await die_after_the_insert(engine, event, t)
                run = await plait.client.finished_run_of(event.id, timeout_s=30)
                assert run.status == run_pb2.RUN_STATUS_COMPLETED
                assert json.loads(run.output_json) == {"n": 7}
                assert len(await plait.client.runs_of_event(event.id)) == 1
        finally:
            await engine.dispose()


async def test_an_ingest_failing_after_its_insert_acknowledges_nothing_and_the_run_starts(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = App("recon2")

    @app.function("cut", trigger=TriggerEvent("recon/cut"))
    async def cut(ctx: Context, step: Step) -> dict[str, object]:
        return {"n": await step.run("read", lambda: ctx.event.data["n"])}

    async def dies(*_: object) -> int:
        raise ConnectionError("the process died between the two writes")

    async with running_server(settings) as plait:
        engine = await open_database(plait.endpoints.database_url)
        try:
            async with running_worker(app, plait.client):
                monkeypatch.setattr(ingest_module, "append_events", dies)
                with pytest.raises(grpc.aio.AioRpcError):
                    await plait.client.send("recon/cut", {"n": 3})
                monkeypatch.undo()
                [stored] = await store.list_events(engine, "recon/cut", 10, None)
                run = await plait.client.finished_run_of(stored.id, timeout_s=30)
                assert json.loads(run.output_json) == {"n": 3}
        finally:
            await engine.dispose()
