"""The history writer: drains each shard's Redis history stream into SQL, in batches.

Entries are acknowledged and deleted only after their SQL transaction commits, so a crash or
an SQL outage leaves them pending to be re-read; every write is idempotent, so a re-read
entry changes nothing twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis.asyncio as aredis
import structlog
from redis.exceptions import RedisError, ResponseError
from sqlalchemy import case, func, literal_column, or_, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from server.history.db import Insert, insert
from server.history.models import RUNS, STEP_ATTEMPTS
from server.history.records import (
    EventsEmitted,
    Record,
    RunCreated,
    RunEnded,
    RunStarted,
    StepRecorded,
    decode,
)
from server.history.spans import finished_roots
from server.keys import Keys, ShardKeys
from server.liveness import Liveness, StreamTakeover
from server.redis_client import is_cluster
from server.tasks import raise_if_cancelling
from server.types import RunStatus

if TYPE_CHECKING:
    # Only a type here: server.telemetry imports history records, which import this package.
    from server.telemetry.telemetry import Telemetry

GROUP = "history"
_BATCH = 1000
_BLOCK_MS = 100
# After a small batch the writer waits this long before reading again, so that at low load one
# SQL transaction carries the records of several steps instead of one each: each transaction's
# CPU competes with the step path in the same process (step → step p50 1.1-1.3 ms without,
# 0.8-0.9 ms with; bench/run.py). Under load batches are large and it never waits.
_COALESCE_S = 0.02
_SMALL_BATCH = 100
# A consumer that has not touched its pending entries for this long is taken for dead.
_CLAIM_IDLE_MS = 10_000
_CLAIM_EVERY_S = 5.0
_RETRY_FIRST_S = 0.5
_RETRY_MAX_S = 30.0
_REDIS_TIMEOUT_S = 5.0
# Below _CLAIM_IDLE_MS, so a stuck transaction gives up before another consumer takes over.
_SQL_TIMEOUT_S = 8.0
_TERMINAL = [s.value for s in RunStatus if s.terminal]
# Failures that pass: the entries stay pending and are re-read once the service is back.
_TRANSIENT = (SQLAlchemyError, RedisError, OSError, TimeoutError)

BATCH_FAILED = "history.batch_failed"
ENTRY_INVALID = "history.entry_invalid"

_log = structlog.get_logger(__name__)

# (entry id, fields); fields are None for an entry deleted while it was still pending.
_Entry = tuple[str, dict[str, str] | None]


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _entries(raw: Any) -> list[_Entry]:
    out: list[_Entry] = []
    for entry_id, fields in raw or ():
        if entry_id is None:
            continue
        decoded = {_str(k): _str(v) for k, v in fields.items()} if fields else None
        out.append((_str(entry_id), decoded))
    return out


def _streams(response: Any) -> dict[str, list[_Entry]]:
    """XREADGROUP's answer as stream name -> entries, whichever RESP shape redis-py returns."""
    if not response:
        return {}
    pairs = response.items() if isinstance(response, Mapping) else response
    out: dict[str, list[_Entry]] = {}
    for stream, raw in pairs:
        # RESP3 through some redis-py versions wraps the entry list in one more list.
        if raw and isinstance(raw[0], list):
            raw = raw[0]
        out[_str(stream)] = _entries(raw)
    return out


