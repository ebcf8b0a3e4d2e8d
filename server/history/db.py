"""The history database: opening the one AsyncEngine, migrating it, dialect-specific inserts.

SQLite (dev) and PostgreSQL (production) share all code; only connection setup and the
`INSERT .. ON CONFLICT` construct differ.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Table, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from server.errors import ConfigError

_MIGRATIONS = Path(__file__).parent / "migrations"
# Serialises concurrent `migrate()` calls of several server processes on one PostgreSQL.
_MIGRATE_LOCK_KEY = 0x706C616974  # "plait"
_SQLITE_BUSY_TIMEOUT_MS = 5_000
# PRAGMA synchronous per durability mode. FULL fsyncs the WAL at every commit, so a commit
# that returned survives a power cut; NORMAL fsyncs only at checkpoints (a power cut may lose
# the last commits, never corrupt the file).
SQLITE_SYNCHRONOUS = {"fsync": "FULL", "relaxed": "NORMAL"}

Insert = postgresql.Insert | sqlite.Insert


async def open_database(url: str, durability: str = "fsync") -> AsyncEngine:
    """Creates the engine for `url` (postgresql+asyncpg:// or sqlite+aiosqlite://).

    `durability` (Settings.durability) sets SQLite's PRAGMA synchronous; PostgreSQL keeps
    its own settings (synchronous_commit on by default: a commit is flushed to its WAL).
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        # The value is not echoed: it may hold a password.
        raise ConfigError(
            "database url is not a database URL: "
            "use postgresql+asyncpg://… or sqlite+aiosqlite:///…"
        ) from None
    if parsed.drivername == "sqlite+aiosqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url)
        synchronous = SQLITE_SYNCHRONOUS[durability]
        event.listen(engine.sync_engine, "connect", partial(_sqlite_pragmas, synchronous))
        return engine
    if parsed.drivername == "postgresql+asyncpg":
        return create_async_engine(
            url, pool_size=5, max_overflow=5, pool_pre_ping=True, pool_recycle=1800
        )
    raise ConfigError(
        f"database url has driver {parsed.drivername!r}: "
        "use postgresql+asyncpg://… or sqlite+aiosqlite:///…"
    )


def _sqlite_pragmas(synchronous: str, dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the dashboard read while the history writer writes; the busy timeout makes a
    # second writer wait instead of failing at once.
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
    finally:
        cursor.close()


async def migrate(engine: AsyncEngine) -> None:
    """Brings the schema to the newest revision; a no-op when it is already there."""
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATE_LOCK_KEY}
            )
        await conn.run_sync(_upgrade)


def _upgrade(connection: Connection) -> None:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.set_main_option("path_separator", "os")
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def insert(engine: AsyncEngine, table: Table) -> Insert:
    """`INSERT` of the engine's dialect, which has `on_conflict_do_nothing/do_update`."""
    if engine.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)
