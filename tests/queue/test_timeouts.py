"""lease.lua and timeouts: a run past its start or finish deadline fails instead of leasing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from server.keys import Keys
from server.queue import NewRun, Queue
from server.types import AppId, EventId, FunctionId, RunId

NOW = 1_700_000_000_000
FN = FunctionId("app-a")
SHARD = Keys().shard(0)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


def _run(start_ms: int = 0, finish_ms: int = 0) -> NewRun:
    return NewRun(RunId("r1"), FN, AppId("app"), EventId("e1"), b"{}", 3, 0,
                  start_timeout_ms=start_ms, finish_timeout_ms=finish_ms)


async def _history_ends(redis: Redis) -> list[dict[bytes, bytes]]:
    entries: list[tuple[bytes, dict[bytes, bytes]]] = await redis.xrange(SHARD.history)  # type: ignore[assignment]
    return [f for _, f in entries if f[b"k"] == b"end"]


async def test_a_run_queued_past_its_start_timeout_fails_when_leased(redis: Redis) -> None:
    queue = Queue(redis, Keys(), lease_ms=5000)
    await queue.enqueue_runs([_run(start_ms=1000)], NOW)
    jobs, _ = await queue.lease(SHARD, [(FN, 1)], 1, NOW + 1001)
    assert jobs == []
    run = await redis.hgetall(SHARD.run("r1"))
    assert run[b"status"] == b"failed"
    assert json.loads(run[b"error"])["name"] == "StartTimeoutError"
    assert not await redis.exists(SHARD.job("r1"))
    (end,) = await _history_ends(redis)
    assert end[b"status"] == b"failed" and b"StartTimeoutError" in end[b"error"]


async def test_a_run_leased_within_its_start_timeout_starts(redis: Redis) -> None:
    queue = Queue(redis, Keys(), lease_ms=5000)
    await queue.enqueue_runs([_run(start_ms=1000, finish_ms=2000)], NOW)
    (job,), _ = await queue.lease(SHARD, [(FN, 1)], 1, NOW + 1000)
    assert job.run_id == "r1"
    assert await redis.hget(SHARD.run("r1"), "finish_by") == str(NOW + 3000).encode()
    assert await redis.zscore(SHARD.deadlines, "r1") == NOW + 3000


async def test_a_running_run_past_its_finish_timeout_fails_when_its_next_job_is_leased(
    redis: Redis,
) -> None:
    queue = Queue(redis, Keys(), lease_ms=5000)
    await queue.enqueue_runs([_run(finish_ms=1000)], NOW)
    await queue.lease(SHARD, [(FN, 1)], 1, NOW)
    # The job comes back (as after a sleep) after the deadline.
    await redis.zrem(SHARD.leased, "r1")
    await redis.zadd(SHARD.ready(FN), {"r1": NOW + 1500})
    jobs, _ = await queue.lease(SHARD, [(FN, 1)], 1, NOW + 1500)
    assert jobs == []
    run = await redis.hgetall(SHARD.run("r1"))
    assert run[b"status"] == b"failed"
    assert json.loads(run[b"error"])["name"] == "FinishTimeoutError"
    assert not await redis.zscore(SHARD.deadlines, "r1")