@dataclass
class _Changes:
    """The net SQL effect of one batch, grouped so each kind is one executemany."""

    created: dict[str, dict[str, Any]] = field(default_factory=dict)
    started: dict[str, dict[str, Any]] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)
    ended: dict[str, dict[str, Any]] = field(default_factory=dict)
    count: int = 0
    records: list[Record] = field(default_factory=list)

    def add(self, shard: int, entry_id: str, record: Record) -> None:
        self.count += 1
        self.records.append(record)
        if isinstance(record, RunCreated):
            # The last one wins: a debounced run is recorded again with its latest event (and
            # its first creation time), as the upsert of a later batch would do.
            self.created[record.run_id] = (
                {
                    "id": record.run_id,
                    "function_id": record.function_id,
                    "app_id": record.app_id,
                    "event_id": record.event_id,
                    "status": RunStatus.QUEUED.value,
                    "created_at_ms": record.ts_ms,
                }
            )
        elif isinstance(record, RunStarted):
            first = self.started.get(record.run_id)
            if first is None or record.ts_ms < first["started_at_ms"]:
                self.started[record.run_id] = {
                    "id": record.run_id,
                    "status": RunStatus.RUNNING.value,
                    "started_at_ms": record.ts_ms,
                }
        elif isinstance(record, StepRecorded):
            self.steps.append(
                {
                    "id": f"{shard}-{entry_id}",
                    "run_id": record.run_id,
                    "step_id": record.step_id,
                    "name": record.name,
                    "attempt": record.attempt,
                    "status": record.status.value,
                    "output_json": record.output_json or None,
                    "error_json": record.error_json or None,
                    "ended_at_ms": record.ts_ms,
                    # What the attempt's spans are rebuilt from (server/history/spans.py).
                    "lease_id": record.lease_id,
                    "ready_at_ms": record.ready_ms,
                    "started_at_ms": record.started_ms,
                    "until_ms": record.until_ms,
                }
            )
        elif isinstance(record, EventsEmitted):
            pass  # nothing in SQL: the ingest stores the events themselves
        else:
            # Stream order: the last end of a run wins.
            final = record.status is RunStatus.COMPLETED
            self.ended[record.run_id] = {
                "id": record.run_id,
                "status": record.status.value,
                "output_json": record.output_json or None,
                "error_json": record.error_json or None,
                "ended_at_ms": record.ts_ms,
                # A completed function's last attempt has no step row: its span's values.
                "final_lease_id": record.lease_id if final else "",
                "final_attempt": record.attempt if final else None,
                "final_ready_at_ms": record.ready_ms if final else None,
                "final_started_at_ms": record.started_ms if final else None,
            }


