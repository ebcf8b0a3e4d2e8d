"""server/supervise.py: role loops restarted with backoff and counted, cancellation always
wins, storage health with its grace; server/redis_client.py across a Redis restart."""

from __future__ import annotations

import asyncio

import pytest
from redis import exceptions as redis_errors
from sqlalchemy import exc as sql_errors
from structlog.testing import capture_logs

from server.errors import InvalidArgument
from server.luascript import load_script
from server.redis_client import open_redis
from server.supervise import (
    ROLE_CRASHED,
    Backoff,
    StorageHealth,
    StorageUnavailable,
    is_storage_error,
    supervise,
)
from server.telemetry.metrics import Metrics
from tests.e2e.harness import eventually
from tests.redis_server import PrivateRedis

FAST = Backoff(first_s=0.001, max_s=0.004, healthy_s=60.0)


async def test_a_role_that_raises_is_restarted_with_backoff_and_counted() -> None:
    metrics = Metrics()
    calls = 0
    steady = asyncio.Event()

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls <= 4:
            raise RuntimeError(f"failure {calls}")
        steady.set()
        await asyncio.Event().wait()

    with capture_logs() as logs:
        task = asyncio.create_task(
            supervise("flaky", flaky, backoff=FAST, on_restart=metrics.role_restarted))
        async with asyncio.timeout(10):
            await steady.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    crashes = [e for e in logs if e["event"] == ROLE_CRASHED]
    assert [e["restart_in_s"] for e in crashes] == [0.001, 0.002, 0.004, 0.004]
    assert {e["role"] for e in crashes} == {"flaky"}
    assert "failure 1" in crashes[0]["error"]
    assert 'plait_role_restarts_total{role="flaky"} 4.0' in metrics.render().decode()


async def test_a_cancelled_role_stops_and_is_not_restarted() -> None:
    calls = 0
    started = asyncio.Event()

    async def forever() -> None:
        nonlocal calls
        calls += 1
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(supervise("forever", forever, backoff=FAST))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls == 1


async def test_a_cancellation_a_client_turned_into_an_error_still_stops_the_role() -> None:
    calls = 0
    started = asyncio.Event()

    async def converts() -> None:
        nonlocal calls
        calls += 1
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            # What redis-py does when a cancel lands in the middle of a read.
            raise redis_errors.ConnectionError("connection closed by cancel") from None

    restarts: list[str] = []
    task = asyncio.create_task(
        supervise("converts", converts, backoff=FAST, on_restart=restarts.append))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls == 1
    assert restarts == []


async def test_a_role_whose_task_group_failed_is_restarted() -> None:
    # Python 3.11's TaskGroup cancels its parent task when a child fails while the parent
    # waits in __aexit__, and leaves it "cancelling": the restart must not take that for a
    # shutdown (the executor role vanished this way when Redis went away).
    calls = 0
    steady = asyncio.Event()

    async def child() -> None:
        await asyncio.sleep(0)
        raise redis_errors.ConnectionError("Redis went away")

    async def group() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(child())
        steady.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(supervise("group", group, backoff=FAST))
    async with asyncio.timeout(10):
        await steady.wait()
    assert calls == 2
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_role_ended_by_a_stray_cancelled_error_is_restarted() -> None:
    calls = 0
    steady = asyncio.Event()

    async def stray() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise asyncio.CancelledError  # nobody cancelled it
        steady.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(supervise("stray", stray, backoff=FAST))
    async with asyncio.timeout(10):
        await steady.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_role_that_returns_is_done() -> None:
    calls = 0

    async def nothing_to_do() -> None:
        nonlocal calls
        calls += 1

    async with asyncio.timeout(5):
        await supervise("idle", nothing_to_do, backoff=FAST)
    assert calls == 1


async def test_a_storage_error_of_a_role_is_reported_to_the_health_probe() -> None:
    reported: list[BaseException] = []
    calls = 0

    async def role() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise redis_errors.ConnectionError("Redis went away")
        if calls == 2:
            raise KeyError("a bug, not storage")

    await supervise("r", role, backoff=FAST, on_storage_error=reported.append)
    assert [type(e) for e in reported] == [redis_errors.ConnectionError]


@pytest.mark.parametrize("error", [
    redis_errors.ConnectionError("refused"),
    redis_errors.BusyLoadingError("LOADING Redis is loading the dataset in memory"),
    redis_errors.TimeoutError("timed out"),
    redis_errors.ResponseError("OOM command not allowed when used memory > 'maxmemory'"),
    TimeoutError(),
    ConnectionRefusedError(),
    sql_errors.OperationalError("SELECT 1", {}, Exception("server closed the connection")),
    ExceptionGroup("roles", [KeyError("x"), redis_errors.ConnectionError("refused")]),
])
def test_errors_that_say_storage_is_away_are_storage_errors(error: BaseException) -> None:
    assert is_storage_error(error)


