"""Production scale-out: processes with different roles share the work through Redis and SQL."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import pytest
from plait import App, Context, Step, TriggerEvent, Worker
from plait_proto.v1 import management_pb2

from server.config import load_settings
from server.errors import ConfigError
from tests.e2e.conftest import registered, running_server
from tests.e2e.harness import eventually, settings_for


async def test_an_api_process_and_an_executor_process_complete_a_run_together(
    tmp_path: Path, redis_url: str, database_url: str
) -> None:
    base = settings_for("production", tmp_path, redis_url, database_url)
    api = dataclasses.replace(base, roles="api,runner,history")
    executor = dataclasses.replace(base, roles="executor")
    app = App("split")

    @app.function("f", trigger=TriggerEvent("split/go"))
    async def f(ctx: Context, step: Step) -> int:
        return await step.run("double", lambda: ctx.event.data["n"] * 2)

    async with running_server(api) as front, running_server(executor) as back:
        assert back.endpoints.http_port == 0  # no HTTP face without the api role
        worker = Worker(app, server=f"127.0.0.1:{back.endpoints.grpc_port}",
                        max_concurrent_jobs=4, shutdown_grace_s=1)
        task = asyncio.create_task(worker.arun())
        try:
            await registered(front.client, ["split-f"])
            event_id = await front.client.send("split/go", {"n": 21})
            run = await front.client.finished_run_of(event_id)
        finally:
            await worker.stop()
            await task
    assert json.loads(run.output_json) == 42


def test_unknown_roles_are_refused() -> None:
    with pytest.raises(ConfigError, match="--roles"):
        load_settings({"roles": "api,dashboard"})


async def test_a_cancel_from_another_process_reaches_the_worker_holding_the_run(
    tmp_path: Path, redis_url: str, database_url: str
) -> None:
    base = settings_for("production", tmp_path, redis_url, database_url)
    api = dataclasses.replace(base, roles="api,runner,history")
    executor = dataclasses.replace(base, roles="executor")
    app = App("held")
    started, told = asyncio.Event(), asyncio.Event()

    @app.function("f", trigger=TriggerEvent("held/go"))
    async def f(ctx: Context, step: Step) -> None:
        async def forever() -> None:
            started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                told.set()
                raise
        await step.run("forever", forever)

    async with running_server(api) as front, running_server(executor) as back:
        worker = Worker(app, server=f"127.0.0.1:{back.endpoints.grpc_port}",
                        max_concurrent_jobs=4, shutdown_grace_s=1)
        task = asyncio.create_task(worker.arun())
        try:
            await registered(front.client, ["held-f"])
            event_id = await front.client.send("held/go", {})
            await asyncio.wait_for(started.wait(), 20)
            (run,) = await eventually(lambda: front.client.runs_of_event(event_id),
                                      lambda runs: len(runs) == 1, 10, "the run in history")
            await front.client.management.CancelRun(
                management_pb2.CancelRunRequest(run_id=run.id))
            # The api process has no worker: the cancel reaches the executor's over Redis.
            await asyncio.wait_for(told.wait(), 10)
        finally:
            await worker.stop()
            await task
