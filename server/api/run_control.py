"""Run control behind both APIs: bulk cancel, pause / resume a function, replay a run.

The gRPC ManagementService and the Inngest REST API validate their requests, then call this.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from server.errors import FailedPrecondition, InvalidArgument, NotFound
from server.events.ingest import event_json
from server.history import store
from server.queue import Queue
from server.runner.expressions import matches
from server.runner.flow import fresh_run_id, new_run
from server.runner.registry import Registry
from server.state import StateStore, UnfinishedRun
from server.types import Event, RunId, RunStatus

log = structlog.get_logger(__name__)

CancelRun = Callable[[RunId], Awaitable[RunStatus]]

# Runs cancelled concurrently; each is one script call (and a stream message when leased).
CANCEL_BATCH = 50
_FINISHED = {RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED}


def _now_ms() -> int:
    return int(time.time() * 1000)


class RunControl:
    def __init__(
        self, engine: AsyncEngine, queue: Queue, state: StateStore, registry: Registry,
        cancel_run: CancelRun, on_enqueued: Callable[[], None],
    ) -> None:
        self._engine = engine
        self._state = state
        self._queue = queue
        self._registry = registry
        self._cancel_run = cancel_run
        self._on_enqueued = on_enqueued

    async def cancel_runs(
        self, function_id: str, created_from_ms: int, created_before_ms: int,
        program: Any | None = None,
    ) -> int:
        """Cancels the function's queued and running runs created in [from, before) whose
        event matches `program` (compiled CEL over `event`, when given), as Redis has them
        now (history lags by a batch); returns how many this call cancelled."""
        await store.get_function(self._engine, function_id)  # NotFound when unknown
        if created_before_ms <= created_from_ms:
            raise InvalidArgument("created_before", "must be after the start of the range")
        runs = [r for r in await self._state.unfinished_runs(function_id)
                if created_from_ms <= r.created_ms < created_before_ms]
        ids = [r.run_id for r in runs if program is None or self._matches(program, r)]
        cancelled = 0
        for i in range(0, len(ids), CANCEL_BATCH):
            statuses = await asyncio.gather(
                *(self._cancel_one(run_id) for run_id in ids[i:i + CANCEL_BATCH]))
            cancelled += sum(s is RunStatus.CANCELLED for s in statuses)
        log.info("runs.cancelled", function_id=function_id, count=cancelled)
        return cancelled

    @staticmethod
    def _matches(program: Any, run: UnfinishedRun) -> bool:
        try:
            event = json.loads(run.event_json)
        except ValueError:
            return False
        return matches(program, {"event": event})

    async def _cancel_one(self, run_id: RunId) -> RunStatus | None:
        try:
            return await self._cancel_run(run_id)
        except NotFound:  # its state expired: history is behind, nothing left to cancel
            return None

    async def paused_ids(self) -> set[str]:
        return await self._registry.paused_ids()

    async def set_paused(self, function_id: str, paused: bool) -> None:
        await self._registry.set_paused(function_id, paused)

    async def disabled_triggers(self, function_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        return await self._registry.disabled_triggers(function_ids)

    async def replay(self, run_id: RunId) -> RunId:
        """Starts a new run of a finished run's function with the same event, and records
        which run it replays."""
        run = await store.get_run(self._engine, run_id)
        await self._registry.refresh()  # this process's index may predate a registration
        if run.status not in _FINISHED:
            raise FailedPrecondition(
                f"run {run_id} is {run.status.value}: only a finished run can be replayed")
        function = self._registry.index.get(run.function_id)
        if function is None:
            raise FailedPrecondition(f"function {run.function_id!r} of run {run_id} is gone")
        if function.id in self._registry.index.paused:
            raise FailedPrecondition(f"function {function.id!r} is paused: resume it first")
        event = await store.get_event(self._engine, run.event_id)
        body = event_json(Event(id=event.id, name=event.name, data_json=event.data_json,
                                ts_ms=event.ts_ms))
        now_ms = _now_ms()
        # A fresh id (a derived one would be the original's), in the function's flow shard.
        new_id = fresh_run_id(function, self._queue.keys.shards)
        # Recorded first: a crash in between leaves a link to a run that never started,
        # never a replay that does not say what it replays.
        await store.insert_replay(self._engine, new_id, run_id, now_ms)
        enqueued = await self._queue.enqueue(
            [new_run(function, event.id, body, self._queue.keys.shards, run_id=new_id)], now_ms)
        for displaced in enqueued.cancels:  # a singleton `cancel` function's active run
            await self._cancel_run(displaced)
        self._on_enqueued()
        log.info("run.replayed", run_id=new_id, original_run_id=run_id)
        return new_id
