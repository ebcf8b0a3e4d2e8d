"""Apps on the official Inngest SDKs (PyPI `inngest`, npm `inngest`) run against Plait unchanged,
in dev mode and in production mode with signing and event keys."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import uuid
from typing import Any

import pytest
from plait_proto.v1 import run_pb2

from server.api.inngest import AppSync
from tests.compat.apps import SDKS, SdkApp, require_node, sdk_env, start_app, stop_all
from tests.compat.conftest import EVENT_KEY, STALE_KEY, Deployment
from tests.e2e.harness import ROOT, Client, eventually, free_port

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(params=SDKS)
def app(request: pytest.FixtureRequest, deployment: Deployment) -> SdkApp:
    if request.param == "ts":
        require_node()
    return deployment.apps[str(request.param)]


async def _run(deployment: Deployment, app: SdkApp, function: str) -> tuple[str, dict[str, Any]]:
    """Sends the event of one of the app's functions; returns its key and its finished run."""
    key = uuid.uuid4().hex
    event_id = await deployment.gateway.send(app.event(function), {"key": key})
    run = await deployment.gateway.finished_run(event_id)
    assert run["function_id"] == f"{app.app_id}-{function.replace('sleep', 'napper')}"
    assert run["event_id"] == event_id
    return key, run


async def test_three_sequential_steps_run_each_body_once(
    deployment: Deployment, app: SdkApp,
) -> None:
    key, run = await _run(deployment, app, "sequential")
    assert run["status"] == "Completed", run
    assert run["output"] == {"steps": [1, 2, 3], "calls": {"a": 1, "b": 1, "c": 1}}
    assert await app.calls(key) == {"a": 1, "b": 1, "c": 1}


async def test_a_step_that_fails_twice_then_succeeds(deployment: Deployment, app: SdkApp) -> None:
    key, run = await _run(deployment, app, "flaky")
    assert run["status"] == "Completed", run
    assert run["output"] == {"succeeded_on": 3}
    assert await app.calls(key) == {"flaky": 3}
    # Each attempt is in the run's history, the failed ones with the SDK's error.
    client = Client(deployment.server.endpoints.grpc_port)  # type: ignore[union-attr]
    try:
        steps = (await eventually(lambda: client.run(run["run_id"]),
                                  lambda r: len(r.steps) == 3, what="three attempts")).steps
    finally:
        await client.close()
    assert [(s.name, s.attempt, s.status) for s in steps] == [
        ("flaky", 0, run_pb2.STEP_STATUS_FAILED), ("flaky", 1, run_pb2.STEP_STATUS_FAILED),
        ("flaky", 2, run_pb2.STEP_STATUS_COMPLETED)]
    assert steps[0].error.message == "attempt 1 fails" and steps[0].error.name in (
        "ValueError", "Error")
    assert steps[1].error.stack and json.loads(steps[2].output_json) == 3


async def test_a_non_retriable_failure_fails_the_run_without_retry(
    deployment: Deployment, app: SdkApp,
) -> None:
    key, run = await _run(deployment, app, "doomed")
    assert run["status"] == "Failed", run
    assert run["output"]["name"] == "NonRetriableError"
    assert run["output"]["message"] == "gave up on call 1"
    assert run["output"]["stack"]
    assert await app.calls(key) == {"doomed": 1}


async def test_on_failure_runs_once_after_retries_are_exhausted(
    deployment: Deployment, app: SdkApp,
) -> None:
    key = uuid.uuid4().hex
    event_id = await deployment.gateway.send(app.event("mourned"), {"key": key})
    run = await deployment.gateway.finished_run(event_id)
    assert run["status"] == "Failed", run
    calls = await eventually(lambda: app.calls(key), lambda c: "mourned" in c,
                             30, "the failure handler")
    assert calls == {"attempt": 2, "mourned": 1, "error=failed call 2": 1}


async def test_a_two_second_sleep_in_each_sdk(deployment: Deployment) -> None:
    # Both apps at once: the sleeps are the slow part of the suite.
    apps = list(deployment.apps.values())
    finished = await asyncio.gather(*(_run(deployment, app, "sleep") for app in apps))
    for app, (key, run) in zip(apps, finished, strict=True):
        assert run["status"] == "Completed", run
        # The step after the sleep ran no earlier than the sleep's end.
        assert run["output"]["slept_s"] >= 2.0
        assert run["output"]["calls"] == {"before": 1, "after": 1}
        assert await app.calls(key) == {"before": 1, "after": 1}


