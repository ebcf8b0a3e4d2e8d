"""The history writer against real Redis streams and both SQL backends."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aredis
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from server.history import store
from server.history.db import open_database
from server.history.models import RUNS, STEP_ATTEMPTS
from server.history.writer import GROUP, HistoryWriter
from server.keys import Keys
from server.types import ErrorInfo, RunStatus, StepStatus
from tests.e2e.harness import eventually

RUN_A = "01JAAAAAAAAAAAAAAAAAAAAAAA"
RUN_B = "01JBBBBBBBBBBBBBBBBBBBBBBB"
EVENT = "01JEEEEEEEEEEEEEEEEEEEEEEE"
KEYS = Keys(shards=1)
STREAM = KEYS.shard(0).history
# Stream entry fields as the Lua scripts write them.
Fields = dict[Any, Any]


def created(run: str, ts: int = 100) -> Fields:
    return {"k": "run", "run": run, "fn": "shop-charge", "app": "shop", "event": EVENT, "ts": ts}


def started(run: str, ts: int = 200) -> Fields:
    return {"k": "start", "run": run, "ts": ts}


def step(run: str, step_id: str, status: str = "completed", ts: int = 300, **kw: Any) -> Fields:
    fields = {
        "k": "step",
        "run": run,
        "step": step_id,
        "name": step_id.upper(),
        "attempt": 0,
        "status": status,
        "output": "",
        "error": "",
        "ts": ts,
    }
    return fields | kw


def ended(run: str, status: str = "completed", ts: int = 400, **kw: Any) -> Fields:
    return {"k": "end", "run": run, "status": status, "output": "", "error": "", "ts": ts} | kw


async def add(redis: aredis.Redis, *entries: Fields, stream: str = STREAM) -> list[str]:
    ids = [await redis.xadd(stream, e) for e in entries]
    return [i.decode() if isinstance(i, bytes) else i for i in ids]


async def count_steps(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(
            (await conn.execute(select(func.count()).select_from(STEP_ATTEMPTS))).scalar_one()
        )


async def test_a_run_is_written_with_its_steps(redis: aredis.Redis, engine: AsyncEngine) -> None:
    await add(
        redis,
        created(RUN_A),
        started(RUN_A),
        step(RUN_A, "a", output='{"x": 1}', ts=300),
        step(RUN_A, "b", "failed", ts=310, error='{"name": "E", "message": "m", "stack": "s"}'),
        step(RUN_A, "b", "completed", ts=320, attempt=1, output="2"),
        step(RUN_A, "nap", "sleeping", ts=330),
        ended(RUN_A, output='"done"'),
    )
    writer = HistoryWriter(redis, engine, KEYS, "w1")
    assert await writer.drain_once() == 7

    run = await store.get_run(engine, RUN_A)
    assert (run.function_id, run.app_id, run.event_id) == ("shop-charge", "shop", EVENT)
    assert run.status is RunStatus.COMPLETED
    assert (run.created_at_ms, run.started_at_ms, run.ended_at_ms) == (100, 200, 400)
    assert (run.output_json, run.error) == (b'"done"', None)
    assert [(s.step_id, s.attempt, s.status, s.output_json, s.error) for s in run.steps] == [
        ("a", 0, StepStatus.COMPLETED, b'{"x": 1}', None),
        ("b", 0, StepStatus.FAILED, None, ErrorInfo("E", "m", "s")),
        ("b", 1, StepStatus.COMPLETED, b"2", None),
        ("nap", 0, StepStatus.SLEEPING, None, None),
    ]
    assert all(s.id.startswith("0-") for s in run.steps)
    # Applied entries leave the stream and the group's pending list.
    assert await redis.xlen(STREAM) == 0
    assert (await redis.xpending(STREAM, GROUP))["pending"] == 0
    assert await writer.drain_once() == 0


async def test_a_run_in_progress_is_queued_then_running(
    redis: aredis.Redis, engine: AsyncEngine
) -> None:
    writer = HistoryWriter(redis, engine, KEYS, "w1")
    await add(redis, created(RUN_A))
    await writer.drain_once()
    assert (await store.get_run(engine, RUN_A)).status is RunStatus.QUEUED
    await add(redis, started(RUN_A))
    await writer.drain_once()
    run = await store.get_run(engine, RUN_A)
    assert (run.status, run.started_at_ms, run.ended_at_ms) == (RunStatus.RUNNING, 200, None)


async def test_every_shard_is_drained(redis_url: str, engine: AsyncEngine) -> None:
    keys = Keys(shards=2)
    client = aredis.from_url(redis_url, decode_responses=True)
    try:
        await add(client, created(RUN_A), stream=keys.shard(0).history)
        await add(client, created(RUN_B), step(RUN_B, "a"), stream=keys.shard(1).history)
        assert await HistoryWriter(client, engine, keys, "w1").drain_once() == 3
    finally:
        await client.aclose()
    assert [r.id for r in await store.list_runs(engine, None, None, 10, None)] == [RUN_B, RUN_A]
    assert [s.id[:2] for s in (await store.get_run(engine, RUN_B)).steps] == ["1-"]


async def test_redelivered_entries_are_not_duplicated(
    redis: aredis.Redis, engine: AsyncEngine
) -> None:
    entries = [created(RUN_A), started(RUN_A), step(RUN_A, "a"), ended(RUN_A, "failed")]
    ids = [f"1700000000000-{n}" for n in range(len(entries))]
    for entry_id, fields in zip(ids, entries, strict=True):
        await redis.xadd(STREAM, fields, id=entry_id)
    assert await HistoryWriter(redis, engine, KEYS, "w1").drain_once() == 4

    # As if the writer had crashed after its commit and before XACK: the same entries again.
    await redis.delete(STREAM)
    for entry_id, fields in zip(ids, entries, strict=True):
        await redis.xadd(STREAM, fields, id=entry_id)
    assert await HistoryWriter(redis, engine, KEYS, "w2").drain_once() == 4

    run = await store.get_run(engine, RUN_A)
    assert run.status is RunStatus.FAILED
    assert len(run.steps) == 1
    assert await count_steps(engine) == 1


async def test_a_late_start_does_not_unfinish_a_run(
    redis: aredis.Redis, engine: AsyncEngine
) -> None:
    writer = HistoryWriter(redis, engine, KEYS, "w1")
    await add(redis, created(RUN_A), ended(RUN_A, "cancelled", ts=400))
    await writer.drain_once()
    await add(redis, started(RUN_A, ts=500))
    await writer.drain_once()
    run = await store.get_run(engine, RUN_A)
    assert (run.status, run.ended_at_ms) == (RunStatus.CANCELLED, 400)


async def test_an_end_seen_before_its_creation_is_kept(
    redis: aredis.Redis, engine: AsyncEngine
) -> None:
    # Two consumers may split one stream; the one with the end can commit first.
    writer = HistoryWriter(redis, engine, KEYS, "w1")
    await add(redis, ended(RUN_A, output="1"), started(RUN_A))
    await writer.drain_once()
    await add(redis, created(RUN_A))
    await writer.drain_once()
    run = await store.get_run(engine, RUN_A)
    assert (run.status, run.function_id, run.created_at_ms) == (
        RunStatus.COMPLETED,
        "shop-charge",
        100,
    )
    assert (run.started_at_ms, run.ended_at_ms, run.output_json) == (200, 400, b"1")


async def test_own_pending_entries_are_reread(redis: aredis.Redis, engine: AsyncEngine) -> None:
    await redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    await add(redis, created(RUN_A), started(RUN_A))
    # Read but never applied, as by a writer that died before its commit.
    await redis.xreadgroup(GROUP, "w1", {STREAM: ">"})
    assert await HistoryWriter(redis, engine, KEYS, "w1").drain_once() == 2
    assert (await store.get_run(engine, RUN_A)).status is RunStatus.RUNNING
    assert (await redis.xpending(STREAM, GROUP))["pending"] == 0


async def test_entries_of_a_dead_consumer_are_taken_over(
    redis: aredis.Redis, engine: AsyncEngine
) -> None:
    await redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    ids: list[Any] = await add(redis, created(RUN_A), step(RUN_A, "a"))
    await redis.xreadgroup(GROUP, "dead", {STREAM: ">"})
    # Make them look untouched for a minute instead of waiting one.
    await redis.xclaim(STREAM, GROUP, "dead", 0, ids, idle=60_000)
    assert await HistoryWriter(redis, engine, KEYS, "w2").drain_once() == 2
    assert len((await store.get_run(engine, RUN_A)).steps) == 1
    assert (await redis.xpending(STREAM, GROUP))["pending"] == 0


async def test_entries_stay_pending_while_sql_is_down(
    redis: aredis.Redis, engine: AsyncEngine
) -> None:
    await add(redis, created(RUN_A), ended(RUN_A))
    down = await open_database("postgresql+asyncpg://postgres@127.0.0.1:1/plait")
    try:
        with pytest.raises((OSError, SQLAlchemyError)):
            await HistoryWriter(redis, down, KEYS, "w1").drain_once()
    finally:
        await down.dispose()
    assert (await redis.xpending(STREAM, GROUP))["pending"] == 2
    assert await redis.xlen(STREAM) == 2

    assert await HistoryWriter(redis, engine, KEYS, "w1").drain_once() == 2
    assert (await store.get_run(engine, RUN_A)).status is RunStatus.COMPLETED


async def test_invalid_entries_are_dropped_without_blocking_the_stream(
    redis: aredis.Redis, engine: AsyncEngine
) -> None:
    await add(redis, {"k": "mystery"}, step(RUN_A, "a", status="exploded"), created(RUN_A))
    assert await HistoryWriter(redis, engine, KEYS, "w1").drain_once() == 1
    assert (await store.get_run(engine, RUN_A)).steps == ()
    assert await redis.xlen(STREAM) == 0


async def test_run_drains_until_cancelled(redis: aredis.Redis, engine: AsyncEngine) -> None:
    writer = HistoryWriter(redis, engine, KEYS, "w1")

    async def finished() -> bool:
        async with engine.connect() as conn:
            status = (await conn.execute(select(RUNS.c.status))).scalar()
        return status == "completed"

    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(writer.run())
        await add(redis, created(RUN_A), started(RUN_A), ended(RUN_A))
        await eventually(finished, bool, 10, "the batch to be written")
        task.cancel()
    assert task.cancelled()


async def test_a_pending_entry_deleted_meanwhile_is_skipped(
    redis: aredis.Redis, engine: AsyncEngine
) -> None:
    await redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    gone, _ = await add(redis, created(RUN_A), created(RUN_B))
    await redis.xreadgroup(GROUP, "w1", {STREAM: ">"})
    await redis.xdel(STREAM, gone)
    assert await HistoryWriter(redis, engine, KEYS, "w1").drain_once() == 1
    assert [r.id for r in await store.list_runs(engine, None, None, 10, None)] == [RUN_B]
    assert (await redis.xpending(STREAM, GROUP))["pending"] == 0


async def test_run_outlives_an_sql_outage(redis: aredis.Redis, engine: AsyncEngine) -> None:
    down = await open_database("postgresql+asyncpg://postgres@127.0.0.1:1/plait")

    async def retried() -> bool:
        pending = await redis.xpending_range(STREAM, GROUP, "-", "+", 10)
        return len(pending) == 2 and all(p["times_delivered"] >= 2 for p in pending)

    try:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(HistoryWriter(redis, down, KEYS, "w1").run())
            await add(redis, created(RUN_A), ended(RUN_A))
            await eventually(retried, bool, 10, "the retry")
            assert not task.done()
            task.cancel()
    finally:
        await down.dispose()
    assert await HistoryWriter(redis, engine, KEYS, "w1").drain_once() == 2
    assert (await store.get_run(engine, RUN_A)).status is RunStatus.COMPLETED


async def test_a_run_recorded_again_keeps_its_latest_event_within_one_batch(
    redis: aredis.Redis, engine: AsyncEngine
) -> None:
    """A debounced run is recorded again with each later event: the last record wins, in one
    batch as across batches (the upsert)."""
    later = "01JFFFFFFFFFFFFFFFFFFFFFFF"
    await add(redis, created(RUN_A), created(RUN_A) | {"event": later})
    writer = HistoryWriter(redis, engine, KEYS, "w1")
    assert await writer.drain_once() == 2
    run = await store.get_run(engine, RUN_A)
    assert (run.event_id, run.created_at_ms) == (later, 100)


async def test_a_nul_in_a_workers_step_name_or_error_does_not_stall_history(
    redis: aredis.Redis, engine: AsyncEngine
) -> None:
    """PostgreSQL text cannot hold a NUL: the batch failed at every retry, on both the step
    and everything after it in the shard. The NUL is stored as U+FFFD."""
    error = '{"name": "E\\u0000", "message": "m", "stack": ""}'
    await add(redis, created(RUN_A), started(RUN_A),
              step(RUN_A, "a", name="bad\x00name", status="failed", error=error),
              ended(RUN_A, error="x\x00y", status="failed"))
    assert await HistoryWriter(redis, engine, KEYS, "w1").drain_once() == 4
    run = await store.get_run(engine, RUN_A)
    assert run.status is RunStatus.FAILED
    assert [s.name for s in run.steps] == ["bad\ufffdname"]
    assert await redis.xlen(STREAM) == 0
