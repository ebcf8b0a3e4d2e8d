"""Issue #5's primitives on apps of the official Inngest SDKs (PyPI `inngest`, npm `inngest`):
cron triggers, bulk cancellation, start timeouts, cancel-on events, invoke, and send-event as
a step; in dev mode and in production mode, like tests/compat/test_sdk_apps.py."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import pytest_asyncio
from plait_proto.v1 import management_pb2, run_pb2
from redis.asyncio import Redis

from server.keys import Keys
from server.runner.cron import CRON_EVENT, tick_event
from server.runner.runner import run_id_for
from server.types import EventId, FunctionId
from tests.compat.apps import SDKS, SdkApp, require_node
from tests.compat.conftest import Deployment, FakeTime
from tests.e2e.harness import Client, eventually

pytestmark = pytest.mark.asyncio(loop_scope="module")

CRON = "* * * * *"  # the apps' `ticker`
MINUTE_MS = FakeTime.MINUTE_MS
BULK = 100
# How long the bulk-cancelled runs sleep: long enough to have all of them asleep before the
# cancellation, on two cores, in production mode (signed calls).
BULK_NAP_S = 8


@pytest.fixture(params=SDKS)
def app(request: pytest.FixtureRequest, deployment: Deployment) -> SdkApp:
    if request.param == "ts":
        require_node()
    return deployment.apps[str(request.param)]


@pytest_asyncio.fixture(loop_scope="module")
async def client(deployment: Deployment) -> AsyncIterator[Client]:
    """The deployment's gRPC ManagementService, for what the REST API does not show (the
    steps of a run, a function's definition, a function's runs)."""
    grpc_client = Client(deployment.server.endpoints.grpc_port)  # type: ignore[union-attr]
    try:
        yield grpc_client
    finally:
        await grpc_client.close()


def _now_ms() -> int:
    return int(time.time() * 1000)


def _rfc3339(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


async def _runs_of_function(client: Client, function_id: str) -> list[run_pb2.Run]:
    reply = await client.management.ListRuns(
        management_pb2.ListRunsRequest(function_id=function_id, page_size=1000))
    return list(reply.runs)


def _asleep(run: run_pb2.Run | None) -> bool:
    return run is not None and run.status == run_pb2.RUN_STATUS_RUNNING and any(
        s.name == "nap" and s.status == run_pb2.STEP_STATUS_SLEEPING for s in run.steps)


async def _in_status(client: Client, function_id: str, status: int) -> set[str]:
    reply = await client.management.ListRuns(management_pb2.ListRunsRequest(
        function_id=function_id, status=status, page_size=1000))  # type: ignore[arg-type]
    return {r.id for r in reply.runs}


async def _all_asleep(client: Client, function_id: str, run_ids: list[str], what: str) -> None:
    """Waits for the runs to be running (one query), then for each to show its sleep."""
    await eventually(lambda: _in_status(client, function_id, run_pb2.RUN_STATUS_RUNNING),
                     lambda ids: ids >= set(run_ids), 60, what)

    async def count() -> int:
        await asyncio.sleep(0.1)  # paces the polls: each reads every run
        runs = await asyncio.gather(*(client.run_if_recorded(r) for r in run_ids))
        return sum(_asleep(r) for r in runs)

    await eventually(count, lambda n: n == len(run_ids), 30, what)


async def _rest_statuses(deployment: Deployment, run_ids: list[str]) -> list[str]:
    """Each run's status through GET /v1/runs/{id}, on one connection pool."""
    gateway = deployment.gateway
    async with httpx.AsyncClient(base_url=gateway.base, headers=gateway.headers,
                                 timeout=30) as http:
        replies = await asyncio.gather(*(http.get(f"/v1/runs/{r}") for r in run_ids))
    for reply in replies:
        assert reply.status_code == 200, reply.text
    return [str(reply.json()["data"]["status"]) for reply in replies]


def _run_ids(event_ids: list[str], function_id: str) -> list[str]:
    return [run_id_for(EventId(e), FunctionId(function_id)) for e in event_ids]


