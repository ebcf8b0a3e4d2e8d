"""Several history writers splitting one stream on PostgreSQL never deadlock (issue 17).

Each writer applies a batch in one transaction: runs created, started, steps, ended. With the
stream's records of many runs interleaved, two writers' batches touch the same runs in
different orders; before the runs were locked in one order, PostgreSQL found a deadlock and
the writer retried the batch (`history.batch_failed ... deadlock detected`).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aredis
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.testing import capture_logs

from server.history import migrate, open_database
from server.history.models import RUNS, STEP_ATTEMPTS
from server.history.writer import BATCH_FAILED, HistoryWriter
from server.keys import Keys
from tests.e2e.harness import eventually

KEYS = Keys(shards=1)
STREAM = KEYS.shard(0).history
RUNS_PER_WAVE = 400
WAVES = 10
STEPS = 2


@pytest.fixture
async def pg(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = await open_database(database_url)
    await migrate(engine)
    yield engine
    await engine.dispose()


def _records(run: str) -> list[dict[str, Any]]:
    """A run's history entries as the Lua scripts write them, in their own order."""
    out: list[dict[str, Any]] = [
        {"k": "run", "run": run, "fn": "shop-charge", "app": "shop", "event": "e", "ts": 1},
        {"k": "start", "run": run, "ts": 2}]
    out += [{"k": "step", "run": run, "step": f"s{n}", "name": f"S{n}", "attempt": 0,
             "status": "completed", "output": "", "error": "", "ts": 3 + n}
            for n in range(STEPS)]
    out.append({"k": "end", "run": run, "status": "completed", "output": "", "error": "",
                "ts": 10})
    return out


async def _add_wave(redis: aredis.Redis, wave: int, rng: random.Random) -> None:
    """One wave of runs whose entries are interleaved: each run's own order is kept, but
    consecutive entries belong to different runs, so every batch touches runs that
    neighbouring batches (another writer's) touch too, in another order."""
    pending = [_records(f"run-{wave:02d}-{n:04d}") for n in range(RUNS_PER_WAVE)]
    async with redis.pipeline(transaction=False) as pipe:
        while pending:
            i = rng.randrange(len(pending))
            pipe.xadd(STREAM, pending[i].pop(0))
            if not pending[i]:
                pending.pop(i)
        await pipe.execute()


async def _counts(engine: AsyncEngine) -> tuple[int, int]:
    async with engine.connect() as conn:
        ended = (await conn.execute(select(func.count()).select_from(RUNS).where(
            RUNS.c.status == "completed"))).scalar_one()
        steps = (await conn.execute(select(func.count()).select_from(STEP_ATTEMPTS)))\
            .scalar_one()
    return int(ended), int(steps)


@pytest.mark.parametrize("writers", [2, 3])
async def test_concurrent_history_writers_on_one_stream_never_deadlock(
        redis: aredis.Redis, pg: AsyncEngine, writers: int) -> None:
    rng = random.Random(17)
    total = RUNS_PER_WAVE * WAVES
    with capture_logs() as logs:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(HistoryWriter(redis, pg, KEYS, f"writer-{n}").run())
                     for n in range(writers)]
            for wave in range(WAVES):
                await _add_wave(redis, wave, rng)
            await eventually(lambda: _counts(pg), lambda c: c == (total, total * STEPS),
                             timeout_s=60, what="every run and step written")
            for task in tasks:
                task.cancel()
    failed = [entry for entry in logs if entry.get("event") == BATCH_FAILED]
    deadlocks = [entry for entry in failed if "deadlock" in str(entry.get("error", ""))]
    assert deadlocks == []
    assert failed == []
