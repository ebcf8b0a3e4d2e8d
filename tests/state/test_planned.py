"""Parallel steps in the state scripts: planned steps run as their own jobs, the main job waits
for the last of them, and finishing or cancelling a run drops every job it had."""

from __future__ import annotations

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
    RunCompleted,
    RunFailed,
    RunId,
    RunStatus,
    Sleep,
    StepCompleted,
    StepFailed,
    StepId,
    StepsPlanned,
)

NOW = 1_700_000_000_000
FN = FunctionId("app-p")
SHARD = Keys().shard(0)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def _leased(redis: Redis, max_attempts: int = 3) -> tuple[Queue, StateStore, Job]:
    queue = Queue(redis, Keys(), lease_ms=5000)
    state = StateStore(redis, Keys(), Settings(backoff_base_ms=100))
    await queue.enqueue_runs(
        [NewRun(RunId("r1"), FN, AppId("app"), EventId("e1"), b"{}", max_attempts, NOW)], NOW)
    (job,), _ = await queue.lease(SHARD, [(FN, 5)], 5, NOW)
    return queue, state, job


async def _lease_all(queue: Queue, at: int = NOW) -> dict[str, Job]:
    jobs, _ = await queue.lease(SHARD, [(FN, 10)], 10, at)
    return {job.target_step: job for job in jobs}


async def test_planned_steps_become_jobs_and_the_last_one_wakes_the_main_job(
    redis: Redis,
) -> None:
    queue, state, main = await _leased(redis)
    (planned,) = await state.apply(
        [(main, StepsPlanned((StepId("a"), StepId("b"))))], NOW, relock=True)
    assert planned.outcome is Outcome.SCHEDULED
    jobs = await _lease_all(queue)
    assert set(jobs) == {"a", "b"}  # the main job waits: it is not ready
    assert jobs["a"].job_id == "r1:a" and jobs["a"].attempt == 0
    (first,) = await state.apply([(jobs["b"], StepCompleted(StepId("b"), "b", b"2"))], NOW,
                                 relock=True)
    assert first.outcome is Outcome.SCHEDULED and first.next_job is None
    assert await _lease_all(queue) == {}
    (last,) = await state.apply([(jobs["a"], StepCompleted(StepId("a"), "a", b"1"))], NOW,
                                relock=True)
    assert last.outcome is Outcome.CONTINUED and last.next_job is not None
    woken = last.next_job
    assert woken.job_id == "r1" and woken.target_step == "" and woken.attempt == 0
    assert woken.steps == {"a": b'{"data":1}', "b": b'{"data":2}'}
    assert await state.stack(RunId("r1")) == ["b", "a"]  # the order they ended in
    (done,) = await state.apply([(woken, RunCompleted(b"3"))], NOW, relock=False)
    assert done.outcome is Outcome.FINISHED
    assert await redis.keys("*:job:*") == []


async def test_without_relock_the_woken_main_job_is_queued(redis: Redis) -> None:
    queue, state, main = await _leased(redis)
    await state.apply([(main, StepsPlanned((StepId("a"),)))], NOW, relock=False)
    jobs = await _lease_all(queue)
    (applied,) = await state.apply([(jobs["a"], StepCompleted(StepId("a"), "a", b"1"))], NOW,
                                   relock=False)
    assert applied.outcome is Outcome.SCHEDULED
    again = await _lease_all(queue)
    assert list(again) == [""] and again[""].job_id == "r1"


async def test_a_planned_step_is_retried_on_its_own_job_then_memoised_as_an_error(
    redis: Redis,
) -> None:
    queue, state, main = await _leased(redis, max_attempts=2)
    await state.apply([(main, StepsPlanned((StepId("a"), StepId("b"))))], NOW, relock=True)
    jobs = await _lease_all(queue)
    fail = StepFailed(StepId("a"), "a", ErrorInfo("ValueError", "boom"))
    (retry,) = await state.apply([(jobs["a"], fail)], NOW, relock=False)
    assert retry.outcome is Outcome.SCHEDULED and retry.retrying
    again = await _lease_all(queue, NOW + 10_000)
    assert list(again) == ["a"] and again["a"].attempt == 1
    (memoised,) = await state.apply([(again["a"], fail)], NOW + 10_000, relock=True)
    assert memoised.outcome is Outcome.SCHEDULED and not memoised.retrying  # b still runs
    (last,) = await state.apply([(jobs["b"], StepCompleted(StepId("b"), "b", b"2"))],
                                NOW + 10_000, relock=True)
    assert last.next_job is not None and b'"error"' in last.next_job.steps["a"]


