"""Cron triggers in production: two scheduler processes start one run per tick, and ticks
missed while no scheduler ran are caught up with one run, for the latest of them."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

from plait import App, Context, Step, TriggerCron
from plait_proto.v1 import management_pb2, run_pb2
from redis.asyncio import Redis

from server.app import PlaitServer
from server.config import Settings
from server.keys import Keys
from server.runner.cron import Clock, tick_event
from tests.e2e.conftest import Running, running_worker
from tests.e2e.harness import Client, eventually, settings_for

MINUTE_MS = 60_000
FUNCTION_ID = "cron-tick"
SPEC = "* * * * *"


class FakeTime:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def now_ms(self) -> int:
        return self.ms


@contextlib.asynccontextmanager
async def serving(settings: Settings, clock: Clock) -> AsyncIterator[Running]:
    server = PlaitServer(settings, cron_clock=clock)
    endpoints = await server.start()
    client = Client(endpoints.grpc_port)
    try:
        yield Running(server, endpoints, client)
    finally:
        await client.close()
        await server.stop(grace_s=1)


async def _runs(client: Client) -> list[run_pb2.Run]:
    reply = await client.management.ListRuns(
        management_pb2.ListRunsRequest(function_id=FUNCTION_ID))
    return list(reply.runs)


def _tick_events(t0: int, ticks: list[int]) -> set[str]:
    return {tick_event(FUNCTION_ID, SPEC, t0 + k * MINUTE_MS)[0] for k in ticks}


async def test_two_schedulers_start_one_run_per_tick_and_catch_up_the_latest_missed_tick(
    tmp_path: Path, redis_url: str, database_url: str
) -> None:
    t0 = int(time.time() * 1000) // MINUTE_MS * MINUTE_MS
    fake = FakeTime(t0 + 30_000)
    clock = Clock(now_ms=fake.now_ms, max_sleep_s=0.02)
    base = settings_for("production", tmp_path, redis_url, database_url)
    app = App("cron")

    @app.function("tick", trigger=TriggerCron(SPEC))
    async def tick(ctx: Context, step: Step) -> dict[str, str]:
        return {"name": ctx.event.name, "cron": ctx.event.data["cron"]}

    redis = Redis.from_url(redis_url)
    last_key = Keys().cron_last(FUNCTION_ID, SPEC)
    try:
        async with serving(dataclasses.replace(base, instance_id="a"), clock) as a, \
                serving(dataclasses.replace(base, instance_id="b"), clock) as b:
            async with running_worker(app, a.client):
                # A scheduler seeing the function first starts it from the next tick.
                await eventually(lambda: redis.get(last_key), lambda v: v is not None,
                                 what="the scheduler to see the function")
                assert int(await redis.get(last_key)) == t0
                for k in (1, 2, 3):
                    fake.ms = t0 + k * MINUTE_MS + 1_000
                    runs = await eventually(
                        lambda: _runs(b.client),
                        lambda rs, k=k: len(rs) >= k and all(
                            r.status == run_pb2.RUN_STATUS_COMPLETED for r in rs),
                        what=f"the run of tick {k}")
                    assert len(runs) == k
                    assert {r.event_id for r in runs} == _tick_events(t0, list(range(1, k + 1)))
                output = json.loads(runs[0].output_json)
                assert output == {"name": "inngest/scheduled.timer", "cron": SPEC}

        # Both processes are down for ticks 4..8; the one that comes back runs tick 8 only.
        fake.ms = t0 + 8 * MINUTE_MS + 10_000
        async with serving(dataclasses.replace(base, instance_id="a"), clock) as again:
            runs = await eventually(lambda: _runs(again.client), lambda rs: len(rs) >= 4,
                                    what="the catch-up run")
            assert len(runs) == 4
            assert {r.event_id for r in runs} == _tick_events(t0, [1, 2, 3, 8])
            fake.ms = t0 + 9 * MINUTE_MS
            runs = await eventually(lambda: _runs(again.client), lambda rs: len(rs) >= 5,
                                    what="the run of tick 9")
            assert len(runs) == 5
            assert {r.event_id for r in runs} == _tick_events(t0, [1, 2, 3, 8, 9])
            assert int(await redis.get(last_key)) == t0 + 9 * MINUTE_MS
    finally:
        await redis.aclose()