# Cron


async def test_a_cron_function_is_registered_and_runs_once_per_tick(
    deployment: Deployment, app: SdkApp, client: Client,
) -> None:
    function_id = f"{app.app_id}-ticker"
    reply = await client.management.GetFunction(
        management_pb2.GetFunctionRequest(function_id=function_id))
    triggers = reply.function.definition.triggers
    assert [t.cron.cron for t in triggers if t.WhichOneof("kind") == "cron"] == [CRON]
    assert not [t for t in triggers if t.WhichOneof("kind") == "event"]

    # The scheduler has seen the trigger at the fake clock's current tick (the other SDK's
    # test may have moved the clock already).
    clock = deployment.clock
    tick = clock.now_ms() // MINUTE_MS * MINUTE_MS
    redis = Redis.from_url(deployment.server.endpoints.redis_url)  # type: ignore[union-attr]
    last_key = Keys().cron_last(function_id, CRON)
    try:
        await eventually(lambda: _get(redis, last_key), _recorded(tick), 30,
                         "the scheduler to see the cron trigger")
        before = await _runs_of_function(client, function_id)
        for k in (1, 2):
            clock.advance(MINUTE_MS)
            event_id, _ = tick_event(function_id, CRON, tick + k * MINUTE_MS)
            run = await deployment.gateway.finished_run(event_id)
            assert run["status"] == "Completed", run
            assert run["function_id"] == function_id
            assert run["output"] == {"name": CRON_EVENT, "cron": CRON}
            assert run["cron"] == CRON  # the REST run says which schedule started it
            recorded = _recorded(tick + k * MINUTE_MS)
            await eventually(lambda: _get(redis, last_key), recorded, 10, f"tick {k} recorded")
        after = await _runs_of_function(client, function_id)
    finally:
        await redis.aclose()
    new = {r.event_id for r in after} - {r.event_id for r in before}
    assert len(after) == len(before) + 2
    assert new == {tick_event(function_id, CRON, tick + k * MINUTE_MS)[0] for k in (1, 2)}


async def _get(redis: Redis, key: str) -> bytes | str | None:
    value: bytes | str | None = await redis.get(key)
    return value


def _recorded(tick_ms: int) -> Callable[[bytes | str | None], bool]:
    """Whether a trigger's last tick in Redis is `tick_ms`."""
    return lambda raw: raw is not None and int(raw) == tick_ms


# Bulk cancel


async def test_one_bulk_cancellation_cancels_a_hundred_sleeping_runs_for_good(
    deployment: Deployment, app: SdkApp, client: Client,
) -> None:
    if deployment.mode == "production":
        # About 11 s each: the cancel path does not depend on the mode (signing is tested
        # by every other case), so dev mode carries it for both SDKs.
        pytest.skip("bulk cancel runs in dev mode only, to keep the suite short")
    gateway = deployment.gateway
    function_id = f"{app.app_id}-dozer"
    key = uuid.uuid4().hex
    started_ms = _now_ms()
    event_ids = await gateway.send_many(
        app.event("doze"), [{"key": key, "nap_s": BULK_NAP_S, "i": i} for i in range(BULK)])
    run_ids = _run_ids(event_ids, function_id)
    await _all_asleep(client, function_id, run_ids, f"{BULK} sleeping runs")
    assert await app.calls(key) == {"before": BULK}

    reply = await gateway.request("POST", "/v1/cancellations", json={
        "app_id": app.app_id, "function_id": function_id,
        "started_after": _rfc3339(started_ms - 1000),
        "started_before": _rfc3339(_now_ms() + 1000)})
    assert reply.status_code == 200, reply.text
    assert reply.json()["data"]["cancelled_count"] == BULK
    asleep_until_ms = started_ms + BULK_NAP_S * 1000
    assert _now_ms() < asleep_until_ms, "the runs woke up before the cancellation"

    await eventually(lambda: _in_status(client, function_id, run_pb2.RUN_STATUS_CANCELLED),
                     lambda ids: ids >= set(run_ids), 30, f"{BULK} cancelled runs")
    assert await _rest_statuses(deployment, run_ids) == ["Cancelled"] * BULK
    # A run started after the cancellation, sleeping as long, wakes up after every cancelled
    # run would have: by its end, none of them has run its step after the sleep.
    control_key = uuid.uuid4().hex
    control = await gateway.send(app.event("doze"), {"key": control_key, "nap_s": BULK_NAP_S})
    done = await gateway.finished_run(control, timeout_s=BULK_NAP_S + 30)
    assert done["status"] == "Completed", done
    assert await app.calls(control_key) == {"before": 1, "after": 1}
    assert await app.calls(key) == {"before": BULK}
    assert await _rest_statuses(deployment, run_ids) == ["Cancelled"] * BULK