class HistoryWriter:
    """Consumer `consumer` of group "history" on every shard's history stream."""

    def __init__(self, redis: aredis.Redis, engine: AsyncEngine, keys: Keys, consumer: str,
                 telemetry: Telemetry | None = None,
                 on_committed: Callable[[Sequence[RunEnded | EventsEmitted]], Awaitable[None]]
                 | None = None,
                 liveness: Liveness | None = None,
                 ) -> None:
        self._redis = redis
        self._engine = engine
        self._consumer = consumer
        # Entries of a consumer whose heartbeat is gone are taken over at once, not after
        # _CLAIM_IDLE_MS.
        self._takeover = (StreamTakeover(redis, liveness, GROUP, consumer)
                          if liveness is not None else None)
        self._shards = {s.history: s for s in keys.all_shards()}
        self._upserts = _upserts(engine)
        # Run metrics, and the spans OTLP gets, are derived from the records here.
        self._telemetry = telemetry
        # The events runs send and the internal events of their ends
        # (server/events/internal.py): after the commit, before the ack, so a crash in between
        # sends them again (with the same ids).
        self._on_committed = on_committed

    async def run(self) -> None:
        """Drains the streams until cancelled; outages of Redis or SQL are waited out."""
        recover = True
        last_claim = time.monotonic()
        failures = 0
        while True:
            raise_if_cancelling()
            try:
                if recover or time.monotonic() - last_claim > _CLAIM_EVERY_S:
                    await self._recover()
                    recover = False
                    last_claim = time.monotonic()
                await self._take_over_dead()
                applied = await self._apply(await self._read_new(_BLOCK_MS))
                failures = 0
                if 0 < applied < _SMALL_BATCH:
                    await asyncio.sleep(_COALESCE_S)
            except _TRANSIENT as e:
                # A cancellation can surface as a client's timeout or connection error
                # (redis-py and SQLAlchemy convert it mid-call): shutdown must still win.
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise asyncio.CancelledError from e
                # What was read stays pending for this consumer; re-read it after the pause.
                recover = True
                failures += 1
                delay = min(_RETRY_MAX_S, _RETRY_FIRST_S * 2 ** min(failures - 1, 10))
                _log.warning(BATCH_FAILED, error=repr(e), retry_in_s=delay)
                await asyncio.sleep(delay)

    async def drain_once(self) -> int:
        """Applies everything readable now, without blocking; returns the records applied."""
        applied = await self._recover()
        while batch := await self._read_new(None):
            applied += await self._apply(batch)
        return applied

    async def _ensure_groups(self) -> None:
        for stream in self._shards:
            try:
                async with asyncio.timeout(_REDIS_TIMEOUT_S):
                    await self._redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
            except ResponseError as e:
                if "BUSYGROUP" not in str(e):
                    raise

    async def _recover(self) -> int:
        """Re-reads this consumer's pending entries, then takes over those of dead ones."""
        await self._ensure_groups()
        applied = 0
        for stream in self._shards:
            while True:
                async with asyncio.timeout(_REDIS_TIMEOUT_S):
                    response = await self._redis.xreadgroup(
                        GROUP, self._consumer, {stream: "0"}, count=_BATCH
                    )
                entries = _streams(response).get(stream, [])
                if not entries:
                    break
                applied += await self._apply({stream: entries})
            start = "0-0"
            while True:
                async with asyncio.timeout(_REDIS_TIMEOUT_S):
                    claimed = await self._redis.xautoclaim(
                        stream, GROUP, self._consumer, _CLAIM_IDLE_MS, start, count=_BATCH
                    )
                start = _str(claimed[0])
                applied += await self._apply({stream: _entries(claimed[1])})
                if start == "0-0":
                    break
        return applied

    async def _take_over_dead(self) -> int:
        """Applies the pending entries of consumers whose heartbeat is gone."""
        if self._takeover is None:
            return 0
        applied = 0
        for stream in self._shards:
            claimed = await self._takeover.claim(stream, count=_BATCH)
            if claimed:
                applied += await self._apply({stream: _entries(claimed)})
        return applied

    async def _read_new(self, block_ms: int | None) -> dict[str, list[_Entry]]:
        if len(self._shards) > 1 and is_cluster(self._redis):
            # A Redis Cluster serves an XREADGROUP from one slot only, and each shard's stream
            # has its own: every stream is read on its own (concurrently), without blocking
            # first so that a busy shard is not held up by idle ones' blocks.
            batch = await self._read_each(None)
            return batch if batch or block_ms is None else await self._read_each(block_ms)
        streams: dict[Any, Any] = {stream: ">" for stream in self._shards}
        async with asyncio.timeout(_REDIS_TIMEOUT_S):
            response = await self._redis.xreadgroup(
                GROUP, self._consumer, streams, count=_BATCH, block=block_ms
            )
        return {s: e for s, e in _streams(response).items() if e}

    async def _read_each(self, block_ms: int | None) -> dict[str, list[_Entry]]:
        async with asyncio.timeout(_REDIS_TIMEOUT_S):
            responses = await asyncio.gather(*(
                self._redis.xreadgroup(GROUP, self._consumer, {stream: ">"}, count=_BATCH,
                                       block=block_ms)
                for stream in self._shards))
        return {s: e for response in responses for s, e in _streams(response).items() if e}

    async def _apply(self, batch: dict[str, list[_Entry]]) -> int:
        """Writes one batch in one transaction, then acknowledges and deletes its entries."""
        if not any(batch.values()):
            return 0
        changes = _Changes()
        for stream, entries in batch.items():
            shard = self._shards[stream]
            for entry_id, fields in entries:
                record = self._decode(shard, entry_id, fields)
                if record is not None:
                    changes.add(shard.shard, entry_id, record)
        created, started, steps, ended = self._upserts
        async with asyncio.timeout(_SQL_TIMEOUT_S), self._engine.begin() as conn:
            await _lock_runs(conn, changes)
            for stmt, rows in [
                (created, _by_id(changes.created.values())),
                (started, _by_id(changes.started.values())),
                (steps, _by_id(changes.steps)),
                (ended, _by_id(changes.ended.values())),
            ]:
                if rows:
                    await conn.execute(stmt, rows)
            tracing = self._telemetry is not None and self._telemetry.tracing
            # A root span is exported once its run's creation and end are both written.
            roots = await finished_roots(
                conn, [*changes.created, *changes.ended]) if tracing else []
        if self._on_committed is not None:
            sent = [r for r in changes.records if isinstance(r, RunEnded | EventsEmitted)]
            if sent:
                await self._on_committed(sent)
        async with asyncio.timeout(_REDIS_TIMEOUT_S):
            async with self._redis.pipeline(transaction=False) as pipe:
                for stream, entries in batch.items():
                    ids = [entry_id for entry_id, _ in entries]
                    if ids:
                        pipe.xack(stream, GROUP, *ids)
                        pipe.xdel(stream, *ids)
                await pipe.execute()
        if self._telemetry is not None:
            self._telemetry.history_written(changes.records, roots)
        return changes.count

    @staticmethod
    def _decode(shard: ShardKeys, entry_id: str, fields: dict[str, str] | None) -> Record | None:
        if fields is None:
            return None
        try:
            record = decode(fields)
        except (ValueError, KeyError) as e:
            record = None
            reason = repr(e)
        else:
            reason = "unknown kind"
        if record is None:
            # Kept, it would block the stream for good; the entry id is logged to find it.
            _log.error(
                ENTRY_INVALID, shard=shard.shard, entry_id=entry_id, reason=reason, fields=fields
            )
        return record


