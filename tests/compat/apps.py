"""The compat suite's processes and clients: the SDK apps as subprocesses, and Plait's Inngest
REST API as their users call it."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.harness import eventually, free_port, wait_for_port

HERE = Path(__file__).resolve().parent
TS_DIR = HERE / "ts"
TERMINAL = ("Completed", "Failed", "Cancelled")
SDKS = ["py", "ts"]
APP_IDS = {"py": "compat-py", "ts": "compat-ts"}


def node_available() -> bool:
    return shutil.which("node") is not None


def require_node() -> str:
    """The node binary; skips when node is missing, fails when the npm packages are."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the TypeScript compat app cannot run")
    if not (TS_DIR / "node_modules" / "inngest").is_dir():
        pytest.fail("the npm packages are missing: run `npm ci --prefix tests/compat/ts`")
    return node


def sdk_env(plait_http_port: int, signing_key: str = "", event_key: str = "") -> dict[str, str]:
    """The SDKs' own settings, pointing them at Plait: dev mode unless a signing key is set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INNGEST_")}
    env["INNGEST_BASE_URL"] = f"http://127.0.0.1:{plait_http_port}"
    if signing_key:
        env["INNGEST_SIGNING_KEY"] = signing_key
        env["INNGEST_EVENT_KEY"] = event_key
    else:
        env["INNGEST_DEV"] = "1"
    return env


@dataclass
class SdkApp:
    sdk: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/inngest"

    app_id: str = ""

    def __post_init__(self) -> None:
        self.app_id = self.app_id or APP_IDS[self.sdk]

    def event(self, function: str) -> str:
        """The event name that starts one of the app's functions."""
        return f"{self.app_id}/{function}"

    async def send(self, name: str, data: dict[str, Any]) -> httpx.Response:
        """Sends an event with the SDK's own client, inside the app."""
        async with httpx.AsyncClient(timeout=30) as http:
            return await http.post(f"http://127.0.0.1:{self.port}/send",
                                   json={"name": name, "data": data})

    async def calls(self, key: str) -> dict[str, int]:
        """How often each step body ran for the events carrying `key`."""
        async with httpx.AsyncClient(timeout=10) as http:
            reply = await http.get(f"http://127.0.0.1:{self.port}/calls", params={"key": key})
        reply.raise_for_status()
        return dict(reply.json())

    async def release(self, key: str) -> None:
        """Lets the app's `hog` steps of `key` return."""
        async with httpx.AsyncClient(timeout=10) as http:
            reply = await http.post(f"http://127.0.0.1:{self.port}/release", params={"key": key})
        reply.raise_for_status()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


def _spawn(sdk: str, env: dict[str, str], log_dir: Path,
           command: tuple[list[str], Path] | None) -> SdkApp:
    port = free_port()
    log_path = log_dir / f"{sdk}-app-{port}.log"
    if command is not None:
        args, cwd = [*command[0], str(port)], command[1]
    elif sdk == "py":
        args = [sys.executable, str(HERE / "py_app.py"), str(port)]
        cwd = HERE.parents[1]
    else:
        args = [require_node(), "--import", "./register.mjs", "app.ts", str(port)]
        cwd = TS_DIR
    with log_path.open("wb") as log:
        proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=log, stderr=log)
    return SdkApp(sdk, port, proc, log_path, env.get("COMPAT_APP_ID", ""))


async def start_app(sdk: str, env: dict[str, str], log_dir: Path,
                    command: tuple[list[str], Path] | None = None) -> SdkApp:
    """Starts an app (COMPAT_APP_ID in `env` renames it) and waits for its port; `command`
    (arguments before the port, working directory) runs another app instead."""
    app = _spawn(sdk, env, log_dir, command)
    port = app.port
    try:
        await wait_for_port(port, timeout_s=30)
    except AssertionError:
        app.stop()
        raise AssertionError(f"the {sdk} app did not start:\n{app.log_tail()}") from None
    return app


@dataclass
class Gateway:
    """Plait's Inngest face, called the way an SDK's user would."""

    http_port: int
    signing_key: str = ""
    event_key: str = "dev"
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.signing_key:
            self.headers = {"Authorization": f"Bearer {self.signing_key}"}

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async with httpx.AsyncClient(timeout=30, headers=self.headers) as http:
            return await http.request(method, f"{self.base}{path}", **kwargs)

    async def sync(self, url: str) -> httpx.Response:
        return await self.request("POST", "/v1/apps/sync", json={"url": url})

    async def send(self, name: str, data: dict[str, Any]) -> str:
        reply = await self.request("POST", f"/e/{self.event_key}",
                                   json={"name": name, "data": data})
        assert reply.status_code == 200, reply.text
        return str(reply.json()["ids"][0])

    async def send_many(self, name: str, datas: list[dict[str, Any]]) -> list[str]:
        """One POST of several events, as the SDKs send a batch."""
        reply = await self.request("POST", f"/e/{self.event_key}",
                                   json=[{"name": name, "data": d} for d in datas])
        assert reply.status_code == 200, reply.text
        ids = [str(i) for i in reply.json()["ids"]]
        assert len(ids) == len(datas)
        return ids

    async def runs_of(self, event_id: str) -> list[dict[str, Any]]:
        reply = await self.request("GET", f"/v1/events/{event_id}/runs")
        assert reply.status_code == 200, reply.text
        return list(reply.json()["data"])

    async def finished_run(self, event_id: str, timeout_s: float = 30) -> dict[str, Any]:
        """The event's one run once it has ended, read back through GET /v1/runs/{id}."""
        runs = await eventually(lambda: self.runs_of(event_id),
                                lambda rs: len(rs) == 1 and rs[0]["status"] in TERMINAL,
                                timeout_s, f"the run of event {event_id}")
        reply = await self.request("GET", f"/v1/runs/{runs[0]['run_id']}")
        assert reply.status_code == 200, reply.text
        return dict(reply.json()["data"])

    async def functions(self) -> set[str]:
        reply = await self.request("GET", "/dev")
        return {f["id"] for f in reply.json()["functions"]}

    async def wait_registered(self, app_id: str, count: int = 5) -> None:
        await eventually(self.functions,
                         lambda ids: len([i for i in ids if i.startswith(f"{app_id}-")]) >= count,
                         30, f"the functions of {app_id}")


async def stop_all(apps: list[SdkApp]) -> None:
    await asyncio.gather(*(asyncio.to_thread(app.stop) for app in apps))
