"""Queue operations over Redis, one Lua script per atomic operation.

A job becomes runnable at its score in its function's ready set; leasing moves it to the
shard's leased set scored by lease expiry, so an expired lease is visible without any
decrement that a crash could lose.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.typing import EncodableT

from server.config import Settings
from server.keys import Keys, ShardKeys
from server.luascript import hash_from_flat, load_script
from server.queue.flow import FLOW_PRELUDE, NO_FLOW, RunFlow, batch_events
from server.state.waits import CANCEL, cancel_field, new_wait
from server.types import (
    AppId,
    CancelOn,
    EventId,
    FunctionConfig,
    FunctionId,
    Job,
    JobId,
    LeaseId,
    RunId,
)

_PKG = "server.queue"
_WAITS = "server.state:_waits"
_WITH_FLOW = (_WAITS, FLOW_PRELUDE)
# Failing a run from outside its attempt (a timeout, the redelivery cap): state's _end_run.lua.
_ENDS_RUNS = (*_WITH_FLOW, "server.state:_end_run")
_REDELIVER = (*_ENDS_RUNS, "_redeliver")
# What enqueue_runs.lua did with each run.
CREATED, EXISTED, SKIPPED, MERGED = 1, 0, 2, 3
# Deadline of one Redis call on the step path (the client has no per-reply socket timeout).
REDIS_CALL_S = 10.0


@dataclass(frozen=True, slots=True)
class NewRun:
    run_id: RunId
    function_id: FunctionId
    app_id: AppId
    event_id: EventId
    event_json: bytes
    max_attempts: int
    available_at_ms: int
    # Timeouts of the function (0: none): waiting to start, and from the start to the end.
    start_timeout_ms: int = 0
    finish_timeout_ms: int = 0
    # The function's cancel-on rules: stored as the run's wait entries when it is created.
    cancel_on: tuple[CancelOn, ...] = ()
    # Flow control evaluated for this run's event (server/runner/flow.py).
    flow: RunFlow = NO_FLOW

    @classmethod
    def of(cls, fn: FunctionConfig, run_id: RunId, event_id: EventId | str,
           event_json: bytes, flow: RunFlow = NO_FLOW) -> NewRun:
        """A run of `fn`, due now (a priority moves it ahead or behind), with the function's
        retries, timeouts, cancel-on and the run's evaluated flow control."""
        return cls(
            run_id=run_id, function_id=fn.id, app_id=fn.app_id, event_id=EventId(event_id),
            event_json=event_json, max_attempts=fn.retries + 1,
            available_at_ms=-flow.priority_ms,
            start_timeout_ms=fn.start_timeout_ms, finish_timeout_ms=fn.finish_timeout_ms,
            cancel_on=fn.cancel_on, flow=flow,
        )


@dataclass(frozen=True, slots=True)
class Enqueued:
    """What enqueue_runs did, in the order of the runs: CREATED, EXISTED, SKIPPED (flow
    control recorded it as skipped) or MERGED (its event went to a debounced or batched run);
    and the runs a singleton `cancel` displaced, for the caller to cancel."""

    codes: list[int]
    cancels: list[RunId]

    @property
    def queued(self) -> list[bool]:
        """Per run: whether work was queued for it (a new run, or an event given to one)."""
        return [c in (CREATED, MERGED) for c in self.codes]


# New runs are queued "at once", at scores below this (0, or -priority ms within ±600 s);
# every later job is queued at a Unix time in ms, far above it.
NEW_RUN_SCORES = 10**9
_ARRIVAL_BITS = 36  # ms of arrival kept: wraps every 2.2 years
_ARRIVAL_SLOTS = 1 << 13  # runs told apart within one ms of one call


def _arrival_score(available_at_ms: int, now_ms: int, i: int) -> float:
    """A new run's score with its arrival order as a fraction below 1 ms: ties at one score
    are broken by member, and run ids are hashes, so runs queued in one call (one request's
    events) would otherwise start in a random order, which throttling makes visible."""
    if available_at_ms >= NEW_RUN_SCORES:
        return available_at_ms
    arrival = (now_ms % (1 << _ARRIVAL_BITS)) * _ARRIVAL_SLOTS + min(i, _ARRIVAL_SLOTS - 1)
    return available_at_ms + arrival / (1 << (_ARRIVAL_BITS + 13))


@dataclass(frozen=True, slots=True)
class Redelivery:
    """How jobs handed back without an answer come back: the k-th hand-back in a row is due
    after min(max_backoff_ms, backoff_ms * 2^(k-1)); one past `max_redeliveries` fails the
    run (RedeliveryLimitError). The defaults are Settings' defaults."""

    max_redeliveries: int = 20
    backoff_ms: int = 200
    max_backoff_ms: int = 300_000

    @classmethod
    def of(cls, settings: Settings) -> Redelivery:
        return cls(settings.max_redeliveries, settings.redelivery_backoff_ms,
                   settings.backoff_max_ms)

    def delay_ms(self, redeliveries: int) -> int:
        """When the job handed back for the `redeliveries`-th time in a row is due again."""
        return min(self.max_backoff_ms, self.backoff_ms << min(max(redeliveries - 1, 0), 40))


