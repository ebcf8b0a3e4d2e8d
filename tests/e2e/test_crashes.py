"""Crash acceptance: a worker or the server killed with SIGKILL loses no run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from plait import App, Context, Step, TriggerEvent
from plait_proto.v1 import run_pb2

from server.config import Settings
from tests.e2e.conftest import Running, registered, running_worker
from tests.e2e.harness import ROOT, Client, ServerProcess, eventually, free_port, wait_for_port

COMPLETED = run_pb2.RUN_STATUS_COMPLETED


def _marks(marks: Path) -> list[tuple[str, str, int]]:
    path = marks / "marks"
    if not path.exists():
        return []
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    return [(r[0], r[1], int(r[2])) for r in rows if len(r) == 3]


def _worker(target: str, marks: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "tests.e2e.worker_main", target, str(marks)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _marks_of(marks: Path) -> list[tuple[str, str, int]]:
    return _marks(marks)


async def test_a_worker_killed_mid_step_has_its_job_redelivered(
    plait: Running, tmp_path: Path
) -> None:
    (tmp_path / "block").touch()
    first = _worker(plait.client.target, tmp_path)
    second: subprocess.Popen[bytes] | None = None
    try:
        await registered(plait.client, ["kill-slow"])
        event_id = await plait.client.send("kill/slow")
        await eventually(lambda: _marks_of(tmp_path), lambda m: len(m) == 1, 20,
                         "the first step to start")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        (tmp_path / "block").unlink()
        second = _worker(plait.client.target, tmp_path)
        run = await plait.client.finished_run_of(event_id, timeout_s=30)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)

    assert run.status == COMPLETED
    assert json.loads(run.output_json) == {"a": "one", "b": "two"}
    marks = _marks(tmp_path)
    pids = [pid for _, step, pid in marks if step == "first"]
    assert pids == [first.pid, second.pid]  # ran on the killed worker, then once more
    assert [step for _, step, _ in marks].count("second") == 1
    # A redelivery is not a retry: the step completed on its first attempt.
    assert [(s.step_id, s.attempt) for s in run.steps
            if s.status == run_pb2.STEP_STATUS_COMPLETED] == [("first", 0), ("second", 0)]


async def test_a_server_killed_with_runs_in_flight_loses_none(
    settings: Settings, backend: str, tmp_path: Path
) -> None:
    ports = {"http_port": free_port(), "grpc_port": free_port()}
    import dataclasses

    proc_settings = dataclasses.replace(settings, **ports)
    server = ServerProcess(proc_settings, tmp_path / "server.log")
    executions: Counter[tuple[str, str]] = Counter()
    app = App("crash")

    @app.function("durable", trigger=TriggerEvent("crash/go"))
    async def durable(ctx: Context, step: Step) -> dict[str, Any]:
        def body(name: str) -> str:
            executions[(ctx.run_id, name)] += 1
            return name

        a = await step.run("a", body, "a")
        if ctx.event.data["sleep"]:
            await step.sleep("nap", 1)
        b = await step.run("b", body, "b")
        return {"a": a, "b": b, "n": ctx.event.data["n"]}

    server.start()
    client = Client(ports["grpc_port"])
    try:
        await wait_for_port(ports["grpc_port"])
        async with running_worker(app, client, max_jobs=10):
            event_ids = await client.send_many(
                "crash/go", [{"n": n, "sleep": n % 2 == 0} for n in range(50)])
            # Kill while runs are spread over queued, running and sleeping.
            await eventually(lambda: _started(executions), lambda n: n >= 10, 20, "runs")
            server.kill()
            server.start()
            await wait_for_port(ports["grpc_port"])
            runs = [await client.finished_run_of(e, timeout_s=60) for e in event_ids]
    finally:
        await client.close()
        server.stop()

    assert [r.status for r in runs] == [COMPLETED] * 50
    assert sorted(json.loads(r.output_json)["n"] for r in runs) == list(range(50))
    # Steps run at least once; only those in flight at the kill (at most the worker's 10
    # slots) may run twice, and every step's result is observed exactly once.
    repeated = [key for key, n in executions.items() if n > 1]
    assert len(repeated) <= 10, repeated
    for run in runs:
        done = Counter(s.step_id for s in run.steps if s.status == run_pb2.STEP_STATUS_COMPLETED)
        assert done == {"a": 1, "b": 1}, (run.id, list(run.steps))


async def _started(executions: Counter[tuple[str, str]]) -> int:
    return len(executions)
