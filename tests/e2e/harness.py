"""Test harness: a Plait server in-process or as a subprocess, clients, and waiting helpers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc
from plait_proto.v1 import (
    event_pb2,
    event_pb2_grpc,
    management_pb2,
    management_pb2_grpc,
    run_pb2,
)

from server.config import Mode, Settings

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]


async def eventually(
    probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], timeout_s: float = 20.0,
    what: str = "condition",
) -> T:
    """Polls `probe` until `done(value)`; fails with the last value after the deadline."""
    deadline = time.monotonic() + timeout_s
    value = await probe()
    while not done(value):
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout_s}s waiting for {what}; last: {value!r}")
        await asyncio.sleep(0.02)
        value = await probe()
    return value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def settings_for(backend: str, tmp: Path, redis_url: str = "", database_url: str = "",
                 **overrides: Any) -> Settings:
    # Production mode refuses events whose key it does not know: the tests post to these.
    # No discovery: a test never syncs an app it did not start itself.
    base: dict[str, Any] = dict(http_port=0, grpc_port=0, backoff_base_ms=50,
                                backoff_max_ms=500, lease_ms=3000, heartbeat_interval_ms=500,
                                event_keys="key,dev", sdk_discovery=False)
    base.update(overrides)
    if backend == "embedded":
        return Settings(mode=Mode.DEV, data_dir=tmp / ".plait", **base)
    # Production refuses to start without worker tokens and a signing key: a test that gives
    # both runs secure; any other runs open, as with --insecure.
    base.setdefault("insecure", not {"grpc_tokens", "signing_key"} <= overrides.keys())
    return Settings(mode=Mode.PRODUCTION, redis_url=redis_url, database_url=database_url, **base)


class Client:
    """gRPC clients of one server."""

    def __init__(self, grpc_port: int) -> None:
        self.target = f"127.0.0.1:{grpc_port}"
        self.channel = grpc.aio.insecure_channel(self.target)
        self.events = event_pb2_grpc.EventServiceStub(self.channel)
        self.management = management_pb2_grpc.ManagementServiceStub(self.channel)

    async def send(self, name: str, data: dict[str, Any] | None = None) -> str:
        reply = await self.events.SendEvents(event_pb2.SendEventsRequest(events=[
            event_pb2.EventInput(name=name, data_json=json.dumps(data or {}).encode())]))
        return str(reply.ids[0])

    async def send_many(self, name: str, datas: list[dict[str, Any]]) -> list[str]:
        reply = await self.events.SendEvents(event_pb2.SendEventsRequest(events=[
            event_pb2.EventInput(name=name, data_json=json.dumps(d).encode()) for d in datas]))
        return list(reply.ids)

    async def runs_of_event(self, event_id: str) -> list[run_pb2.Run]:
        try:
            reply = await self.management.GetEvent(
                management_pb2.GetEventRequest(event_id=event_id))
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                return []
            raise
        return list(reply.runs)

    async def run(self, run_id: str) -> run_pb2.Run:
        reply = await self.management.GetRun(management_pb2.GetRunRequest(run_id=run_id))
        return reply.run

    async def run_if_recorded(self, run_id: str) -> run_pb2.Run | None:
        """The run with its steps, or None while history has not written it yet."""
        try:
            return await self.run(run_id)
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise

    async def finished_run_of(self, event_id: str, timeout_s: float = 20.0) -> run_pb2.Run:
        """Waits for the event's single run to reach a terminal status; returns it with steps."""
        terminal = (run_pb2.RUN_STATUS_COMPLETED, run_pb2.RUN_STATUS_FAILED,
                    run_pb2.RUN_STATUS_CANCELLED)
        runs = await eventually(
            lambda: self.runs_of_event(event_id),
            lambda rs: len(rs) == 1 and rs[0].status in terminal,
            timeout_s, f"the run of event {event_id}")
        return await self.run(runs[0].id)

    async def close(self) -> None:
        await self.channel.close()


class ServerProcess:
    """`plait dev` / `plait start` as a real subprocess, for kill -9 tests."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        s = self.settings
        cmd = "dev" if s.mode is Mode.DEV else "start"
        env = {**os.environ, "PLAIT_LOG_FORMAT": "console"}
        args = [sys.executable, "-m", "server.cli", cmd, "--http-port", str(s.http_port),
                "--grpc-port", str(s.grpc_port), "--lease-ms", str(s.lease_ms),
                "--heartbeat-interval-ms", str(s.heartbeat_interval_ms),
                "--backoff-base-ms", str(s.backoff_base_ms),
                "--backoff-max-ms", str(s.backoff_max_ms)]
        if s.mode is Mode.DEV:
            args += ["--data-dir", str(s.data_dir)]
        else:
            args += ["--redis-url", s.redis_url, "--database-url", s.database_url,
                     "--queue-shards", str(s.queue_shards)]
        if s.insecure:
            args.append("--insecure")
        for flag, value in (("--grpc-tokens", s.grpc_tokens), ("--admin-tokens", s.admin_tokens),
                            ("--event-keys", s.event_keys), ("--signing-key", s.signing_key)):
            if value:
                args += [flag, value]
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=log)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def wait_for_port(port: int, timeout_s: float = 20.0) -> None:
    async def probe() -> bool:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return False
        writer.close()
        return True

    await eventually(probe, bool, timeout_s, f"port {port}")
