"""Runs of mixed functions under kill -9 of the server, the worker and Redis lose nothing.

The short version runs in CI; `make chaos` sets PLAIT_CHAOS_RUNS / PLAIT_CHAOS_KILLS for the
long one (tests/chaos/driver.py says what is checked).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.chaos.driver import ChaosConfig, run_chaos
from tests.chaos.summary import add

RUNS = int(os.environ.get("PLAIT_CHAOS_RUNS", "60"))
KILLS = int(os.environ.get("PLAIT_CHAOS_KILLS", "1"))
SEED = int(os.environ.get("PLAIT_CHAOS_SEED", "11"))
# The bound on finishing after the last restart; the short run (CI) waits less.
SETTLE_S = 120.0 if RUNS > 100 else 45.0


@pytest.fixture
def database(backend: str, request: pytest.FixtureRequest) -> str:
    """A PostgreSQL database for the production backend (its Redis is the driver's own)."""
    return str(request.getfixturevalue("database_url")) if backend == "production" else ""


@pytest.mark.timeout(0 if RUNS > 100 else 240)
@pytest.mark.parametrize("backend", ["embedded", "production"])
async def test_runs_survive_kill_9_of_server_worker_and_redis_with_nothing_lost_or_rerun(
    backend: str, database: str, tmp_path: Path
) -> None:
    workdir = tmp_path / "chaos"
    report = await run_chaos(ChaosConfig(backend, RUNS, KILLS, SEED, workdir, database,
                                         settle_s=SETTLE_S))
    add("chaos", report.line())
    said = f"{report.line()}\n{_tails(workdir)}"
    assert report.runs == RUNS
    assert report.kills == {"server": KILLS, "worker": KILLS, "redis": KILLS}, said
    assert (report.lost, report.stuck, report.failed) == (0, 0, 0), said
    assert (report.rerun_after_commit, report.double_commits) == (0, 0), said
    assert (report.duplicate_runs, report.duplicate_children) == (0, 0), said
    assert report.crashes == {"server": 0, "worker": 0}, said


def _tails(workdir: Path, lines: int = 30) -> str:
    """The last lines of the server and worker logs, for a failure's message."""
    out = []
    for name in ("server.log", "worker.log"):
        path = workdir / name
        if path.exists():
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {name}\n" + "\n".join(t[:300] for t in tail))
    return "\n".join(out)
