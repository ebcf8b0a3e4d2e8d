"""The runner: reads accepted events from the event stream and starts the runs they trigger.

Run ids are derived from (event id, function id), and run creation is idempotent, so an
event read twice after a crash starts each run once.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from ulid import ULID

from server.keys import Keys
from server.queue import NewRun, Queue
from server.runner.expressions import compile_expression, matches
from server.runner.registry import Registry
from server.state import StateStore, WaitEntry
from server.tasks import raise_if_cancelling
from server.types import EventId, RunId

log = structlog.get_logger(__name__)

GROUP = "runner"
EVENT_KEY_TTL_S = 24 * 3600
# Entries another runner read and did not acknowledge for this long are taken over; starting
# a run twice is harmless (run creation is idempotent), so this can be short.
CLAIM_IDLE_MS = 5_000


def run_id_for(event_id: str, function_id: str) -> RunId:
    """A ULID with the event's time and randomness hashed from (event, function)."""
    ts = ULID.from_str(event_id).milliseconds
    digest = hashlib.sha256(f"{event_id}/{function_id}".encode()).digest()[:10]
    return RunId(str(ULID.from_bytes(ts.to_bytes(6, "big") + digest)))


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Runner:
    def __init__(
        self, redis: Redis, keys: Keys, queue: Queue, registry: Registry, consumer: str,
        on_enqueued: Callable[[], None], state: StateStore | None = None,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._queue = queue
        self._registry = registry
        self._index = registry.index
        self._consumer = consumer
        self._on_enqueued = on_enqueued
        self._state = state
        self._programs: dict[str, Any] = {}  # wait `if` expression -> compiled CEL

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
            await self._claim_abandoned()
            await self._drain(">", block_ms=200)

    async def _claim_abandoned(self) -> None:
        reply: Any = await self._redis.xautoclaim(
            self._keys.events, GROUP, self._consumer, min_idle_time=CLAIM_IDLE_MS, count=500)
        claimed = reply[1]
        if claimed:
            await self.process(claimed)

    async def _drain(self, start: str, block_ms: int | None = None) -> None:
        while True:
            raise_if_cancelling()
            reply: Any = await self._redis.xreadgroup(
                GROUP, self._consumer, {self._keys.events: start}, count=1000, block=block_ms)
            entries = reply[0][1] if reply else []
            if not entries:
                return
            await self.process(entries)
            if start == ">":
                return

    async def process(self, entries: Sequence[tuple[Any, dict[bytes, bytes]]]) -> int:
        """Starts the runs of a batch of stream entries, then acknowledges them."""
        # A function registered on another process a moment ago must match this batch.
        await self._registry.refresh()
        now_ms = int(time.time() * 1000)
        runs: list[NewRun] = []
        for _, fields in entries:
            runs.extend(await self._runs_for(fields))
        if runs:
            created = await self._queue.enqueue_runs(runs, now_ms)
            if any(created):
                self._on_enqueued()
        if await self._resume_waits(entries, now_ms):
            self._on_enqueued()
        ids = [entry_id for entry_id, _ in entries]
        if ids:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.xack(self._keys.events, GROUP, *ids)
                pipe.xdel(self._keys.events, *ids)
                await pipe.execute()
        return len(runs)

    async def _resume_waits(
        self, entries: Sequence[tuple[Any, dict[bytes, bytes]]], now_ms: int
    ) -> int:
        """Resumes the runs waiting for the batch's events: one HGETALL per event name per
        shard, pipelined, finds them by name (no scan of every waiting run)."""
        if self._state is None:
            return 0
        by_name: dict[str, list[bytes]] = {}
        for _, fields in entries:
            by_name.setdefault(fields[b"name"].decode(), []).append(fields[b"e"])
        names = list(by_name)
        resumed = 0
        for sk in self._keys.all_shards():
            async with self._redis.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.hgetall(sk.waits(name))
                replies = await pipe.execute()
            for name, waiting in zip(names, replies, strict=True):
                for raw_run, raw_entry in waiting.items():
                    run_id = RunId(_s(raw_run))
                    entry = WaitEntry.parse(name, raw_entry)
                    for event_json in by_name[name]:
                        if entry.until_ms > now_ms and not await self._wait_matches(
                                run_id, entry, event_json):
                            continue
                        # A timed-out entry is dropped by the same script, matching nothing.
                        if await self._state.resume_wait(run_id, entry, event_json, now_ms):
                            log.info("wait.resumed", run_id=run_id, step_id=entry.step_id)
                            resumed += 1
                        break
        return resumed

    async def _wait_matches(self, run_id: RunId, entry: WaitEntry, event_json: bytes) -> bool:
        if not entry.if_expression:
            return True
        program = self._programs.get(entry.if_expression)
        if program is None:
            try:
                program = compile_expression("if", entry.if_expression)
            except Exception:
                return False
            if len(self._programs) > 10_000:
                self._programs.clear()
            self._programs[entry.if_expression] = program
        original = await self._redis.hget(self._keys.for_run(run_id).run(run_id), "event")
        variables = {"event": json.loads(original or b"{}"), "async": json.loads(event_json)}
        return matches(program, variables)

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
            runs.append(NewRun(
                run_id=run_id_for(event_id, fn.id), function_id=fn.id, app_id=fn.app_id,
                event_id=EventId(event_id), event_json=event_json,
                max_attempts=fn.retries + 1, available_at_ms=0,
                start_timeout_ms=fn.start_timeout_ms, finish_timeout_ms=fn.finish_timeout_ms,
            ))
        return runs
