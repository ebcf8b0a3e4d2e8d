"""The opcode scripts against the real Redis: memoise, retry, sleep, finish, fence, cancel."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from server.config import Settings
from server.keys import Keys
from server.queue import NewRun, Queue
from server.state import Outcome, StateStore
from server.types import (
    AppId,
    ErrorInfo,
    EventId,
    FunctionId,
    Job,
    LeaseId,
    RunCompleted,
    RunFailed,
    RunId,
    RunStatus,
    Sleep,
    StepCompleted,
    StepFailed,
    StepId,
)

NOW = 1_700_000_000_000
FN = FunctionId("app-a")


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def _leased(redis: Redis, max_attempts: int = 3) -> tuple[Queue, StateStore, Job]:
    settings = Settings(backoff_base_ms=100)
    queue = Queue(redis, Keys(), lease_ms=5000)
    state = StateStore(redis, Keys(), settings)
    await queue.enqueue_runs(
        [NewRun(RunId("r1"), FN, AppId("app"), EventId("e1"), b"{}", max_attempts, NOW)], NOW)
    (job,), _ = await queue.lease(Keys().shard(0), [(FN, 1)], 1, NOW)
    return queue, state, job


async def test_a_completed_step_is_memoised_and_the_run_continues_in_place(redis: Redis) -> None:
    _, state, job = await _leased(redis)
    (applied,) = await state.apply([(job, StepCompleted(StepId("s1"), "s1", b'{"x":1}'))],
                                   NOW, relock=True)
    assert applied.outcome is Outcome.CONTINUED and applied.next_job is not None
    assert applied.next_job.steps == {"s1": b'{"data":{"x":1}}'}
    assert applied.next_job.lease_id != job.lease_id
    (stale,) = await state.apply([(job, RunCompleted(b"1"))], NOW, relock=False)
    assert stale.outcome is Outcome.STALE
    (done,) = await state.apply([(applied.next_job, RunCompleted(b'"ok"'))], NOW, relock=False)
    assert done.outcome is Outcome.FINISHED
    run = await state.get_run(RunId("r1"))
    assert run is not None and run.status is RunStatus.COMPLETED and run.output_json == b'"ok"'


async def test_a_failed_step_is_retried_then_memoised_as_an_error(redis: Redis) -> None:
    queue, state, job = await _leased(redis, max_attempts=2)
    fail = StepFailed(StepId("s1"), "s1", ErrorInfo("ValueError", "boom"))
    (first,) = await state.apply([(job, fail)], NOW, relock=True)
    assert first.outcome is Outcome.SCHEDULED and first.retrying
    early, due = await queue.lease(Keys().shard(0), [(FN, 1)], 1, NOW)
    assert early == [] and due > NOW  # not before its backoff
    (retry,), _ = await queue.lease(Keys().shard(0), [(FN, 1)], 1, NOW + 10_000)
    assert retry.attempt == 1
    (second,) = await state.apply([(retry, fail)], NOW + 10_000, relock=True)
    assert second.outcome is Outcome.CONTINUED and not second.retrying
    assert second.next_job is not None and second.next_job.attempt == 0
    assert b'"error"' in second.next_job.steps["s1"]


async def test_a_non_retriable_run_failure_fails_the_run(redis: Redis) -> None:
    _, state, job = await _leased(redis)
    (applied,) = await state.apply(
        [(job, RunFailed(ErrorInfo("E", "no"), non_retriable=True))], NOW, relock=True)
    assert applied.outcome is Outcome.FINISHED
    run = await state.get_run(RunId("r1"))
    assert run is not None and run.status is RunStatus.FAILED and b'"no"' in run.error_json


async def test_a_sleep_frees_the_job_until_it_is_due(redis: Redis) -> None:
    queue, state, job = await _leased(redis)
    (applied,) = await state.apply([(job, Sleep(StepId("z"), "z", NOW + 2000))], NOW, relock=True)
    assert applied.outcome is Outcome.SCHEDULED
    none, due = await queue.lease(Keys().shard(0), [(FN, 1)], 1, NOW + 1999)
    assert none == [] and due == NOW + 2000
    (woken,), _ = await queue.lease(Keys().shard(0), [(FN, 1)], 1, NOW + 2000)
    assert woken.steps == {"z": b'{"data":null}'}


async def test_a_cancelled_run_drops_its_job_and_later_results(redis: Redis) -> None:
    _queue, state, job = await _leased(redis)
    assert await state.cancel_run(RunId("r1"), NOW) == (RunStatus.CANCELLED, True)
    assert await state.cancel_run(RunId("r1"), NOW) == (RunStatus.CANCELLED, False)
    (late,) = await state.apply([(job, RunCompleted(b"1"))], NOW, relock=True)
    assert late.outcome in (Outcome.STALE, Outcome.NOT_RUNNING)
    history = await redis.xrange(Keys().shard(0).history)
    kinds = [fields[b"k"] for _, fields in history]
    assert kinds == [b"run", b"start", b"end"]
    assert dataclasses.replace(job).run_id == "r1"
    assert isinstance(job.lease_id, str) and LeaseId(job.lease_id)