# Start timeout


async def test_a_run_that_cannot_start_within_its_start_timeout_fails(
    deployment: Deployment, app: SdkApp, client: Client,
) -> None:
    """Every call slot Plait gives the app (`sdk_concurrency`) is held by a `hog` step, so
    the `tardy` run (start timeout 1 s) stays queued past its start deadline."""
    gateway = deployment.gateway
    slots = deployment.server.settings.sdk_concurrency
    hog_key = uuid.uuid4().hex
    hogs = await gateway.send_many(app.event("hog"), [{"key": hog_key}] * slots)
    try:
        await eventually(lambda: app.calls(hog_key), lambda c: c.get("hold") == slots, 30,
                         f"{slots} hog calls in flight")
        key = uuid.uuid4().hex
        event_id = await gateway.send(app.event("tardy"), {"key": key})
        (run_id,) = _run_ids([event_id], f"{app.app_id}-tardy")
        run = await eventually(lambda: client.run_if_recorded(run_id), lambda r: r is not None,
                               what="the queued run")
        assert run is not None and run.status == run_pb2.RUN_STATUS_QUEUED
        deadline_ms = run.created_at_ms + 1000
        await eventually(_now_ms_async, lambda now: now > deadline_ms + 200,
                         what="the start deadline")
        assert await app.calls(key) == {}
    finally:
        await app.release(hog_key)
    done = await gateway.finished_run(event_id)
    assert done["status"] == "Failed", done
    assert done["output"]["name"] == "StartTimeoutError"
    assert "start timeout" in done["output"]["message"]
    assert await app.calls(key) == {}
    for hog in hogs:
        assert (await gateway.finished_run(hog))["status"] == "Completed"
    assert await app.calls(hog_key) == {"hold": slots}


async def _now_ms_async() -> int:
    return _now_ms()


# Cancel on an event


async def test_a_matching_event_cancels_a_run_and_others_do_not(
    deployment: Deployment, app: SdkApp, client: Client,
) -> None:
    gateway = deployment.gateway
    function_id = f"{app.app_id}-cancellable"
    doomed_key, spared_key = uuid.uuid4().hex, uuid.uuid4().hex
    doomed_id, spared_id = f"doomed-{doomed_key}", f"spared-{spared_key}"
    doomed = await gateway.send(app.event("cancellable"),
                                {"key": doomed_key, "id": doomed_id, "nap_s": 60})
    spared = await gateway.send(app.event("cancellable"),
                                {"key": spared_key, "id": spared_id, "nap_s": 3})
    await _all_asleep(client, function_id, _run_ids([doomed, spared], function_id),
                      "both runs asleep")
    # Neither event matches the spared run; the second matches the doomed one.
    await gateway.send(app.event("cancel"), {"id": "nobody"})
    await gateway.send(app.event("cancel"), {"id": doomed_id})

    done = await gateway.finished_run(doomed, timeout_s=20)
    assert done["status"] == "Cancelled", done
    rest = await gateway.request("GET", f"/v1/runs/{done['run_id']}")
    assert rest.json()["data"]["status"] == "Cancelled"
    kept = await gateway.finished_run(spared, timeout_s=20)
    assert kept["status"] == "Completed", kept
    assert kept["output"] == {"id": spared_id}
    assert await app.calls(spared_key) == {"before": 1, "after": 1}
    assert await app.calls(doomed_key) == {"before": 1}


