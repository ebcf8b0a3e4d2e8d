"""The executor: leases jobs for the functions drivers can run now, hands them to drivers,
and applies the opcodes that come back, whichever transport carried them."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from server.config import Settings
from server.drivers import Driver
from server.executor.opcodes import checked
from server.keys import ShardKeys
from server.queue import Queue
from server.queue.queue import HeldLease
from server.state import Applied, Outcome, StateStore
from server.tasks import raise_if_cancelling
from server.telemetry.telemetry import Telemetry
from server.types import Job, Opcode, RunId, RunStatus

log = structlog.get_logger(__name__)

LEASE_BATCH = 512
IDLE_POLL_S = 0.05  # another process may have queued work; in-process work wakes us at once
SCAVENGE_INTERVAL_S = 1.0


def _now_ms() -> int:
    return int(time.time() * 1000)


class Executor:
    def __init__(self, queue: Queue, state: StateStore, settings: Settings,
                 telemetry: Telemetry | None = None, redis: Redis | None = None) -> None:
        # `redis` carries cancels to the processes whose workers hold a run's jobs.
        self._redis = redis
        self._queue = queue
        self._state = state
        self._settings = settings
        self._telemetry = telemetry or Telemetry()
        self._drivers: list[Driver] = []
        # One event per lease loop: wake() must reach every shard's loop.
        self._wakeups = [asyncio.Event() for _ in queue.keys.all_shards()]
        self._rotation = 0

    def add_driver(self, driver: Driver) -> None:
        self._drivers.append(driver)
        self.wake()

    def wake(self) -> None:
        for event in self._wakeups:
            event.set()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for shard in self._queue.keys.all_shards():
                tg.create_task(self._lease_loop(shard))
            tg.create_task(self._scavenge_loop())
            if self._redis is not None:
                tg.create_task(self._cancel_listener(self._redis))

    async def _lease_loop(self, shard: ShardKeys) -> None:
        wakeup = self._wakeups[shard.shard]
        while True:
            raise_if_cancelling()
            wakeup.clear()
            wait_s = IDLE_POLL_S
            for driver in self._drivers:
                total = driver.total_capacity()
                if total <= 0:
                    continue
                caps = list(driver.capacity().items())
                # Rotate the order so no function is always first in the fair split.
                self._rotation = (self._rotation + 1) % max(1, len(caps))
                caps = caps[self._rotation:] + caps[: self._rotation]
                now = _now_ms()
                jobs, next_due = await self._queue.lease(
                    shard, caps, min(total, LEASE_BATCH), now)
                if jobs:
                    if self._telemetry.tracing:
                        jobs = self._telemetry.with_trace_context(jobs)
                    unplaced = await driver.dispatch(jobs)
                    if unplaced:
                        await self._queue.release(
                            [HeldLease(j.job_id, j.lease_id, j.run_id) for j in unplaced], now)
                    wait_s = 0
                elif next_due >= 0:
                    wait_s = min(wait_s, max(0.0, (next_due - now) / 1000))
            if wait_s > 0:
                try:
                    await asyncio.wait_for(wakeup.wait(), wait_s)
                except TimeoutError:
                    pass

    async def _scavenge_loop(self) -> None:
        while True:
            raise_if_cancelling()
            await asyncio.sleep(SCAVENGE_INTERVAL_S)
            for shard in self._queue.keys.all_shards():
                requeued = await self._queue.requeue_expired(shard, _now_ms())
                if requeued:
                    log.warning("lease.expired", shard=shard.shard, jobs=requeued)
                    self.wake()
                for run_id, held in await self._state.time_out_runs(shard, _now_ms()):
                    log.info("run.timed_out", run_id=run_id, reason="finish")
                    if held:
                        await self._tell_drivers_cancelled(run_id)

    async def _tell_local_drivers(self, run_id: RunId) -> bool:
        for driver in self._drivers:
            if await driver.cancel(run_id):
                return True
        return False

    async def _tell_drivers_cancelled(self, run_id: RunId) -> None:
        """Tells the worker holding a job of the run to stop, wherever it is connected."""
        if not await self._tell_local_drivers(run_id) and self._redis is not None:
            await self._redis.publish(self._queue.keys.cancels, run_id)

    async def _cancel_listener(self, redis: Redis) -> None:
        """Passes cancels published by other processes to this process's drivers; a lost
        subscription is made again (a cancel missed meanwhile still ends the run: the
        worker's late result is dropped)."""
        while True:
            try:
                await self._listen(redis)
            except (RedisError, OSError) as e:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise asyncio.CancelledError from e
                log.warning("cancels.subscription_lost", error=repr(e))
                await asyncio.sleep(SCAVENGE_INTERVAL_S)

    async def _listen(self, redis: Redis) -> None:
        pubsub = redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self._queue.keys.cancels)
            while True:
                raise_if_cancelling()
                message = await pubsub.get_message(timeout=1.0)
                if message is not None and message.get("type") == "message":
                    data = message["data"]
                    run_id = RunId(data.decode() if isinstance(data, bytes) else str(data))
                    await self._tell_local_drivers(run_id)
        finally:
            await asyncio.shield(pubsub.aclose())  # type: ignore[no-untyped-call]

    async def commit(
        self, results: Sequence[tuple[Job, Opcode]], relock: bool
    ) -> list[Applied]:
        """Applies opcodes answered for held jobs; wakes the lease loop when work was queued."""
        checked_results = [
            (job, checked(op, self._settings.max_step_output_bytes,
                          self._settings.max_event_bytes, job.target_step))
            for job, op in results
        ]
        applied = await self._state.apply(checked_results, _now_ms(), relock)
        for (job, _), outcome in zip(checked_results, applied, strict=True):
            if outcome.outcome in (Outcome.STALE, Outcome.NOT_RUNNING):
                log.info("result.dropped", run_id=job.run_id, job_id=job.job_id,
                         reason=outcome.error)
            elif outcome.retrying:
                self._telemetry.retry_scheduled(job)
        if any(a.outcome is Outcome.SCHEDULED for a in applied):
            self.wake()
        if self._telemetry.tracing:
            applied = [self._traced(a) for a in applied]
        return applied

    def _traced(self, applied: Applied) -> Applied:
        """A relocked next job with the traceparent of its own step span."""
        if applied.next_job is None:
            return applied
        (job,) = self._telemetry.with_trace_context([applied.next_job])
        return dataclasses.replace(applied, next_job=job)

    async def release(self, jobs: Sequence[Job]) -> None:
        """Hands jobs back for redelivery (their worker went away)."""
        if jobs:
            await self._queue.release(
                [HeldLease(j.job_id, j.lease_id, j.run_id) for j in jobs], _now_ms())
            self.wake()

    async def extend(self, jobs: Sequence[Job]) -> None:
        if jobs:
            await self._queue.extend(
                [HeldLease(j.job_id, j.lease_id, j.run_id) for j in jobs], _now_ms())

    async def cancel_run(self, run_id: RunId) -> RunStatus:
        status, was_leased = await self._state.cancel_run(run_id, _now_ms())
        if was_leased:
            await self._tell_drivers_cancelled(run_id)
        return status

    def capacity_changed(self) -> None:
        self.wake()


__all__ = ["Executor"]
