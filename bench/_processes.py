"""The processes a benchmark owns: the Plait server, its workers, and an RSS sampler of the server.

Each is stopped with SIGTERM, then SIGKILL after a bounded wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import psutil
from plait_proto.v1 import management_pb2, management_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
WORKER_SCRIPT = Path(__file__).resolve().parent / "worker.py"
_MB = 1024 * 1024
_STOP_WAIT_S = 10.0


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _kill_tree_leftovers(pids: list[int]) -> None:
    """SIGKILLs processes that outlived their parent (the embedded Redis dies with it anyway)."""
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            proc.kill()
            proc.wait(timeout=5)


class ServerProcess:
    """`python -m server.cli dev|start` as a subprocess, its output in a log file."""

    def __init__(self, args: list[str], log_path: Path, log_level: str = "warning",
                 env: dict[str, str] | None = None) -> None:
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.log_path = log_path
        # Added to this process's environment (the OTEL_* variables of --tracing).
        self._env = env or {}
        self._args = [
            sys.executable, "-m", "server.cli", *args,
            "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port),
            "--log-level", log_level,
        ]
        self.proc: subprocess.Popen[bytes] | None = None
        self._children: list[int] = []

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("server not started")
        return self.proc.pid

    def start(self) -> None:
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                self._args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env={**os.environ, **self._env} if self._env else None,
            )

    async def wait_ready(self, timeout_s: float) -> None:
        """Polls the gRPC port until a ManagementService call answers, with a deadline."""
        deadline = time.monotonic() + timeout_s
        async with grpc.aio.insecure_channel(self.target) as channel:
            stub = management_pb2_grpc.ManagementServiceStub(channel)
            while True:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(
                        f"server exited with {self.proc.returncode}:\n{_tail(self.log_path)}"
                    )
                try:
                    await stub.ListApps(management_pb2.ListAppsRequest(), timeout=1.0)
                except grpc.aio.AioRpcError:
                    pass
                else:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"server not ready after {timeout_s}s:\n{_tail(self.log_path)}"
                    )
                await asyncio.sleep(0.05)
        with contextlib.suppress(psutil.Error):
            self._children = [p.pid for p in psutil.Process(self.pid).children(recursive=True)]

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                self._children = [p.pid for p in psutil.Process(self.pid).children(recursive=True)]
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=_STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                log(f"server still up {_STOP_WAIT_S}s after SIGTERM; killing it. Its log ends:\n"
                    f"{_tail(self.log_path)}")
                self.proc.kill()
                self.proc.wait()
        _kill_tree_leftovers(self._children)


@dataclass(slots=True)
class _WorkerProc:
    proc: asyncio.subprocess.Process
    out: Path
    completed: int = 0
    asleep: int = 0


class WorkerPool:
    """W worker processes; their stdout progress lines are folded into two totals."""

    def __init__(self, tmp: Path, target: str, count: int, concurrency: int) -> None:
        self._tmp = tmp
        self._target = target
        self._count = count
        self._concurrency = concurrency
        self._workers: list[_WorkerProc] = []
        self._changed = asyncio.Event()

    @property
    def completed(self) -> int:
        return sum(w.completed for w in self._workers)

    @property
    def asleep(self) -> int:
        return sum(w.asleep for w in self._workers)

    @property
    def timing_files(self) -> list[Path]:
        return [w.out for w in self._workers]

    async def start(self, tg: asyncio.TaskGroup) -> None:
        for n in range(self._count):
            out = self._tmp / f"worker-{n}.json"
            with (self._tmp / f"worker-{n}.log").open("ab") as err:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, str(WORKER_SCRIPT), "--server", self._target,
                    "--concurrency", str(self._concurrency), "--out", str(out),
                    cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=err,
                    stdin=asyncio.subprocess.DEVNULL,
                )
            worker = _WorkerProc(proc, out)
            self._workers.append(worker)
            tg.create_task(self._read(worker))

    async def _read(self, worker: _WorkerProc) -> None:
        stream = worker.proc.stdout
        assert stream is not None
        while line := await stream.readline():
            completed, asleep = line.split()
            worker.completed, worker.asleep = int(completed), int(asleep)
            self._changed.set()
        self._changed.set()

    async def wait_until(self, done: Callable[[WorkerPool], bool], timeout_s: float) -> bool:
        """Waits for a progress line that makes `done` true; False at the deadline."""
        try:
            async with asyncio.timeout(timeout_s):
                while not done(self):
                    self._changed.clear()
                    if any(w.proc.returncode is not None for w in self._workers):
                        raise RuntimeError("a worker process exited early")
                    await self._changed.wait()
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        """SIGTERM: each worker drains, writes its timings file and exits; SIGKILL after a wait."""
        for w in self._workers:
            if w.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.send_signal(signal.SIGTERM)
        for w in self._workers:
            try:
                async with asyncio.timeout(_STOP_WAIT_S):
                    await w.proc.wait()
            except TimeoutError:
                log(f"worker {w.proc.pid} ignored SIGTERM; killing it")
                with contextlib.suppress(ProcessLookupError):
                    w.proc.kill()
                await w.proc.wait()


class RssSampler:
    """Samples the server's own RSS, and its embedded Redis child's, every `interval_s`."""

    def __init__(self, server_pid: int, interval_s: float = 0.1) -> None:
        self._server = psutil.Process(server_pid)
        self._interval_s = interval_s
        self._redis: psutil.Process | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self.current_mb = 0.0
        self.peak_mb = 0.0
        self.redis_peak_mb: float | None = None
        self.phase_peaks_mb: dict[str, float] = {}
        self._phase: str | None = None

    def start(self) -> None:
        self._find_redis()
        self._sample()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def begin_phase(self, name: str) -> None:
        self._phase = name
        self.phase_peaks_mb[name] = self.current_mb

    def sample_now(self) -> float:
        """Samples at once and returns the server's RSS in MB."""
        self._sample()
        return self.current_mb

    def _find_redis(self) -> None:
        with contextlib.suppress(psutil.Error):
            for child in self._server.children(recursive=True):
                if "redis" in child.name():
                    self._redis = child
                    return

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._sample()

    def _sample(self) -> None:
        try:
            rss_mb = self._server.memory_info().rss / _MB
        except psutil.Error:
            return
        self.current_mb = rss_mb
        self.peak_mb = max(self.peak_mb, rss_mb)
        if self._phase is not None:
            self.phase_peaks_mb[self._phase] = max(self.phase_peaks_mb[self._phase], rss_mb)
        if self._redis is not None:
            with contextlib.suppress(psutil.Error):
                redis_mb = self._redis.memory_info().rss / _MB
                self.redis_peak_mb = max(self.redis_peak_mb or 0.0, redis_mb)


def server_log_tail(server: ServerProcess) -> str:
    return _tail(server.log_path)

