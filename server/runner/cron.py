"""The scheduler: starts the runs of cron-triggered functions, once per tick, from any number
of processes with the `scheduler` role.

A tick's run has an id derived from (function, cron, tick), so two schedulers creating it
make one run; each trigger's last scheduled tick is kept in Redis and only moves forward once
its run exists. Missed ticks (no scheduler running) are caught up with one run, for the
latest of them; see docs/architecture.md, Cron.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import structlog
from croniter import croniter
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine
from ulid import ULID

from server.history import store
from server.keys import Keys
from server.luascript import load_script
from server.queue import Queue
from server.runner.flow import new_run
from server.runner.registry import Registry
from server.supervise import describe
from server.tasks import raise_if_cancelling
from server.types import CronTrigger, Event, EventId, FunctionConfig, RunId

log = structlog.get_logger(__name__)

CRON_EVENT = "inngest/scheduled.timer"
CRON_DISABLED = "cron.disabled"
PASS_TIMEOUT_S = 30.0
_PKG = "server.runner"


def _wall_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class Clock:
    """The scheduler's time; tests pass a fake `now_ms` and a short `max_sleep_s`."""

    now_ms: Callable[[], int] = field(default=_wall_ms)
    # The longest sleep between passes: bounds how late a newly registered function or a
    # jump of the clock is noticed.
    max_sleep_s: float = 1.0


@dataclass(frozen=True, slots=True)
class Schedule:
    spec: str  # as registered, prefix included
    expression: str
    zone: ZoneInfo


def parse_cron(spec: str) -> Schedule:
    """Splits an optional `TZ=Area/City` / `CRON_TZ=` prefix off a validated cron spec."""
    expression = spec.strip()
    zone = "UTC"
    if expression.startswith(("TZ=", "CRON_TZ=")):
        prefix, _, expression = expression.partition(" ")
        zone = prefix.split("=", 1)[1]
    return Schedule(spec, expression.strip(), ZoneInfo(zone))


def _at(schedule: Schedule, ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).astimezone(schedule.zone)


def next_tick_ms(schedule: Schedule, after_ms: int) -> int:
    """The first tick strictly after `after_ms`."""
    nxt = croniter(schedule.expression, _at(schedule, after_ms)).get_next(datetime)
    return int(nxt.timestamp() * 1000)


def latest_tick_ms(schedule: Schedule, at_ms: int) -> int:
    """The last tick at or before `at_ms`."""
    start = _at(schedule, at_ms) + timedelta(milliseconds=1)
    prev = croniter(schedule.expression, start).get_prev(datetime)
    return int(prev.timestamp() * 1000)


def tick_event(function_id: str, spec: str, tick_ms: int) -> tuple[EventId, bytes]:
    """The id and JSON of a tick's triggering event, the same from every process."""
    digest = hashlib.sha256(f"cron/{function_id}/{spec}/{tick_ms}".encode()).digest()[:10]
    event_id = EventId(str(ULID.from_bytes(tick_ms.to_bytes(6, "big") + digest)))
    body = {"id": event_id, "name": CRON_EVENT, "data": {"cron": spec}, "ts": tick_ms}
    return event_id, json.dumps(body, separators=(",", ":")).encode()


