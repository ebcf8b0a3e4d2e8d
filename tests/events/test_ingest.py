"""Event ingest against real SQL and Redis: stored in both before the ids come back."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from server.config import Settings
from server.errors import InvalidArgument
from server.events.ingest import EventIngest, EventInput
from server.history import migrate, open_database, store
from server.keys import Keys


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = await open_database(f"sqlite+aiosqlite:///{tmp_path}/plait.db")
    await migrate(engine)
    yield engine
    await engine.dispose()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_accepted_events_are_in_sql_and_on_the_stream_in_order(
    engine: AsyncEngine, redis: Redis
) -> None:
    ingest = EventIngest(engine, redis, Keys(), Settings())
    ids = await ingest.accept([
        EventInput("a/b", b'{"x": 1}', idempotency_key="k1"), EventInput("c/d")])
    assert len(ids) == 2
    entries = await redis.xrange(Keys().events)
    assert [e[b"id"].decode() for _, e in entries] == ids
    assert [e[b"name"] for _, e in entries] == [b"a/b", b"c/d"]
    assert entries[0][1][b"idem"] == b"k1"
    first = json.loads(entries[0][1][b"e"])
    assert first["id"] == ids[0] and first["data"] == {"x": 1} and first["name"] == "a/b"
    assert json.loads(entries[1][1][b"e"])["data"] == {}
    stored = await store.get_event(engine, ids[1])
    assert stored.name == "c/d"


async def test_a_bad_event_rejects_the_whole_request(engine: AsyncEngine, redis: Redis) -> None:
    ingest = EventIngest(engine, redis, Keys(), Settings())
    with pytest.raises(InvalidArgument) as caught:
        await ingest.accept([EventInput("ok"), EventInput("bad", b"[]")])
    assert caught.value.field == "events[1].data"
    assert await redis.xlen(Keys().events) == 0
