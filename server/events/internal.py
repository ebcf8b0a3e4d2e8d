"""Internal events: `inngest/function.finished`, `.failed` and `.cancelled` for ended runs.

The history writer hands over each batch's run ends after its SQL commit; the events go
through the ingest like any other, with ids derived from (run, kind), so an end read twice
stores and triggers once. Runs started by an internal event emit none, so a failure handler
that fails cannot start another one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import structlog
from redis.asyncio import Redis
from ulid import ULID

from server.errors import InvalidArgument
from server.events.ingest import EventIngest, EventInput
from server.history.records import RunEnded
from server.keys import Keys
from server.types import RunStatus

FUNCTION_FINISHED = "inngest/function.finished"
FUNCTION_FAILED = "inngest/function.failed"
FUNCTION_CANCELLED = "inngest/function.cancelled"
_INTERNAL_PREFIX = "inngest/function."

EVENT_DROPPED = "internal_event.dropped"

_log = structlog.get_logger(__name__)


def event_id(run_id: str, name: str, ts_ms: int) -> str:
    """The internal event's ULID: the end's time and a hash of (run, event name)."""
    digest = hashlib.blake2b(f"{run_id}:{name}".encode(), digest_size=10).digest()
    return str(ULID.from_bytes(max(ts_ms, 0).to_bytes(6, "big") + digest))


def _error(end: RunEnded) -> dict[str, Any]:
    try:
        parsed = json.loads(end.error_json) if end.error_json else {}
    except ValueError:
        parsed = {"message": end.error_json}
    if not isinstance(parsed, dict):
        parsed = {"message": str(parsed)}
    if end.status is RunStatus.CANCELLED and not parsed:
        parsed = {"name": "FunctionCancelledError", "message": "function cancelled"}
    return {
        "name": str(parsed.get("name") or "Error"),
        "message": str(parsed.get("message") or ""),
        "stack": str(parsed.get("stack") or ""),
    }


def events_for(end: RunEnded, event: dict[str, Any]) -> list[EventInput]:
    """The internal events of one run end; `event` is the run's triggering event."""
    base: dict[str, Any] = {
        "function_id": end.function_id, "run_id": end.run_id, "event": event, "events": [event],
    }
    finished = dict(base)
    names: list[str] = []
    if end.status is RunStatus.COMPLETED:
        try:
            finished["result"] = json.loads(end.output_json) if end.output_json else None
        except ValueError:
            finished["result"] = end.output_json
    else:
        finished["error"] = _error(end)
        names.append(FUNCTION_FAILED if end.status is RunStatus.FAILED else FUNCTION_CANCELLED)
    out = [EventInput(FUNCTION_FINISHED, json.dumps(finished).encode(), end.ts_ms,
                      id=event_id(end.run_id, FUNCTION_FINISHED, end.ts_ms))]
    for name in names:
        data = {**base, "error": finished["error"]}
        out.append(EventInput(name, json.dumps(data).encode(), end.ts_ms,
                              id=event_id(end.run_id, name, end.ts_ms)))
    return out


class InternalEvents:
    """Emits the internal events of run ends, through the ingest."""

    def __init__(self, redis: Redis, keys: Keys, ingest: EventIngest) -> None:
        self._redis = redis
        self._keys = keys
        self._ingest = ingest

    async def emit(self, ends: Sequence[RunEnded]) -> None:
        """At least once per end; Redis and SQL errors propagate (the caller retries)."""
        ends = [e for e in ends if e.status.terminal]
        if not ends:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for end in ends:
                pipe.hget(self._keys.for_run(end.run_id).run(end.run_id), "event")
            raw_events = await pipe.execute()
        inputs: list[EventInput] = []
        for end, raw in zip(ends, raw_events, strict=True):
            try:
                event = json.loads(raw) if raw else None
            except ValueError:
                event = None
            if not isinstance(event, dict):
                # The run's keys expired (a history backlog over the TTL): nothing to send.
                _log.warning(EVENT_DROPPED, run_id=end.run_id, reason="run event not found")
                continue
            if str(event.get("name", "")).startswith(_INTERNAL_PREFIX):
                continue
            inputs += events_for(end, event)
        if not inputs:
            return
        try:
            await self._ingest.accept(inputs, received=False)
            return
        except InvalidArgument:
            pass
        for item in inputs:
            # One at a time: an event over the size limit is dropped alone.
            try:
                await self._ingest.accept([item], received=False)
            except InvalidArgument as e:
                _log.warning(EVENT_DROPPED, event_name=item.name, reason=str(e))
