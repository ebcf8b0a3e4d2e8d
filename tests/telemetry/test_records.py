"""The Lua scripts put each attempt's lease and times in its history record, for its spans."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from server.config import Settings
from server.history.records import Record, RunEnded, RunStarted, StepRecorded, decode
from server.keys import Keys
from server.queue import NewRun, Queue
from server.state import Outcome, StateStore
from server.types import (
    AppId,
    ErrorInfo,
    EventId,
    FunctionId,
    Job,
    RunCompleted,
    RunId,
    RunStatus,
    Sleep,
    StepCompleted,
    StepFailed,
    StepId,
    StepStatus,
)

T0 = 1_700_000_000_000
FN = FunctionId("shop-charge")
KEYS = Keys()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def records(redis: Redis) -> list[Record]:
    entries = await redis.xrange(KEYS.shard(0).history)
    out = []
    for _, fields in entries:
        record = decode({k.decode(): v.decode() for k, v in fields.items()})
        assert record is not None
        out.append(record)
    return out


async def started_run(redis: Redis, created_at: int, available_at: int = 0,
                      leased_at: int = T0) -> tuple[Queue, StateStore, Job]:
    queue = Queue(redis, KEYS, lease_ms=5000)
    state = StateStore(redis, KEYS, Settings(backoff_base_ms=100))
    await queue.enqueue_runs([NewRun(RunId("r1"), FN, AppId("shop"), EventId("e1"), b"{}", 3,
                                     available_at)], created_at)
    (job,), _ = await queue.lease(KEYS.shard(0), [(FN, 1)], 1, leased_at)
    return queue, state, job


async def test_a_step_record_carries_its_lease_and_how_long_its_job_waited(
    redis: Redis
) -> None:
    # A new run's job is queued at 0 ("at once"): it waited from the run's creation.
    _, state, job = await started_run(redis, created_at=T0 - 40)
    (applied,) = await state.apply([(job, StepCompleted(StepId("a"), "A", b"1"))], T0 + 5,
                                   relock=True)
    started, step = (await records(redis))[1:]
    assert isinstance(started, RunStarted) and started.function_id == FN
    assert isinstance(step, StepRecorded)
    assert (step.function_id, step.app_id, step.lease_id) == (FN, "shop", job.lease_id)
    assert (step.ready_ms, step.started_ms, step.ts_ms) == (T0 - 40, T0, T0 + 5)

    # The relocked job never waited in a ready set: no ready time, leased at the commit.
    assert applied.outcome is Outcome.CONTINUED and applied.next_job is not None
    await state.apply([(applied.next_job, StepCompleted(StepId("b"), "B", b"2"))], T0 + 9,
                      relock=True)
    step_b = (await records(redis))[-1]
    assert isinstance(step_b, StepRecorded)
    assert (step_b.lease_id, step_b.ready_ms, step_b.started_ms) == (
        applied.next_job.lease_id, None, T0 + 5)


async def test_a_retried_job_waited_from_its_retry_time(redis: Redis) -> None:
    queue, state, job = await started_run(redis, created_at=T0 - 10, available_at=T0 - 10)
    failure = StepFailed(StepId("a"), "A", ErrorInfo("E", "boom"), retry_after_ms=1000)
    (applied,) = await state.apply([(job, failure)], T0 + 1, relock=True)
    assert applied.outcome is Outcome.SCHEDULED and applied.retrying
    (retry,), _ = await queue.lease(KEYS.shard(0), [(FN, 1)], 1, T0 + 2000)
    await state.apply([(retry, StepCompleted(StepId("a"), "A", b"1"))], T0 + 2003, relock=False)
    failed, done = (await records(redis))[-2:]
    assert isinstance(failed, StepRecorded) and isinstance(done, StepRecorded)
    assert (failed.status, failed.ready_ms, failed.started_ms) == (
        StepStatus.FAILED, T0 - 10, T0)
    assert (done.attempt, done.ready_ms, done.started_ms) == (1, T0 + 1001, T0 + 2000)


async def test_a_sleep_record_carries_its_wake_up_time(redis: Redis) -> None:
    _, state, job = await started_run(redis, created_at=T0)
    await state.apply([(job, Sleep(StepId("nap"), "nap", T0 + 60_000))], T0 + 1, relock=True)
    sleep = (await records(redis))[-1]
    assert isinstance(sleep, StepRecorded) and sleep.until_ms == T0 + 60_000


async def test_a_completed_run_ends_with_its_last_attempt(redis: Redis) -> None:
    _, state, job = await started_run(redis, created_at=T0 - 3)
    await state.apply([(job, RunCompleted(b"1"))], T0 + 7, relock=True)
    end = (await records(redis))[-1]
    assert isinstance(end, RunEnded)
    assert (end.status, end.function_id, end.app_id, end.lease_id) == (
        RunStatus.COMPLETED, FN, "shop", job.lease_id)
    assert (end.ready_ms, end.started_ms, end.ts_ms, end.attempt) == (T0 - 3, T0, T0 + 7, 0)


async def test_a_cancelled_run_ends_with_its_function(redis: Redis) -> None:
    _, state, _ = await started_run(redis, created_at=T0)
    await state.cancel_run(RunId("r1"), T0 + 1)
    end = (await records(redis))[-1]
    assert isinstance(end, RunEnded)
    assert (end.status, end.function_id, end.app_id) == (RunStatus.CANCELLED, FN, "shop")
