"""A worker given several server addresses: it moves to a live one at once when its stream
ends or a server cannot be reached, and waits its backoff only after every address failed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
from fake_queue_server import FakeServer, eventually, job_pb
from plait import App, Context, Step, TriggerEvent, Worker
from plait._worker import _servers
from plait_proto.v1 import queue_pb2


def make_app() -> App:
    app = App("app")

    @app.function("done", trigger=TriggerEvent("test/run"))
    async def done(ctx: Context, step: Step) -> dict[str, bool]:
        return {"ok": True}

    return app


@pytest.fixture
async def servers() -> AsyncIterator[tuple[FakeServer, FakeServer]]:
    a, b = FakeServer(), FakeServer()
    await a.start()
    await b.start()
    yield a, b
    await a.stop()
    await b.stop()


@pytest.fixture
def first_address_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker starts from a random address; these tests pin the first."""
    monkeypatch.setattr("plait._worker.random.randrange", lambda n: 0)


def test_server_addresses_are_one_a_list_or_comma_separated() -> None:
    assert _servers("127.0.0.1:1") == ("127.0.0.1:1",)
    assert _servers("127.0.0.1:1, 127.0.0.1:2") == ("127.0.0.1:1", "127.0.0.1:2")
    assert _servers(["a:1", "b:2"]) == ("a:1", "b:2")
    for bad in ("", "a:1,,b:2", [], ["a:1", " "]):
        with pytest.raises(ValueError, match="Worker server has value"):
            Worker(make_app(), bad)
    with pytest.raises(TypeError, match="Worker server has value"):
        Worker(make_app(), ["a:1", 2])  # type: ignore[list-item]


@pytest.mark.usefixtures("first_address_first")
async def test_a_worker_moves_to_the_other_server_at_once_when_its_server_dies(
    servers: tuple[FakeServer, FakeServer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="plait.worker")
    a, b = servers
    worker = Worker(make_app(), [a.address, b.address], shutdown_grace_s=0.5)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(worker.arun())
        first = await a.connection()
        await first.register()
        await a.stop()
        second = await b.connection()
        await second.register()
        second.send(jobs=queue_pb2.Jobs(jobs=[job_pb("after", "done")]))
        assert [r.job_id for r in await second.results(1)] == ["after"]
        await worker.stop()
        await task

    assert f"moving to {b.address} now" in caplog.text
    assert "reconnecting in" not in caplog.text  # no backoff while a server was up


@pytest.mark.usefixtures("first_address_first")
async def test_an_unreachable_first_address_is_skipped_without_a_backoff(
    servers: tuple[FakeServer, FakeServer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="plait.worker")
    gone, live = servers
    await gone.stop()
    worker = Worker(make_app(), f"{gone.address},{live.address}")
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(worker.arun())
        conn = await live.connection()
        await conn.register()
        await worker.stop()
        await task

    assert f"moving to {live.address} now" in caplog.text
    assert "reconnecting in" not in caplog.text


@pytest.mark.usefixtures("first_address_first")
async def test_when_every_address_fails_the_worker_backs_off_then_tries_them_again(
    servers: tuple[FakeServer, FakeServer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="plait.worker")
    a, b = servers
    await a.stop()
    await b.stop()
    worker = Worker(make_app(), [a.address, b.address])
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(worker.arun())
        await eventually(lambda: caplog.text.count("reconnecting in") >= 2, "two rounds")
        await b.start()
        conn = await b.connection()
        await conn.register()
        await worker.stop()
        await task

    # Each round tried both addresses, backing off once per round.
    assert caplog.text.count(f"moving to {b.address} now") >= 2
