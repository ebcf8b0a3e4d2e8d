"""Matches a batch of events against the runs waiting for them (wait-for-event, invoke,
cancel-on) and resumes or cancels those runs.

The cost per event does not grow with the number of waiting runs: per event name and shard,
one round trip reads the indexed paths and the scanned entries, one reads the index sets
the event's own values point to, one reads the entries found, and one the run events that
scanned entries compare against (see server/state/waits.py). Only entries whose `if` cannot
be indexed are evaluated, each against every event of its name.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog
from redis.asyncio import Redis

from server.keys import Keys, ShardKeys
from server.runner.expressions import Expression, compile_expression, matches
from server.state import StateStore
from server.state.waits import CANCEL, INVOKE, WaitEntry, event_digest
from server.types import RunId

log = structlog.get_logger(__name__)

MAX_PROGRAMS = 10_000


class _Event:
    """An event of the batch, parsed only if a wait of its name needs its values: most
    events have none, and the runner should not pay for parsing them."""

    __slots__ = ("_parsed", "raw")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self._parsed: dict[str, Any] | None = None

    @property
    def parsed(self) -> dict[str, Any]:
        if self._parsed is None:
            self._parsed = json.loads(self.raw)
        return self._parsed


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def invoke_memo(finished: dict[str, Any]) -> bytes:
    """The invoking step's memo from the child's `inngest/function.finished` event."""
    data = finished.get("data")
    data = data if isinstance(data, dict) else {}
    if data.get("error") is not None:
        return json.dumps({"error": data["error"]}).encode()
    return json.dumps({"data": data.get("result")}).encode()


class WaitMatcher:
    def __init__(self, redis: Redis, keys: Keys, state: StateStore,
                 cancel_run: Callable[[RunId], Awaitable[object]]) -> None:
        self._redis = redis
        self._keys = keys
        self._state = state
        self._cancel_run = cancel_run
        # `if` expression -> compiled CEL, None when refused (invalid or over the budget)
        self._programs: dict[str, Expression | None] = {}

    async def process(self, events: Sequence[tuple[str, bytes]], now_ms: int) -> int:
        """Resumes or cancels the runs the events (name, event JSON) match, in stream order;
        returns how many runs were resumed (their jobs are due now)."""
        by_name: dict[str, list[_Event]] = {}
        for name, raw in events:
            by_name.setdefault(name, []).append(_Event(raw))
        resumed = 0
        for sk in self._keys.all_shards():
            resumed += await self._process_shard(sk, by_name, now_ms)
        return resumed

    async def _process_shard(self, sk: ShardKeys, by_name: dict[str, list[_Event]],
                             now_ms: int) -> int:
        names = list(by_name)
        async with self._redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.smembers(sk.wait_paths(name))
                pipe.smembers(sk.wait_scan(name))
            replies = await pipe.execute()
        # field -> {event index: the index set it was found in} (None: evaluate against all)
        found: dict[str, dict[str, dict[int, str] | None]] = {}
        lookups: list[tuple[str, str, int]] = []  # (name, index set key, event index)
        for k, name in enumerate(names):
            paths, scanned = replies[2 * k], replies[2 * k + 1]
            if scanned:
                found[name] = {_s(f): None for f in scanned}
            for path in map(_s, paths):
                for i, event in enumerate(by_name[name]):
                    value = event_digest(event.parsed, path)
                    if value is not None:
                        lookups.append((name, sk.wait_index(name, path, value), i))
        if lookups:
            async with self._redis.pipeline(transaction=False) as pipe:
                for _, key, _ in lookups:
                    pipe.smembers(key)
                members = await pipe.execute()
            for (name, key, i), fields in zip(lookups, members, strict=True):
                per_name = found.setdefault(name, {})
                for field in map(_s, fields):
                    hits = per_name.setdefault(field, {})
                    if hits is not None:
                        hits.setdefault(i, key)
        if not found:
            return 0
        wanted = [(name, list(fields)) for name, fields in found.items() if fields]
        async with self._redis.pipeline(transaction=False) as pipe:
            for name, fields in wanted:
                pipe.hmget(sk.waits(name), fields)
            entries = await pipe.execute()
        parsed: list[tuple[WaitEntry, dict[int, str] | None]] = []
        for (name, fields), raws in zip(wanted, entries, strict=True):
            for field, raw in zip(fields, raws, strict=True):
                if raw is not None:  # else removed meanwhile: its set membership is stale
                    parsed.append((WaitEntry.parse(name, field, raw), found[name][field]))
        # The run events scanned `if`s compare against, in one round trip.
        scanned = list(dict.fromkeys(
            e.run_id for e, hits in parsed if hits is None and e.if_expression))
        originals: dict[str, Any] = {}
        if scanned:
            async with self._redis.pipeline(transaction=False) as pipe:
                for run_id in scanned:
                    pipe.hget(sk.run(run_id), "event")
                for run_id, raw_event in zip(scanned, await pipe.execute(), strict=True):
                    originals[run_id] = json.loads(raw_event or b"{}")
        resumed = 0
        for entry, hits in parsed:
            resumed += await self._settle(entry, by_name[entry.event], hits,
                                          originals.get(entry.run_id), now_ms)
        return resumed

    async def _settle(self, entry: WaitEntry, events: list[_Event],
                      hits: dict[int, str] | None, original: Any, now_ms: int) -> int:
        """Acts on one entry for the first event that matches it; 1 when a run resumed."""
        expired = 0 < entry.until_ms <= now_ms
        event: _Event | None = None
        if not expired:
            if hits is not None:
                # Found through its index set: the value it compares is equal, which is its
                # whole `if` (a stale membership of another set is not a match).
                firsts = sorted(i for i, key in hits.items() if key == entry.set_key)
                event = events[firsts[0]] if firsts else None
            else:
                for candidate in events:
                    if self._matches(entry, original, candidate):
                        event = candidate
                        break
            if event is None:
                return 0
        if entry.kind == CANCEL:
            if expired:
                await self._state.drop_wait(entry)
                return 0
            log.info("run.cancel_on", run_id=entry.run_id, event_name=entry.event)
            await self._cancel_run(RunId(entry.run_id))
            return 0
        if event is None:
            # Expired: the script drops the entry and resumes nothing.
            await self._state.resume_wait(entry, b"null", now_ms)
            return 0
        memo = (invoke_memo(event.parsed) if entry.kind == INVOKE
                else b'{"data":' + event.raw + b"}")
        if await self._state.resume_wait(entry, memo, now_ms):
            log.info("wait.resumed", run_id=entry.run_id, step_id=entry.step_id,
                     kind=entry.kind)
            return 1
        return 0

    def _matches(self, entry: WaitEntry, original: Any, event: _Event) -> bool:
        if not entry.if_expression:
            return True
        if entry.if_expression in self._programs:
            program = self._programs[entry.if_expression]
        else:
            try:
                program = compile_expression("if", entry.if_expression)
            except Exception as e:
                # Never matches (an SDK app's wait `if` is first compiled here, under the
                # same budget as registrations); kept, so it is not compiled per event.
                log.warning("wait.expression_refused", run_id=entry.run_id, error=str(e))
                program = None
            if len(self._programs) > MAX_PROGRAMS:
                self._programs.clear()
            self._programs[entry.if_expression] = program
        if program is None:
            return False
        return matches(program, {"event": original or {}, "async": event.parsed})


__all__ = ["WaitMatcher", "invoke_memo"]
