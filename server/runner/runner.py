"""The runner: reads accepted events from the event stream and starts the runs they trigger.

Run ids are derived from (event id, function id), and run creation is idempotent, so an
event read twice after a crash starts each run once.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from server.keys import Keys
from server.liveness import Liveness, StreamTakeover
from server.queue import NewRun, Queue
from server.runner.expressions import matches

# run_id_for stays importable from here (cron, tests): it lives with flow's shard placement.
from server.runner.flow import new_run, run_id_for  # noqa: F401
from server.runner.registry import Registry
from server.runner.waits import WaitMatcher
from server.state import StateStore
from server.supervise import describe, is_storage_error
from server.tasks import raise_if_cancelling
from server.telemetry.metrics import Metrics
from server.types import (
    FUNCTION_FINISHED,
    FUNCTION_INVOKED,
    FunctionId,
    RunId,
)

log = structlog.get_logger(__name__)

GROUP = "runner"
EVENT_KEY_TTL_S = 24 * 3600
# Entries another runner read and did not acknowledge for this long are taken over; starting
# a run twice is harmless (run creation is idempotent), so this can be short.
CLAIM_IDLE_MS = 5_000
# Each stream read and acknowledgement has a deadline: a connection whose peer stopped
# answering (half-open, no RST) must end in an error the role is restarted from, not hang it.
REDIS_CALL_S = 10.0
# And a batch as a whole (up to 1,000 events): cut short, it is read again (run creation and
# resumed waits are idempotent).
BATCH_TIMEOUT_S = 60.0
EVENT_UNPROCESSABLE = "event.unprocessable"


@dataclass(slots=True)
class _Plan:
    """What one stream entry does: the runs it starts and the (name, event JSON) it offers
    to waiting runs."""

    entry_id: Any
    fields: dict[bytes, bytes]
    runs: list[NewRun]
    waited: list[tuple[str, bytes]]


def _text(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _cancel_with(state: StateStore) -> Callable[[RunId], Awaitable[object]]:
    async def cancel(run_id: RunId) -> object:
        return await state.cancel_run(run_id, int(time.time() * 1000))
    return cancel


class Runner:
    def __init__(
        self, redis: Redis, keys: Keys, queue: Queue, registry: Registry, consumer: str,
        on_enqueued: Callable[[], None], state: StateStore | None = None,
        cancel_run: Callable[[RunId], Awaitable[object]] | None = None,
        metrics: Metrics | None = None, liveness: Liveness | None = None,
    ) -> None:
        self._redis = redis
        self._keys = keys
        # Entries of a consumer whose heartbeat is gone are taken over at once, not after
        # CLAIM_IDLE_MS.
        self._takeover = (StreamTakeover(redis, liveness, GROUP, consumer)
                          if liveness is not None else None)
        self._queue = queue
        self._registry = registry
        self._index = registry.index
        self._consumer = consumer
        self._on_enqueued = on_enqueued
        self._metrics = metrics
        self._waits: WaitMatcher | None = None
        # The executor's cancel path: cancel-on matches and singleton `cancel` use it.
        self._cancel_run = cancel_run or (_cancel_with(state) if state is not None else None)
        if state is not None:
            self._waits = WaitMatcher(redis, keys, state, cancel_run or _cancel_with(state))

    async def _ensure_group(self) -> None:
        try:
            await self._redis.xgroup_create(self._keys.events, GROUP, id="0", mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    async def run(self) -> None:
        await self._ensure_group()
        # Entries this consumer read but did not finish before a crash come first.
        await self._drain("0")
        while True:
            raise_if_cancelling()
            await self._claim_dead()
            await self._claim_abandoned()
            await self._drain(">", block_ms=200)

    async def _claim_dead(self) -> None:
        if self._takeover is None:
            return
        claimed = await self._takeover.claim(self._keys.events)
        if claimed:
            async with asyncio.timeout(BATCH_TIMEOUT_S):
                await self.process(claimed)

    async def _claim_abandoned(self) -> None:
        async with asyncio.timeout(REDIS_CALL_S):
            reply: Any = await self._redis.xautoclaim(
                self._keys.events, GROUP, self._consumer, min_idle_time=CLAIM_IDLE_MS,
                count=500)
        claimed = reply[1]
        if claimed:
            async with asyncio.timeout(BATCH_TIMEOUT_S):
                await self.process(claimed)

    async def _drain(self, start: str, block_ms: int | None = None) -> None:
        while True:
            raise_if_cancelling()
            async with asyncio.timeout(REDIS_CALL_S):
                reply: Any = await self._redis.xreadgroup(
                    GROUP, self._consumer, {self._keys.events: start}, count=1000,
                    block=block_ms)
            entries = reply[0][1] if reply else []
            if not entries:
                return
            async with asyncio.timeout(BATCH_TIMEOUT_S):
                await self.process(entries)
            if start == ">":
                return

    async def process(self, entries: Sequence[tuple[Any, dict[bytes, bytes]]]) -> int:
        """Starts the runs of a batch of stream entries, then acknowledges them.

        An entry that cannot be processed (bad fields, JSON the wait matcher cannot parse) is
        logged as unprocessable and acknowledged with the rest, so it neither stops the
        batch nor comes back; a storage error fails the batch, which is read again.
        """
        # A function registered on another process a moment ago must match this batch.
        await self._registry.refresh()
        now_ms = int(time.time() * 1000)
        plans: list[_Plan] = []
        for entry_id, fields in entries:
            try:
                plans.append(await self._plan(entry_id, fields))
            except Exception as e:
                self._unprocessable(entry_id, fields, e)
        try:
            await self._apply(plans, now_ms)
        except Exception as e:
            if is_storage_error(e):
                raise
            # One entry spoils the batch: apply them one at a time to find it (run creation
            # and resumed waits are idempotent, so what the batch did is not done twice).
            for plan in plans:
                try:
                    await self._apply([plan], now_ms)
                except Exception as one:
                    self._unprocessable(plan.entry_id, plan.fields, one)
        ids = [entry_id for entry_id, _ in entries]
        if ids:
            async with asyncio.timeout(REDIS_CALL_S), self._redis.pipeline(
                    transaction=False) as pipe:
                pipe.xack(self._keys.events, GROUP, *ids)
                pipe.xdel(self._keys.events, *ids)
                await pipe.execute()
        return sum(len(plan.runs) for plan in plans)

    async def _plan(self, entry_id: Any, fields: dict[bytes, bytes]) -> _Plan:
        """The runs an entry starts and the waits it may end."""
        plan = _Plan(entry_id, fields, await self._runs_for(fields),
                     [(fields[b"name"].decode(), fields[b"e"])])
        # Every event may end waits; an invoke of an unknown function ends its caller's.
        if fields[b"name"] == FUNCTION_INVOKED.encode():
            run, failure = self._invoked_run(fields)
            if run is not None:
                plan.runs.append(run)
            if failure is not None:
                plan.waited.append((FUNCTION_FINISHED, failure))
        return plan

    async def _apply(self, plans: Sequence[_Plan], now_ms: int) -> None:
        runs = [run for plan in plans for run in plan.runs]
        if runs:
            enqueued = await self._queue.enqueue(runs, now_ms)
            if any(enqueued.queued):
                self._on_enqueued()
            await self._cancel_displaced(enqueued.cancels)
        waited = [w for plan in plans for w in plan.waited]
        if self._waits is not None and await self._waits.process(waited, now_ms):
            self._on_enqueued()

    async def _cancel_displaced(self, run_ids: Sequence[RunId]) -> None:
        """Cancels the runs a singleton `cancel` function's new runs displaced."""
        for run_id in run_ids:
            log.info("run.singleton_cancel", run_id=run_id)
            if self._cancel_run is not None:
                await self._cancel_run(run_id)

    def _unprocessable(self, entry_id: Any, fields: dict[bytes, bytes],
                       error: Exception) -> None:
        """Records an entry dropped for good; a storage error is not the entry's fault and
        fails the batch instead."""
        if is_storage_error(error):
            raise error
        raise_if_cancelling()
        log.error(EVENT_UNPROCESSABLE, entry_id=_text(entry_id),
                  event_id=_text(fields.get(b"id", b"")),
                  event_name=_text(fields.get(b"name", b""))[:256], error=describe(error)[:1024])
        if self._metrics is not None:
            self._metrics.events_unprocessable.inc()

    def _invoked_run(self, fields: dict[bytes, bytes]) -> tuple[NewRun | None, bytes | None]:
        """The run an `inngest/function.invoked` event starts: the function it names, in any
        app; or, when there is none, the `finished` event that fails the caller's step."""
        event = json.loads(fields[b"e"])
        data = event.get("data") if isinstance(event, dict) else None
        meta = data.get("_inngest") if isinstance(data, dict) else None
        if not isinstance(meta, dict):
            return None, None  # sent by hand, not by an invoke step: only triggers apply
        fn_id, correlation_id = str(meta.get("fn_id", "")), str(meta.get("correlation_id", ""))
        if not fn_id:
            return None, None
        fn = self._index.get(FunctionId(fn_id))
        if fn is not None and fn.id not in self._index.paused:
            event_id = fields[b"id"].decode()
            return new_run(fn, event_id, fields[b"e"], self._keys.shards, event=event), None
        if not correlation_id:
            return None, None
        reason = "is paused" if fn is not None else "is not registered"
        failure = {"name": FUNCTION_FINISHED, "data": {
            "function_id": fn_id, "correlation_id": correlation_id,
            "error": {"name": "FunctionNotFoundError",
                      "message": f"invoked function {fn_id!r} {reason}", "stack": ""}}}
        log.info("invoke.failed", function_id=fn_id, reason=reason)
        return None, json.dumps(failure).encode()

    async def _runs_for(self, fields: dict[bytes, bytes]) -> list[NewRun]:
        # The client is created without decode_responses: stream fields arrive as bytes.
        event_json = fields[b"e"]
        event_id = fields[b"id"].decode()
        name = fields[b"name"].decode()
        idem = bytes(fields.get(b"idem", b"")).decode()
        candidates = self._index.candidates(name)
        if not candidates:
            return []
        if idem and not await self._redis.set(
            self._keys.event_key(idem), event_id, nx=True, ex=EVENT_KEY_TTL_S
        ):
            owner = await self._redis.get(self._keys.event_key(idem))
            owner_id = owner.decode() if isinstance(owner, bytes) else owner
            if owner_id is not None and owner_id != event_id:
                log.info("event.duplicate", event_id=event_id, idempotency_key=idem)
                return []
        variables: dict[str, Any] | None = None
        runs: list[NewRun] = []
        for candidate in candidates:
            if candidate.program is not None:
                if variables is None:
                    variables = {"event": json.loads(event_json)}
                if not matches(candidate.program, variables):
                    continue
            fn = candidate.function
            if fn.flow.configured and variables is None:
                variables = {"event": json.loads(event_json)}
            runs.append(new_run(fn, event_id, event_json, self._keys.shards,
                                event=variables["event"] if variables else None))
        return runs

