"""kill -9 during a concurrency-limited flood (issue 12) leaks no slot: a worker killed holding
leases and a server killed mid-flood, both restarted; from the intervals the bodies record (in
a file, across processes), no key ever runs more than its limit of 2, every run completes, and
after the restarts every key runs 2 at once again (a leaked slot would hold it at 1 or 0)."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
import time
from pathlib import Path

from server.config import Settings
from tests.e2e.conftest import registered
from tests.e2e.flow_support import Recorder, after, max_overlap_by_key, runs
from tests.e2e.flow_worker_main import EVENT, FUNCTION_ID, LIMIT
from tests.e2e.harness import ROOT, Client, ServerProcess, eventually, free_port, wait_for_port
from tests.e2e.test_flow_flood import completed_count

KEYS = 10
PER_KEY = 40
RUNS = KEYS * PER_KEY


def _worker(target: str, record: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "tests.e2e.flow_worker_main", target,
                             str(record)], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _kill(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)


async def test_killing_the_worker_and_the_server_mid_flood_leaks_no_concurrency_slot(
    settings: Settings, tmp_path: Path,
) -> None:
    ports = {"http_port": free_port(), "grpc_port": free_port()}
    server = ServerProcess(dataclasses.replace(settings, **ports), tmp_path / "server.log")
    rec = Recorder(tmp_path / "intervals.jsonl")
    client = Client(ports["grpc_port"])
    workers: list[subprocess.Popen[bytes]] = []
    server.start()
    try:
        await wait_for_port(ports["grpc_port"])
        workers.append(_worker(client.target, rec.path))  # type: ignore[arg-type]
        await registered(client, [FUNCTION_ID])
        await client.send_many(EVENT, [{"k": f"k{n % KEYS}"} for n in range(RUNS)])
        await eventually(rec.count, lambda n: n >= RUNS // 5, 60, "a fifth of the flood")
        _kill(workers[0])  # holding leases of every key
        workers.append(_worker(client.target, rec.path))  # type: ignore[arg-type]
        await eventually(rec.count, lambda n: n >= 2 * RUNS // 5, 60, "two fifths")
        server.kill()
        server.start()
        await wait_for_port(ports["grpc_port"])
        restarted = time.time()
        await eventually(lambda: _distinct_runs(rec), lambda n: n >= RUNS, 90, "every run")
        done = await eventually(lambda: completed_count(client, FUNCTION_ID),
                                lambda n: n >= RUNS, 60, "every run completed")
    finally:
        for proc in workers:
            _kill(proc)
        await client.close()
        server.stop()

    got = rec.intervals()
    assert done == RUNS and len(runs(got)) == RUNS
    per_key = max_overlap_by_key(got)
    assert len(per_key) == KEYS and max(per_key.values()) <= LIMIT, per_key
    # After the restarts each key is back at its full parallelism: no slot was leaked.
    assert max_overlap_by_key(after(got, restarted)) == {f"k{n}": LIMIT for n in range(KEYS)}


async def _distinct_runs(rec: Recorder) -> int:
    return len(runs(rec.intervals()))
