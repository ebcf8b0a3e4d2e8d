"""A private redis-server on a free loopback port, for tests that kill and restart Redis
(the shared test Redis must never be killed or flushed of its scripts)."""

from __future__ import annotations

import asyncio
import random
import signal
import socket
import subprocess
import time
from pathlib import Path

from redis import asyncio as aioredis
from redis.exceptions import BusyLoadingError, ConnectionError

from server.dev.redis import find_redis_server


class PrivateRedis:
    """redis-server with its AOF in `data_dir`, fsynced on every write: a SIGKILL loses
    nothing acknowledged, and `start()` again on the same dir and port brings it all back."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = _fixed_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self, timeout_s: float = 20.0) -> None:
        self.proc = self._spawn()
        client = aioredis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                try:
                    if await client.ping():
                        return
                except (ConnectionError, BusyLoadingError):
                    pass
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on port {self.port}; "
                                       f"see {self.data_dir / 'redis.log'}")
                await asyncio.sleep(0.02)
        finally:
            await client.aclose()

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with (self.data_dir / "redis.log").open("ab") as log:
            return subprocess.Popen(
                [str(find_redis_server()), "--port", str(self.port), "--bind", "127.0.0.1",
                 "--dir", str(self.data_dir), "--appendonly", "yes", "--appendfsync", "always",
                 "--save", "", "--daemonize", "no", "--protected-mode", "no"],
                stdout=log, stderr=log)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final save."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def _fixed_port() -> int:
    """A free port below the ephemeral range. While Redis is down its port is free: one from
    the ephemeral range can be taken meanwhile by any bind(0) on the machine (another test's
    server), and Plait's reconnects would then reach a peer that never answers."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(100):
        port = random.randrange(10_000, min(low, 32_768))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")