# A reason is kept in the job hash and may end up in a run's error: a sentence, not a dump.
MAX_REASON_CHARS = 1000


@dataclass(frozen=True, slots=True)
class HeldLease:
    job_id: JobId
    lease_id: LeaseId
    run_id: RunId


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def job_from_reply(
    item: Sequence[object], *, job_id: str | None = None, run_id: str | None = None,
    function_id: str | None = None,
) -> Job:
    """Builds a Job from a lease reply entry."""
    jid, lease, rid, fn, attempt, max_attempts, event, expires, flat, target, *rest = item
    steps = hash_from_flat(list(flat))  # type: ignore[call-overload]
    return Job(
        job_id=JobId(_s(jid)),  # type: ignore[arg-type]
        lease_id=LeaseId(_s(lease)),  # type: ignore[arg-type]
        run_id=RunId(_s(rid)),  # type: ignore[arg-type]
        function_id=FunctionId(_s(fn)),  # type: ignore[arg-type]
        attempt=int(attempt),  # type: ignore[call-overload]
        max_attempts=int(max_attempts),  # type: ignore[call-overload]
        event_json=event if isinstance(event, bytes) else str(event).encode(),
        steps=steps,
        lease_expires_at_ms=int(expires),  # type: ignore[call-overload]
        target_step=_s(target),  # type: ignore[arg-type]
        events=batch_events(rest[0] if rest else b""),
    )


def _cancel_waits(sk: ShardKeys, run: NewRun, now_ms: int) -> str:
    if not run.cancel_on:
        return ""
    event = json.loads(run.event_json)
    return json.dumps([
        new_wait(sk, kind=CANCEL, event_name=c.event, run_id=run.run_id,
                 field=cancel_field(run.run_id, k), step_id="", function_id=run.function_id,
                 if_expression=c.if_expression,
                 until_ms=now_ms + c.timeout_ms if c.timeout_ms > 0 else 0,
                 run_event=event).lua_args()
        for k, c in enumerate(run.cancel_on)
    ])


