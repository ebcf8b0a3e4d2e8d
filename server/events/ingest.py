"""Event ingest: validates events, stores them in SQL, then appends them to the event stream.

An event is acknowledged only after both writes, so an acknowledged event is never lost;
the runners read the stream.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.typing import EncodableT
from sqlalchemy.ext.asyncio import AsyncEngine
from ulid import ULID

from server.canonjson import MAX_DEPTH, canonical_object
from server.config import Settings
from server.errors import InvalidArgument
from server.history import store
from server.keys import Keys
from server.luascript import load_script
from server.telemetry.ids import parse_traceparent
from server.telemetry.telemetry import Telemetry
from server.types import Event, EventId

MAX_NAME_BYTES = 256
MAX_IDEMPOTENCY_KEY_BYTES = 256
# 9999-12-31T23:59:59.999Z: later timestamps fit no date type (nor, far enough, a bigint).
MAX_TS_MS = 253_402_300_799_999
# Names only Plait sends (function.finished, .invoked, ...), refused from senders as Inngest does.
INTERNAL_PREFIX = "inngest/"
INTERNAL_DEPTH_MARGIN = 4


@dataclass(frozen=True, slots=True)
class EventInput:
    name: str
    data_json: bytes = b"{}"  # empty means {}
    ts_ms: int = 0  # 0 means now
    idempotency_key: str = ""
    id: str = ""  # a ULID chosen by the sender (seeded ids); empty means assign one


def event_json(event: Event) -> bytes:
    """The event as functions see it: {"id","name","data","ts"}."""
    head = json.dumps({"id": event.id, "name": event.name})[:-1].encode()
    return head + b',"data":' + event.data_json + b',"ts":' + str(event.ts_ms).encode() + b"}"


def _validate(i: int, item: EventInput, settings: Settings, received: bool = True) -> bytes:
    """The event's data in canonical form (server/canonjson.py), or InvalidArgument naming
    the field; `received` events come from senders, who may not use Plait's internal names."""
    at = f"events[{i}]"
    if not item.name:
        raise InvalidArgument(f"{at}.name", "must not be empty")
    if len(item.name.encode()) > MAX_NAME_BYTES:
        raise InvalidArgument(f"{at}.name", f"longer than {MAX_NAME_BYTES} bytes")
    if received and item.name.startswith(INTERNAL_PREFIX):
        raise InvalidArgument(f"{at}.name", f"{item.name[:64]!r}: names under "
                              f"{INTERNAL_PREFIX!r} are Plait's own events and cannot be sent")
    if len(item.idempotency_key.encode()) > MAX_IDEMPOTENCY_KEY_BYTES:
        raise InvalidArgument(f"{at}.idempotency_key", f"longer than {MAX_IDEMPOTENCY_KEY_BYTES}")
    # PostgreSQL text cannot hold a NUL: refused here, not as a database error after the check.
    for name, value in (("name", item.name), ("idempotency_key", item.idempotency_key)):
        if "\x00" in value:
            raise InvalidArgument(f"{at}.{name}", "must not contain a NUL character")
    data = item.data_json or b"{}"
    # Plait's own events may carry a run's output besides an event: server/events/internal.py
    # holds them to this sum (data_limit) and they are never refused for size.
    limit = settings.max_event_bytes + (0 if received else settings.max_step_output_bytes)
    if len(data) > limit:
        raise InvalidArgument(f"{at}.data", f"{len(data)} bytes is over the limit of {limit}")
    # Internal events nest a run's event and output a level or two down.
    depth = MAX_DEPTH if received else MAX_DEPTH + INTERNAL_DEPTH_MARGIN
    data = canonical_object(data, f"{at}.data", max_depth=depth)
    if not 0 <= item.ts_ms <= MAX_TS_MS:
        raise InvalidArgument(f"{at}.ts", f"must be Unix ms in 0..{MAX_TS_MS} "
                              "(up to year 9999; 0 means now)")
    if item.id:
        try:
            ULID.from_str(item.id)
        except ValueError:
            raise InvalidArgument(f"{at}.id", "must be a ULID") from None
    return data


async def append_events(
    script: AsyncScript, keys: Keys, events: Sequence[Event], now_ms: int
) -> int:
    """Appends events to the stream, each once (the ledger skips ids appended before);
    returns how many were appended. `script` is the loaded append_events.lua."""
    args: list[EncodableT] = [now_ms]
    for event in events:
        args += [event.id, event.name, event_json(event), event.idempotency_key]
    appended = await script(keys=[keys.events, keys.events_accepted], args=args)
    return int(appended)


class EventIngest:
    def __init__(self, engine: AsyncEngine, redis: Redis, keys: Keys, settings: Settings,
                 telemetry: Telemetry | None = None) -> None:
        self._engine = engine
        self._redis = redis
        self._keys = keys
        self._settings = settings
        self._telemetry = telemetry or Telemetry()
        self._append = load_script(redis, "server.events", "append_events")

    async def accept(self, inputs: Sequence[EventInput], traceparent: str = "", *,
                     received: bool = True) -> list[EventId]:
        """Stores the events and queues them for the runners; returns ids in input order.

        `traceparent` is the W3C trace context the request came with: the runs the events
        start link their traces to it (an invalid one is ignored, as W3C asks). `received`
        False (Plait's own internal events) leaves them out of the received-events metric.
        """
        limit = self._settings.max_events_per_request
        if not inputs:
            raise InvalidArgument("events", "at least one event is required")
        if len(inputs) > limit:
            raise InvalidArgument("events", f"{len(inputs)} events is over the limit of {limit}")
        datas = [_validate(i, item, self._settings, received)
                 for i, item in enumerate(inputs)]
        now_ms = int(time.time() * 1000)
        parent = parse_traceparent(traceparent)
        sender = str(parent) if parent is not None else ""
        events = [
            Event(
                id=EventId(item.id or str(ULID())), name=item.name, data_json=data,
                ts_ms=item.ts_ms or now_ms, idempotency_key=item.idempotency_key,
                traceparent=sender,
            )
            for item, data in zip(inputs, datas, strict=True)
        ]
        await store.insert_events(self._engine, events, now_ms)
        # Dying here leaves the events in SQL only: the reconciler (server/events/reconcile.py)
        # finds them missing from the accepted ledger and appends them.
        await append_events(self._append, self._keys, events, int(time.time() * 1000))
        if received:
            self._telemetry.events_received(len(events))
        return [e.id for e in events]