async def test_two_steps_run_in_parallel(deployment: Deployment, app: SdkApp) -> None:
    key, run = await _run(deployment, app, "parallel")
    assert run["status"] == "Completed", run
    assert run["output"]["joined"] == "LEFT+RIGHT"
    left, right = run["output"]["sides"]
    assert left["start"] < right["end"] and right["start"] < left["end"], "they did not overlap"
    assert await app.calls(key) == {"left": 1, "right": 1, "join": 1}


async def test_events_sent_with_the_sdk_client_start_runs_read_back_by_event_id(
    deployment: Deployment, app: SdkApp,
) -> None:
    key = uuid.uuid4().hex
    sent = await app.send(app.event("sequential"), {"key": key})
    assert sent.status_code == 200, sent.text
    (event_id,) = sent.json()["ids"]
    run = await deployment.gateway.finished_run(event_id)
    assert run["status"] == "Completed"
    assert run["output"]["steps"] == [1, 2, 3]
    runs = await deployment.gateway.runs_of(event_id)
    assert [r["run_id"] for r in runs] == [run["run_id"]]


async def test_discovery_finds_apps_on_local_ports(deployment: Deployment) -> None:
    if deployment.mode != "dev":
        pytest.skip("discovery is a dev-mode feature")
    apps = list(deployment.apps.values())
    syncer = AppSync(deployment.server.settings, ports=[*(a.port for a in apps), free_port()])
    found = await syncer.discover()
    assert sorted(found) == sorted(a.url for a in apps)


async def _wrong_key_apps(deployment: Deployment, sdk: str) -> tuple[SdkApp, SdkApp]:
    """An app whose key Plait does not know at all, and one holding only Plait's fallback."""
    port = deployment.gateway.http_port
    rogue = {**sdk_env(port, "signkey-test-" + "bad0" * 16, "not-" + EVENT_KEY),
             "COMPAT_APP_ID": f"rogue-{sdk}"}
    stale = {**sdk_env(port, STALE_KEY, EVENT_KEY), "COMPAT_APP_ID": f"stale-{sdk}"}
    return (await start_app(sdk, rogue, deployment.log_dir),
            await start_app(sdk, stale, deployment.log_dir))


async def test_with_a_wrong_signing_key_calls_are_refused_and_nothing_runs(
    deployment: Deployment,
) -> None:
    if deployment.mode != "production":
        pytest.skip("keys are checked in production mode")
    await asyncio.gather(*(_refused(deployment, app) for app in deployment.apps.values()))


async def _refused(deployment: Deployment, app: SdkApp) -> None:
    gateway = deployment.gateway
    rogue, stale = await _wrong_key_apps(deployment, app.sdk)
    try:
        # The rogue app cannot register, and its own events are refused.
        refused = await gateway.sync(rogue.url)
        assert refused.status_code == 502 and "authorization" in refused.json()["error"]
        sent = await rogue.send(rogue.event("sequential"), {"key": "x"})
        assert sent.status_code == 502
        # The stale app registers with Plait's fallback key, but refuses Plait's requests,
        # signed with the current key: its run fails and no step body ever runs.
        synced = await gateway.sync(stale.url)
        assert synced.status_code == 200, synced.text
        key = uuid.uuid4().hex
        event_id = await gateway.send(stale.event("sequential"), {"key": key})
        run = await gateway.finished_run(event_id)
        assert run["status"] == "Failed" and "Unauthorized" in run["output"]["message"]
        assert await stale.calls(key) == {}
        # Nothing of the rogue app exists: an event for it starts no run (the good app's
        # run of a later event shows the runner got past it).
        rogue_event = await gateway.send(rogue.event("sequential"), {"key": key})
        await _run(deployment, app, "sequential")
        assert await gateway.runs_of(rogue_event) == []
        assert await rogue.calls(key) == {}
        assert not any(f.startswith("rogue-") for f in await gateway.functions())
    finally:
        await stop_all([rogue, stale])


