"""The executor against real Redis: an error while sending one job stays with that job, and a
commit Redis refuses is neither applied nor dropped."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import pytest
from redis.asyncio import Redis

from server.config import Settings
from server.errors import StorageError
from server.executor.executor import Executor
from server.keys import Keys
from server.queue import NewRun, Queue
from server.state import Outcome, StateStore
from server.types import AppId, EventId, FunctionId, Job, RunId, StepCompleted, StepId
from tests.e2e.harness import eventually

FN = FunctionId("app-a")
SK = Keys().shard(0)


class _Driver:
    """Takes every job but raises on the runs named in `poison` (as a conversion would)."""

    def __init__(self, poison: dict[str, Exception]) -> None:
        self.poison = poison
        self.sent: list[Job] = []
        self.calls = 0

    def capacity(self) -> dict[FunctionId, int]:
        return {FN: 10}

    def total_capacity(self) -> int:
        return 10

    async def dispatch(self, jobs: Sequence[Job]) -> list[Job]:
        self.calls += 1
        for job in jobs:
            if job.run_id in self.poison:
                raise self.poison[job.run_id]
        self.sent += jobs
        return []

    async def cancel(self, run_id: RunId) -> bool:
        return False


def _settings() -> Settings:
    return Settings(max_redeliveries=2, redelivery_backoff_ms=10, backoff_max_ms=20,
                    lease_ms=1000, heartbeat_interval_ms=500)


async def _world(redis: Redis, runs: list[str]) -> tuple[Queue, StateStore, Executor]:
    settings = _settings()
    queue = Queue(redis, Keys(), settings.lease_ms)
    state = StateStore(redis, Keys(), settings)
    await queue.enqueue_runs([NewRun(RunId(r), FN, AppId("app"), EventId(r), b"{}", 3, 0)
                              for r in runs], 0)
    return queue, state, Executor(queue, state, settings)


async def _status(redis: Redis, run_id: str) -> bytes | None:
    value: bytes | None = await redis.hget(SK.run(run_id), "status")
    return value


async def test_a_job_the_driver_cannot_send_is_handed_back_until_its_run_fails(
    redis: Redis,
) -> None:
    _queue, _state, executor = await _world(redis, ["ok1", "bad", "ok2"])
    driver = _Driver({"bad": RuntimeError("the stream broke")})
    executor.add_driver(driver)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(executor.run())
        await eventually(lambda: _status(redis, "bad"), lambda s: s == b"failed", 10,
                         "the poison run to fail")
        # The lease loop went on: the healthy jobs were sent, each once.
        assert sorted(j.run_id for j in driver.sent) == ["ok1", "ok2"]
        task.cancel()
    error = json.loads(await redis.hget(SK.run("bad"), "error"))
    assert error["name"] == "RedeliveryLimitError"
    assert error["message"] == ("job redelivered 2 times without an answer; last: sending it "
                                "failed: RuntimeError: the stream broke")


async def test_a_job_whose_data_cannot_be_encoded_fails_its_run_at_once(redis: Redis) -> None:
    _queue, _state, executor = await _world(redis, ["bad", "ok"])
    driver = _Driver({"bad": ValueError("Out of range float values are not JSON compliant")})
    executor.add_driver(driver)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(executor.run())
        await eventually(lambda: _status(redis, "bad"), lambda s: s == b"failed", 10,
                         "the run to fail")
        assert [j.run_id for j in driver.sent] == ["ok"]
        task.cancel()
    error = json.loads(await redis.hget(SK.run("bad"), "error"))
    assert error["name"] == "JobEncodingError"
    assert "ValueError: Out of range float" in error["message"]
    assert await redis.hget(SK.job("bad"), "redeliveries") is None  # never handed back


async def test_a_commit_redis_refuses_is_tried_again_then_raised(redis: Redis) -> None:
    queue, _state, executor = await _world(redis, ["r1"])
    (job,), _ = await queue.lease(SK, [(FN, 1)], 1, 1)
    await redis.set(SK.steps("r1"), "not a hash")  # every commit of a memo is refused
    with pytest.raises(StorageError, match="WRONGTYPE"):
        await executor.commit([(job, StepCompleted(StepId("s1"), "s1", b"1"))], relock=True)
    # Not dropped: the job is still held under its lease, and commits once Redis takes it.
    assert await redis.hget(SK.job("r1"), "lease") == job.lease_id.encode()
    await redis.delete(SK.steps("r1"))
    (applied,) = await executor.commit([(job, StepCompleted(StepId("s1"), "s1", b"1"))],
                                       relock=True)
    assert applied.outcome is Outcome.CONTINUED
