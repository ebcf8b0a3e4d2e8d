"""What an acknowledgement promises: checks, at start, that the storage Plait does not own keeps it.

With durability=fsync an acknowledged event or step result must survive a power cut. The
embedded Redis and SQLite are configured so (server/dev/redis.py, server/history/db.py); a
production Redis and PostgreSQL keep their own configuration, so Plait reads it and warns,
saying what an acknowledgement then promises, instead of refusing to start.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["check_postgres", "check_redis"]

log = structlog.get_logger(__name__)

REDIS_NOT_DURABLE = "redis.not_durable"
REDIS_DURABILITY_UNKNOWN = "redis.durability_unknown"
SQL_NOT_DURABLE = "sql.not_durable"
_CALL_TIMEOUT_S = 5.0


async def check_redis(redis: Redis, durability: str) -> bool:
    """Whether Redis fsyncs each write before its reply (appendonly yes, appendfsync always);
    logs a warning when durability=fsync asks for it and Redis does not, or cannot tell."""
    try:
        async with asyncio.timeout(_CALL_TIMEOUT_S):
            config = await redis.config_get("append*")
    except (RedisError, OSError, TimeoutError) as e:
        # Managed Redis services often rename or disable CONFIG.
        if durability == "fsync":
            log.warning(REDIS_DURABILITY_UNKNOWN, error=f"{type(e).__name__}: {e}",
                        promise=_promise(None, None))
        return False
    appendonly, appendfsync = _text(config, "appendonly"), _text(config, "appendfsync")
    durable = appendonly == "yes" and appendfsync == "always"
    if durability == "fsync" and not durable:
        log.warning(REDIS_NOT_DURABLE, appendonly=appendonly, appendfsync=appendfsync,
                    promise=_promise(appendonly, appendfsync),
                    hint="run Redis with appendonly yes and appendfsync always, or start "
                         "Plait with --durability relaxed to say this is intended")
    return durable


async def check_postgres(engine: AsyncEngine, durability: str) -> bool:
    """Whether PostgreSQL flushes each commit (fsync on, synchronous_commit not off); logs a
    warning when durability=fsync asks for it and it does not. Other databases: True."""
    if engine.dialect.name != "postgresql":
        return True
    try:
        async with asyncio.timeout(_CALL_TIMEOUT_S), engine.connect() as conn:
            fsync = (await conn.execute(text("SHOW fsync"))).scalar()
            commit = (await conn.execute(text("SHOW synchronous_commit"))).scalar()
    except (SQLAlchemyError, OSError, TimeoutError) as e:
        log.warning(SQL_NOT_DURABLE, error=f"{type(e).__name__}: {e}",
                    promise="unknown: the settings were unreadable")
        return False
    durable = fsync == "on" and commit != "off"
    if durability == "fsync" and not durable:
        log.warning(SQL_NOT_DURABLE, fsync=fsync, synchronous_commit=commit,
                    promise="an acknowledged event may be lost from history in a crash of "
                            "PostgreSQL's machine",
                    hint="set fsync = on and synchronous_commit = on")
    return durable


def _text(config: Mapping[Any, Any], name: str) -> str:
    for key, value in config.items():
        key_text = key.decode() if isinstance(key, bytes) else str(key)
        if key_text == name:
            return value.decode() if isinstance(value, bytes) else str(value)
    return ""


def _promise(appendonly: str | None, appendfsync: str | None) -> str:
    """What an acknowledgement promises with this Redis configuration."""
    if appendonly is None:
        return ("unknown: CONFIG GET is refused, so Plait cannot tell whether Redis persists "
                "what it acknowledges")
    if appendonly != "yes":
        return ("acknowledged events are kept in SQL, and those of the last 10 minutes whose "
                "runs history had not recorded start them after a Redis restart (the "
                "reconciler); runs in flight, their step results and sleeps live only in Redis "
                "memory: a Redis restart loses them")
    if appendfsync == "everysec":
        return ("a Redis crash loses nothing; a power cut or kernel crash of Redis' machine "
                "may lose about the last second of step results and run state")
    return ("a Redis crash loses nothing; a power cut of Redis' machine may lose what the "
            "operating system had not yet written (appendfsync no: up to about 30 s)")
