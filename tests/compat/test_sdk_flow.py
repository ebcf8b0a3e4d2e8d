"""Flow control (issue 12) on apps of the official Inngest SDKs (PyPI `inngest`, npm
`inngest`), configured as their users write it (tests/compat/py_flow_app.py,
tests/compat/ts/flow_app.ts), in dev mode and in production mode like test_sdk_apps.py; each
control asserted from the intervals the step bodies record themselves."""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from plait_proto.v1 import run_pb2

from tests.compat.apps import HERE, TS_DIR, SdkApp, require_node, sdk_env, start_app, stop_all
from tests.compat.conftest import EVENT_KEY, Deployment
from tests.e2e.flow_support import (
    Interval,
    by_key,
    max_overlap,
    max_overlap_by_key,
    read_lines,
    steady_rate_per_s,
)
from tests.e2e.harness import Client, eventually

pytestmark = pytest.mark.asyncio(loop_scope="module")

SDKS = ["py", "ts"]
ENDED = ("Completed", "Failed", "Cancelled", "Skipped")
FUNCTIONS = 10
# Starts per second of each app's `throttled` (the Python SDK's periods are whole seconds).
THROTTLE_PER_S = {"py": 2.0, "ts": 4.0}


class FlowApp:
    """One flow app: its process, the folder its bodies record into, and its events."""

    def __init__(self, app: SdkApp, record: Path, deployment: Deployment, client: Client
                 ) -> None:
        self.app = app
        self.record = record
        self.gateway = deployment.gateway
        self.client = client  # gRPC management: a run's steps, which REST does not show

    @property
    def sdk(self) -> str:
        return self.app.sdk

    def intervals(self, function: str) -> list[Interval]:
        return read_lines(self.record / f"{function}.jsonl")

    async def count(self, function: str) -> int:
        return len(self.intervals(function))

    async def send(self, function: str, data: dict[str, Any]) -> str:
        return await self.gateway.send(self.app.event(function), data)

    async def send_many(self, function: str, datas: list[dict[str, Any]]) -> list[str]:
        return await self.gateway.send_many(self.app.event(function), datas)

    async def release(self, key: str) -> None:
        await self.app.release(key)

    async def runs(self, event_id: str) -> list[dict[str, Any]]:
        return await self.gateway.runs_of(event_id)

    async def ended(self, event_ids: list[str], timeout_s: float = 30
                    ) -> dict[str, list[dict[str, Any]]]:
        async def probe() -> dict[str, list[dict[str, Any]]]:
            return {e: await self.runs(e) for e in event_ids}

        return await eventually(
            probe, lambda got: all(rs and all(r["status"] in ENDED for r in rs)
                                   for rs in got.values()),
            timeout_s, f"the runs of {len(event_ids)} events to end")

    async def run(self, run_id: str) -> dict[str, Any]:
        reply = await self.gateway.request("GET", f"/v1/runs/{run_id}")
        assert reply.status_code == 200, reply.text
        return dict(reply.json()["data"])


async def _start(sdk: str, deployment: Deployment, client: Client) -> FlowApp:
    record = deployment.log_dir / f"flow-{sdk}"
    record.mkdir(exist_ok=True)
    env = {**sdk_env(deployment.gateway.http_port, deployment.signing_key, EVENT_KEY),
           "FLOW_RECORD": str(record)}
    if sdk == "py":
        command = ([sys.executable, str(HERE / "py_flow_app.py")], HERE.parents[1])
    else:
        command = ([require_node(), "--import", "./register.mjs", "flow_app.ts"], TS_DIR)
    app = await start_app(sdk, {**env, "COMPAT_APP_ID": f"compat-flow-{sdk}"},
                          deployment.log_dir, command)
    synced = await deployment.gateway.sync(app.url)
    assert synced.status_code == 200, synced.text
    await deployment.gateway.wait_registered(app.app_id, FUNCTIONS)
    return FlowApp(app, record, deployment, client)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def flow_apps(deployment: Deployment) -> AsyncIterator[dict[str, FlowApp]]:
    apps: dict[str, FlowApp] = {}
    client = Client(deployment.server.endpoints.grpc_port)  # type: ignore[union-attr]
    try:
        for sdk in SDKS:
            if sdk == "ts":
                try:
                    require_node()
                except pytest.skip.Exception:
                    continue
            apps[sdk] = await _start(sdk, deployment, client)
        yield apps
    finally:
        await stop_all([a.app for a in apps.values()])
        await client.close()


