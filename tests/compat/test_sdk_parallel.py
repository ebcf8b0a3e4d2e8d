"""Parallel groups holding waits and sleeps on apps of the official Inngest SDKs (PyPI
`inngest`, npm `inngest`): `Promise.all` / `ctx.group.parallel` of two waits, a race of an
event against a sleep (`parallelMode: "race"`: the TS SDK's `group.parallel`, the py SDK's
`ParallelMode.RACE`), and a sleep beside a step.run; in dev mode and in production mode, like
tests/compat/test_sdk_apps.py. The apps' functions are `pair`, `racer` and `napgroup`."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from plait_proto.v1 import run_pb2

from tests.compat.apps import SDKS, SdkApp, require_node
from tests.compat.conftest import Deployment
from tests.e2e.harness import Client, eventually

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(params=SDKS)
def app(request: pytest.FixtureRequest, deployment: Deployment) -> SdkApp:
    if request.param == "ts":
        require_node()
    return deployment.apps[str(request.param)]


@pytest_asyncio.fixture(loop_scope="module")
async def client(deployment: Deployment) -> AsyncIterator[Client]:
    grpc_client = Client(deployment.server.endpoints.grpc_port)  # type: ignore[union-attr]
    try:
        yield grpc_client
    finally:
        await grpc_client.close()


async def _recorded(deployment: Deployment, client: Client, event_id: str,
                    *names: str) -> None:
    """Waits for the run of `event_id` to record steps `names` (a wait's record is written
    by the script that registers the wait)."""
    (run,) = await eventually(lambda: deployment.gateway.runs_of(event_id), len,
                              what="the run")

    def has(r: run_pb2.Run) -> bool:
        return {s.name for s in r.steps} >= set(names)

    await eventually(lambda: client.run(run["run_id"]), has, what=f"steps {names}")


async def test_a_run_waits_for_two_events_at_once_and_goes_on_with_both(
    deployment: Deployment, app: SdkApp, client: Client,
) -> None:
    key = uuid.uuid4().hex
    event_id = await deployment.gateway.send(app.event("pair"), {"key": key})
    await _recorded(deployment, client, event_id, "left", "right")
    await deployment.gateway.send(app.event("right"), {"key": key, "side": "r"})
    await deployment.gateway.send(app.event("left"), {"key": "another", "side": "x"})
    await deployment.gateway.send(app.event("left"), {"key": key, "side": "l"})
    done = await deployment.gateway.finished_run(event_id)
    assert done["status"] == "Completed", done
    assert done["output"] == {"left": {"key": key, "side": "l"},
                              "right": {"key": key, "side": "r"}, "after": 1}


async def test_an_event_wins_a_race_against_a_long_sleep(
    deployment: Deployment, app: SdkApp, client: Client,
) -> None:
    key = uuid.uuid4().hex
    # The sleep is an hour: only a race that resumes at the first to end lets the run finish.
    event_id = await deployment.gateway.send(app.event("racer"), {"key": key, "nap_s": 3600})
    await _recorded(deployment, client, event_id, "go", "nap")
    await deployment.gateway.send(app.event("go"), {"key": key, "n": 1})
    done = await deployment.gateway.finished_run(event_id)
    assert done["status"] == "Completed", done
    output: dict[str, Any] = done["output"]
    assert output == {"winner": "event", "event": {"key": key, "n": 1}, "after": 1}


async def test_a_short_sleep_wins_a_race_against_an_event_that_never_comes(
    deployment: Deployment, app: SdkApp,
) -> None:
    event_id = await deployment.gateway.send(app.event("racer"),
                                             {"key": uuid.uuid4().hex, "nap_s": 1})
    done = await deployment.gateway.finished_run(event_id)
    assert done["status"] == "Completed", done
    assert done["output"] == {"winner": "sleep", "event": None, "after": 1}


async def test_a_sleep_and_a_step_run_in_one_group(deployment: Deployment, app: SdkApp) -> None:
    key = uuid.uuid4().hex
    event_id = await deployment.gateway.send(app.event("napgroup"), {"key": key})
    done = await deployment.gateway.finished_run(event_id)
    assert done["status"] == "Completed", done
    assert done["output"] == {"work": "worked", "calls": {"work": 1}}
    assert await app.calls(key) == {"work": 1}


async def test_two_invokes_a_send_and_a_step_run_in_one_group(
    deployment: Deployment, app: SdkApp,
) -> None:
    key = uuid.uuid4().hex
    event_id = await deployment.gateway.send(app.event("fanout"), {"key": key})
    done = await deployment.gateway.finished_run(event_id)
    assert done["status"] == "Completed", (done.get("error"), done.get("output"))
    assert done["output"] == {"children": [{"doubled": 2}, {"doubled": 4}], "sent": 1,
                              "work": "worked"}
    # Each child ran once, the step once, and the sent event started its listener once.
    await eventually(lambda: app.calls(key), lambda c: c.get("heard") == 1, what="the listener")
    assert await app.calls(key) == {"child": 2, "work": 1, "heard": 1}
