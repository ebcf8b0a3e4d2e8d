"""Fixtures of the compat suite: one Plait server per mode, with a Python and a TypeScript app
on the official Inngest SDKs, shared by the module's tests (starting them is the slow part).

Dev mode: `plait dev` on its embedded backend; the Python app is synced by `--sdk-url`, the
TypeScript app through the sync API. Production: `plait start` on the real Redis and
PostgreSQL with a signing key and an event key, the apps in the SDKs' cloud mode with the
same keys. The scheduler runs on a frozen fake clock (`Deployment.clock`): cron functions tick
only when a test moves it.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
import redis as redis_sync

from server.app import PlaitServer
from server.config import Settings
from server.runner.cron import Clock
from tests.compat.apps import (
    SDKS,
    Gateway,
    SdkApp,
    node_available,
    sdk_env,
    start_app,
    stop_all,
)
from tests.conftest import PG_ADMIN_DSN, REDIS_HOST, REDIS_PORT, _unavailable
from tests.e2e.harness import free_port, settings_for

SIGNING_KEY = "signkey-test-" + "5eed" * 16
# Production's fallback key: an app still on it can register, but refuses Plait's requests.
STALE_KEY = "signkey-test-" + "01d0" * 16
EVENT_KEY = "compat-event-key"


class FakeTime:
    """The scheduler's clock: frozen at its start, moved only by `advance`."""

    MINUTE_MS = 60_000

    def __init__(self) -> None:
        # Half way through a minute, so `* * * * *` ticks once per advance of a minute.
        self.ms = int(time.time() * 1000) // self.MINUTE_MS * self.MINUTE_MS + 30_000

    def now_ms(self) -> int:
        return self.ms

    def advance(self, ms: int) -> None:
        self.ms += ms


@dataclass
class Deployment:
    mode: str
    server: PlaitServer
    gateway: Gateway
    apps: dict[str, SdkApp]
    log_dir: Path
    clock: FakeTime

    @property
    def signing_key(self) -> str:
        return self.gateway.signing_key


async def _production_database() -> tuple[str, str]:
    """A fresh PostgreSQL database for the module: (SQLAlchemy URL, its name)."""
    name = f"plait_compat_{os.getpid()}_{secrets.token_hex(3)}"
    try:
        admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError) as e:
        _unavailable(f"PostgreSQL at {PG_ADMIN_DSN}", e)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base = PG_ADMIN_DSN.rsplit("/", 1)[0]
    return f"postgresql+asyncpg://{base.split('://', 1)[1]}/{name}", name


async def _drop_database(name: str) -> None:
    admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def _settings(mode: str, tmp: Path, http_port: int, request: pytest.FixtureRequest,
              database_url: str, sdk_urls: str) -> Settings:
    common: dict[str, Any] = {"http_port": http_port, "sdk_urls": sdk_urls}
    if mode == "dev":
        return settings_for("embedded", tmp, **common)
    db = request.getfixturevalue("redis_db")
    client = redis_sync.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db)
    client.flushdb()
    client.close()
    return settings_for("production", tmp, f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}",
                        database_url, signing_key=SIGNING_KEY, signing_key_fallback=STALE_KEY,
                        event_keys=EVENT_KEY, **common)


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["dev", "production"])
async def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Deployment]:
    mode = str(request.param)
    tmp = tmp_path_factory.mktemp(f"compat-{mode}")
    database_url, database = ("", "")
    if mode == "production":
        database_url, database = await _production_database()
    http_port = free_port()
    key = SIGNING_KEY if mode == "production" else ""
    env = sdk_env(http_port, key, EVENT_KEY)
    # The apps start first, so the server's first sync pass finds the one given by URL.
    sdks = [s for s in SDKS if s == "py" or node_available()]
    started = await asyncio.gather(*(start_app(s, env, tmp) for s in sdks),
                                   return_exceptions=True)
    apps = {s: a for s, a in zip(sdks, started, strict=True) if isinstance(a, SdkApp)}
    failed = [a for a in started if isinstance(a, BaseException)]
    if failed:
        await stop_all(list(apps.values()))
        raise failed[0]
    clock = FakeTime()
    server = PlaitServer(_settings(mode, tmp, http_port, request, database_url, apps["py"].url),
                         cron_clock=Clock(now_ms=clock.now_ms, max_sleep_s=0.1))
    try:
        await server.start()
        gateway = Gateway(http_port, key, EVENT_KEY if key else "dev")
        if "ts" in apps:
            synced = await gateway.sync(apps["ts"].url)
            assert synced.status_code == 200, synced.text
        for app in apps.values():
            await gateway.wait_registered(app.app_id)
        yield Deployment(mode, server, gateway, apps, tmp, clock)
    finally:
        await server.stop(grace_s=1)
        await stop_all(list(apps.values()))
        if database:
            await _drop_database(database)