async def test_runs_are_readable_and_cancellable_through_the_rest_api(
    deployment: Deployment, app: SdkApp,
) -> None:
    gateway = deployment.gateway
    event_id = await gateway.send(app.event("sleep"), {"key": uuid.uuid4().hex})
    (run,) = await eventually(lambda: gateway.runs_of(event_id),
                              lambda rs: len(rs) == 1 and rs[0]["status"] == "Running",
                              what="the sleeping run")
    cancelled = await gateway.request("DELETE", f"/v1/runs/{run['run_id']}")
    assert cancelled.status_code == 200 and cancelled.content == b""
    done = await gateway.finished_run(event_id)
    assert done["status"] == "Cancelled" and done["ended_at"]
    again = await gateway.request("DELETE", f"/v1/runs/{run['run_id']}")
    assert again.status_code == 200  # cancelling is idempotent
    _, completed = await _run(deployment, app, "sequential")
    late = await gateway.request("DELETE", f"/v1/runs/{completed['run_id']}")
    assert late.status_code == 400 and "completed" in late.json()["error"]


def _readme_example() -> str:
    section = (ROOT / "README.md").read_text().split("## Apps on the Inngest SDKs", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, "the README lost its Inngest SDK example"
    return match.group(1)


async def test_the_readme_inngest_example_runs_as_written(deployment: Deployment) -> None:
    if deployment.mode != "dev":
        pytest.skip("the example runs in dev mode")
    folder = deployment.log_dir / "readme"
    folder.mkdir(exist_ok=True)
    (folder / "app.py").write_text(_readme_example())
    env = sdk_env(deployment.gateway.http_port)
    command = [sys.executable, "-m", "uvicorn", "app:app", "--host", "127.0.0.1", "--port"]
    app = await start_app("py", {**env, "COMPAT_APP_ID": "shop"}, folder, (command, folder))
    try:
        synced = await deployment.gateway.sync(app.url)
        assert synced.status_code == 200 and synced.json()["app_id"] == "shop", synced.text
        event_id = await deployment.gateway.send("order/created", {"sku": "A1"})
        run = await deployment.gateway.finished_run(event_id)
        assert run["status"] == "Completed" and run["output"] == {"status": "shipped A1"}
    finally:
        await stop_all([app])


async def test_a_wait_for_event_is_resumed_by_a_later_matching_event(
    deployment: Deployment, app: SdkApp,
) -> None:
    key = uuid.uuid4().hex
    event_id = await deployment.gateway.send(app.event("waiter"), {"key": key, "timeout_s": 60})
    (run,) = await eventually(lambda: deployment.gateway.runs_of(event_id), lambda rs: len(rs) > 0,
                              what="the run")
    client = Client(deployment.server.endpoints.grpc_port)  # type: ignore[union-attr]
    try:
        # The wait's step record is written by the script that registers the wait.
        await eventually(lambda: client.run(run["run_id"]),
                         lambda r: any(s.name == "paid" for s in r.steps), what="the wait")
    finally:
        await client.close()
    await deployment.gateway.send(app.event("paid"), {"key": "another"})
    await deployment.gateway.send(app.event("paid"), {"key": key, "amount": 3})
    done = await deployment.gateway.finished_run(event_id)
    assert done["status"] == "Completed", done
    assert done["output"] == {
        "paid": {"name": app.event("paid"), "data": {"key": key, "amount": 3}}}


async def test_a_wait_for_event_times_out_to_null(deployment: Deployment, app: SdkApp) -> None:
    event_id = await deployment.gateway.send(
        app.event("waiter"), {"key": uuid.uuid4().hex, "timeout_s": 1})
    done = await deployment.gateway.finished_run(event_id)
    assert done["status"] == "Completed", done
    assert done["output"] == {"paid": None}


async def test_a_run_past_its_finish_timeout_fails(deployment: Deployment, app: SdkApp) -> None:
    event_id = await deployment.gateway.send(app.event("laggard"), {"key": uuid.uuid4().hex})
    done = await deployment.gateway.finished_run(event_id)
    assert done["status"] == "Failed", done
    assert done["output"]["name"] == "FinishTimeoutError"
    assert "finish timeout" in done["output"]["message"]
