"""Bulk cancel, pause / resume and replay, through the ManagementService and the Inngest REST
API, on the embedded backend and on Redis + PostgreSQL."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from plait import App, Context, Step, TriggerCron, TriggerEvent
from plait_proto.v1 import management_pb2 as pb
from plait_proto.v1 import run_pb2
from redis.asyncio import Redis

from server.config import Settings
from server.keys import Keys
from server.runner.cron import Clock
from tests.e2e.conftest import Running, running_worker
from tests.e2e.harness import eventually, settings_for
from tests.e2e.test_cron import FUNCTION_ID, SPEC, FakeTime, _tick_events, serving
from tests.e2e.test_inngest_gateway import call as _call

RUNNING = run_pb2.RUN_STATUS_RUNNING
CANCELLED = run_pb2.RUN_STATUS_CANCELLED
COMPLETED = run_pb2.RUN_STATUS_COMPLETED


# Production mode's REST API needs the signing key.
KEY = "signkey-ops-" + "c0de" * 16


@pytest.fixture
def settings(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    if backend == "embedded":
        return settings_for(backend, tmp_path, signing_key=KEY)
    return settings_for(backend, tmp_path, request.getfixturevalue("redis_url"),
                        request.getfixturevalue("database_url"), signing_key=KEY)


async def call(plait: Running, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return await _call(plait, method, path, headers={"Authorization": f"Bearer {KEY}"},
                       **kwargs)


def _sleeper(counter: dict[str, int]) -> App:
    app = App("ops")

    @app.function("sleeper", trigger=TriggerEvent("ops/sleep"))
    async def sleeper(ctx: Context, step: Step) -> None:
        counter["reached"] += 1
        await step.sleep("nap", 3600)

    @app.function("other", trigger=TriggerEvent("ops/sleep"))
    async def other(ctx: Context, step: Step) -> None:
        await step.sleep("nap", 3600)

    return app


async def _runs(
    plait: Running, function_id: str,
    status: Any = run_pb2.RUN_STATUS_UNSPECIFIED,
) -> list[run_pb2.Run]:
    reply = await plait.client.management.ListRuns(
        pb.ListRunsRequest(function_id=function_id, status=status, page_size=1000))
    return list(reply.runs)


def _now_ms() -> int:
    return int(time.time() * 1000)


async def test_bulk_cancel_cancels_100_sleeping_runs_of_one_function(plait: Running) -> None:
    counter = {"reached": 0}
    async with running_worker(_sleeper(counter), plait.client):
        await plait.client.send_many("ops/sleep", [{"i": i} for i in range(100)])
        await eventually(lambda: _runs(plait, "ops-sleeper", RUNNING),
                         lambda rs: len(rs) == 100 and counter["reached"] >= 100, 60,
                         "100 sleeping runs")
        await eventually(lambda: _runs(plait, "ops-other", RUNNING), lambda rs: len(rs) == 100,
                         60, "the other function's runs")
        management = plait.client.management

        # A range that holds none of them cancels nothing.
        later = await management.CancelRuns(pb.CancelRunsRequest(
            function_id="ops-sleeper", created_after_ms=_now_ms() + 60_000,
            created_before_ms=_now_ms() + 120_000))
        assert later.cancelled_count == 0

        reply = await management.CancelRuns(pb.CancelRunsRequest(
            function_id="ops-sleeper", created_before_ms=_now_ms() + 1000))
        assert reply.cancelled_count == 100
        await eventually(lambda: _runs(plait, "ops-sleeper", CANCELLED),
                         lambda rs: len(rs) == 100, 30, "100 cancelled runs in history")
        # Another function's runs, triggered by the same events, are untouched.
        assert len(await _runs(plait, "ops-other", RUNNING)) == 100
        again = await management.CancelRuns(pb.CancelRunsRequest(
            function_id="ops-sleeper", created_before_ms=_now_ms() + 1000))
        assert again.cancelled_count == 0


def _rfc3339(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


async def test_the_inngest_bulk_cancellation_cancels_the_runs_its_expression_matches(
    plait: Running,
) -> None:
    counter = {"reached": 0}
    async with running_worker(_sleeper(counter), plait.client):
        await plait.client.send_many("ops/sleep", [{"i": i} for i in range(10)])
        await eventually(lambda: _runs(plait, "ops-sleeper", RUNNING),
                         lambda rs: len(rs) == 10, 30, "10 sleeping runs")
        reply = await call(plait, "POST", "/v1/cancellations", json={
            "app_id": "ops", "function_id": "ops-sleeper",
            "started_before": _rfc3339(_now_ms() + 1000), "if": "event.data.i < 4"})
        assert reply.status_code == 200, reply.text
        data = reply.json()["data"]
        assert data["cancelled_count"] == 4 and data["function_id"] == "ops-sleeper"
        await eventually(lambda: _runs(plait, "ops-sleeper", CANCELLED),
                         lambda rs: len(rs) == 4, 30, "4 cancelled runs")
        assert len(await _runs(plait, "ops-sleeper", RUNNING)) == 6


def _echo() -> App:
    app = App("ops")

    @app.function("echo", trigger=TriggerEvent("ops/echo"))
    async def echo(ctx: Context, step: Step) -> Any:
        return await step.run("copy", lambda: ctx.event.data)

    @app.function("marker", trigger=TriggerEvent("ops/marker"))
    async def marker(ctx: Context, step: Step) -> str:
        return "seen"

    return app


async def test_a_paused_function_starts_no_runs_and_skips_the_events_it_missed(
    plait: Running,
) -> None:
    management = plait.client.management
    async with running_worker(_echo(), plait.client):
        await management.PauseFunction(pb.PauseFunctionRequest(function_id="ops-echo"))
        got = await management.GetFunction(pb.GetFunctionRequest(function_id="ops-echo"))
        assert got.function.paused
        missed = await plait.client.send("ops/echo", {"n": 1})
        # The runner reads events in order: once the later marker has its run, the paused
        # function's event was read and skipped.
        marker = await plait.client.send("ops/marker")
        assert (await plait.client.finished_run_of(marker)).status == COMPLETED
        assert await plait.client.runs_of_event(missed) == []
        # The event itself is kept.
        event = await management.GetEvent(pb.GetEventRequest(event_id=missed))
        assert event.event.name == "ops/echo"

        await management.ResumeFunction(pb.ResumeFunctionRequest(function_id="ops-echo"))
        got = await management.GetFunction(pb.GetFunctionRequest(function_id="ops-echo"))
        assert not got.function.paused
        after = await plait.client.send("ops/echo", {"n": 2})
        run = await plait.client.finished_run_of(after)
        assert run.status == COMPLETED and json.loads(run.output_json) == {"n": 2}
        assert await plait.client.runs_of_event(missed) == []


async def test_replay_runs_a_finished_run_again_as_a_new_run_linked_to_it(
    plait: Running,
) -> None:
    management = plait.client.management
    async with running_worker(_echo(), plait.client):
        event_id = await plait.client.send("ops/echo", {"n": 7})
        first = await plait.client.finished_run_of(event_id)
        reply = await management.ReplayRun(pb.ReplayRunRequest(run_id=first.id))
        assert reply.original_run_id == first.id and reply.run_id != first.id
        replay = await eventually(lambda: plait.client.run_if_recorded(reply.run_id),
                                  lambda r: r is not None and r.status == COMPLETED, 20,
                                  "the replay")
    assert replay is not None
    assert replay.event_id == event_id and replay.function_id == "ops-echo"
    assert json.loads(replay.output_json) == {"n": 7}
    got = await management.GetRun(pb.GetRunRequest(run_id=reply.run_id))
    assert got.original_run_id == first.id
    rest = await call(plait, "GET", f"/v1/runs/{reply.run_id}")
    assert rest.json()["data"]["original_run_id"] == first.id


async def _grpc_error(call_: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call_
    return caught.value


@pytest.mark.parametrize(("rpc", "request_", "code", "text"), [
    ("CancelRuns", pb.CancelRunsRequest(created_before_ms=1), "INVALID_ARGUMENT", "function_id"),
    ("CancelRuns", pb.CancelRunsRequest(function_id="ops-x"), "INVALID_ARGUMENT",
     "created_before_ms"),
    ("CancelRuns", pb.CancelRunsRequest(function_id="ops-x", created_after_ms=-1,
                                        created_before_ms=1), "INVALID_ARGUMENT",
     "created_after_ms"),
    ("CancelRuns", pb.CancelRunsRequest(function_id="nope-x", created_before_ms=1),
     "NOT_FOUND", "nope-x"),
    ("PauseFunction", pb.PauseFunctionRequest(), "INVALID_ARGUMENT", "function_id"),
    ("PauseFunction", pb.PauseFunctionRequest(function_id="nope-x"), "NOT_FOUND", "nope-x"),
    ("ResumeFunction", pb.ResumeFunctionRequest(), "INVALID_ARGUMENT", "function_id"),
    ("ReplayRun", pb.ReplayRunRequest(run_id="x"), "INVALID_ARGUMENT", "run_id"),
    ("ReplayRun", pb.ReplayRunRequest(run_id="01JD0000000000000000000000"), "NOT_FOUND",
     "not found"),
])
async def test_bad_run_control_requests_are_refused_naming_the_field(
    plait: Running, rpc: str, request_: Any, code: str, text: str,
) -> None:
    error = await _grpc_error(getattr(plait.client.management, rpc)(request_))
    assert error.code() == getattr(grpc.StatusCode, code)
    assert text in (error.details() or "")


@pytest.mark.parametrize(("body", "text"), [
    (b"[1]", "body"),
    ({"function_id": "ops-x", "started_before": "2026-01-01T00:00:00Z"}, "app_id"),
    ({"app_id": "ops", "started_before": "2026-01-01T00:00:00Z"}, "function_id"),
    ({"app_id": "ops", "function_id": "ops-x"}, "started_before"),
    ({"app_id": "ops", "function_id": "ops-x", "started_before": "yesterday"},
     "started_before"),
    ({"app_id": "ops", "function_id": "ops-x", "started_before": "2026-01-01T00:00:00Z",
      "started_after": "2026-02-01T00:00:00Z"}, "started_before"),
    ({"app_id": "ops", "function_id": "ops-x", "started_before": "2026-01-01T00:00:00Z",
      "if": "event.data.("}, "if"),
    # PostgreSQL text cannot hold a NUL: refused at the edge, not a 500 from the database.
    ({"app_id": "ops", "function_id": "ops-x\u0000", "started_before": "2026-01-01T00:00:00Z"},
     "function_id"),
])
async def test_bad_bulk_cancellations_are_400_naming_the_field(
    plait: Running, body: Any, text: str,
) -> None:
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
    reply = await call(plait, "POST", "/v1/cancellations", **kwargs)
    assert reply.status_code == 400, reply.text
    assert text in reply.json()["error"]


async def test_replaying_a_run_that_has_not_finished_is_a_failed_precondition(
    plait: Running,
) -> None:
    counter = {"reached": 0}
    async with running_worker(_sleeper(counter), plait.client):
        await plait.client.send("ops/sleep")
        runs = await eventually(lambda: _runs(plait, "ops-sleeper", RUNNING),
                                lambda rs: len(rs) == 1, 20, "a sleeping run")
        error = await _grpc_error(
            plait.client.management.ReplayRun(pb.ReplayRunRequest(run_id=runs[0].id)))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "finished" in (error.details() or "")


async def test_a_paused_cron_function_lets_its_ticks_pass_and_runs_the_next_after_resume(
    settings: Settings,
) -> None:
    minute_ms = 60_000
    t0 = _now_ms() // minute_ms * minute_ms
    fake = FakeTime(t0 + 30_000)
    app = App("cron")

    @app.function("tick", trigger=TriggerCron(SPEC))
    async def tick(ctx: Context, step: Step) -> str:
        return "ticked"

    async with serving(settings, Clock(now_ms=fake.now_ms, max_sleep_s=0.02)) as plait:
        redis = Redis.from_url(plait.endpoints.redis_url)
        last_key = Keys().cron_last(FUNCTION_ID, SPEC)
        management = plait.client.management
        try:
            async with running_worker(app, plait.client):
                await eventually(lambda: redis.get(last_key), lambda v: v is not None,
                                 what="the scheduler to see the function")
                await management.PauseFunction(pb.PauseFunctionRequest(function_id=FUNCTION_ID))
                fake.ms = t0 + minute_ms + 1_000
                await eventually(lambda: redis.get(last_key),
                                 lambda v: v is not None and int(v) == t0 + minute_ms,
                                 what="tick 1 to pass")
                assert await _runs(plait, FUNCTION_ID) == []

                await management.ResumeFunction(
                    pb.ResumeFunctionRequest(function_id=FUNCTION_ID))
                fake.ms = t0 + 2 * minute_ms + 1_000
                runs = await eventually(lambda: _runs(plait, FUNCTION_ID),
                                        lambda rs: len(rs) == 1, what="the run of tick 2")
                assert {r.event_id for r in runs} == _tick_events(t0, [2])
        finally:
            await redis.aclose()
