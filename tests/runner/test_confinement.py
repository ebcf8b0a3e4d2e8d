"""One bad item never stops a role: the runner drops an event it cannot process (logged,
counted, acknowledged) and starts the runs of the rest; the scheduler disables a cron trigger
whose ticks cannot be computed and keeps ticking the others."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis import exceptions as redis_errors
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.testing import capture_logs
from ulid import ULID

from server.config import Settings
from server.errors import InvalidArgument
from server.history import migrate, open_database, store
from server.keys import Keys
from server.queue import Queue
from server.runner.cron import (
    CRON_DISABLED,
    Clock,
    Scheduler,
    latest_tick_ms,
    next_tick_ms,
    parse_cron,
)
from server.runner.expressions import validate_cron
from server.runner.index import FunctionIndex
from server.runner.registry import FUNCTION_UNINDEXABLE, Registry
from server.runner.runner import EVENT_UNPROCESSABLE, GROUP, Runner, run_id_for
from server.state import StateStore
from server.telemetry.metrics import Metrics
from server.types import (
    AppId,
    AppRegistration,
    CronTrigger,
    EventTrigger,
    FunctionConfig,
    FunctionId,
)

KEYS = Keys()
MINUTE_MS = 60_000


class _Registry:
    """The runner's and scheduler's view of a registry: an index, nothing to refresh."""

    def __init__(self, functions: Sequence[FunctionConfig]) -> None:
        self.index = FunctionIndex()
        self.index.replace(functions)

    async def refresh(self) -> None:
        pass


def _fn(slug: str, *triggers: EventTrigger | CronTrigger) -> FunctionConfig:
    return FunctionConfig(id=FunctionId(f"app-{slug}"), app_id=AppId("app"), slug=slug,
                          name=slug, triggers=triggers)


def _runner(redis: Redis, metrics: Metrics, *functions: FunctionConfig) -> Runner:
    registry: Any = _Registry(functions)
    return Runner(redis, KEYS, Queue(redis, KEYS, lease_ms=60_000), registry, "c", lambda: None,
                  StateStore(redis, KEYS, Settings()), metrics=metrics)


async def _append(redis: Redis, fields: dict[str, bytes | str]) -> None:
    await redis.xadd(KEYS.events, fields)  # type: ignore[arg-type]


def _event(name: str, data: object = None) -> tuple[str, dict[str, bytes | str]]:
    event_id = str(ULID())
    body = json.dumps({"id": event_id, "name": name, "data": data or {}}).encode()
    return event_id, {"id": event_id, "name": name, "e": body, "idem": ""}


async def _run_exists(redis: Redis, event_id: str, fn: FunctionConfig) -> bool:
    run_id = run_id_for(event_id, fn.id)
    return bool(await redis.exists(KEYS.for_run(run_id).run(run_id)))


def _unprocessable(metrics: Metrics) -> float:
    return float(metrics.events_unprocessable._value.get())


async def test_events_the_runner_cannot_process_are_dropped_and_the_rest_start_their_runs(
    redis: Redis,
) -> None:
    metrics = Metrics()
    plain = _fn("plain", EventTrigger("order/placed"))
    filtered = _fn("filtered", EventTrigger("order/placed", "event.data.total > 10"))
    runner = _runner(redis, metrics, plain, filtered)
    await runner._ensure_group()
    before, good = _event("order/placed", {"total": 20})
    await _append(redis, good)
    # Corrupt entries, as an older version or a bug could have left them: no name at all, and
    # a body the trigger's expression needs parsed that is not JSON.
    await _append(redis, {"id": str(ULID()), "e": b"{}"})
    await _append(redis, {"id": str(ULID()), "name": "order/placed", "e": b"{not json",
                          "idem": ""})
    after, good = _event("order/placed", {"total": 30})
    await _append(redis, good)

    with capture_logs() as logs:
        await runner._drain(">")

    for event_id in (before, after):
        assert await _run_exists(redis, event_id, plain)
        assert await _run_exists(redis, event_id, filtered)
    dropped = [e for e in logs if e["event"] == EVENT_UNPROCESSABLE]
    assert len(dropped) == 2
    assert "KeyError" in dropped[0]["error"] and dropped[0]["entry_id"]
    assert _unprocessable(metrics) == 2
    # Acknowledged with the rest: they do not come back.
    assert (await redis.xpending(KEYS.events, GROUP))["pending"] == 0


class _Waits:
    """A wait matcher that fails on events it cannot parse, or on every call (Redis away)."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.seen: list[bytes] = []

    async def process(self, events: Sequence[tuple[str, bytes]], now_ms: int) -> int:
        if self.error is not None:
            raise self.error
        for _, raw in events:
            json.loads(raw)
        self.seen += [raw for _, raw in events]
        return 0


async def test_an_event_that_fails_the_whole_batch_is_found_and_dropped_alone(
    redis: Redis,
) -> None:
    metrics = Metrics()
    runner = _runner(redis, metrics, _fn("plain", EventTrigger("order/placed")))
    waits = _Waits()
    runner._waits = waits  # type: ignore[assignment]
    await runner._ensure_group()
    first, entry = _event("order/placed")
    await _append(redis, entry)
    await _append(redis, {"id": str(ULID()), "name": "other", "e": b"{not json", "idem": ""})
    last, entry = _event("order/placed")
    await _append(redis, entry)

    await runner._drain(">")

    assert [json.loads(raw)["id"] for raw in waits.seen] == [first, last]
    assert _unprocessable(metrics) == 1
    assert (await redis.xpending(KEYS.events, GROUP))["pending"] == 0


