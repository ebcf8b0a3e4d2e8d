"""Events Plait sends itself: `inngest/function.finished`, `.failed` and `.cancelled` for
ended runs, and the events runs send (send-event steps, and the `inngest/function.invoked`
event of an invoke step).

The history writer hands over each batch's run ends and sent events after its SQL commit;
they go through the ingest like any other event, with ids fixed before (derived from (run,
kind) for ends, stored with the step's memo for sent events), so an entry read twice stores
and triggers once. Runs started by an internal event other than `function.invoked` emit no
end events, so a failure handler that fails cannot start another one.

An end event is never dropped for its size: it carries the triggering event once (no
`events` copy), and its data is held to `data_limit` (the sender limit plus the largest run
output) by trimming what the SDKs can do without, in this order: the copy of the triggering
event loses its data (`{"_truncated": {"bytes": N}}`; its `id` still names the stored
event), the error's message and stack are cut, and a result still too large becomes an error.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import structlog
from redis.asyncio import Redis
from ulid import ULID

from server.config import Settings
from server.errors import InvalidArgument
from server.events.ingest import EventIngest, EventInput
from server.history.records import EventsEmitted, RunEnded
from server.keys import Keys
from server.types import (
    FUNCTION_CANCELLED,
    FUNCTION_FAILED,
    FUNCTION_FINISHED,
    FUNCTION_INVOKED,
    RunStatus,
)

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


def invoke_correlation_id(event: dict[str, Any]) -> str:
    """The correlation id of a run started by an invoke step ("" for any other run)."""
    if event.get("name") != FUNCTION_INVOKED:
        return ""
    data = event.get("data")
    meta = data.get("_inngest") if isinstance(data, dict) else None
    return str(meta.get("correlation_id") or "") if isinstance(meta, dict) else ""


def sent_events(record: EventsEmitted) -> list[EventInput]:
    """The events one run sent, with the ids stored with its step."""
    out = []
    for raw in json.loads(record.events_json):
        out.append(EventInput(str(raw["name"]), json.dumps(raw.get("data") or {}).encode(),
                              int(raw.get("ts") or 0), id=str(raw["id"])))
    return out


def data_limit(settings: Settings) -> int:
    """The most bytes an internal event's data may have; the ingest holds Plait's own events
    to the same sum (server/events/ingest.py)."""
    return settings.max_event_bytes + settings.max_step_output_bytes


_DEFAULT_LIMIT = data_limit(Settings())


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _bounded(data: dict[str, Any], limit: int) -> bytes:
    """`data` as JSON within `limit` bytes, trimming in the documented order."""
    raw = _dumps(data)
    if len(raw) <= limit:
        return raw
    event = data.get("event")
    if isinstance(event, dict) and "data" in event:
        dropped = len(_dumps(event["data"]))
        data = {**data, "event": {**event, "data": {"_truncated": {"bytes": dropped}}}}
        raw = _dumps(data)
    error = data.get("error")
    if len(raw) > limit and isinstance(error, dict):
        message, stack = str(error.get("message", "")), str(error.get("stack", ""))
        # Each character cut takes at least one byte off the JSON: a few rounds fit it.
        for _ in range(4):
            over = len(raw) - limit + 16
            if over <= 16:
                break
            if len(stack) >= len(message):
                stack = _cut(stack, len(stack) - over)
            else:
                message = _cut(message, len(message) - over)
            data = {**data, "error": {**error, "message": message, "stack": stack}}
            raw = _dumps(data)
        if len(raw) > limit:
            data = {**data, "error": {**error, "message": _cut(message, 200), "stack": ""}}
            raw = _dumps(data)
    if len(raw) > limit and "result" in data:
        size = len(_dumps(data["result"]))
        data = {k: v for k, v in data.items() if k != "result"}
        data["error"] = {"name": "OutputTooLargeError", "stack": "",
                         "message": f"the run's output of {size} bytes is over the limit of "
                                    f"internal events ({limit} bytes)"}
        raw = _dumps(data)
    return raw


def _cut(text: str, keep: int) -> str:
    """`text` cut to `keep` characters, marked as cut."""
    return text if len(text) <= keep else text[:max(0, keep)] + "…"


def events_for(end: RunEnded, event: dict[str, Any],
               limit: int = _DEFAULT_LIMIT) -> list[EventInput]:
    """The internal events of one run end; `event` is the run's triggering event, carried
    once; each event's data is at most `limit` bytes (see the module docstring)."""
    base: dict[str, Any] = {
        "function_id": end.function_id, "run_id": end.run_id, "event": event,
    }
    correlation_id = invoke_correlation_id(event)
    if correlation_id:
        # The invoking run waits for the `finished` event carrying it (server/state/waits.py).
        base["correlation_id"] = correlation_id
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
    out = [EventInput(FUNCTION_FINISHED, _bounded(finished, limit), end.ts_ms,
                      id=event_id(end.run_id, FUNCTION_FINISHED, end.ts_ms))]
    for name in names:
        data = {**base, "error": finished["error"]}
        out.append(EventInput(name, _bounded(data, limit), end.ts_ms,
                              id=event_id(end.run_id, name, end.ts_ms)))
    return out


class InternalEvents:
    """Emits the internal events of run ends, through the ingest."""

    def __init__(self, redis: Redis, keys: Keys, ingest: EventIngest,
                 settings: Settings | None = None) -> None:
        self._redis = redis
        self._keys = keys
        self._ingest = ingest
        self._limit = data_limit(settings or Settings())

    async def emit(self, records: Sequence[RunEnded | EventsEmitted]) -> None:
        """At least once per end or sent batch; Redis and SQL errors propagate (the caller
        retries)."""
        inputs: list[EventInput] = []
        for record in records:
            if isinstance(record, EventsEmitted):
                try:
                    inputs += sent_events(record)
                except (ValueError, KeyError, TypeError, AttributeError) as e:
                    _log.error(EVENT_DROPPED, run_id=record.run_id, reason=repr(e))
        # A run flow control skipped never ran: it ends nothing an SDK waits for.
        ends = [e for e in records if isinstance(e, RunEnded) and e.status.terminal
                and e.status is not RunStatus.SKIPPED]
        if ends:
            inputs += await self._end_events(ends)
        if inputs:
            await self._accept(inputs)

    async def _end_events(self, ends: Sequence[RunEnded]) -> list[EventInput]:
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
            name = str(event.get("name", ""))
            if name.startswith(_INTERNAL_PREFIX) and name != FUNCTION_INVOKED:
                continue
            inputs += events_for(end, event, self._limit)
        return inputs

    async def _accept(self, inputs: list[EventInput]) -> None:
        try:
            await self._ingest.accept(inputs, received=False)
            return
        except InvalidArgument:
            pass
        for item in inputs:
            # One at a time: an event the ingest refuses is dropped alone. Run ends are held
            # to the ingest's limit for internal events: none of them should be.
            try:
                await self._ingest.accept([item], received=False)
            except InvalidArgument as e:
                _log.error(EVENT_DROPPED, event_name=item.name, event_id=item.id,
                           reason=str(e))
