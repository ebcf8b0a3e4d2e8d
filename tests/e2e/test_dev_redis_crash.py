"""`plait dev` outlives a crash of its private Redis: restarted from its AOF, no run lost."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
from collections import Counter
from pathlib import Path
from typing import Any

from plait import App, Context, Step, TriggerEvent
from plait_proto.v1 import run_pb2

from tests.e2e.conftest import running_worker
from tests.e2e.harness import (
    Client,
    ServerProcess,
    eventually,
    free_port,
    settings_for,
    wait_for_port,
)

COMPLETED = run_pb2.RUN_STATUS_COMPLETED
RUNS = 20


def _redis_pid(data_dir: Path) -> int | None:
    try:
        pid = int((data_dir / "redis.pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"redis" in cmdline else None


async def test_a_sigkilled_private_redis_ends_no_run_and_not_plait(tmp_path: Path) -> None:
    settings = dataclasses.replace(settings_for("embedded", tmp_path),
                                   http_port=free_port(), grpc_port=free_port())
    server = ServerProcess(settings, tmp_path / "server.log")
    executions: Counter[tuple[str, str]] = Counter()
    app = App("redis-crash")

    @app.function("nap", trigger=TriggerEvent("crash/nap"))
    async def nap(ctx: Context, step: Step) -> dict[str, Any]:
        def body(name: str) -> str:
            executions[(ctx.run_id, name)] += 1
            return name

        a = await step.run("a", body, "a")
        await step.sleep("nap", 2)
        b = await step.run("b", body, "b")
        return {"a": a, "b": b, "n": ctx.event.data["n"]}

    server.start()
    client = Client(settings.grpc_port)
    try:
        await wait_for_port(settings.grpc_port)
        async with running_worker(app, client, max_jobs=10):
            event_ids = await client.send_many("crash/nap", [{"n": n} for n in range(RUNS)])
            # Every run asleep (its first step done) when Redis dies.
            await eventually(lambda: _firsts(executions), lambda n: n == RUNS, 30, "step a")
            pid = _redis_pid(settings.data_dir)
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            restarted = await eventually(lambda: _pid_of(settings.data_dir),
                                         lambda p: p not in (None, pid), 30, "a new Redis")
            runs = [await client.finished_run_of(e, timeout_s=60) for e in event_ids]
            assert server.proc is not None and server.proc.poll() is None, server.log_path
    finally:
        await client.close()
        server.stop()

    assert [r.status for r in runs] == [COMPLETED] * RUNS
    assert sorted(json.loads(r.output_json)["n"] for r in runs) == list(range(RUNS))
    # Step a's results were acknowledged before the kill: none ran again.
    assert [n for (_, step), n in executions.items() if step == "a"] == [1] * RUNS
    assert restarted != pid
    log = (tmp_path / "server.log").read_text(errors="replace")
    assert "redis.restarted" in log


async def _firsts(executions: Counter[tuple[str, str]]) -> int:
    return sum(1 for _, step in executions if step == "a")


async def _pid_of(data_dir: Path) -> int | None:
    return _redis_pid(data_dir)