@pytest.fixture(params=SDKS)
def flow(request: pytest.FixtureRequest, flow_apps: dict[str, FlowApp]) -> FlowApp:
    if request.param not in flow_apps:
        require_node()  # skips, or fails naming the missing npm packages
    return flow_apps[str(request.param)]


def _key() -> str:
    return uuid.uuid4().hex[:12]


async def test_a_key_limit_and_a_function_limit_both_hold_and_both_are_reached(
    flow: FlowApp,
) -> None:
    users = [f"{_key()}-{u}" for u in ("ann", "bob", "cy")]
    # Each user's events together: runs lease in arrival order, so the first user's first two
    # fill her key's limit and the next user's first fills the function's.
    ids = await flow.send_many("conc", [{"user": u} for u in users for _ in range(4)])
    got_runs = await flow.ended(ids, 60)
    assert [r["status"] for e in ids for r in got_runs[e]] == ["Completed"] * 12
    got = [i for i in flow.intervals("conc") if i.key in users]
    assert len(got) == 12
    assert max_overlap(got) == 3, got
    per_user = max_overlap_by_key(got)
    assert max(per_user.values()) == 2 and set(per_user) == set(users), per_user


async def test_throttle_starts_runs_at_its_rate_and_drops_none(flow: FlowApp) -> None:
    ids = await flow.send_many("throttled", [{"n": n} for n in range(8)])
    got_runs = await flow.ended(ids, 60)
    assert [r["status"] for e in ids for r in got_runs[e]] == ["Completed"] * 8
    run_ids = {r["run_id"] for e in ids for r in got_runs[e]}
    starts = [i.start for i in flow.intervals("throttled") if i.run_id in run_ids]
    assert len(starts) == 8
    rate, wanted = steady_rate_per_s(starts), THROTTLE_PER_S[flow.sdk]
    assert abs(rate - wanted) <= 0.1 * wanted, rate


async def _one_by_one(flow: FlowApp, function: str, datas: list[dict[str, Any]]
                      ) -> list[dict[str, Any]]:
    ids = []
    for data in datas:  # in order: the first of a key runs, the later ones are skipped
        ids.append(await flow.send(function, data))
    got = await flow.ended(ids)
    assert all(len(got[e]) == 1 for e in ids), got
    return [got[e][0] for e in ids]


def _ran(flow: FlowApp, function: str, key: str) -> set[str]:
    return {i.run_id for i in flow.intervals(function) if i.key == key}


async def test_rate_limited_events_are_skipped_runs_and_run_nothing(flow: FlowApp) -> None:
    a, b = _key(), _key()
    a1, a2, b1, a3 = await _one_by_one(flow, "limited", [{"k": a}, {"k": a}, {"k": b}, {"k": a}])
    assert [r["status"] for r in (a1, a2, b1, a3)] == ["Completed", "Skipped", "Completed",
                                                         "Skipped"]
    assert _ran(flow, "limited", a) == {a1["run_id"]} and _ran(flow, "limited", b) == {
        b1["run_id"]}


async def test_idempotent_duplicates_are_skipped_runs_and_run_nothing(flow: FlowApp) -> None:
    order, other = _key(), _key()
    first, dup, second = await _one_by_one(flow, "idem", [{"order": order}, {"order": order},
                                                          {"order": other}])
    assert [r["status"] for r in (first, dup, second)] == ["Completed", "Skipped", "Completed"]
    assert _ran(flow, "idem", order) == {first["run_id"]}


async def test_debounce_runs_once_per_key_with_the_last_event(flow: FlowApp) -> None:
    a, b = _key(), _key()
    ids = []
    for data in ({"k": a, "n": 1}, {"k": b, "n": 9}, {"k": a, "n": 2}, {"k": a, "n": 3}):
        ids.append(await flow.send("debounced", data))
    got = await eventually(lambda: _keys_of(flow, "debounced", {a, b}),
                           lambda g: len(g) == 2, 30, "both debounced runs")
    assert {k: [i.data for i in v] for k, v in got.items()} == {
        a: [{"n": 3, "event_id": ids[3]}], b: [{"n": 9, "event_id": ids[1]}]}
    # The REST API finds the run by the event it ran with.
    (ran,) = got[a]
    await eventually(lambda: flow.runs(ids[3]),
                     lambda rs: [r["run_id"] for r in rs] == [ran.run_id], 30, "the run")


async def _keys_of(flow: FlowApp, function: str, keys: set[str]) -> dict[str, list[Interval]]:
    return {k: v for k, v in by_key(flow.intervals(function)).items() if k in keys}


