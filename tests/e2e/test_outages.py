"""Nothing one outage or one bad item can stop: a production server outlives a restart of its
Redis (no run lost, /health degraded meanwhile) and exits only past --storage-grace-s; a cron
that never fires is refused, and one already stored does not stop the scheduler; an event the
runner cannot process does not stop the runner."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from plait import App, Context, Step, TriggerCron, TriggerEvent
from plait_proto.v1 import function_pb2, management_pb2, queue_pb2, queue_pb2_grpc, run_pb2
from redis.asyncio import Redis
from ulid import ULID

from server.config import Settings
from server.history import open_database, store
from server.keys import Keys
from server.redis_client import open_redis
from server.runner.cron import Clock
from server.supervise import StorageUnavailable
from server.types import AppId, AppRegistration, CronTrigger, FunctionConfig, FunctionId
from tests.e2e.conftest import Running, registered, running_server, running_worker
from tests.e2e.harness import Client, eventually, settings_for
from tests.redis_server import PrivateRedis

COMPLETED = run_pb2.RUN_STATUS_COMPLETED
RUNS = 10
MINUTE_MS = 60_000


async def _health(http: httpx.AsyncClient, port: int) -> tuple[int, dict[str, Any]]:
    try:
        reply = await http.get(f"http://127.0.0.1:{port}/health")
    except httpx.HTTPError as e:  # nothing listening: the process (or its HTTP role) ended
        return 0, {"error": repr(e)}
    return reply.status_code, reply.json()


async def _metric(http: httpx.AsyncClient, port: int, name: str) -> float:
    """The sum of a metric's samples, over all its labels."""
    try:
        text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    except httpx.HTTPError:
        return 0.0
    pattern = re.compile(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", re.MULTILINE)
    return sum(float(v) for v in pattern.findall(text))


async def test_a_redis_restart_ends_no_process_and_loses_no_run(
    tmp_path: Path, private_redis: PrivateRedis, database_url: str,
) -> None:
    settings = settings_for("production", tmp_path, private_redis.url, database_url,
                            storage_grace_s=0)
    executions: Counter[tuple[str, str]] = Counter()
    app = App("outage")

    @app.function("nap", trigger=TriggerEvent("outage/nap"))
    async def nap(ctx: Context, step: Step) -> dict[str, Any]:
        def body(name: str) -> str:
            executions[(ctx.run_id, name)] += 1
            return name

        await step.run("a", body, "a")
        await step.sleep("nap", 2)
        await step.run("b", body, "b")
        return {"n": ctx.event.data["n"]}

    async def committed_firsts(client: Client, event_ids: list[str]) -> int:
        """Runs whose step a history has recorded: committed, so never run again."""
        n = 0
        for event_id in event_ids:
            for listed in await client.runs_of_event(event_id):
                run = await client.run_if_recorded(listed.id)
                n += run is not None and any(
                    s.step_id == "a" and s.status == run_pb2.STEP_STATUS_COMPLETED
                    for s in run.steps)
        return n

    async with running_server(settings) as plait, httpx.AsyncClient(timeout=5) as http:
        port = plait.endpoints.http_port
        waiting = asyncio.create_task(plait.server.wait())
        async with running_worker(app, plait.client, max_jobs=RUNS):
            assert await _health(http, port) == (200, {"status": "ok"})
            event_ids = await plait.client.send_many("outage/nap",
                                                     [{"n": n} for n in range(RUNS)])
            await eventually(lambda: committed_firsts(plait.client, event_ids),
                             lambda n: n == RUNS, 30, "every run's first step committed")

            private_redis.kill()
            status, body = await eventually(lambda: _health(http, port),
                                            lambda h: h[0] != 200, 30, "/health to degrade")
            assert status == 503, body
            assert body["status"] == "degraded" and body["database"] == "ok"
            assert body["redis"].startswith("unreachable"), body
            # The roles that met the outage were restarted; the process goes on.
            await eventually(lambda: _metric(http, port, "plait_role_restarts_total"),
                             lambda n: n > 0, 30, "a role restart")
            assert not waiting.done()

            await private_redis.start()  # same port, same AOF
            await eventually(lambda: _health(http, port),
                             lambda h: h == (200, {"status": "ok"}), 30, "/health ok again")
            runs = [await plait.client.finished_run_of(e, timeout_s=60) for e in event_ids]
        assert not waiting.done()
        waiting.cancel()

    assert [r.status for r in runs] == [COMPLETED] * RUNS
    assert sorted(json.loads(r.output_json)["n"] for r in runs) == list(range(RUNS))
    # Step a's results were acknowledged before the kill, on an AOF fsynced per write.
    assert [n for (_, name), n in executions.items() if name == "a"] == [1] * RUNS


async def test_storage_away_past_the_grace_ends_the_server(
    tmp_path: Path, private_redis: PrivateRedis, database_url: str,
) -> None:
    settings = settings_for("production", tmp_path, private_redis.url, database_url,
                            storage_grace_s=1)
    async with running_server(settings) as plait:
        private_redis.kill()
        with pytest.raises(StorageUnavailable) as caught:
            async with asyncio.timeout(30):
                await plait.server.wait()
    assert "redis unreachable for more than --storage-grace-s=1s" in caught.value.message


async def _register_error(plait: Running, cron: str) -> grpc.aio.AioRpcError:
    stub = queue_pb2_grpc.QueueServiceStub(plait.client.channel)
    register = queue_pb2.ConnectRequest(register=queue_pb2.Register(
        app_id="feb", max_concurrent_jobs=1, functions=[function_pb2.FunctionDefinition(
            id="thirtieth", triggers=[function_pb2.Trigger(
                cron=function_pb2.CronTrigger(cron=cron))])]))

    async def requests() -> AsyncIterator[queue_pb2.ConnectRequest]:
        yield register
        await asyncio.sleep(30)  # the server must be the one to end the stream

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async with asyncio.timeout(10):
            async for _ in stub.Connect(requests()):
                pass
    return caught.value


async def test_a_cron_that_never_fires_is_refused_and_a_stored_one_stops_no_other(
    tmp_path: Path, redis_url: str, database_url: str,
) -> None:
    t0 = int(time.time() * 1000) // MINUTE_MS * MINUTE_MS
    now = {"ms": t0 + 30_000}
    clock = Clock(now_ms=lambda: now["ms"], max_sleep_s=0.02)
    settings = settings_for("production", tmp_path, redis_url, database_url)
    app = App("cron-ok")

    @app.function("tick", trigger=TriggerCron("* * * * *"))
    async def tick(ctx: Context, step: Step) -> str:
        return str(ctx.event.data["cron"])

    redis = Redis.from_url(redis_url)
    engine = await open_database(database_url)
    try:
        async with running_server(settings, clock) as plait:
            error = await _register_error(plait, "0 0 30 2 *")
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "functions[0].triggers[0].cron" in (error.details() or "")
            assert "never fires" in (error.details() or "")

            # Stored by an older version that let it through: the scheduler must live with it.
            stale = FunctionConfig(id=FunctionId("stale-feb30"), app_id=AppId("stale"),
                                   slug="feb30", name="feb30",
                                   triggers=(CronTrigger("0 0 30 2 *"),))
            await store.upsert_app(engine, AppRegistration(AppId("stale"), (stale,)), now["ms"])
            await redis.incr(Keys().functions_version)
            await registered(plait.client, [stale.id])

            async with running_worker(app, plait.client):
                last_key = Keys().cron_last("cron-ok-tick", "* * * * *")
                await eventually(lambda: redis.get(last_key), lambda v: v is not None, 20,
                                 "the scheduler to see the good cron")
                now["ms"] = t0 + MINUTE_MS + 1_000

                async def runs() -> list[run_pb2.Run]:
                    reply = await plait.client.management.ListRuns(
                        management_pb2.ListRunsRequest(function_id="cron-ok-tick"))
                    return list(reply.runs)

                done = await eventually(runs, lambda rs: len(rs) == 1 and rs[0].status
                                        == COMPLETED, 30, "the good cron's tick")
            assert json.loads(done[0].output_json) == "* * * * *"
            assert plait.server._tasks is not None and not plait.server._tasks.done()
    finally:
        await engine.dispose()
        await redis.aclose()


async def test_a_cron_the_scheduler_disabled_shows_its_error_in_get_function(
    tmp_path: Path, redis_url: str, database_url: str,
) -> None:
    settings = settings_for("production", tmp_path, redis_url, database_url)
    clock = Clock(max_sleep_s=0.02)
    redis = Redis.from_url(redis_url)
    engine = await open_database(database_url)
    try:
        async with running_server(settings, clock) as plait:
            # Stored by an older version that let it through, beside a good cron.
            stale = FunctionConfig(id=FunctionId("stale-feb30"), app_id=AppId("stale"),
                                   slug="feb30", name="feb30",
                                   triggers=(CronTrigger("0 0 30 2 *"),
                                             CronTrigger("* * * * *")))
            await store.upsert_app(engine, AppRegistration(AppId("stale"), (stale,)),
                                   int(time.time() * 1000))
            await redis.incr(Keys().functions_version)
            await registered(plait.client, [stale.id])

            async def shown() -> list[function_pb2.TriggerError]:
                reply = await plait.client.management.GetFunction(
                    management_pb2.GetFunctionRequest(function_id=stale.id))
                return list(reply.function.trigger_errors)

            (error,) = await eventually(shown, len, 20, "the disabled trigger's error")
            listed = await plait.client.management.ListFunctions(
                management_pb2.ListFunctionsRequest(app_id="stale"))
    finally:
        await engine.dispose()
        await redis.aclose()

    assert error.cron == "0 0 30 2 *"
    assert "CroniterBadDateError" in error.error  # why: croniter's error, named
    (function,) = listed.functions
    assert list(function.trigger_errors) == [error]


async def test_an_event_the_runner_cannot_process_does_not_stop_the_runner(
    plait: Running, settings: Settings,
) -> None:
    app = App("confined")

    @app.function("f", trigger=TriggerEvent("confined/e", "event.data.n >= 0"))
    async def f(ctx: Context, step: Step) -> int:
        return int(ctx.event.data["n"])

    async with running_worker(app, plait.client), httpx.AsyncClient(timeout=5) as http:
        redis = open_redis(plait.endpoints.redis_url)  # a cluster URL too
        try:
            stream = Keys(settings.queue_shards).events
            # Entries no ingest would write today, as a bug or an older version could have:
            # no name, and a body the trigger's expression needs that is not JSON.
            await redis.xadd(stream, {"id": str(ULID()), "e": b"{}"})
            await redis.xadd(stream, {"id": str(ULID()), "name": "confined/e",
                                      "e": b"{not json", "idem": b""})
        finally:
            await redis.aclose()
        event_id = await plait.client.send("confined/e", {"n": 7})
        run = await plait.client.finished_run_of(event_id, timeout_s=30)
        assert run.status == COMPLETED and json.loads(run.output_json) == 7
        port = plait.endpoints.http_port
        assert await eventually(lambda: _metric(http, port, "plait_events_unprocessable_total"),
                                lambda n: n == 2, 10, "the dropped events counted") == 2


async def test_a_worker_registering_while_redis_is_away_is_told_unavailable(
    tmp_path: Path, private_redis: PrivateRedis, database_url: str,
) -> None:
    """UNAVAILABLE (retry later), not UNKNOWN: the worker's status says what happened."""
    settings = settings_for("production", tmp_path, private_redis.url, database_url,
                            storage_grace_s=0)
    async with running_server(settings) as plait:
        private_redis.kill()
        error = await _register_error(plait, "0 * * * *")
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error
    assert "storage is unavailable" in (error.details() or "")


async def test_events_sent_while_redis_is_away_are_refused_unavailable(
    tmp_path: Path, private_redis: PrivateRedis, database_url: str,
) -> None:
    """The clients retry UNAVAILABLE; an UNKNOWN (the servicer's raw ConnectionError) they
    cannot tell from a bug."""
    settings = settings_for("production", tmp_path, private_redis.url, database_url,
                            storage_grace_s=0)
    async with running_server(settings) as plait, httpx.AsyncClient(timeout=10) as http:
        private_redis.kill()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await plait.client.send("outage/sent", {"n": 1})
        reply = await http.post(f"http://127.0.0.1:{plait.endpoints.http_port}/e/key",
                                json={"name": "outage/sent", "data": {"n": 2}})
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value
    assert "storage is unavailable" in (caught.value.details() or "")
    assert reply.status_code == 503, reply.text
    assert reply.json()["status"] == 503 and reply.headers["retry-after"] == "1"