class Scheduler:
    def __init__(
        self, engine: AsyncEngine, redis: Redis, keys: Keys, queue: Queue, registry: Registry,
        on_enqueued: Callable[[], None], clock: Clock | None = None,
        cancel_run: Callable[[RunId], Awaitable[object]] | None = None,
    ) -> None:
        # The executor's cancel path, for a singleton `cancel` function's active run.
        self._cancel_run = cancel_run
        self._engine = engine
        self._redis = redis
        self._keys = keys
        self._queue = queue
        self._registry = registry
        self._on_enqueued = on_enqueued
        self._clock = clock or Clock()
        self._advance = load_script(redis, _PKG, "advance_tick")
        self._schedules: dict[str, Schedule] = {}
        # (function id, cron) -> why its ticks cannot be computed; re-registering the function
        # with another cron is the way out.
        self.disabled: dict[tuple[str, str], str] = {}
        # Disabled triggers not yet recorded in Redis (Keys.cron_disabled), for GetFunction.
        self._unrecorded: list[tuple[str, str, str]] = []

    async def run(self) -> None:
        while True:
            raise_if_cancelling()
            # A pass has a deadline: a store that stopped answering fails it (and the role is
            # restarted) instead of hanging the scheduler.
            async with asyncio.timeout(PASS_TIMEOUT_S):
                await self._registry.refresh()
                next_ms = await self.schedule_due(self._clock.now_ms())
            wait_s = (next_ms - self._clock.now_ms()) / 1000 if next_ms else float("inf")
            await asyncio.sleep(max(0.0, min(wait_s, self._clock.max_sleep_s)))

    async def schedule_due(self, now_ms: int) -> int | None:
        """Creates the runs of the ticks due at `now_ms`; returns the next tick of any
        trigger (None without cron functions)."""
        triggers: list[tuple[FunctionConfig, Schedule, int, int]] = []
        for fn in self._registry.index.all():
            for t in fn.triggers:
                if isinstance(t, CronTrigger):
                    ticks = self._ticks(fn, t.cron, now_ms)
                    if ticks is not None:
                        triggers.append((fn, *ticks))
        while self._unrecorded:
            fn_id, spec, why = self._unrecorded[0]
            await self._redis.hset(self._keys.cron_disabled(fn_id), spec, why)
            self._unrecorded.pop(0)
        if not triggers:
            return None
        last_keys = [self._keys.cron_last(fn.id, s.spec) for fn, s, _, _ in triggers]
        lasts = await self._redis.mget(last_keys)
        for (fn, schedule, due_ms, _), key, raw in zip(triggers, last_keys, lasts, strict=True):
            if raw is None:
                # First sight of this trigger: it starts with the next tick, not a past one.
                await self._redis.set(key, due_ms, nx=True)
            elif int(raw) < due_ms:
                # A paused function's ticks pass without runs, so resuming starts none late.
                if fn.id not in self._registry.index.paused:
                    await self._start(fn, schedule, due_ms, now_ms)
                await self._advance(keys=[key], args=[due_ms])
        return min(next_ms for _, _, _, next_ms in triggers)

    def _ticks(self, fn: FunctionConfig, spec: str,
               now_ms: int) -> tuple[Schedule, int, int] | None:
        """The trigger's schedule, latest due tick and next tick; None when the trigger is
        disabled: one whose ticks cannot be computed (a date that never comes, such as
        `0 0 30 2 *`) is logged once with its error and skipped, the others go on."""
        if (fn.id, spec) in self.disabled:
            return None
        try:
            schedule = self._schedule(spec)
            return schedule, latest_tick_ms(schedule, now_ms), next_tick_ms(schedule, now_ms)
        except Exception as e:
            raise_if_cancelling()
            self.disabled[(fn.id, spec)] = describe(e)
            self._unrecorded.append((fn.id, spec, describe(e)))
            log.error(CRON_DISABLED, function_id=fn.id, cron=spec, error=describe(e))
            return None

    async def _start(self, fn: FunctionConfig, schedule: Schedule, tick_ms: int,
                     now_ms: int) -> None:
        event_id, body = tick_event(fn.id, schedule.spec, tick_ms)
        # Stored like an ingested event, so the run's event can be looked up in history.
        await store.insert_events(self._engine, [Event(
            id=event_id, name=CRON_EVENT, data_json=json.dumps({"cron": schedule.spec}).encode(),
            ts_ms=tick_ms)], now_ms)
        run = new_run(fn, event_id, body, self._queue.keys.shards)
        enqueued = await self._queue.enqueue([run], now_ms)
        for displaced in enqueued.cancels:
            if self._cancel_run is not None:
                await self._cancel_run(displaced)
        if enqueued.queued[0]:
            log.info("cron.scheduled", function_id=fn.id, tick_ms=tick_ms, run_id=run.run_id)
            self._on_enqueued()

    def _schedule(self, spec: str) -> Schedule:
        schedule = self._schedules.get(spec)
        if schedule is None:
            schedule = self._schedules[spec] = parse_cron(spec)
        return schedule
