"""Poison jobs end: a job that never gets an answer (an app that cannot be reached, a worker
that always disconnects holding it) fails its run after max_redeliveries, its attempts spaced
by the backoff; and a step result Redis refuses (OOM) is committed once memory is back."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as redis_sync
from plait import App, Context, Step, TriggerEvent
from plait_proto.v1 import function_pb2, queue_pb2, queue_pb2_grpc, run_pb2
from structlog.testing import capture_logs

from server.config import Settings
from server.dev.redis import find_redis_server
from tests.e2e.conftest import Running, running_server, running_worker
from tests.e2e.harness import eventually, free_port, settings_for

MAX_REDELIVERIES = 3
SIGNING_KEY = "signkey-test-" + "ab" * 32
FAILED = run_pb2.RUN_STATUS_FAILED


@pytest.fixture
def settings(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    base: dict[str, Any] = dict(max_redeliveries=MAX_REDELIVERIES, redelivery_backoff_ms=20,
                                insecure=True, signing_key=SIGNING_KEY)
    if backend == "embedded":
        return settings_for(backend, tmp_path, **base)
    return settings_for(backend, tmp_path, request.getfixturevalue("redis_url"),
                        request.getfixturevalue("database_url"), **base)


async def _http(plait: Running, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.request(
            method, f"http://127.0.0.1:{plait.endpoints.http_port}{path}", **kwargs)


async def _register_sdk_app(plait: Running, app: str, url: str) -> str:
    """Registers an Inngest SDK app (as its SDK would) whose one function is served at `url`."""
    fn_id = f"{app}-poisoned"
    body = {"appname": app, "deploy_type": "ping", "url": url, "v": "0.1",
            "sdk": "py:v0.5.19", "framework": "fast_api",
            "functions": [{"id": fn_id, "name": "poisoned",
                           "triggers": [{"event": f"{app}/go"}],
                           "steps": {"step": {"id": "step", "name": "step",
                                              "retries": {"attempts": 0},
                                              "runtime": {"type": "http",
                                                          "url": f"{url}?fnId={fn_id}"}}}}]}
    reply = await _http(plait, "POST", "/fn/register", json=body,
                        headers={"Authorization": f"Bearer {SIGNING_KEY}"})
    assert reply.status_code == 200, reply.text
    return f"{app}/go"


async def _failed_run(plait: Running, event_id: str) -> run_pb2.Run:
    run = await plait.client.finished_run_of(event_id, timeout_s=30)
    assert run.status == FAILED
    return run


@contextlib.asynccontextmanager
async def _hanging_up_app() -> AsyncIterator[tuple[str, list[int]]]:
    """A loopback "app" that closes every connection without answering; counts them."""
    calls: list[int] = []

    async def hang_up(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        calls.append(1)
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/api/inngest", calls
    finally:
        server.close()
        await server.wait_closed()


async def test_an_sdk_app_that_never_answers_fails_the_run_after_the_redelivery_cap(
    plait: Running,
) -> None:
    async with _hanging_up_app() as (url, calls):
        event = await _register_sdk_app(plait, "poison-hangup", url)
        sent = await _http(plait, "POST", "/e/key", json={"name": event, "data": {}})
        run = await _failed_run(plait, sent.json()["ids"][0])
        # One delivery and three redeliveries, then nothing: no storm of instant requeues.
        assert len(calls) == MAX_REDELIVERIES + 1
    assert run.error.name == "RedeliveryLimitError"
    assert run.error.message.startswith(
        f"job redelivered {MAX_REDELIVERIES} times without an answer; last: calling {url}")
    assert run.error.message.endswith(("ReadError", "RemoteProtocolError"))


async def test_an_sdk_app_on_a_port_that_refuses_connections_fails_the_run_naming_it(
    plait: Running,
) -> None:
    url = f"http://127.0.0.1:{free_port()}/api/inngest"  # nothing listens there
    event = await _register_sdk_app(plait, "poison-refused", url)
    sent = await _http(plait, "POST", "/e/key", json={"name": event, "data": {}})
    run = await _failed_run(plait, sent.json()["ids"][0])
    assert run.error.name == "RedeliveryLimitError"
    assert "ConnectError" in run.error.message and url in run.error.message


def _register(app_id: str) -> queue_pb2.ConnectRequest:
    trigger = function_pb2.Trigger(event=function_pb2.EventTrigger(event=f"{app_id}/go"))
    return queue_pb2.ConnectRequest(register=queue_pb2.Register(
        app_id=app_id, max_concurrent_jobs=1,
        functions=[function_pb2.FunctionDefinition(id="f", triggers=[trigger])]))


async def _take_a_job_and_hang_up(plait: Running, app_id: str,
                                  on_registered: Callable[[], Any]) -> bool:
    """Connects a worker that disconnects as soon as it holds a job; False when none came."""
    stub = queue_pb2_grpc.QueueServiceStub(plait.client.channel)
    held_open = asyncio.Event()

    async def requests() -> AsyncIterator[queue_pb2.ConnectRequest]:
        yield _register(app_id)
        await held_open.wait()

    call = stub.Connect(requests())
    try:
        async with asyncio.timeout(2):
            async for reply in call:
                kind = reply.WhichOneof("message")
                if kind == "registered":
                    await on_registered()
                elif kind == "jobs":
                    return True
    except TimeoutError:
        return False
    finally:
        call.cancel()
    return False


async def test_a_job_whose_worker_always_disconnects_fails_its_run_after_the_cap(
    plait: Running,
) -> None:
    event_ids: list[str] = []

    async def send_once() -> None:
        if not event_ids:
            event_ids.append(await plait.client.send("poison-gone/go"))

    deliveries = 0
    # Each worker takes the job and hangs up; when none comes within its wait, the run ended.
    for _ in range(4 * MAX_REDELIVERIES):
        if not await _take_a_job_and_hang_up(plait, "poison-gone", send_once):
            break
        deliveries += 1
    run = await _failed_run(plait, event_ids[0])
    assert deliveries == MAX_REDELIVERIES + 1
    assert run.error.name == "RedeliveryLimitError"
    assert run.error.message == (f"job redelivered {MAX_REDELIVERIES} times without an answer; "
                                 "last: the worker disconnected holding the job")


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[str]:
    """A redis-server of this test alone: it is made to run out of memory."""
    port = free_port()
    proc = subprocess.Popen(
        [str(find_redis_server()), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path), "--protected-mode", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis_sync.Redis(port=port)
    try:
        for _ in range(500):
            try:
                client.ping()
                break
            except redis_sync.ConnectionError:
                if proc.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)


async def test_a_step_result_refused_for_memory_is_committed_once_memory_is_back(
    own_redis: str, database_url: str, tmp_path: Path,
) -> None:
    # A long lease: the commit is tried again for that long, and nothing lapses meanwhile.
    settings = settings_for("production", tmp_path, own_redis, database_url, insecure=True,
                            lease_ms=20_000, heartbeat_interval_ms=5_000)
    memory = redis_sync.Redis.from_url(own_redis)
    bodies: list[int] = []

    def fill_redis() -> str:
        bodies.append(1)
        memory.config_set("maxmemory", 1)  # every write is refused from now on: OOM
        return "done"

    app = App("poison-oom")

    @app.function("f", trigger=TriggerEvent("poison-oom/go"))
    async def f(ctx: Context, step: Step) -> str:
        return str(await step.run("fill", fill_redis))

    try:
        async with running_server(settings) as plait, running_worker(app, plait.client):
            with capture_logs() as logs:
                event_id = await plait.client.send("poison-oom/go")
                await eventually(
                    lambda: _async([e for e in logs if e["event"] == "commit.refused"]),
                    bool, 30, "the step's commit to be refused for memory")
                memory.config_set("maxmemory", 0)
            run = await plait.client.finished_run_of(event_id, timeout_s=30)
    finally:
        memory.config_set("maxmemory", 0)
        memory.close()
    assert run.status == run_pb2.RUN_STATUS_COMPLETED
    assert json.loads(run.output_json) == "done"
    assert bodies == [1]  # the refused result was kept and committed, not dropped and re-run


async def _async(value: Any) -> Any:
    return value
