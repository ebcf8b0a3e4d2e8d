"""time_out_runs.lua: the sweep fails runs past their finish timeout, held or not."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from server.config import Settings
from server.keys import Keys
from server.queue import NewRun, Queue
from server.state import StateStore
from server.types import AppId, EventId, FunctionId, Job, RunCompleted, RunId

NOW = 1_700_000_000_000
FN = FunctionId("app-a")
SHARD = Keys().shard(0)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def _started(redis: Redis) -> tuple[StateStore, Job]:
    queue = Queue(redis, Keys(), lease_ms=60_000)
    state = StateStore(redis, Keys(), Settings())
    await queue.enqueue_runs([NewRun(RunId("r1"), FN, AppId("app"), EventId("e1"), b"{}", 3, 0,
                                     finish_timeout_ms=1000)], NOW)
    (job,), _ = await queue.lease(SHARD, [(FN, 1)], 1, NOW)
    return state, job


async def test_a_held_run_past_its_finish_timeout_fails_and_its_worker_is_named(
    redis: Redis,
) -> None:
    state, _ = await _started(redis)
    assert await state.time_out_runs(SHARD, NOW + 999) == []
    assert await state.time_out_runs(SHARD, NOW + 1000) == [(RunId("r1"), True)]
    run = await redis.hgetall(SHARD.run("r1"))
    assert run[b"status"] == b"failed"
    assert json.loads(run[b"error"])["name"] == "FinishTimeoutError"
    assert not await redis.zscore(SHARD.leased, "r1")
    assert not await redis.exists(SHARD.job("r1"))
    entries: list[tuple[bytes, dict[bytes, bytes]]] = await redis.xrange(SHARD.history)  # type: ignore[assignment]
    ends = [f for _, f in entries if f[b"k"] == b"end"]
    assert [e[b"status"] for e in ends] == [b"failed"]
    assert await state.time_out_runs(SHARD, NOW + 2000) == []


async def test_a_run_that_ended_in_time_is_only_dropped_from_the_deadlines(redis: Redis) -> None:
    state, job = await _started(redis)
    await state.apply([(job, RunCompleted(b"1"))], NOW + 10, relock=True)
    assert await state.time_out_runs(SHARD, NOW + 1000) == []
    assert await redis.hget(SHARD.run("r1"), "status") == b"completed"
    assert not await redis.zscore(SHARD.deadlines, "r1")
