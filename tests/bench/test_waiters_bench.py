"""bench/waiters.py runs end to end at tiny sizes: the JSON's shape and the right runs resumed
(no timing assertions; the figures are the benchmark's, not the test's)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "waiters.py"
PER_SIZE = {"waiting_runs", "matches", "setup_s", "match_ms_p50", "match_ms_p99",
            "match_ms_max", "redis_commands_per_match", "redis_round_trips_per_match",
            "redis_server_commands_per_match", "resumed_right_run"}


@pytest.fixture(scope="module")
def waiters() -> ModuleType:
    # As when run as a script: its own folder comes first on the path (bench/_machine.py).
    sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("bench_waiters", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


async def test_tiny_run_resumes_the_right_runs(waiters: ModuleType, redis_url: str) -> None:
    result = await waiters.measure(redis_url, sizes=(10, 50), scanned_sizes=(10,), repeats=5)
    assert result["bench"] == "waiters"
    assert result["resumed_right_run"] is True
    assert set(result["indexed"]) == {"10", "50"}
    assert set(result["scanned"]) == {"10"}
    for one in [*result["indexed"].values(), *result["scanned"].values()]:
        assert set(one) == PER_SIZE
        assert one["resumed_right_run"] is True
        assert one["matches"] == 5
    # What the index buys, as a count rather than a time: the same commands at any N, and a
    # scan sends one per waiting run.
    indexed = [one["redis_commands_per_match"] for one in result["indexed"].values()]
    assert indexed[0] == indexed[1]
    assert result["scanned"]["10"]["redis_commands_per_match"] >= 10
    for key in ("waiting_runs_redis_mb", "wait_entries_redis_mb", "waiting_run_redis_bytes",
                "indexed_p50_ratio_largest_to_smallest", "git_sha", "notes"):
        assert key in result


def test_sizes_and_repeats_come_from_the_command_line(waiters: ModuleType) -> None:
    opts = waiters._options(["--sizes", "10,1_000", "--scanned-sizes", "", "--repeats", "3"])
    assert (opts.sizes, opts.scanned_sizes, opts.repeats) == ((10, 1000), (), 3)
    defaults = waiters._options([])
    assert (defaults.sizes, defaults.scanned_sizes) == ((100, 1000, 10_000), (100, 1000))
