"""Production scale-out: processes with different roles share the work through Redis and SQL."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import pytest
from plait import App, Context, Step, TriggerEvent, Worker

from server.config import load_settings
from server.errors import ConfigError
from tests.e2e.conftest import registered, running_server
from tests.e2e.harness import settings_for


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
