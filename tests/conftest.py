"""Shared fixtures: real PostgreSQL and Redis for production-mode tests.

Each test session gets its own PostgreSQL database and its own Redis database number (taken
with a lock key in db 0), so concurrent test runs on one machine do not trip over each other.
Every Redis database handed to a test is flushed first.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
import redis as redis_sync
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from server import logs
from server.history import migrate, open_database
from tests.cluster_support import Cluster, redis_server_available, running_cluster
from tests.redis_server import PrivateRedis

# In-process servers and CLI runs configure logging as `plait` does; a logger cached on first
# use would then ignore every later test's structlog.testing.capture_logs.
assert logs.configure_logging.__kwdefaults__ is not None
logs.configure_logging.__kwdefaults__["cache_loggers"] = False

# CI sets this so that a missing service fails the run instead of skipping its tests.
REQUIRE_SERVICES = os.environ.get("PLAIT_TEST_REQUIRE_SERVICES", "") not in ("", "0")
PG_ADMIN_DSN = os.environ.get("PLAIT_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_HOST = os.environ.get("PLAIT_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("PLAIT_TEST_REDIS_PORT", "6379"))


def _unavailable(what: str, error: Exception) -> None:
    """Production-backend tests skip on a machine without the services, unless CI requires them."""
    message = f"{what} is not reachable ({error}); start it to run the production-mode tests"
    if REQUIRE_SERVICES:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def redis_db() -> Iterator[int]:
    """A Redis database number (1..15) owned by this test session."""
    admin = redis_sync.Redis(host=REDIS_HOST, port=REDIS_PORT, db=0)
    try:
        admin.ping()
    except redis_sync.ConnectionError as e:
        _unavailable(f"Redis at {REDIS_HOST}:{REDIS_PORT}", e)
    token = f"{os.getpid()}-{secrets.token_hex(4)}"
    for n in range(1, 16):
        if admin.set(f"plait-test-db-lock:{n}", token, nx=True, ex=3600):
            try:
                yield n
            finally:
                if admin.get(f"plait-test-db-lock:{n}") == token.encode():
                    admin.delete(f"plait-test-db-lock:{n}")
                admin.close()
            return
    raise RuntimeError("no free Redis database for tests (all 15 locked)")


@pytest.fixture
def redis_url(redis_db: int) -> str:
    """URL of a flushed Redis database on the real Redis server."""
    client = redis_sync.Redis(host=REDIS_HOST, port=REDIS_PORT, db=redis_db)
    client.flushdb()
    client.close()
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{redis_db}"


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    """An asyncio client of the flushed Redis database at `redis_url`."""
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def private_redis(tmp_path: Path) -> AsyncIterator[PrivateRedis]:
    """A redis-server of this test alone (tests/redis_server.py), to kill and restart."""
    server = PrivateRedis(tmp_path / "redis")
    await server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def _pg_database() -> AsyncIterator[str]:
    name = f"plait_test_{os.getpid()}_{secrets.token_hex(3)}"
    try:
        admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError) as e:
        _unavailable(f"PostgreSQL at {PG_ADMIN_DSN}", e)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield name
    finally:
        admin = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture
async def database_url(_pg_database: str) -> AsyncIterator[str]:
    """SQLAlchemy URL of an empty PostgreSQL database (its public schema recreated)."""
    base = PG_ADMIN_DSN.rsplit("/", 1)[0]
    conn = await asyncpg.connect(f"{base}/{_pg_database}")
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
    finally:
        await conn.close()
    yield f"postgresql+asyncpg://{base.split('://', 1)[1]}/{_pg_database}"


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A history database URL, once per SQL backend: a SQLite file, then real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/plait.db"
    return str(request.getfixturevalue("database_url"))


@pytest.fixture
async def engine(url: str) -> AsyncIterator[AsyncEngine]:
    """A migrated history engine on `url`."""
    engine = await open_database(url)
    await migrate(engine)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A real Redis Cluster (3 masters, 3 replicas) on loopback, started once per session."""
    if not redis_server_available():
        _unavailable("redis-server / redis-cli", FileNotFoundError("not on PATH"))
    with running_cluster(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


@pytest.fixture
def redis_cluster_url(redis_cluster: Cluster) -> str:
    """`redis+cluster://` URL of the session's cluster, every master flushed first."""
    redis_cluster.flush()
    return redis_cluster.url
