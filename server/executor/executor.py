"""The executor: leases jobs for the functions drivers can run now, hands them to drivers,
and applies the opcodes that come back, whichever transport carried them."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from server.config import Settings
from server.drivers import DATA_ERRORS, Driver, undeliverable
from server.errors import StorageError
from server.executor.opcodes import checked, ended_step
from server.keys import ShardKeys
from server.liveness import Liveness
from server.queue import Queue
from server.queue.queue import HeldLease, Redelivery
from server.state import Applied, Outcome, StateStore
from server.tasks import raise_if_cancelling
from server.telemetry.telemetry import Telemetry
from server.types import Job, Opcode, RunId, RunStatus

log = structlog.get_logger(__name__)

LEASE_BATCH = 512
IDLE_POLL_S = 0.05  # another process may have queued work; in-process work wakes us at once
SCAVENGE_INTERVAL_S = 1.0
# Dead processes' leases are looked for this often (server/liveness.py): a few reads a tick.
DEAD_CHECK_INTERVAL_S = 0.25
# Redis refused a call (an error reply such as OOM): the loop waits this long and goes on.
REFUSED_RETRY_S = 0.5
# A commit Redis refused is tried again, from this delay doubling to a second, for at most the
# lease time; the lease fences it, so a late success after a redelivery is dropped as stale.
COMMIT_RETRY_FIRST_S = 0.05
UNPLACED = "no worker could take the job"
WORKER_GONE = "the worker disconnected holding the job"


def _now_ms() -> int:
    return int(time.time() * 1000)


class Executor:
    def __init__(self, queue: Queue, state: StateStore, settings: Settings,
                 telemetry: Telemetry | None = None, redis: Redis | None = None,
                 liveness: Liveness | None = None) -> None:
        # `redis` carries cancels to the processes whose workers hold a run's jobs.
        self._redis = redis
        # Hands back the leases of processes whose heartbeat is gone, at once.
        self._liveness = liveness
        self._queue = queue
        self._state = state
        self._settings = settings
        self._redelivery = Redelivery.of(settings)
        self._telemetry = telemetry or Telemetry()
        self._drivers: list[Driver] = []
        self._wakeup = asyncio.Event()
        # Per shard, where the fair split between functions starts (see _lease_shard); and
        # the order in which shards are offered a driver's slots (see _lease_once).
        self._rotation = [0] * len(queue.keys.all_shards())
        self._shard_order = queue.keys.all_shards()

    def add_driver(self, driver: Driver) -> None:
        self._drivers.append(driver)
        self.wake()

    def wake(self) -> None:
        self._wakeup.set()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._lease_loop())
            tg.create_task(self._scavenge_loop())
            if self._redis is not None:
                tg.create_task(self._cancel_listener(self._redis))

    async def _lease_loop(self) -> None:
        while True:
            raise_if_cancelling()
            self._wakeup.clear()
            wait_s = await self._lease_once()
            if wait_s > 0:
                try:
                    await asyncio.wait_for(self._wakeup.wait(), wait_s)
                except TimeoutError:
                    pass

    async def _lease_once(self) -> float:
        """Leases and dispatches for every driver once; returns how long to wait for more.

        A driver's free slots are shared between the shards, in rounds: each shard with work
        left is offered an equal share (the first shards in a rotating order get the rest),
        the shards lease at once, and what a shard could not use goes to the others in the
        next round. One loop divides the slots, so no shard can take them all while the
        others wait (lease.lua is fair between functions within a shard only), and the
        shards together never lease more than the driver can take."""
        wait_s = IDLE_POLL_S
        for driver in self._drivers:
            pending = list(self._shard_order)
            while pending and (free := min(driver.total_capacity(), LEASE_BATCH)) > 0:
                shares = [free // len(pending) + (1 if i < free % len(pending) else 0)
                          for i in range(len(pending))]
                offered = [(shard, share) for shard, share in zip(pending, shares, strict=True)
                           if share > 0]
                now = _now_ms()
                leased = await asyncio.gather(
                    *(self._lease_shard(driver, shard, share, now) for shard, share in offered))
                jobs: list[Job] = []
                more: list[ShardKeys] = []
                for (shard, share), (got, next_due) in zip(offered, leased, strict=True):
                    jobs += got
                    if len(got) == share:  # it may have more: offered again next round
                        more.append(shard)
                    elif next_due >= 0:
                        wait_s = min(wait_s, max(0.0, (next_due - now) / 1000))
                # The shards offered slots go to the back: with fewer free slots than shards
                # (one slot freed at a time), each shard is offered in turn.
                served = {shard.shard for shard, _ in offered}
                self._shard_order = ([s for s in self._shard_order if s.shard not in served]
                                     + [shard for shard, _ in offered])
                pending = pending[len(offered):] + more
                if not jobs:
                    continue  # the shards not offered a slot yet are, in the next round
                if self._telemetry.tracing:
                    jobs = self._telemetry.with_trace_context(jobs)
                await self._dispatch(driver, jobs)
                wait_s = 0
        return wait_s

    async def _lease_shard(self, driver: Driver, shard: ShardKeys, total: int,
                           now: int) -> tuple[list[Job], int]:
        """Leases up to `total` jobs of one shard, fairly between the functions the driver
        can run; ([], -1) when Redis refused (OOM): the next pass tries again."""
        caps = list(driver.capacity().items())
        # Rotate the order, per shard, so no function is always first in the fair split.
        turn = self._rotation[shard.shard] = (self._rotation[shard.shard] + 1) % max(1, len(caps))
        caps = caps[turn:] + caps[:turn]
        try:
            return await self._queue.lease(shard, caps, total, now)
        except (ResponseError, StorageError) as e:  # Redis refused (OOM): not a crash
            log.warning("lease.refused", shard=shard.shard, error=str(e))
            return [], _now_ms() + int(REFUSED_RETRY_S * 1000)

    async def _dispatch(self, driver: Driver, jobs: Sequence[Job]) -> None:
        """Hands leased jobs to a driver. A driver that raises gets them one by one, so the
        error stays with the job that causes it (see dispatch_failed). A parallel group's
        parked sleep, wait or invoke that came due ends here, whichever the transport
        (opcodes.ended_step)."""
        ended = [(job, op) for job in jobs if (op := ended_step(job)) is not None]
        if ended:
            done = {job.job_id for job, _ in ended}
            jobs = [job for job in jobs if job.job_id not in done]
            try:
                await self.commit(ended, relock=False)
            except StorageError as e:  # the leases expire and the jobs come back
                log.warning("parked_steps.refused", jobs=len(ended), error=str(e))
            if not jobs:
                return
        try:
            unplaced = await driver.dispatch(jobs)
        except Exception as e:
            log.warning("dispatch.failed", jobs=len(jobs), error=repr(e)[:500])
            unplaced = []
            for job in jobs:
                try:
                    unplaced += await driver.dispatch([job])
                except Exception as one:
                    await self.dispatch_failed(job, one)
        if unplaced:
            await self.release(unplaced, UNPLACED)

    async def dispatch_failed(self, job: Job, error: Exception) -> None:
        """Confines an error met while sending one held job: a fault of the job's own data
        fails its run now (non-retriable, naming the error); any other hands the job back,
        with the redelivery backoff and cap. Never raises but CancelledError: when Redis
        refuses even this, the lease expires and the scavenger hands the job back."""
        with structlog.contextvars.bound_contextvars(run_id=job.run_id, job_id=job.job_id):
            try:
                if isinstance(error, DATA_ERRORS):
                    log.warning("job.undeliverable", error=repr(error)[:500])
                    await self.commit([(job, undeliverable(error))], relock=False)
                else:
                    log.warning("job.dispatch_failed", error=repr(error)[:500])
                    await self.release([job], f"sending it failed: {type(error).__name__}: "
                                              f"{error}")
            except Exception:
                log.warning("job.quarantine_failed", exc_info=True)

    async def _scavenge_loop(self) -> None:
        every = max(1, round(SCAVENGE_INTERVAL_S / DEAD_CHECK_INTERVAL_S))
        ticks = 0
        while True:
            raise_if_cancelling()
            await asyncio.sleep(DEAD_CHECK_INTERVAL_S)
            ticks += 1
            for shard in self._queue.keys.all_shards():
                try:
                    await self._release_dead(shard)
                    if ticks % every == 0:
                        await self._scavenge(shard)
                except (ResponseError, StorageError) as e:  # Redis refused (OOM): next turn
                    log.warning("scavenge.refused", shard=shard.shard, error=str(e))

    async def _release_dead(self, shard: ShardKeys) -> None:
        """Hands back the leases of holders whose heartbeat is gone; live processes' leases
        keep their expiry, however long their steps take."""
        if self._liveness is None:
            return
        dead = await self._liveness.dead_holders(await self._liveness.holders(shard))
        if dead:
            # Due at once, still counted against max_redeliveries: the backoff keeps a job from
            # coming straight back after each instant hand-back, but a dead holder's hand-backs
            # are already seconds apart (each needs a process to die and its heartbeat to end).
            at_once = dataclasses.replace(self._redelivery, backoff_ms=0)
            released = await self._queue.release_dead(shard, dead, _now_ms(), at_once)
            if released:  # a process that stopped cleanly had handed its leases back itself
                log.warning("lease.holder_dead", shard=shard.shard, holders=dead, jobs=released)
                self.wake()

    async def _scavenge(self, shard: ShardKeys) -> None:
        requeued = await self._queue.requeue_expired(shard, _now_ms(), policy=self._redelivery)
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
        """Applies opcodes answered for held jobs; wakes the lease loop when work was queued.
        Raises StorageError when Redis kept refusing a commit (OOM, ...): the caller must keep
        or hand back the jobs, never take their results as applied or dropped."""
        checked_results = [
            (job, checked(op, self._settings.max_step_output_bytes,
                          self._settings.max_event_bytes, job.target_step,
                          self._settings.max_error_bytes))
            for job, op in results
        ]
        applied = await self._apply(checked_results, relock)
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

    async def _apply(self, results: Sequence[tuple[Job, Opcode]], relock: bool) -> list[Applied]:
        """state.apply, trying again the results Redis refused (Outcome.UNAVAILABLE)."""
        applied = await self._state.apply(results, _now_ms(), relock)
        deadline = time.monotonic() + self._settings.lease_ms / 1000
        delay_s = COMMIT_RETRY_FIRST_S
        while refused := [i for i, a in enumerate(applied) if a.outcome is Outcome.UNAVAILABLE]:
            if time.monotonic() + delay_s > deadline:
                if any(a.outcome is not Outcome.UNAVAILABLE for a in applied):
                    self.wake()  # what was applied stays applied
                raise StorageError(f"commit of {len(refused)} result(s): Redis answered "
                                   f"{applied[refused[0]].error}")
            log.warning("commit.refused", results=len(refused), error=applied[refused[0]].error)
            await asyncio.sleep(delay_s)
            delay_s = min(1.0, delay_s * 2)
            again = await self._state.apply([results[i] for i in refused], _now_ms(), relock)
            for i, a in zip(refused, again, strict=True):
                applied[i] = a
        return applied

    def _traced(self, applied: Applied) -> Applied:
        """A relocked next job with the traceparent of its own step span."""
        if applied.next_job is None:
            return applied
        (job,) = self._telemetry.with_trace_context([applied.next_job])
        return dataclasses.replace(applied, next_job=job)

    async def release(self, jobs: Sequence[Job], reason: str = WORKER_GONE) -> None:
        """Hands held jobs back without an answer (their worker went away, the driver could
        not deliver them): redelivered after the backoff; past the cap their run fails,
        naming `reason`."""
        if jobs:
            await self._queue.release(
                [HeldLease(j.job_id, j.lease_id, j.run_id) for j in jobs], _now_ms(), reason,
                self._redelivery)
            self.wake()

    async def extend(self, jobs: Sequence[Job]) -> None:
        """Extends held leases. Redis refusing it (OOM) is logged, not raised: a worker's
        stream must not end over a heartbeat, and a lease that lapses is only redelivered."""
        if jobs:
            try:
                await self._queue.extend(
                    [HeldLease(j.job_id, j.lease_id, j.run_id) for j in jobs], _now_ms())
            except (ResponseError, StorageError) as e:
                log.warning("lease.extend_refused", jobs=len(jobs), error=str(e))

    async def cancel_run(self, run_id: RunId) -> RunStatus:
        status, was_leased = await self._state.cancel_run(run_id, _now_ms())
        if was_leased:
            await self._tell_drivers_cancelled(run_id)
        return status

    def capacity_changed(self) -> None:
        self.wake()


__all__ = ["Executor"]
