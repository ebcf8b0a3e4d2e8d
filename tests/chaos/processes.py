"""The processes the chaos suite kills: a redis-server of its own, the Plait server (the e2e
harness's `ServerProcess` with a few settings more) and the chaos worker."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import redis as redis_sync

from server.config import Settings
from tests.e2e.harness import ROOT, ServerProcess, free_port


class RedisServer:
    """A redis-server of the driver's own (production backend): loopback, AOF fsynced always."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.dir = workdir / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not on PATH")
        log = (self.dir / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "",
             "--daemonize", "no"], stdout=log, stderr=log)
        client = redis_sync.Redis(host="127.0.0.1", port=self.port)
        deadline = time.monotonic() + 20
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis_sync.BusyLoadingError:
                    pass
                except redis_sync.ConnectionError:
                    if self.proc.poll() is not None:
                        raise RuntimeError(
                            f"redis-server exited: {self.proc.returncode}") from None
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not answer within 20 s")
                time.sleep(0.02)
        finally:
            client.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class ChaosServer(ServerProcess):
    """The harness's server process, with settings the harness does not pass as flags."""

    ENV = {"PLAIT_INSECURE": "true", "PLAIT_SDK_DISCOVERY": "false"}

    def __init__(self, settings: Settings, log_path: Path, env: dict[str, str] | None = None,
                 ) -> None:
        super().__init__(settings, log_path)
        self.env = {**self.ENV, **(env or {})}

    def start(self) -> None:
        with mock.patch.dict(os.environ, self.env):
            super().start()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class WorkerProcess:
    def __init__(self, target: str, log: Path, out: Path) -> None:
        self.target, self.log, self.out = target, log, out
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        out = self.out.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.chaos.worker_main", self.target, str(self.log)],
            cwd=ROOT, stdout=out, stderr=out)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