# Invoke


async def _child_run(client: Client, app: SdkApp, key: str) -> tuple[run_pb2.Run, dict[str, Any]]:
    """The finished run of `child` invoked with `key`, and its event as JSON."""
    async def find() -> list[tuple[run_pb2.Run, dict[str, Any]]]:
        found = []
        for run in await _runs_of_function(client, f"{app.app_id}-child"):
            reply = await client.management.GetEvent(
                management_pb2.GetEventRequest(event_id=run.event_id))
            data = json.loads(reply.event.data_json)
            if data.get("key") == key:
                found.append((run, {"name": reply.event.name, "data": data}))
        return found

    terminal = (run_pb2.RUN_STATUS_COMPLETED, run_pb2.RUN_STATUS_FAILED,
                run_pb2.RUN_STATUS_CANCELLED)
    ((run, event),) = await eventually(
        find, lambda f: len(f) == 1 and f[0][0].status in terminal, 20, "the child's run")
    return run, event


async def test_invoke_returns_the_child_functions_output(
    deployment: Deployment, app: SdkApp, client: Client,
) -> None:
    key = uuid.uuid4().hex
    event_id = await deployment.gateway.send(app.event("parent"), {"key": key, "n": 21})
    run = await deployment.gateway.finished_run(event_id)
    assert run["status"] == "Completed", run
    assert run["output"] == {"child": {"doubled": 42}}
    child, event = await _child_run(client, app, key)
    assert child.status == run_pb2.RUN_STATUS_COMPLETED
    assert json.loads(child.output_json) == {"doubled": 42}
    assert event["name"] == "inngest/function.invoked"
    assert event["data"]["n"] == 21
    assert await app.calls(key) == {"child": 1}


async def test_a_failing_child_makes_the_invoke_step_raise_in_the_parent(
    deployment: Deployment, app: SdkApp, client: Client,
) -> None:
    key = uuid.uuid4().hex
    event_id = await deployment.gateway.send(app.event("parent"),
                                             {"key": key, "n": 7, "fail": True})
    run = await deployment.gateway.finished_run(event_id)
    assert run["status"] == "Completed", run
    # The parent caught the step's error and returned its message.
    assert run["output"] == {"error": "child refused 7"}
    child, _ = await _child_run(client, app, key)
    assert child.status == run_pb2.RUN_STATUS_FAILED
    assert (child.error.name, child.error.message) == ("NonRetriableError", "child refused 7")
    assert await app.calls(key) == {"child": 1}


# Send event as a step


async def test_an_event_sent_as_a_step_starts_its_function_once_across_replays(
    deployment: Deployment, app: SdkApp, client: Client,
) -> None:
    gateway = deployment.gateway
    key = uuid.uuid4().hex
    event_id = await gateway.send(app.event("announce"), {"key": key})
    run = await gateway.finished_run(event_id)
    assert run["status"] == "Completed", run
    assert run["output"]["flaky"] == 2  # the run was replayed after the step's failure
    (sent,) = run["output"]["sent"]
    heard = await gateway.finished_run(sent)
    assert heard["status"] == "Completed", heard
    assert heard["function_id"] == f"{app.app_id}-listener"
    assert heard["output"] == {"heard": 1}
    # An event sent after the run's end: once its run is done, any second copy of the sent
    # event (one per replay) would have started a run too.
    fence = await gateway.send(app.event("announced"), {"key": uuid.uuid4().hex})
    assert (await gateway.finished_run(fence))["status"] == "Completed"
    runs = await _runs_of_function(client, f"{app.app_id}-listener")
    assert sorted(r.event_id for r in runs) == sorted([sent, fence])
    assert await app.calls(key) == {"flaky": 2, "heard": 1}
