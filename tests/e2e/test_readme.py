"""The README's worker example works as written, and `plait dev` starts and stops cleanly."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from plait import App

from tests.e2e.conftest import Running, running_worker
from tests.e2e.harness import ROOT, eventually, free_port, wait_for_port


def _readme_worker_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## A Python worker", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, "the README lost its worker example"
    return match.group(1)


async def test_the_readme_worker_example_runs_as_written(plait: Running) -> None:
    source = _readme_worker_example()
    # Everything but the last line, which would block serving on the default port.
    body, last = source.rstrip().rsplit("\n", 1)
    assert last == 'Worker(app, server="127.0.0.1:50051").run()'
    scope: dict[str, Any] = {}
    exec(compile(body, "README.md", "exec"), scope)
    app: App = scope["app"]

    async with running_worker(app, plait.client):
        async with httpx.AsyncClient() as http:
            reply = await http.post(
                f"http://127.0.0.1:{plait.endpoints.http_port}/e/dev",
                json={"name": "order/created", "data": {"sku": "A1", "total": 5}})
        assert reply.status_code == 200
        (event_id,) = reply.json()["ids"]
        run = await plait.client.finished_run_of(event_id, timeout_s=30)
    assert json.loads(run.output_json) == {"status": "shipped A1"}


def _plait_dev(data_dir: Path, http_port: int, grpc_port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "server.cli", "dev", "--data-dir", str(data_dir),
         "--http-port", str(http_port), "--grpc-port", str(grpc_port)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def test_plait_dev_serves_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    http_port, grpc_port = free_port(), free_port()
    proc = _plait_dev(tmp_path / ".plait", http_port, grpc_port)
    try:
        await wait_for_port(http_port)
        async with httpx.AsyncClient() as http:
            health = await http.get(f"http://127.0.0.1:{http_port}/health")
        assert health.json() == {"status": "ok"}
        redis_pid = int((tmp_path / ".plait" / "redis.pid").read_text())
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    async def redis_alive() -> bool:
        try:
            os.kill(redis_pid, 0)
        except ProcessLookupError:
            return False
        return True

    await eventually(redis_alive, lambda alive: not alive, 10, "the private Redis to stop")
    assert (tmp_path / ".plait" / "plait.db").exists()
