"""Cron ticks: next/latest tick with time zones, the advance script, and one scheduler pass."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from redis.asyncio import Redis

from server.keys import Keys
from server.luascript import load_script
from server.runner.cron import latest_tick_ms, next_tick_ms, parse_cron, tick_event


def _ms(year: int, month: int, day: int, hour: int, minute: int = 0, second: int = 0,
        tz: str = "UTC") -> int:
    moment = datetime(year, month, day, hour, minute, second, tzinfo=ZoneInfo(tz))
    return int(moment.timestamp() * 1000)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


def test_every_minute_ticks_on_the_minute() -> None:
    s = parse_cron("* * * * *")
    assert next_tick_ms(s, _ms(2026, 1, 1, 10, 0, 30)) == _ms(2026, 1, 1, 10, 1)
    assert next_tick_ms(s, _ms(2026, 1, 1, 10, 1)) == _ms(2026, 1, 1, 10, 2)
    assert latest_tick_ms(s, _ms(2026, 1, 1, 10, 0, 30)) == _ms(2026, 1, 1, 10, 0)
    assert latest_tick_ms(s, _ms(2026, 1, 1, 10, 1)) == _ms(2026, 1, 1, 10, 1)


def test_a_spec_without_a_zone_is_utc() -> None:
    s = parse_cron("0 9 * * *")
    assert next_tick_ms(s, _ms(2026, 1, 1, 10)) == _ms(2026, 1, 2, 9)


@pytest.mark.parametrize("prefix", ["TZ", "CRON_TZ"])
def test_a_tz_prefix_ticks_in_that_zone(prefix: str) -> None:
    s = parse_cron(f"{prefix}=Europe/Paris 0 9 * * *")
    assert s.expression == "0 9 * * *"
    # 09:00 in Paris is 08:00 UTC in winter and 07:00 UTC in summer.
    assert next_tick_ms(s, _ms(2026, 1, 1, 10)) == _ms(2026, 1, 2, 8)
    assert next_tick_ms(s, _ms(2026, 7, 1, 10)) == _ms(2026, 7, 2, 7)
    assert next_tick_ms(s, _ms(2026, 7, 1, 10)) == _ms(2026, 7, 2, 9, tz="Europe/Paris")


def test_descriptors_tick() -> None:
    s = parse_cron("@hourly")
    assert next_tick_ms(s, _ms(2026, 1, 1, 10, 59, 59)) == _ms(2026, 1, 1, 11)


def test_a_ticks_event_is_the_same_from_every_process() -> None:
    tick = _ms(2026, 1, 1, 10)
    first = tick_event("app-fn", "* * * * *", tick)
    assert first == tick_event("app-fn", "* * * * *", tick)
    assert first[0] != tick_event("app-fn", "* * * * *", tick + 60_000)[0]
    assert first[0] != tick_event("app-other", "* * * * *", tick)[0]
    assert b'"name":"inngest/scheduled.timer"' in first[1]
    assert b'"data":{"cron":"* * * * *"}' in first[1]
    assert datetime.fromtimestamp(tick / 1000, tz=UTC).minute == 0


async def test_the_last_tick_only_moves_forward(redis: Redis) -> None:
    advance = load_script(redis, "server.runner", "advance_tick")
    key = Keys().cron_last("app-fn", "* * * * *")
    assert await advance(keys=[key], args=[120_000]) == 1
    assert await advance(keys=[key], args=[120_000]) == 0
    assert await advance(keys=[key], args=[60_000]) == 0
    assert int(await redis.get(key)) == 120_000
    assert await advance(keys=[key], args=[180_000]) == 1
    assert int(await redis.get(key)) == 180_000
