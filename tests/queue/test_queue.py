"""Each queue script against the real Redis: enqueue, fair lease, extend, release, expiry, and
the redelivery backoff and cap of release and expiry."""

from __future__ import annotations

import dataclasses
import json

from redis.asyncio import Redis

from server.config import Settings
from server.keys import Keys
from server.queue import NewRun, Queue
from server.queue.queue import HeldLease, Redelivery
from server.state import StateStore
from server.types import AppId, CancelOn, EventId, FunctionId, Job, RunId, StepCompleted, StepId

NOW = 1_700_000_000_000
SHARD = Keys().shard(0)
FN = FunctionId("app-a")


def _held(job: Job) -> HeldLease:
    return HeldLease(job.job_id, job.lease_id, job.run_id)


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


async def test_a_released_job_is_redelivered_after_its_backoff_and_a_stale_release_is_ignored(
    redis: Redis,
) -> None:
    queue = Queue(redis, Keys(), lease_ms=5000)
    await queue.enqueue_runs([_run(1)], NOW)
    (job,), _ = await queue.lease(SHARD, [(FN, 1)], 1, NOW)
    assert await queue.release([HeldLease(job.job_id, "bogus", job.run_id)], NOW, "x") == 0  # type: ignore[arg-type]
    assert await queue.release([HeldLease(job.job_id, job.lease_id, job.run_id)], NOW, "x") == 1
    early, due = await queue.lease(SHARD, [(FN, 1)], 1, NOW)
    assert early == [] and due == NOW + 200  # the default redelivery_backoff_ms
    (again,), _ = await queue.lease(SHARD, [(FN, 1)], 1, NOW + 200)
    assert again.job_id == job.job_id and again.lease_id != job.lease_id
    assert again.attempt == 0
    assert await redis.hmget(SHARD.job(job.job_id), "redeliveries", "redelivery_reason") == [
        b"1", b"x"]


async def test_each_release_in_a_row_doubles_the_backoff_up_to_the_maximum(redis: Redis) -> None:
    queue = Queue(redis, Keys(), lease_ms=5000)
    policy = Redelivery(max_redeliveries=10, backoff_ms=100, max_backoff_ms=500)
    await queue.enqueue_runs([_run(1)], NOW)
    now, scores = NOW, []
    for _ in range(4):
        (job,), _ = await queue.lease(SHARD, [(FN, 1)], 1, now)
        await queue.release([_held(job)], now, "gone", policy)
        score = await redis.zscore(SHARD.ready(FN), job.job_id)
        assert score is not None
        scores.append(int(score) - now)
        now = int(score)
    assert scores == [100, 200, 400, 500]
    assert [policy.delay_ms(k) for k in range(1, 5)] == scores


async def test_a_release_past_the_cap_fails_the_run_saying_why(redis: Redis) -> None:
    queue = Queue(redis, Keys(), lease_ms=5000)
    policy = Redelivery(max_redeliveries=2, backoff_ms=10, max_backoff_ms=10)
    await queue.enqueue_runs([dataclasses.replace(_run(1), cancel_on=(CancelOn("stop"),))], NOW)
    assert await redis.hlen(SHARD.wait_refs("run0001")) == 1
    now = NOW
    for _ in range(3):
        (job,), _ = await queue.lease(SHARD, [(FN, 1)], 1, now)
        assert await queue.release([_held(job)], now, "the worker disconnected", policy) == 1
        now += 10
    run = await redis.hgetall(SHARD.run("run0001"))
    assert run[b"status"] == b"failed"
    assert json.loads(run[b"error"]) == {
        "name": "RedeliveryLimitError",
        "message": "job redelivered 2 times without an answer; last: the worker disconnected",
        "stack": ""}
    assert not await redis.exists(SHARD.job("run0001"), SHARD.wait_refs("run0001"))
    assert await redis.zcard(SHARD.ready(FN)) == 0 and await redis.zcard(SHARD.leased) == 0
    assert await redis.ttl(SHARD.run("run0001")) > 0
    end = [f for _, f in await redis.xrange(SHARD.history) if f[b"k"] == b"end"]
    assert len(end) == 1 and end[0][b"status"] == b"failed"
    assert end[0][b"fn"] == FN.encode() and end[0][b"error"] == run[b"error"]


