"""Fixtures of the fuzz suite: one Plait server process per backend for the package, a tally of the
generated cases per API surface, and its JSON lines at the end of the session.

PLAIT_FUZZ_EXAMPLES sets the cases per surface (default 200; `make fuzz` runs 10,000).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import json
import math
import os
import secrets
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import grpc
import httpx
import pytest
from hypothesis import HealthCheck, Phase, settings
from plait_proto.v1 import event_pb2, event_pb2_grpc, function_pb2, queue_pb2, queue_pb2_grpc

from tests.chaos.processes import ChaosServer, RedisServer
from tests.chaos.summary import LINES, print_summary
from tests.conftest import PG_ADMIN_DSN, _unavailable
from tests.e2e.harness import free_port, settings_for
from tests.fuzz.strategies import KNOWN_IDS

T = TypeVar("T")
EXAMPLES = int(os.environ.get("PLAIT_FUZZ_EXAMPLES", "200"))
LONG = EXAMPLES > 1000
# gRPC codes that mean the server failed, not the input.
SERVER_FAULTS = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE,
                 grpc.StatusCode.DATA_LOSS, grpc.StatusCode.DEADLINE_EXCEEDED}
CALL_TIMEOUT_S = 10.0
TALLY: dict[tuple[str, str], list[int]] = {}
EVENT_KEY = "fuzzkey"
# A worker app the fuzz registers at start: generated events named "fuzzq/go" (hostile data
# included) start its runs, which the worker-stream tests lease and answer.
REGISTER = queue_pb2.ConnectRequest(register=queue_pb2.Register(
    app_id="fuzzq", language="python", sdk_name="fuzz", sdk_version="0", max_concurrent_jobs=4,
    functions=[function_pb2.FunctionDefinition(id="f", name="f", retries=1, triggers=[
        function_pb2.Trigger(event=function_pb2.EventTrigger(event="fuzzq/go"))])]))


def fuzz_settings(surface_tests: int) -> settings:
    """Hypothesis settings giving one test its share of the surface's cases."""
    return settings(
        max_examples=max(1, math.ceil(EXAMPLES / surface_tests)), deadline=None,
        database=None, derandomize=not LONG, print_blob=True,
        # The short run reports the first failing case as found; the long one shrinks it.
        phases=list(Phase) if LONG else [Phase.explicit, Phase.generate],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                               HealthCheck.filter_too_much,
                               HealthCheck.function_scoped_fixture])


@dataclass
class Target:
    backend: str
    http: str  # base URL
    grpc: str  # host:port
    server: ChaosServer
    channel: grpc.Channel  # type: ignore[name-defined]
    web: httpx.Client

    def case(self, surface: str) -> None:
        TALLY.setdefault((surface, self.backend), [0, 0])[0] += 1

    def fault(self, surface: str, what: str) -> None:
        TALLY.setdefault((surface, self.backend), [0, 0])[1] += 1
        raise AssertionError(f"{surface} on {self.backend}: {what}")

    def request(self, surface: str, method: str, path: str, *, allowed: tuple[int, ...] = (),
                **kwargs: Any) -> httpx.Response | None:
        """One HTTP case: any answer under 500 (or in `allowed`) passes."""
        self.case(surface)
        try:
            reply = self.web.request(method, path, **kwargs)
        except httpx.LocalProtocolError:
            return None  # httpx refused to send it: not a case for the server
        except httpx.HTTPError as e:
            self.fault(surface, f"{method} {path}: {e!r}")
        if reply.status_code >= 500 and reply.status_code not in allowed:
            self.fault(surface, f"{method} {path} answered {reply.status_code}: "
                       f"{reply.text[:500]}")
        return reply

    def assert_healthy(self) -> None:
        assert self.server.alive(), f"the server exited: see {self.server.log_path}"
        reply = httpx.get(f"{self.http}/health", timeout=CALL_TIMEOUT_S)
        assert reply.status_code == 200, reply.text


def _in_thread(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Runs a coroutine on a loop of its own, away from pytest-asyncio's loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


async def _create_database(name: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _drop_database(name: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def _wait_healthy(base: str, server: ChaosServer) -> None:
    deadline = time.monotonic() + 60
    while True:
        if not server.alive():
            raise RuntimeError(f"the fuzz server exited at start: see {server.log_path}")
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("the fuzz server did not answer /health within 60 s")
        time.sleep(0.1)


@pytest.fixture(scope="package", params=["embedded", "production"])
def target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           ) -> Iterator[Target]:
    backend = str(request.param)
    workdir = tmp_path_factory.mktemp(f"fuzz-{backend}")
    redis: RedisServer | None = None
    database = ""
    ports = {"http_port": free_port(), "grpc_port": free_port()}
    if backend == "production":
        database = f"plait_fuzz_{os.getpid()}_{secrets.token_hex(3)}"
        try:
            _in_thread(lambda: _create_database(database))
        except (OSError, asyncpg.PostgresError) as e:
            _unavailable(f"PostgreSQL at {PG_ADMIN_DSN}", e)
        redis = RedisServer(workdir)
        redis.start()
        base = PG_ADMIN_DSN.rsplit("/", 1)[0].split("://", 1)[1]
        s = settings_for(backend, workdir, redis.url,
                         f"postgresql+asyncpg://{base}/{database}", **ports)
    else:
        s = settings_for(backend, workdir, **ports)
    s = dataclasses.replace(s, lease_ms=3000)
    server = ChaosServer(s, workdir / "server.log", env={"PLAIT_EVENT_KEYS": EVENT_KEY})
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{s.grpc_port}")
    try:
        http = f"http://127.0.0.1:{s.http_port}"
        _wait_healthy(http, server)
        reply = event_pb2_grpc.EventServiceStub(channel).SendEvents(
            event_pb2.SendEventsRequest(events=[
                event_pb2.EventInput(name="fuzz/go", data_json=b'{"n": 1}')]),
            timeout=CALL_TIMEOUT_S)
        KNOWN_IDS.extend(reply.ids)
        for _ in queue_pb2_grpc.QueueServiceStub(channel).Connect(iter([REGISTER]),
                                                                  timeout=CALL_TIMEOUT_S):
            pass  # registered; the stream ends as the request stream does
        with httpx.Client(base_url=http, timeout=CALL_TIMEOUT_S) as web:
            yield Target(backend, http, f"127.0.0.1:{s.grpc_port}", server, channel, web)
    finally:
        channel.close()
        server.stop()
        if redis is not None:
            redis.stop()
        if database:
            _in_thread(lambda: _drop_database(database))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for (surface, backend), (cases, failures) in sorted(TALLY.items()):
        LINES["fuzz"].append(json.dumps({"surface": surface, "backend": backend,
                                         "cases": cases, "failures": failures}))
    target = os.environ.get("PLAIT_CHAOS_REPORT", "")
    if target:
        with Path(target).open("a") as f:
            for line in LINES["fuzz"]:
                f.write(line + "\n")
    print_summary("fuzz", terminalreporter)
