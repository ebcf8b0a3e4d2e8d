"""Each queue script against the real Redis: enqueue, fair lease, extend, release, expiry."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from server.keys import Keys
from server.queue import NewRun, Queue
from server.queue.queue import HeldLease
from server.types import AppId, EventId, FunctionId, RunId

NOW = 1_700_000_000_000


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


def _run(n: int, fn: str = "app-a", at: int = NOW) -> NewRun:
    return NewRun(RunId(f"run{n:04d}"), FunctionId(fn), AppId("app"), EventId(f"ev{n}"),
                  b'{"name":"e","data":{}}', 3, at)


async def test_a_run_is_created_once_and_leased_with_its_event(redis: Redis) -> None:
    queue = Queue(redis, Keys(), lease_ms=5000)
    assert await queue.enqueue_runs([_run(1), _run(1)], NOW) == [True, False]
    jobs, next_due = await queue.lease(Keys().shard(0), [(FunctionId("app-a"), 10)], 10, NOW)
    assert [j.run_id for j in jobs] == ["run0001"]
    assert jobs[0].event_json == b'{"name":"e","data":{}}'
    assert jobs[0].attempt == 0 and jobs[0].max_attempts == 3
    assert jobs[0].lease_expires_at_ms == NOW + 5000
    assert next_due == -1
    again, _ = await queue.lease(Keys().shard(0), [(FunctionId("app-a"), 10)], 10, NOW)
    assert again == []


async def test_a_job_is_not_leased_before_it_is_due(redis: Redis) -> None:
    queue = Queue(redis, Keys(), lease_ms=5000)
    await queue.enqueue_runs([_run(1, at=NOW + 2000)], NOW)
    jobs, next_due = await queue.lease(Keys().shard(0), [(FunctionId("app-a"), 10)], 10, NOW)
    assert jobs == [] and next_due == NOW + 2000
    jobs, _ = await queue.lease(Keys().shard(0), [(FunctionId("app-a"), 10)], 10, NOW + 2000)
    assert len(jobs) == 1


async def test_leasing_shares_capacity_fairly_between_functions(redis: Redis) -> None:
    queue = Queue(redis, Keys(), lease_ms=5000)
    await queue.enqueue_runs([_run(i, "app-flood") for i in range(200)], NOW)
    await queue.enqueue_runs([_run(1000 + i, "app-small") for i in range(5)], NOW + 1)
    caps = [(FunctionId("app-flood"), 100), (FunctionId("app-small"), 100)]
    jobs, _ = await queue.lease(Keys().shard(0), caps, 20, NOW + 10)
    by_fn = [j.function_id for j in jobs]
    assert by_fn.count("app-small") == 5
    assert by_fn.count("app-flood") == 15


async def test_a_released_job_is_redelivered_and_a_stale_release_is_ignored(redis: Redis) -> None:
    queue = Queue(redis, Keys(), lease_ms=5000)
    await queue.enqueue_runs([_run(1)], NOW)
    (job,), _ = await queue.lease(Keys().shard(0), [(FunctionId("app-a"), 1)], 1, NOW)
    assert await queue.release([HeldLease(job.job_id, "bogus", job.run_id)], NOW) == 0  # type: ignore[arg-type]
    assert await queue.release([HeldLease(job.job_id, job.lease_id, job.run_id)], NOW) == 1
    (again,), _ = await queue.lease(Keys().shard(0), [(FunctionId("app-a"), 1)], 1, NOW)
    assert again.job_id == job.job_id and again.lease_id != job.lease_id
    assert again.attempt == 0
    assert await redis.hget(Keys().shard(0).job(job.job_id), "redeliveries") == b"1"


async def test_an_expired_lease_is_requeued_unless_extended(redis: Redis) -> None:
    queue = Queue(redis, Keys(), lease_ms=1000)
    await queue.enqueue_runs([_run(1), _run(2)], NOW)
    jobs, _ = await queue.lease(Keys().shard(0), [(FunctionId("app-a"), 2)], 2, NOW)
    keep = jobs[0]
    assert await queue.extend([HeldLease(keep.job_id, keep.lease_id, keep.run_id)], NOW + 900) == 1
    assert await queue.requeue_expired(Keys().shard(0), NOW + 1500) == 1
    again, _ = await queue.lease(Keys().shard(0), [(FunctionId("app-a"), 2)], 2, NOW + 1500)
    assert [j.job_id for j in again] == [jobs[1].job_id]
