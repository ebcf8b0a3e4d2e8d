"""Event ingest against real SQL and Redis: stored in both before the ids come back."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from server.canonjson import MAX_DEPTH
from server.config import Settings
from server.errors import InvalidArgument
from server.events.ingest import MAX_TS_MS, EventIngest, EventInput, _validate
from server.history import migrate, open_database, store
from server.keys import Keys


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = await open_database(f"sqlite+aiosqlite:///{tmp_path}/plait.db")
    await migrate(engine)
    yield engine
    await engine.dispose()


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


async def test_event_data_is_stored_in_canonical_form(engine: AsyncEngine, redis: Redis) -> None:
    ingest = EventIngest(engine, redis, Keys(), Settings())
    [event_id] = await ingest.accept([EventInput("a/b", b' { "x" : [1, "\\u00e9"] } ')])
    stored = await store.get_event(engine, event_id)
    assert stored.data_json == '{"x":[1,"é"]}'.encode()
    [(_, entry)] = await redis.xrange(Keys().events)
    assert b'"data":{"x":[1,"\xc3\xa9"]}' in entry[b"e"]


@pytest.mark.parametrize(("data", "rule"), [
    (b"\xef\xbb\xbf{}", "byte order mark"),
    (b"[" * 1000 + b"]" * 1000, "nests deeper than 64"),
    (b'{"a":' * 1000 + b"1" + b"}" * 1000, "nests deeper than 64"),
    (b'{"x":1e999}', "finite"),
    (b'{"x":NaN}', "finite"),
    (b'{"x":%d}' % 2**60, "beyond"),
    ("{}".encode("utf-16"), "not UTF-8"),
    (b'{"s":"\\ud800"}', "surrogate"),
])
async def test_event_data_breaking_a_json_rule_is_refused_naming_the_field(
    engine: AsyncEngine, redis: Redis, data: bytes, rule: str
) -> None:
    ingest = EventIngest(engine, redis, Keys(), Settings())
    with pytest.raises(InvalidArgument) as caught:
        await ingest.accept([EventInput("ok"), EventInput("bad", data)])
    assert caught.value.field == "events[1].data" and rule in caught.value.reason
    assert await redis.xlen(Keys().events) == 0


async def test_a_timestamp_past_year_9999_is_refused_naming_it(
    engine: AsyncEngine, redis: Redis
) -> None:
    ingest = EventIngest(engine, redis, Keys(), Settings())
    for ts in (MAX_TS_MS + 1, 2**63, 10**30, -1):
        with pytest.raises(InvalidArgument) as caught:
            await ingest.accept([EventInput("a/b", ts_ms=ts)])
        assert caught.value.field == "events[0].ts"
    [event_id] = await ingest.accept([EventInput("a/b", ts_ms=MAX_TS_MS)])
    assert (await store.get_event(engine, event_id)).ts_ms == MAX_TS_MS


async def test_senders_cannot_send_internal_event_names_but_plait_can(
    engine: AsyncEngine, redis: Redis
) -> None:
    ingest = EventIngest(engine, redis, Keys(), Settings())
    for name in ("inngest/function.finished", "inngest/function.invoked", "inngest/x"):
        with pytest.raises(InvalidArgument) as caught:
            await ingest.accept([EventInput("a/b"), EventInput(name)])
        assert caught.value.field == "events[1].name" and "inngest/" in caught.value.reason
    assert await redis.xlen(Keys().events) == 0
    assert await ingest.accept([EventInput("inngest/function.finished")], received=False)
    assert await ingest.accept([EventInput("app/inngest/ok")])


async def test_a_nul_in_a_name_or_idempotency_key_is_refused_before_sql(
    engine: AsyncEngine, redis: Redis
) -> None:
    """PostgreSQL text cannot hold a NUL: it was a database error (UNKNOWN / 500) after the
    checks; now the field is named, on both backends."""
    ingest = EventIngest(engine, redis, Keys(), Settings())
    for item, field in ((EventInput("a\x00b"), "events[0].name"),
                        (EventInput("a/b", idempotency_key="k\x00"), "events[0].idempotency_key")):
        with pytest.raises(InvalidArgument) as caught:
            await ingest.accept([item])
        assert caught.value.field == field
    assert await redis.xlen(Keys().events) == 0


async def test_internal_events_may_nest_a_run_event_a_few_levels_deeper(
    engine: AsyncEngine, redis: Redis
) -> None:
    ingest = EventIngest(engine, redis, Keys(), Settings())
    deep = b'{"a":' * (MAX_DEPTH + 2) + b"1" + b"}" * (MAX_DEPTH + 2)
    assert await ingest.accept([EventInput("inngest/function.finished", deep)], received=False)
    with pytest.raises(InvalidArgument):
        await ingest.accept([EventInput("a/b", deep)])


@given(st.binary(max_size=200) | st.text(alphabet='[]{}"\\,:1eN.-', max_size=200).map(str.encode))
def test_any_data_bytes_are_canonical_or_refused_with_invalid_argument(data: bytes) -> None:
    try:
        out = _validate(0, EventInput("a/b", data), Settings())
    except InvalidArgument as e:
        assert e.field == "events[0].data"
        return
    assert out == json.dumps(json.loads(out), separators=(",", ":"),
                             ensure_ascii=False).encode()