async def test_planning_only_memoised_or_planned_steps_adds_no_jobs(redis: Redis) -> None:
    queue, state, main = await _leased(redis)
    (done,) = await state.apply([(main, StepCompleted(StepId("a"), "a", b"1"))], NOW,
                                relock=True)
    assert done.next_job is not None
    (again,) = await state.apply([(done.next_job, StepsPlanned((StepId("a"),)))], NOW,
                                 relock=True)
    # Everything it planned is memoised already: the function just runs again.
    assert again.outcome is Outcome.CONTINUED and again.next_job is not None
    (twice,) = await state.apply(
        [(again.next_job, StepsPlanned((StepId("b"), StepId("b"))))], NOW, relock=True)
    assert twice.outcome is Outcome.SCHEDULED
    assert list(await _lease_all(queue)) == ["b"]


async def test_a_planned_steps_job_cannot_plan_or_be_stale(redis: Redis) -> None:
    queue, state, main = await _leased(redis)
    await state.apply([(main, StepsPlanned((StepId("a"),)))], NOW, relock=True)
    jobs = await _lease_all(queue)
    (refused,) = await state.apply([(jobs["a"], StepsPlanned((StepId("c"),)))], NOW,
                                   relock=True)
    assert refused.outcome is Outcome.STALE
    (stale_main,) = await state.apply([(main, RunCompleted(b"1"))], NOW, relock=True)
    assert stale_main.outcome is Outcome.STALE  # the waiting main job holds no lease


async def test_a_run_failing_in_a_planned_step_drops_every_job(redis: Redis) -> None:
    queue, state, main = await _leased(redis)
    await state.apply([(main, StepsPlanned((StepId("a"), StepId("b"))))], NOW, relock=True)
    jobs = await _lease_all(queue)
    (failed,) = await state.apply(
        [(jobs["a"], RunFailed(ErrorInfo("E", "no"), non_retriable=True))], NOW, relock=True)
    assert failed.outcome is Outcome.FINISHED
    run = await state.get_run(RunId("r1"))
    assert run is not None and run.status is RunStatus.FAILED
    assert await redis.keys("*:job:*") == []
    assert await redis.zcard(SHARD.leased) == 0 and await redis.zcard(SHARD.ready(FN)) == 0
    (late,) = await state.apply([(jobs["b"], StepCompleted(StepId("b"), "b", b"2"))], NOW,
                                relock=True)
    assert late.outcome in (Outcome.STALE, Outcome.NOT_RUNNING)


async def test_cancelling_a_run_with_planned_steps_drops_them(redis: Redis) -> None:
    queue, state, main = await _leased(redis)
    await state.apply([(main, StepsPlanned((StepId("a"), StepId("b"))))], NOW, relock=True)
    jobs = await _lease_all(queue)
    assert await state.cancel_run(RunId("r1"), NOW) == (RunStatus.CANCELLED, True)
    assert await redis.keys("*:job:*") == []
    assert await redis.zcard(SHARD.leased) == 0 and await redis.zcard(SHARD.ready(FN)) == 0
    (late,) = await state.apply([(jobs["a"], StepCompleted(StepId("a"), "a", b"1"))], NOW,
                                relock=True)
    assert late.outcome in (Outcome.STALE, Outcome.NOT_RUNNING)


async def test_the_stack_keeps_first_memoisation_order_and_expires_with_the_run(
    redis: Redis,
) -> None:
    _, state, job = await _leased(redis)
    (one,) = await state.apply([(job, StepCompleted(StepId("x"), "x", b"1"))], NOW, relock=True)
    assert one.next_job is not None
    (two,) = await state.apply([(one.next_job, Sleep(StepId("z"), "z", NOW))], NOW, relock=True)
    assert two.next_job is not None
    (end,) = await state.apply([(two.next_job, RunCompleted(b"1"))], NOW, relock=True)
    assert end.outcome is Outcome.FINISHED
    stack_key = SHARD.stack("r1")
    assert await state.stack(RunId("r1")) == ["x", "z"]
    assert 0 < await redis.ttl(stack_key) <= Settings().finished_run_ttl_s
