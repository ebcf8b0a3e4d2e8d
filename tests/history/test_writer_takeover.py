"""The history writer takes over a dead writer's pending entries as soon as its heartbeat is
gone (server/liveness.py), not after the 10 s idle takeover; a live writer's are left alone."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aredis
from sqlalchemy.ext.asyncio import AsyncEngine

from server.history import store
from server.history.writer import GROUP, HistoryWriter
from server.keys import Keys
from server.liveness import CLAIM_DEAD_IDLE_MS, Liveness
from server.types import RunStatus

RUN = "01JAAAAAAAAAAAAAAAAAAAAAAA"
KEYS = Keys(shards=1)
STREAM = KEYS.shard(0).history


async def _read_by(redis: aredis.Redis, consumer: str) -> list[Any]:
    """Two records read by `consumer` and not applied, idle just past the dead-claim minimum
    (set, not waited for) and far below the 10 s idle takeover."""
    await redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    ids = [await redis.xadd(STREAM, {"k": "run", "run": RUN, "fn": "shop-charge", "app": "shop",
                                     "event": "01JEEEEEEEEEEEEEEEEEEEEEEE", "ts": 100}),
           await redis.xadd(STREAM, {"k": "start", "run": RUN, "ts": 200})]
    await redis.xreadgroup(GROUP, consumer, {STREAM: ">"})
    await redis.xclaim(STREAM, GROUP, consumer, 0, ids, idle=CLAIM_DEAD_IDLE_MS + 500)
    return ids


async def test_a_dead_writers_entries_are_applied_without_waiting_the_idle_takeover(
    redis: aredis.Redis, engine: AsyncEngine
) -> None:
    await _read_by(redis, "dead")  # never beat: its heartbeat is gone
    without = HistoryWriter(redis, engine, KEYS, "w-old")
    assert await without.drain_once() == 0  # the idle takeover waits 10 s

    live = Liveness(redis, KEYS, "w-new")
    await live.join()
    writer = HistoryWriter(redis, engine, KEYS, "w-new", liveness=live)
    assert await writer._take_over_dead() == 2
    assert (await store.get_run(engine, RUN)).status is RunStatus.RUNNING
    assert (await redis.xpending(STREAM, GROUP))["pending"] == 0


async def test_a_live_writers_pending_entries_are_left_to_it(
    redis: aredis.Redis, engine: AsyncEngine
) -> None:
    busy = Liveness(redis, KEYS, "busy")
    await busy.join()
    await _read_by(redis, "busy")
    other = Liveness(redis, KEYS, "other")
    await other.join()
    writer = HistoryWriter(redis, engine, KEYS, "other", liveness=other)
    assert await writer._take_over_dead() == 0
    pending = await redis.xpending_range(STREAM, GROUP, "-", "+", 10)
    assert {p["consumer"] for p in pending} == {b"busy"}