async def test_a_storage_error_fails_the_batch_and_drops_nothing(redis: Redis) -> None:
    metrics = Metrics()
    runner = _runner(redis, metrics, _fn("plain", EventTrigger("order/placed")))
    runner._waits = _Waits(redis_errors.ConnectionError("Redis went away"))  # type: ignore[assignment]
    await runner._ensure_group()
    await _append(redis, _event("order/placed")[1])

    with pytest.raises(redis_errors.ConnectionError):
        await runner._drain(">")

    assert _unprocessable(metrics) == 0
    # Still pending for this consumer: read again when the runner restarts.
    assert (await redis.xpending(KEYS.events, GROUP))["pending"] == 1


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = await open_database(f"sqlite+aiosqlite:///{tmp_path}/plait.db")
    await migrate(engine)
    yield engine
    await engine.dispose()


async def test_a_cron_trigger_that_never_fires_is_disabled_and_the_others_tick(
    redis: Redis, engine: AsyncEngine,
) -> None:
    bad = _fn("bad", CronTrigger("0 0 30 2 *"))
    good = _fn("good", CronTrigger("* * * * *"))
    registry: Any = _Registry([bad, good])
    enqueued: list[int] = []
    t0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    scheduler = Scheduler(engine, redis, KEYS, Queue(redis, KEYS, lease_ms=60_000), registry,
                          lambda: enqueued.append(1), Clock())

    with capture_logs() as logs:
        assert await scheduler.schedule_due(t0 + 30_000) == t0 + MINUTE_MS
        assert await scheduler.schedule_due(t0 + MINUTE_MS + 30_000) == t0 + 2 * MINUTE_MS

    assert enqueued == [1]
    assert list(scheduler.disabled) == [(bad.id, "0 0 30 2 *")]
    disabled = [e for e in logs if e["event"] == CRON_DISABLED]
    assert len(disabled) == 1  # logged once, not at every pass
    assert disabled[0]["function_id"] == bad.id
    assert "CroniterBadDateError" in disabled[0]["error"]


async def test_a_stored_function_the_index_refuses_is_left_out_and_the_others_served(
    redis: Redis, engine: AsyncEngine,
) -> None:
    # Stored before a stricter check existed: its `if` no longer compiles.
    bad = _fn("bad", EventTrigger("order/placed", "event.data.total >"))
    good = _fn("good", EventTrigger("order/placed"))
    await store.upsert_app(engine, AppRegistration(AppId("app"), (bad, good)), 0)
    registry = Registry(engine, redis, KEYS, FunctionIndex())

    with capture_logs() as logs:
        await registry.reload()

    assert [c.function.id for c in registry.index.candidates("order/placed")] == [good.id]
    # Left out by the index itself (trigger.expression_refused) or, for any other error of
    # the index, by the registry (function.unindexable): either way named in the logs.
    left_out = [e for e in logs if e["event"] in (FUNCTION_UNINDEXABLE,
                                                  "trigger.expression_refused")]
    assert [e["function_id"] for e in left_out] == [bad.id]


async def test_a_function_the_index_fails_on_is_left_out_by_the_registry(
    redis: Redis, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch,
) -> None:
    bad = _fn("bad", EventTrigger("order/placed"))
    good = _fn("good", EventTrigger("order/placed"))
    await store.upsert_app(engine, AppRegistration(AppId("app"), (bad, good)), 0)
    replace = FunctionIndex.replace

    def failing(index: FunctionIndex, functions: Any, paused: Any = ()) -> None:
        functions = list(functions)
        if any(f.id == bad.id for f in functions):
            raise RuntimeError("an index bug this function meets")
        replace(index, functions, paused)

    monkeypatch.setattr(FunctionIndex, "replace", failing)
    registry = Registry(engine, redis, KEYS, FunctionIndex())
    with capture_logs() as logs:
        await registry.reload()

    assert [c.function.id for c in registry.index.candidates("order/placed")] == [good.id]
    left_out = [e for e in logs if e["event"] == FUNCTION_UNINDEXABLE]
    assert [e["function_id"] for e in left_out] == [bad.id]
    assert "an index bug" in left_out[0]["error"]


def _field(low: int, high: int) -> st.SearchStrategy[str]:
    """One cron field: *, a value, a range, a step, or a list of values."""
    value = st.integers(low, high)
    single = st.one_of(
        st.just("*"), value.map(str),
        st.tuples(value, value).map(lambda p: f"{min(p)}-{max(p)}"),
        st.integers(1, high).map(lambda k: f"*/{k}"))
    return st.one_of(single, st.lists(value, min_size=2, max_size=4).map(
        lambda vs: ",".join(map(str, vs))))


CRONS = st.tuples(_field(0, 59), _field(0, 23), _field(1, 31), _field(1, 12),
                  _field(0, 6)).map(" ".join)


@settings(max_examples=300, deadline=None)
@given(spec=CRONS, at_ms=st.integers(0, 4_102_444_800_000))  # 1970 .. 2100
def test_every_cron_registration_accepts_the_scheduler_can_tick(spec: str, at_ms: int) -> None:
    try:
        validate_cron("cron", spec)
    except InvalidArgument as e:
        assert e.field == "cron"
        return
    schedule = parse_cron(spec)
    assert next_tick_ms(schedule, at_ms) > at_ms
    assert latest_tick_ms(schedule, at_ms) <= at_ms


@pytest.mark.parametrize("spec", ["0 0 30 2 *", "0 0 31 4,6,9,11 *", "0 0 31 2 *"])
def test_a_cron_naming_a_date_that_never_comes_is_refused(spec: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_cron("functions[0].triggers[0].cron", spec)
    assert caught.value.field == "functions[0].triggers[0].cron"
    assert "never fires" in caught.value.reason
