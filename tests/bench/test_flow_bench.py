"""bench/flow.py runs end to end at tiny sizes: the JSON's shape, every job leased and completed
with no slot lost, runs of a limit of 1 never overlapping (no timing assertions; the figures
are the benchmark's, not the test's)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.e2e.conftest import running_server
from tests.e2e.harness import settings_for

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "flow.py"


@pytest.fixture(scope="module")
def flow() -> ModuleType:
    # As when run as a script: its own folder comes first on the path (bench/_machine.py).
    sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("bench_flow", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


async def test_tiny_lease_runs_lease_and_complete_every_job(flow: ModuleType,
                                                            redis_url: str) -> None:
    # 3 keys with a limit of 2 each: 6 jobs leasable at once, a full lease call of 6.
    result = await flow.measure_lease(redis_url, runs=198, keys=(3, 500), batch=6)
    assert set(result["by_keys"]) == {"3", "500"}
    for k, one in result["by_keys"].items():
        assert one["runs"] == 198 and one["keys"] == int(k)
        # Every lease call is full: with 3 keys, the completed jobs' slots woke the waiters.
        assert one["lease_calls"] == 33
        assert one["jobs_per_s"] > 0
    assert 0 < result["ratio_min_to_max"] <= 1


async def test_tiny_latency_phase_runs_one_at_a_time(flow: ModuleType, tmp_path: Path) -> None:
    async with running_server(settings_for("embedded", tmp_path)) as plait:
        result = await flow.measure_slot_to_start(plait.client.target, runs=10)
    assert result["runs"] == 10 and result["overlapping_runs"] == 0
    assert set(result["slot_to_start_ms"]) == {"p50", "p99", "max", "n"}


def test_sizes_come_from_the_command_line(flow: ModuleType) -> None:
    opts = flow._options(["--runs", "1_000", "--keys", "10,10_000", "--batch", "5",
                          "--skip-latency"])
    assert (opts.runs, opts.keys, opts.batch, opts.skip_latency) == (1000, (10, 10000), 5,
                                                                     True)
    defaults = flow._options([])
    assert (defaults.runs, defaults.keys, defaults.redis_db) == (20_000, (10, 10_000), None)
