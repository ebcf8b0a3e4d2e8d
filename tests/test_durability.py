"""What an acknowledgement promises: Plait reads a production Redis' and PostgreSQL's settings
at start and names, in a warning, what is not durable."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.testing import capture_logs

from server.durability import (
    REDIS_DURABILITY_UNKNOWN,
    REDIS_NOT_DURABLE,
    check_postgres,
    check_redis,
)


class _ConfigRefused:
    """A managed Redis that renamed CONFIG away."""

    async def config_get(self, pattern: str) -> dict[str, str]:
        raise ResponseError("unknown command 'CONFIG'")


class _Configured:
    def __init__(self, appendonly: str, appendfsync: str) -> None:
        self._config = {b"appendonly": appendonly.encode(), b"appendfsync": appendfsync.encode()}

    async def config_get(self, pattern: str) -> dict[bytes, bytes]:
        return self._config


def _warnings(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if e["log_level"] == "warning"]


async def test_a_redis_without_an_fsynced_aof_is_named_with_what_an_ack_then_promises(
    redis: Redis,
) -> None:
    # The test Redis runs like the CI one: no AOF.
    with capture_logs() as logs:
        durable = await check_redis(redis, "fsync")
    assert durable is False
    [warning] = _warnings(logs)
    assert warning["event"] == REDIS_NOT_DURABLE
    assert warning["appendonly"] == "no"
    assert "lost" in warning["promise"] or "loses" in warning["promise"]


@pytest.mark.parametrize(("appendonly", "appendfsync", "lost"), [
    ("no", "always", "a Redis restart loses them"),
    ("yes", "everysec", "about the last second"),
    ("yes", "no", "up to about 30 s"),
])
async def test_each_redis_configuration_short_of_fsync_gets_its_own_promise(
    appendonly: str, appendfsync: str, lost: str
) -> None:
    with capture_logs() as logs:
        assert await check_redis(_Configured(appendonly, appendfsync), "fsync") is False  # type: ignore[arg-type]
    [warning] = _warnings(logs)
    assert lost in warning["promise"]


async def test_a_redis_that_fsyncs_every_write_gets_no_warning() -> None:
    with capture_logs() as logs:
        assert await check_redis(_Configured("yes", "always"), "fsync") is True  # type: ignore[arg-type]
    assert _warnings(logs) == []


async def test_relaxed_durability_asks_nothing_of_redis(redis: Redis) -> None:
    with capture_logs() as logs:
        await check_redis(redis, "relaxed")
    assert _warnings(logs) == []


async def test_a_redis_refusing_config_is_a_warning_not_a_failure() -> None:
    with capture_logs() as logs:
        assert await check_redis(_ConfigRefused(), "fsync") is False  # type: ignore[arg-type]
    [warning] = _warnings(logs)
    assert warning["event"] == REDIS_DURABILITY_UNKNOWN
    assert "CONFIG" in warning["error"]


async def test_sql_with_its_default_settings_is_durable(engine: AsyncEngine) -> None:
    # PostgreSQL's defaults (fsync on, synchronous_commit on); SQLite is set by Plait itself.
    with capture_logs() as logs:
        assert await check_postgres(engine, "fsync") is True
    assert _warnings(logs) == []
