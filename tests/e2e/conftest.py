"""Fixtures of the end-to-end tests: a server per test over each backend, and workers."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest
from plait import App, Worker
from plait_proto.v1 import management_pb2

from server.app import Endpoints, PlaitServer
from server.config import Settings
from server.runner.cron import Clock
from tests.e2e.harness import Client, eventually, settings_for

BACKENDS = ["embedded", "production", "cluster"]
# "cluster" is production mode on a real Redis Cluster (3 masters, 3 replicas; started once per
# session, tests/cluster_support.py) and PostgreSQL; it runs the modules listed here, the others
# are deselected to keep CI time bounded (PLAIT_TEST_CLUSTER_ALL=1 runs them all there).
CLUSTER_MODULES = frozenset({
    "test_durable_core", "test_wait_for_event", "test_invoke", "test_parallel_steps",
    "test_cancel_on", "test_timeouts", "test_crashes", "test_flow_controls"})


# Known to fail on the cluster: none now (per-shard fairness: server/executor/executor.py
# shares a driver's slots between the shards in turn).
CLUSTER_XFAIL: dict[str, str] = {}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.name in CLUSTER_XFAIL:
            item.add_marker(pytest.mark.xfail(reason=CLUSTER_XFAIL[item.name], strict=False))
    if os.environ.get("PLAIT_TEST_CLUSTER_ALL", "") not in ("", "0"):
        return  # every module on the cluster too
    dropped = [item for item in items if _on_cluster(item)
               and item.module is not None and item.module.__name__.rsplit(".", 1)[-1]
               not in CLUSTER_MODULES]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        gone = set(dropped)
        items[:] = [item for item in items if item not in gone]


def _on_cluster(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    return callspec is not None and callspec.params.get("backend") == "cluster"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def settings(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    if backend == "embedded":
        return settings_for(backend, tmp_path)
    if backend == "cluster":
        # Four queue shards: runs spread over slots of several masters, as in production.
        return settings_for("production", tmp_path,
                            request.getfixturevalue("redis_cluster_url"),
                            request.getfixturevalue("database_url"), queue_shards=4)
    return settings_for(backend, tmp_path, request.getfixturevalue("redis_url"),
                        request.getfixturevalue("database_url"))


@dataclass
class Running:
    server: PlaitServer
    endpoints: Endpoints
    client: Client


@contextlib.asynccontextmanager
async def running_server(settings: Settings,
                         cron_clock: Clock | None = None) -> AsyncIterator[Running]:
    server = PlaitServer(settings, cron_clock=cron_clock)
    endpoints = await server.start()
    client = Client(endpoints.grpc_port)
    try:
        yield Running(server, endpoints, client)
    finally:
        await client.close()
        await server.stop(grace_s=1)


@pytest.fixture
async def plait(settings: Settings) -> AsyncIterator[Running]:
    async with running_server(settings) as running:
        yield running


async def registered(client: Client, function_ids: Iterable[str]) -> None:
    wanted = set(function_ids)

    async def listed() -> set[str]:
        reply = await client.management.ListFunctions(management_pb2.ListFunctionsRequest())
        return {f.id for f in reply.functions}

    await eventually(listed, lambda ids: wanted <= ids, 20, f"registration of {wanted}")


@contextlib.asynccontextmanager
async def running_worker(app: App, client: Client, max_jobs: int = 20) -> AsyncIterator[Worker]:
    worker = Worker(app, server=client.target, max_concurrent_jobs=max_jobs,
                    shutdown_grace_s=1)
    task = asyncio.create_task(worker.arun())
    try:
        await registered(client, [f"{app_id(app)}-{slug}" for slug in slugs(app)])
        yield worker
    finally:
        await worker.stop()
        async with asyncio.timeout(10):
            await task


def app_id(app: App) -> str:
    return str(app.id)


def slugs(app: App) -> list[str]:
    return [spec.id for spec in app._specs()]
