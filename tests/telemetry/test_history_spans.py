"""A run's spans rebuilt from its history in SQL, and exported over OTLP by the writer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aredis
from sqlalchemy.ext.asyncio import AsyncEngine

from server.config import Settings
from server.history import store
from server.history.spans import list_spans
from server.history.writer import HistoryWriter
from server.keys import Keys
from server.telemetry import SpanKind, Telemetry, span_id_hex
from server.types import Event, EventId
from tests.telemetry.conftest import Captured

RUN = "01JAAAAAAAAAAAAAAAAAAAAAAA"
EVENT = "01JEEEEEEEEEEEEEEEEEEEEEEE"
SENDER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
KEYS = Keys(shards=1)
STREAM = KEYS.shard(0).history


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aredis.Redis]:
    client = aredis.from_url(redis_url)
    yield client
    await client.aclose()


def attempt(**kw: Any) -> dict[str, Any]:
    return {"fn": "shop-charge", "app": "shop", "ready": "", "until": "", **kw}


CREATED = {"k": "run", "run": RUN, "fn": "shop-charge", "app": "shop", "event": EVENT, "ts": 100}
STARTED = {"k": "start", "run": RUN, "ts": 120, "fn": "shop-charge"}
STEP_A = {"k": "step", "run": RUN, "step": "a", "name": "a", "attempt": 0,
          "status": "completed", "output": "1", "error": "", "ts": 130,
          **attempt(lease="1", ready=100, started=120)}
NAP = {"k": "step", "run": RUN, "step": "nap", "name": "nap", "attempt": 0,
       "status": "sleeping", "output": "", "error": "", "ts": 131,
       **attempt(lease="2", started=130, until=141)}
ENDED = {"k": "end", "run": RUN, "status": "completed", "output": "2", "error": "", "ts": 160,
         "attempt": 0, **attempt(lease="3", ready=141, started=150)}


async def add(redis: aredis.Redis, *entries: dict[str, Any]) -> None:
    for entry in entries:
        await redis.xadd(STREAM, entry)


async def test_a_runs_spans_are_rebuilt_from_its_history(
    redis: aredis.Redis, engine: AsyncEngine
) -> None:
    await store.insert_events(
        engine, [Event(EventId(EVENT), "shop/charge", b"{}", 90, traceparent=SENDER)], 95)
    await add(redis, CREATED, STARTED, STEP_A, NAP, ENDED)
    writer = HistoryWriter(redis, engine, KEYS, "w1")
    assert await writer.drain_once() == 5
    spans = await list_spans(engine, RUN)
    assert [(s.kind, s.name, s.start_ms, s.end_ms) for s in spans] == [
        (SpanKind.RUN, "run shop-charge", 100, 160),
        (SpanKind.QUEUE, "queue.wait", 100, 120),
        (SpanKind.STEP, "step a", 120, 130),
        (SpanKind.STEP, "step nap", 130, 131),
        (SpanKind.SLEEP, "sleep nap", 131, 141),
        (SpanKind.QUEUE, "queue.wait", 141, 150),
        (SpanKind.STEP, "function", 150, 160),
    ]
    root = spans[0]
    assert (root.outcome, root.status, root.links) == ("completed", "ok", (SENDER,))
    assert root.attributes["plait.event.id"] == EVENT
    assert {s.parent_id for s in spans[1:]} == {root.id}
    assert spans[2].id == span_id_hex(RUN, SpanKind.STEP, "1")
    assert spans[6].attributes["plait.step.id"] == "$function"

    # The same attempt recorded twice is still one span.
    await add(redis, STEP_A, ENDED)
    await writer.drain_once()
    assert await list_spans(engine, RUN) == spans


async def test_a_run_going_on_has_an_open_root(redis: aredis.Redis, engine: AsyncEngine) -> None:
    writer = HistoryWriter(redis, engine, KEYS, "w1")
    await add(redis, CREATED, STARTED, STEP_A)
    await writer.drain_once()
    root, *_ = await list_spans(engine, RUN)
    assert (root.start_ms, root.end_ms, root.outcome, root.links) == (100, None, "", ())


async def test_a_root_is_exported_once_its_creation_and_end_are_written(
    redis: aredis.Redis, engine: AsyncEngine
) -> None:
    await store.insert_events(
        engine, [Event(EventId(EVENT), "shop/charge", b"{}", 90, traceparent=SENDER)], 95)
    captured = Captured()
    telemetry = Telemetry(Settings(otel_service_name="plait-test"), exporter=captured)
    writer = HistoryWriter(redis, engine, KEYS, "w1", telemetry)
    # The end may be read before the creation (several consumers split a stream).
    await add(redis, ENDED)
    await writer.drain_once()
    await add(redis, STEP_A)
    await writer.drain_once()
    await add(redis, CREATED, STARTED)
    await writer.drain_once()
    await telemetry.shutdown()
    exported = sorted(captured.spans, key=lambda s: s.name)
    assert [s.name for s in exported] == ["function", "queue.wait", "queue.wait",
                                          "run shop-charge", "step a"]
    root = exported[3]
    assert (root.span_id, root.parent_id) == (span_id_hex(RUN, SpanKind.RUN), "")
    assert (root.start_ns, root.end_ns) == (100_000_000, 160_000_000)
    assert root.attributes["plait.run.status"] == "completed"
    assert root.links == (tuple(SENDER.split("-")[1:3]),)
    assert {s.parent_id for s in exported if s is not root} == {root.span_id}
    assert telemetry.metrics.registry.get_sample_value(
        "plait_runs_finished_total", {"function_id": "shop-charge", "status": "completed"}) == 1