async def test_an_expired_lease_past_the_cap_fails_the_run_and_its_planned_steps(
    redis: Redis,
) -> None:
    queue = Queue(redis, Keys(), lease_ms=1000)
    policy = Redelivery(max_redeliveries=1, backoff_ms=10, max_backoff_ms=10)
    await queue.enqueue_runs([_run(1)], NOW)
    (job,), _ = await queue.lease(SHARD, [(FN, 1)], 1, NOW)
    # A planned step's job waits in the ready set beside it: the run's end drops it too.
    await redis.sadd(SHARD.planned("run0001"), "s1")
    await redis.hset(SHARD.job("run0001:s1"), mapping={"run": "run0001", "fn": FN, "step": "s1",
                                                       "attempt": 0, "lease": ""})
    await redis.zadd(SHARD.ready(FN), {"run0001:s1": NOW + 60_000})
    assert await queue.requeue_expired(SHARD, NOW + 1000, policy=policy) == 1
    assert await redis.zscore(SHARD.ready(FN), job.job_id) == NOW + 1010
    (_again,), _ = await queue.lease(SHARD, [(FN, 1)], 1, NOW + 1010)
    assert await queue.requeue_expired(SHARD, NOW + 2010, policy=policy) == 1
    assert await redis.hget(SHARD.run("run0001"), "status") == b"failed"
    error = json.loads(await redis.hget(SHARD.run("run0001"), "error"))
    assert error["name"] == "RedeliveryLimitError" and "lease expired" in error["message"]
    assert await redis.zcard(SHARD.ready(FN)) == 0
    assert not await redis.exists(SHARD.job("run0001:s1"), SHARD.planned("run0001"))


async def test_an_answer_between_hand_backs_starts_the_count_again(redis: Redis) -> None:
    queue = Queue(redis, Keys(), lease_ms=5000)
    state = StateStore(redis, Keys(), Settings())
    policy = Redelivery(max_redeliveries=1, backoff_ms=10, max_backoff_ms=10)
    await queue.enqueue_runs([_run(1)], NOW)
    (job,), _ = await queue.lease(SHARD, [(FN, 1)], 1, NOW)
    await queue.release([_held(job)], NOW, "gone", policy)
    (job,), _ = await queue.lease(SHARD, [(FN, 1)], 1, NOW + 10)
    (applied,) = await state.apply([(job, StepCompleted(StepId("s1"), "s1", b"1"))], NOW + 10,
                                   relock=True)
    assert applied.next_job is not None
    # The relocked lease came from an answer: handing it back is the first in a row again.
    assert await queue.release([_held(applied.next_job)], NOW + 20, "gone", policy) == 1
    assert await redis.hget(SHARD.job("run0001"), "redeliveries") == b"1"
    assert await redis.hget(SHARD.run("run0001"), "status") == b"running"


async def test_a_release_of_a_job_whose_run_ended_drops_it_past_the_cap(redis: Redis) -> None:
    queue = Queue(redis, Keys(), lease_ms=5000)
    policy = Redelivery(max_redeliveries=1, backoff_ms=10, max_backoff_ms=10)
    await queue.enqueue_runs([_run(1)], NOW)
    (job,), _ = await queue.lease(SHARD, [(FN, 1)], 1, NOW)
    await queue.release([_held(job)], NOW, "gone", policy)
    (job,), _ = await queue.lease(SHARD, [(FN, 1)], 1, NOW + 10)
    await redis.hset(SHARD.run("run0001"), "status", "completed")
    assert await queue.release([_held(job)], NOW + 10, "gone", policy) == 1
    assert not await redis.exists(SHARD.job("run0001"))
    assert await redis.hget(SHARD.run("run0001"), "status") == b"completed"


async def test_an_expired_lease_is_requeued_unless_extended(redis: Redis) -> None:
    queue = Queue(redis, Keys(), lease_ms=1000)
    await queue.enqueue_runs([_run(1), _run(2)], NOW)
    jobs, _ = await queue.lease(Keys().shard(0), [(FunctionId("app-a"), 2)], 2, NOW)
    keep = jobs[0]
    assert await queue.extend([HeldLease(keep.job_id, keep.lease_id, keep.run_id)], NOW + 900) == 1
    assert await queue.requeue_expired(Keys().shard(0), NOW + 1500) == 1
    again, _ = await queue.lease(Keys().shard(0), [(FunctionId("app-a"), 2)], 2, NOW + 1700)
    assert [j.job_id for j in again] == [jobs[1].job_id]
