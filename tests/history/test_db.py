"""Opening and migrating the history database, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from server.errors import ConfigError
from server.history import migrations
from server.history.db import migrate, open_database
from server.history.models import Base


@pytest.fixture
async def engine(url: str) -> AsyncIterator[AsyncEngine]:
    engine = await open_database(url)
    yield engine
    await engine.dispose()


async def test_migrate_creates_every_table(engine: AsyncEngine) -> None:
    await migrate(engine)
    async with engine.connect() as conn:
        tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    assert {"apps", "functions", "events", "runs", "step_attempts", "alembic_version"} <= tables


async def test_migrating_twice_is_a_no_op(engine: AsyncEngine) -> None:
    await migrate(engine)
    await migrate(engine)
    async with engine.connect() as conn:
        versions = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
    assert [v for (v,) in versions] == [_head()]


def _head() -> str:
    """The newest revision in server/history/migrations."""
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


async def test_the_migrations_match_the_models(engine: AsyncEngine) -> None:
    await migrate(engine)

    def diff(conn: Connection) -> list[object]:
        return list(compare_metadata(MigrationContext.configure(conn), Base.metadata))

    async with engine.connect() as conn:
        assert await conn.run_sync(diff) == []


async def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    engine = await open_database(f"sqlite+aiosqlite:///{tmp_path}/sub/dir/plait.db")
    try:
        async with engine.connect() as conn:
            mode = (await conn.execute(text("PRAGMA journal_mode"))).scalar()
            timeout = (await conn.execute(text("PRAGMA busy_timeout"))).scalar()
    finally:
        await engine.dispose()
    assert mode == "wal"
    assert timeout == 5000


async def test_an_unknown_driver_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="mysql"):
        await open_database("mysql+aiomysql://localhost/plait")
    with pytest.raises(ConfigError, match="not a database URL"):
        await open_database("plait.db")


@pytest.mark.parametrize(("durability", "synchronous"), [("fsync", 2), ("relaxed", 1)])
async def test_sqlite_fsyncs_every_commit_unless_durability_is_relaxed(
    tmp_path: Path, durability: str, synchronous: int
) -> None:
    # 2 is FULL (the WAL is fsynced at each commit), 1 is NORMAL (only at checkpoints).
    engine = await open_database(f"sqlite+aiosqlite:///{tmp_path}/plait.db", durability)
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("PRAGMA synchronous"))).scalar() == synchronous
    finally:
        await engine.dispose()


async def test_sqlite_fsyncs_every_commit_by_default(tmp_path: Path) -> None:
    engine = await open_database(f"sqlite+aiosqlite:///{tmp_path}/plait.db")
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("PRAGMA synchronous"))).scalar() == 2
    finally:
        await engine.dispose()