class Queue:
    def __init__(self, redis: Redis, keys: Keys, lease_ms: int,
                 finished_run_ttl_s: int = 86_400, holder: str = "") -> None:
        self._finished_run_ttl_s = finished_run_ttl_s
        # This process's holder id (server/liveness.py), kept on the jobs it leases.
        self.holder = holder
        self._redis = redis
        self._keys = keys
        self.lease_ms = lease_ms
        # Both end or start runs, and with them their wait entries.
        self._enqueue = load_script(redis, _PKG, "enqueue_runs", prelude=_WITH_FLOW)
        self._lease = load_script(redis, _PKG, "lease", prelude=_ENDS_RUNS)
        self._extend = load_script(redis, _PKG, "extend")
        # Both may end a run (past the redelivery cap), and with it its wait entries.
        self._release = load_script(redis, _PKG, "release", prelude=_REDELIVER)
        self._requeue = load_script(redis, _PKG, "requeue_expired", prelude=_REDELIVER)
        self._release_dead = load_script(redis, _PKG, "release_dead", prelude=_REDELIVER)

    @property
    def keys(self) -> Keys:
        return self._keys

    async def enqueue_runs(self, runs: Sequence[NewRun], now_ms: int) -> list[bool]:
        """Creates runs with their first job, one script call per shard; per run whether
        work was queued (False: it existed, or flow control skipped it). In `runs`' order."""
        return (await self.enqueue(runs, now_ms)).queued

    async def enqueue(self, runs: Sequence[NewRun], now_ms: int) -> Enqueued:
        """Creates runs with their first job under their flow control, one script call per
        shard (a flow-controlled function's runs are all in one shard)."""
        if not runs:
            return Enqueued([], [])
        by_shard: dict[int, list[int]] = {}
        for i, run in enumerate(runs):
            by_shard.setdefault(self._keys.for_run(run.run_id).shard, []).append(i)
        codes = [EXISTED] * len(runs)
        cancels: list[RunId] = []
        for n, indexes in by_shard.items():
            sk = self._keys.shard(n)
            args: list[EncodableT] = [sk.tag, now_ms, self._finished_run_ttl_s]
            for i in indexes:
                run = runs[i]
                start_by = now_ms + run.start_timeout_ms if run.start_timeout_ms > 0 else 0
                flow = run.flow
                args += [run.run_id, run.function_id, run.app_id, run.event_json, run.event_id,
                         run.max_attempts, _arrival_score(run.available_at_ms, now_ms, i),
                         run.run_id, start_by,
                         run.finish_timeout_ms, _cancel_waits(sk, run, now_ms),
                         "" if flow is NO_FLOW else flow.create_arg(sk, run.function_id),
                         "" if flow is NO_FLOW else flow.run_arg(sk, run.function_id)]
            async with asyncio.timeout(REDIS_CALL_S):
                reply = await self._enqueue(keys=[sk.history], args=args)
            flags, displaced = reply
            for i, flag in zip(indexes, flags, strict=True):
                codes[i] = int(flag)
            cancels += [RunId(_s(r)) for r in displaced]
        return Enqueued(codes, cancels)

    async def lease(
        self, shard: ShardKeys, caps: Sequence[tuple[FunctionId, int]], total: int, now_ms: int
    ) -> tuple[list[Job], int]:
        """Leases up to `total` ready jobs fairly across the functions in `caps`.

        Returns the jobs and the earliest due time left in those functions (-1: none).
        """
        if not caps or total <= 0:
            return [], -1
        keys = [shard.leased, shard.lease_seq, shard.history] + [shard.ready(f) for f, _ in caps]
        args: list[EncodableT] = [now_ms, self.lease_ms, total, shard.tag]
        args += [c for _, c in caps]
        args += [self._finished_run_ttl_s, self.holder]
        async with asyncio.timeout(REDIS_CALL_S):
            reply = await self._lease(keys=keys, args=args)
        items, next_due = reply
        return [job_from_reply(item) for item in items], int(next_due)

    async def extend(self, leases: Sequence[HeldLease], now_ms: int) -> int:
        return await self._per_shard(self._extend, leases, now_ms + self.lease_ms)

    async def release(self, leases: Sequence[HeldLease], now_ms: int, reason: str,
                      policy: Redelivery = Redelivery()) -> int:
        """Hands jobs back without an answer: a redelivery, not a retry, due after the
        policy's backoff; a job over the cap fails its run, naming `reason`. Returns the
        number of jobs handed back (leases no longer current are ignored)."""
        by_shard: dict[int, list[HeldLease]] = {}
        for held in leases:
            by_shard.setdefault(self._keys.for_run(held.run_id).shard, []).append(held)
        total = 0
        for n, group in by_shard.items():
            sk = self._keys.shard(n)
            args = self._redelivery_args(sk, now_ms, policy)
            args.append(reason[:MAX_REASON_CHARS])
            for held in group:
                args += [held.job_id, held.lease_id]
            async with asyncio.timeout(REDIS_CALL_S):
                total += int(await self._release(keys=[sk.leased, sk.history], args=args))
        return total

    async def requeue_expired(self, shard: ShardKeys, now_ms: int, limit: int = 500,
                              policy: Redelivery = Redelivery()) -> int:
        """Hands back the jobs whose lease expired, as `release` does."""
        args = self._redelivery_args(shard, now_ms, policy)
        args.append(limit)
        async with asyncio.timeout(REDIS_CALL_S):
            return int(await self._requeue(keys=[shard.leased, shard.history], args=args))

    async def release_dead(self, shard: ShardKeys, holders: Sequence[str], now_ms: int,
                           policy: Redelivery = Redelivery()) -> int:
        """Hands back at once, as `release` does, the leases of the shard held by `holders`
        (processes whose heartbeat is gone), and forgets those holders."""
        if not holders:
            return 0
        args = self._redelivery_args(shard, now_ms, policy)
        args += list(holders)
        async with asyncio.timeout(REDIS_CALL_S):
            return int(await self._release_dead(
                keys=[shard.leased, shard.history, shard.holders], args=args))

    def _redelivery_args(self, sk: ShardKeys, now_ms: int,
                         policy: Redelivery) -> list[EncodableT]:
        return [now_ms, sk.tag, policy.backoff_ms, policy.max_backoff_ms,
                policy.max_redeliveries, self._finished_run_ttl_s]

    async def _per_shard(self, script: object, leases: Sequence[HeldLease], first: int) -> int:
        by_shard: dict[int, list[HeldLease]] = {}
        for held in leases:
            by_shard.setdefault(self._keys.for_run(held.run_id).shard, []).append(held)
        total = 0
        for n, group in by_shard.items():
            sk = self._keys.shard(n)
            args: list[EncodableT] = [first, sk.tag]
            for held in group:
                args += [held.job_id, held.lease_id]
            total += int(await script(keys=[sk.leased], args=args))  # type: ignore[operator]
        return total

    async def ready_count(self, function_id: FunctionId) -> int:
        total = 0
        for sk in self._keys.all_shards():
            total += int(await self._redis.zcard(sk.ready(function_id)))
        return total
