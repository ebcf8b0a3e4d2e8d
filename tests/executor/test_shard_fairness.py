"""Fairness with several queue shards: the executor's lease loop shares a driver's free slots
between the shards, so a function with few runs is not left behind a flooded one whose runs
landed in other shards (lease.lua is fair within one shard only)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from redis.asyncio import Redis

from server.config import Settings
from server.executor.executor import Executor
from server.keys import Keys
from server.queue import NewRun, Queue
from server.state import StateStore
from server.types import AppId, EventId, FunctionId, Job, JobId, LeaseId, RunCompleted, RunId
from tests.e2e.harness import eventually

FLOOD, SMALL = FunctionId("flood"), FunctionId("small")
SLOTS = 8


class _Worker:
    """A driver with SLOTS slots whose worker finishes the jobs one at a time, in order."""

    def __init__(self) -> None:
        self.executor: Executor | None = None
        self.held: list[Job] = []
        self.order: list[FunctionId] = []
        self.over_capacity = 0

    def capacity(self) -> dict[FunctionId, int]:
        free = SLOTS - len(self.held)
        return {FLOOD: free, SMALL: free} if free > 0 else {}

    def total_capacity(self) -> int:
        return SLOTS - len(self.held)

    async def dispatch(self, jobs: Sequence[Job]) -> list[Job]:
        free = SLOTS - len(self.held)
        self.over_capacity += max(0, len(jobs) - free)
        self.held += jobs[:free]
        return list(jobs[free:])

    async def cancel(self, run_id: RunId) -> bool:
        return False

    async def work(self) -> None:
        assert self.executor is not None
        while True:
            if not self.held:
                await asyncio.sleep(0.001)
                continue
            job = self.held[0]
            await self.executor.commit([(job, RunCompleted(b"null"))], relock=False)
            self.held.pop(0)
            self.order.append(job.function_id)
            self.executor.capacity_changed()


def _runs(fn: FunctionId, count: int) -> list[NewRun]:
    return [NewRun(RunId(f"{fn}-{i:04d}"), fn, AppId("app"), EventId(f"{fn}{i}"),
                   b'{"name":"e","data":{}}', 3, 0) for i in range(count)]


async def test_a_flooded_function_does_not_starve_another_across_four_shards(
    redis: Redis,
) -> None:
    settings = Settings(queue_shards=4)
    keys = Keys(shards=4)
    queue = Queue(redis, keys, settings.lease_ms)
    executor = Executor(queue, StateStore(redis, keys, settings), settings)
    worker = _Worker()
    worker.executor = executor
    small = _runs(SMALL, 8)
    assert len({keys.for_run(r.run_id).shard for r in small}) > 1
    await queue.enqueue_runs(_runs(FLOOD, 400), 0)
    await queue.enqueue_runs(small, 0)
    executor.add_driver(worker)
    async with asyncio.TaskGroup() as tg:
        running = tg.create_task(executor.run())
        working = tg.create_task(worker.work())
        await eventually(lambda: _count(worker.order), lambda n: n == 408, 60, "every run")
        running.cancel()
        working.cancel()
    last_small = max(i for i, fn in enumerate(worker.order) if fn == SMALL)
    assert worker.order.count(SMALL) == 8
    # Fair: each shard gets its turn at the slots, and within a shard the functions share.
    assert last_small < 100, f"the small function waited behind {last_small} flood runs"
    assert worker.over_capacity == 0, "the shard loops leased more than the free slots"


async def _count(order: list[FunctionId]) -> int:
    return len(order)


async def test_one_free_slot_reaches_the_only_shard_with_work_in_one_pass(redis: Redis) -> None:
    settings = Settings(queue_shards=4)
    keys = Keys(shards=4)
    queue = Queue(redis, keys, settings.lease_ms)
    executor = Executor(queue, StateStore(redis, keys, settings), settings)
    worker = _Worker()
    worker.held = [_placeholder()] * (SLOTS - 1)  # one free slot
    executor.add_driver(worker)
    # A run in the shard offered the slot last: the empty shards before it pass it on.
    last = next(r for r in _runs(SMALL, 64) if keys.for_run(r.run_id).shard == 3)
    await queue.enqueue_runs([last], 0)

    assert await executor._lease_once() == 0
    assert [job.run_id for job in worker.held[SLOTS - 1:]] == [last.run_id]


def _placeholder() -> Job:
    return Job(job_id=JobId("held"), lease_id=LeaseId("0"), run_id=RunId("held"),
               function_id=FLOOD, attempt=0, max_attempts=1, event_json=b"{}",
               lease_expires_at_ms=0, steps={})
