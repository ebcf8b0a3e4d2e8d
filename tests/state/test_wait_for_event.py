"""wait_for_event.lua and resume_wait.lua: park until the timeout, a match wins once."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from server.config import Settings
from server.keys import Keys
from server.queue import NewRun, Queue
from server.state import Outcome, StateStore, WaitEntry
from server.types import AppId, EventId, FunctionId, Job, RunId, StepId, WaitForEvent

NOW = 1_700_000_000_000
FN = FunctionId("app-a")
RUN = RunId("r1")
WAIT = WaitForEvent(StepId("w"), "w", "order/paid", "async.data.id == event.data.id", NOW + 5000)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def _waiting(redis: Redis) -> tuple[Queue, StateStore, WaitEntry]:
    queue = Queue(redis, Keys(), lease_ms=5000)
    state = StateStore(redis, Keys(), Settings())
    await queue.enqueue_runs(
        [NewRun(RUN, FN, AppId("app"), EventId("e1"), b'{"data":{"id":1}}', 3, NOW)], NOW)
    (job,), _ = await queue.lease(Keys().shard(0), [(FN, 1)], 1, NOW)
    (applied,) = await state.apply([(job, WAIT)], NOW, relock=True)
    assert applied.outcome is Outcome.SCHEDULED
    (raw,) = (await redis.hgetall(Keys().shard(0).waits("order/paid"))).values()
    return queue, state, WaitEntry.parse("order/paid", raw)


async def _lease(queue: Queue, at_ms: int) -> list[Job]:
    jobs, _ = await queue.lease(Keys().shard(0), [(FN, 1)], 1, at_ms)
    return jobs


async def test_a_wait_is_registered_by_event_name_and_parks_the_job(redis: Redis) -> None:
    queue, _, entry = await _waiting(redis)
    assert (entry.step_id, entry.function_id, entry.until_ms) == ("w", FN, NOW + 5000)
    assert entry.if_expression == WAIT.if_expression
    assert await _lease(queue, NOW + 4999) == []


async def test_a_matching_event_is_memoised_and_the_run_is_due_now(redis: Redis) -> None:
    queue, state, entry = await _waiting(redis)
    assert await state.resume_wait(RUN, entry, b'{"data":{"id":1}}', NOW + 10)
    assert not await state.resume_wait(RUN, entry, b'{"data":{"id":1}}', NOW + 11)
    (job,) = await _lease(queue, NOW + 10)
    assert job.steps == {"w": b'{"data":{"data":{"id":1}}}'}
    assert await redis.hlen(Keys().shard(0).waits("order/paid")) == 0


async def test_a_timed_out_wait_is_null_and_a_late_match_loses(redis: Redis) -> None:
    queue, state, entry = await _waiting(redis)
    (job,) = await _lease(queue, NOW + 5000)
    assert job.steps == {"w": b'{"data":null}'}
    assert not await state.resume_wait(RUN, entry, b'{"data":{"id":1}}', NOW + 5001)
    assert await redis.hlen(Keys().shard(0).waits("order/paid")) == 0