@pytest.mark.parametrize("error", [
    KeyError("name"),
    ValueError("Expecting value: line 1 column 1"),
    redis_errors.ResponseError("ERR user_script:3: attempt to index a nil value"),
    InvalidArgument("event.data", "bad"),
    sql_errors.IntegrityError("INSERT", {}, Exception("duplicate key")),
])
def test_errors_of_bad_items_are_not_storage_errors(error: BaseException) -> None:
    assert not is_storage_error(error)


class _Store:
    """A fake store check: up or down, on command."""

    def __init__(self) -> None:
        self.up = True
        self.probes = 0

    async def check(self) -> None:
        self.probes += 1
        if not self.up:
            raise redis_errors.ConnectionError("Error 111 connecting to 127.0.0.1:1")


class _Clock:
    def __init__(self) -> None:
        self.s = 1000.0

    def __call__(self) -> float:
        return self.s


async def test_storage_health_is_degraded_while_a_store_is_away_then_ok_again() -> None:
    redis, database = _Store(), _Store()
    clock = _Clock()
    health = StorageHealth({"redis": redis.check, "database": database.check}, grace_s=0,
                           clock=clock)
    await health.probe()
    assert health.ok and health.status() == {"status": "ok"}

    redis.up = False
    await health.probe()
    clock.s += 12
    status = health.status()
    assert not health.ok
    assert status["status"] == "degraded" and status["database"] == "ok"
    assert status["redis"].startswith("unreachable for 12s") and "Error 111" in status["redis"]

    redis.up = True
    await health.probe()
    assert health.status() == {"status": "ok"}


async def test_storage_away_past_the_grace_ends_the_health_task() -> None:
    redis = _Store()
    redis.up = False
    clock = _Clock()

    async def check_and_tick() -> None:
        clock.s += 1  # every probe takes "a second" of the fake clock
        await redis.check()

    health = StorageHealth({"redis": check_and_tick}, grace_s=5, interval_s=0.001, clock=clock)
    with pytest.raises(StorageUnavailable) as caught:
        async with asyncio.timeout(10):
            await health.run()
    assert "redis unreachable for more than --storage-grace-s=5s" in caught.value.message


async def test_with_no_grace_storage_away_never_ends_the_health_task() -> None:
    redis = _Store()
    redis.up = False
    clock = _Clock()
    enough = asyncio.Event()

    async def check_and_tick() -> None:
        clock.s += 3600
        if redis.probes >= 20:
            enough.set()
        await redis.check()

    health = StorageHealth({"redis": check_and_tick}, grace_s=0, interval_s=0.001, clock=clock)
    task = asyncio.create_task(health.run())
    async with asyncio.timeout(10):
        await enough.wait()
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_reported_storage_error_makes_the_probe_run_at_once() -> None:
    redis = _Store()
    health = StorageHealth({"redis": redis.check}, grace_s=0, interval_s=3600)
    task = asyncio.create_task(health.run())

    async def probes() -> int:
        return redis.probes

    async def ok() -> bool:
        return health.ok

    try:
        await eventually(probes, lambda n: n >= 1, 10, "the first probe")
        redis.up = False
        health.report(redis_errors.ConnectionError("seen by a role"))
        # The next probe is an hour away: only the report can make it see Redis away.
        await eventually(ok, lambda up: not up, 10, "a probe after the report")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_the_server_client_carries_on_across_a_redis_restart(
    private_redis: PrivateRedis,
) -> None:
    client = open_redis(private_redis.url)
    try:
        await client.set("k", "before")
        private_redis.kill()
        await private_redis.start()
        # The pooled connection died with the old Redis: the command is sent again on a new
        # one, and the AOF (fsynced per write) kept the key.
        assert await client.get("k") == b"before"
    finally:
        await client.aclose()


async def test_a_registered_script_is_loaded_again_after_a_redis_restart(
    private_redis: PrivateRedis,
) -> None:
    client = open_redis(private_redis.url)
    try:
        advance = load_script(client, "server.runner", "advance_tick")
        assert await advance(keys=["last"], args=[5]) is not None
        private_redis.kill()
        await private_redis.start()  # a new Redis has no scripts: EVALSHA answers NOSCRIPT
        await advance(keys=["last"], args=[7])
        assert await client.get("last") == b"7"
    finally:
        await client.aclose()
