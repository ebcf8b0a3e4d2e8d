"""The server command line per backend; for production, a fresh PostgreSQL database and Redis db."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis

PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379
# The test suite claims Redis dbs with this key in db 0; honouring it keeps us off theirs.
_REDIS_LOCK = "plait-test-db-lock:{db}"
_LOCK_TTL_S = 3600


@contextlib.asynccontextmanager
async def embedded(tmp: Path) -> AsyncIterator[list[str]]:
    yield ["dev", "--data-dir", str(tmp / ".plait")]


@contextlib.asynccontextmanager
async def production(redis_db: int) -> AsyncIterator[list[str]]:
    """Yields `start` arguments for a flushed Redis db and a new database, dropped after."""
    async with _redis_db(redis_db) as redis_url, _pg_database() as database_url:
        # Open like the embedded backend (no tokens or keys), so the two compare like for like.
        yield ["start", "--redis-url", redis_url, "--database-url", database_url, "--insecure"]


@contextlib.asynccontextmanager
async def _redis_db(db: int) -> AsyncIterator[str]:
    admin = aioredis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=0)
    token = f"bench-{secrets.token_hex(4)}"
    lock = _REDIS_LOCK.format(db=db)
    try:
        if not await admin.set(lock, token, nx=True, ex=_LOCK_TTL_S):
            raise RuntimeError(f"--redis-db has value {db}: in use by another session ({lock})")
        try:
            client = aioredis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db)
            try:
                await client.flushdb()
                yield f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"
            finally:
                # The server has stopped by now; leave the db as empty as we found it.
                await client.flushdb()
                await client.aclose()
        finally:
            if await admin.get(lock) == token.encode():
                await admin.delete(lock)
    finally:
        await admin.aclose()


@contextlib.asynccontextmanager
async def _pg_database() -> AsyncIterator[str]:
    name = f"plait_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        base = PG_ADMIN_DSN.rsplit("/", 1)[0].split("://", 1)[1]
        yield f"postgresql+asyncpg://{base}/{name}"
    finally:
        admin = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
