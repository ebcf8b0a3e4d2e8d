"""The event reconciler: appends to the event stream the events that reached SQL but not it.

Ingest stores an event in SQL, then appends it to the stream and records its id in the accepted
ledger, in one script. A process that dies between the two writes leaves the event in SQL
only; every runner process compares SQL with the ledger every few seconds and appends what is
missing. Appending is idempotent (the ledger skips ids it holds, and run ids are derived from
event ids), so several reconcilers, or a reconciler racing a slow ingest, start each run once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import exists, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from ulid import ULID

from server.events.ingest import append_events
from server.history.models import EVENTS, RUNS
from server.keys import Keys
from server.luascript import load_script
from server.types import Event, EventId

__all__ = ["Reconciler"]

log = structlog.get_logger(__name__)

EVENTS_RECONCILED = "events.reconciled"
RECONCILE_FAILED = "events.reconcile_failed"

INTERVAL_S = 5.0
# An event younger than this may still be on its way from SQL to the stream.
GRACE_MS = 5_000
# A starting reconciler looks this far back: a process restarted after dying between the two
# writes appends what it left behind.
WINDOW_MS = 10 * 60_000
# Each pass looks again this far before where the previous one ended: a SQL commit slower than
# the grace, or a sender's clock behind ours (seeded ids carry the sender's time), still gets
# checked.
SETTLE_MS = 30_000
# The ledger keeps ids a while longer than any pass looks back.
LEDGER_KEEP_MS = WINDOW_MS + 5 * 60_000
_PAGE = 1000
_PASS_TIMEOUT_S = 60.0


class Reconciler:
    def __init__(self, engine: AsyncEngine, redis: Redis, keys: Keys, *,
                 grace_ms: int = GRACE_MS, window_ms: int = WINDOW_MS,
                 interval_s: float = INTERVAL_S) -> None:
        self._engine = engine
        self._redis = redis
        self._keys = keys
        self._grace_ms = grace_ms
        self._window_ms = window_ms
        self._interval_s = interval_s
        self._append = load_script(redis, "server.events", "append_events")
        self._checked_to_ms: int | None = None

    async def run(self) -> None:
        """Reconciles every interval_s; a failed pass (storage away) is logged and retried."""
        while True:
            try:
                async with asyncio.timeout(_PASS_TIMEOUT_S):
                    await self.reconcile(int(time.time() * 1000))
            except (RedisError, SQLAlchemyError, OSError, TimeoutError) as e:
                log.warning(RECONCILE_FAILED, error=f"{type(e).__name__}: {e}")
            await asyncio.sleep(self._interval_s)

    async def reconcile(self, now_ms: int) -> int:
        """One pass: appends the events of the window missing from the ledger, trims the
        ledger; returns how many events were appended."""
        hi = now_ms - self._grace_ms
        if self._checked_to_ms is None:
            lo = now_ms - self._window_ms
        else:
            lo = min(self._checked_to_ms, hi) - SETTLE_MS
        appended = 0
        after = _max_ulid(lo - 1)
        while True:
            ids = await self._ids(after, _max_ulid(hi), hi)
            if not ids:
                break
            appended += await self._append_missing(ids, now_ms)
            if len(ids) < _PAGE:
                break
            after = ids[-1]
        self._checked_to_ms = hi
        await self._redis.zremrangebyscore(
            self._keys.events_accepted, "-inf", f"({now_ms - LEDGER_KEEP_MS}")
        return appended

    async def _ids(self, after: str, upto: str, received_by_ms: int) -> list[str]:
        """Ids of stored events in (after, upto], received by then, in id order."""
        query = (
            select(EVENTS.c.id)
            .where(EVENTS.c.id > after, EVENTS.c.id <= upto,
                   EVENTS.c.received_at_ms <= received_by_ms)
            .order_by(EVENTS.c.id)
            .limit(_PAGE)
        )
        async with self._engine.connect() as conn:
            return list((await conn.execute(query)).scalars())

    async def _append_missing(self, ids: Sequence[str], now_ms: int) -> int:
        scores = await self._redis.zmscore(self._keys.events_accepted, list(ids))
        missing = [i for i, score in zip(ids, scores, strict=True) if score is None]
        if not missing:
            return 0
        events = await self._events_without_runs(missing)
        if not events:
            return 0
        appended = await append_events(self._append, self._keys, events, now_ms)
        if appended:
            log.warning(EVENTS_RECONCILED, appended=appended,
                        event_ids=[e.id for e in events[:10]])
        return appended

    async def _events_without_runs(self, ids: Sequence[str]) -> list[Event]:
        """The events of `ids` no run in history names: an event whose runs were recorded
        reached a runner, and its ledger entry was lost with Redis (a Redis without
        persistence restarted); appending it again would run its functions twice."""
        query = (
            select(EVENTS)
            .where(EVENTS.c.id.in_(ids), ~exists().where(RUNS.c.event_id == EVENTS.c.id))
            .order_by(EVENTS.c.id)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            Event(id=EventId(r.id), name=r.name, data_json=r.data_json.encode(), ts_ms=r.ts_ms,
                  idempotency_key=r.idempotency_key, traceparent=r.traceparent)
            for r in rows
        ]


def _max_ulid(ms: int) -> str:
    """The largest ULID of millisecond `ms` (ids are compared as strings in SQL)."""
    return str(ULID.from_bytes(max(ms, 0).to_bytes(6, "big") + b"\xff" * 10))