# Writers that split one stream (or take over a dead one's entries) may write rows of the
# same runs at once. Each statement's rows go in primary-key order, and on PostgreSQL a batch
# first takes a transaction-scoped advisory lock per run it touches, in the order of the lock
# keys: two batches sharing a run queue up at their first shared lock instead of each holding
# a row the other waits for across statements (the `deadlock detected` of issue 17).
# SQLite has one writer at a time. Distinct runs whose keys collide only share a lock.
_LOCK_RUNS = text(
    "SELECT count(pg_advisory_xact_lock(k)) FROM (SELECT DISTINCT hashtextextended(id, 17)"
    " AS k FROM unnest(CAST(:ids AS text[])) AS id ORDER BY k) AS keys")


def _by_id(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda row: str(row["id"]))


async def _lock_runs(conn: AsyncConnection, changes: _Changes) -> None:
    if conn.dialect.name != "postgresql":
        return
    ids = {*changes.created, *changes.started, *changes.ended,
           *(str(step["run_id"]) for step in changes.steps)}
    if ids:
        await conn.execute(_LOCK_RUNS, {"ids": sorted(ids)})


def _upserts(engine: AsyncEngine) -> tuple[Insert, Insert, Insert, Insert]:
    """The statements of RunCreated, RunStarted, StepRecorded and RunEnded rows."""
    runs = insert(engine, RUNS)
    x = runs.excluded
    # Several consumers may split one stream, so a run's start or end can land before its
    # creation: each statement is an upsert that only moves a run forward.
    created = runs.on_conflict_do_update(
        index_elements=["id"],
        set_={
            "function_id": x.function_id,
            "app_id": x.app_id,
            "event_id": x.event_id,
            "created_at_ms": x.created_at_ms,
        },
    )
    started = runs.on_conflict_do_update(
        index_elements=["id"],
        set_={
            # Literal constants, not an IN list: expanding parameters cannot be executemany'd.
            "status": case(
                (or_(*(RUNS.c.status == literal_column(f"'{s}'") for s in _TERMINAL)),
                 RUNS.c.status),
                else_=x.status,
            ),
            "started_at_ms": func.coalesce(RUNS.c.started_at_ms, x.started_at_ms),
        },
    )
    ended = runs.on_conflict_do_update(
        index_elements=["id"],
        set_={
            "status": x.status,
            "output_json": x.output_json,
            "error_json": x.error_json,
            "ended_at_ms": x.ended_at_ms,
            "final_lease_id": x.final_lease_id,
            "final_attempt": x.final_attempt,
            "final_ready_at_ms": x.final_ready_at_ms,
            "final_started_at_ms": x.final_started_at_ms,
        },
    )
    steps = insert(engine, STEP_ATTEMPTS).on_conflict_do_nothing(index_elements=["id"])
    return created, started, steps, ended