async def test_batches_are_of_the_configured_size_and_a_partial_one_runs_at_its_timeout(
    flow: FlowApp,
) -> None:
    ids = await flow.send_many("batched", [{"n": n} for n in range(7)])

    async def ours() -> list[list[str]]:
        return [i.data for i in flow.intervals("batched") if set(i.data) & set(ids)]

    batches = await eventually(ours, lambda b: sum(map(len, b)) >= 7, 30, "three batches")
    assert sorted(len(b) for b in batches) == [1, 3, 3], batches
    assert sorted(e for b in batches for e in b) == sorted(ids)


async def test_priority_orders_the_runs_waiting_for_the_one_slot(flow: FlowApp) -> None:
    key = "ranked"  # the app's `ranked` holds its blocked body on this key
    before = len(flow.intervals("ranked"))
    blocker = await flow.send("ranked", {"prio": 0, "block": True})
    (run,) = await eventually(lambda: flow.runs(blocker), len, 30, "the blocker's run")
    await eventually(lambda: flow.run(run["run_id"]), lambda r: r["status"] == "Running", 30,
                     "the blocker to start")
    queued = await flow.send_many("ranked", [{"prio": p} for p in (0, 120, -120, 60, -60)])
    await eventually(lambda: _all_have_runs(flow, queued), bool, 30, "the queued runs")
    await flow.release(key)
    await flow.ended([blocker, *queued], 60)
    order = [i.data for i in sorted(flow.intervals("ranked")[before:], key=lambda i: i.start)]
    assert order == [0, 120, 60, 0, -60, -120]


async def _all_have_runs(flow: FlowApp, event_ids: list[str]) -> bool:
    return all([await flow.runs(e) for e in event_ids])


async def test_singleton_skip_starts_nothing_while_a_run_of_the_key_is_active(
    flow: FlowApp,
) -> None:
    a, b = _key(), _key()
    first = await flow.send("only", {"k": a, "block": True})
    (run,) = await eventually(lambda: flow.runs(first), len, 30, "the first run")
    await eventually(lambda: flow.run(run["run_id"]), lambda r: r["status"] == "Running", 30,
                     "it to start")
    dup, other = await _one_by_one(flow, "only", [{"k": a}, {"k": b}])
    await flow.release(a)
    (done,) = (await flow.ended([first]))[first]
    assert (dup["status"], other["status"], done["status"]) == ("Skipped", "Completed",
                                                                "Completed")
    (later,) = await _one_by_one(flow, "only", [{"k": a}])  # the first one has ended
    assert later["status"] == "Completed"
    assert _ran(flow, "only", a) == {run["run_id"], later["run_id"]}


async def test_singleton_cancel_cancels_the_active_run_and_starts_the_new_one(
    flow: FlowApp,
) -> None:
    key = _key()
    first = await flow.send("latest", {"k": key, "nap_s": 60})
    (old,) = await eventually(lambda: flow.runs(first), len, 30, "the first run")
    await eventually(lambda: flow.client.run_if_recorded(old["run_id"]), _asleep, 30,
                     "its nap")
    second = await flow.send("latest", {"k": key, "nap_s": 1})
    got = await flow.ended([first, second], 60)
    assert (got[first][0]["status"], got[second][0]["status"]) == ("Cancelled", "Completed")
    new = got[second][0]["run_id"]
    steps = {(i.run_id, i.key) for i in flow.intervals("latest") if i.run_id in {
        old["run_id"], new}}
    assert steps == {(old["run_id"], "before"), (new, "before"), (new, "after")}


def _asleep(run: run_pb2.Run | None) -> bool:
    return run is not None and any(
        s.name == "nap" and s.status == run_pb2.STEP_STATUS_SLEEPING for s in run.steps)


async def test_a_queued_run_says_which_concurrency_key_holds_it(flow: FlowApp) -> None:
    key = _key()
    first = await flow.send("held", {"k": key, "block": True})
    (running,) = await eventually(lambda: flow.runs(first), len, 30, "the first run")
    await eventually(lambda: flow.run(running["run_id"]), lambda r: r["status"] == "Running",
                     30, "it to start")
    second = await flow.send("held", {"k": key})
    (queued,) = await eventually(lambda: flow.runs(second), len, 30, "the second run")
    waiting = await eventually(lambda: flow.run(queued["run_id"]),
                               lambda r: bool(r.get("waiting_reason")), 30, "a waiting reason")
    await flow.release(key)
    (done,) = (await flow.ended([second]))[second]
    assert waiting["waiting_reason"] == f'concurrency limit on key "{key}"'
    assert done["status"] == "Completed" and done["waiting_reason"] is None
