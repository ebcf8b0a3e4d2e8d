"""On-failure handlers and internal events, on the embedded backend and on Redis + PostgreSQL."""

from __future__ import annotations

from typing import Any

from plait import App, Context, Step, TriggerEvent
from plait_proto.v1 import run_pb2

from tests.e2e.conftest import Running, running_worker
from tests.e2e.harness import eventually

COMPLETED = run_pb2.RUN_STATUS_COMPLETED
FAILED = run_pb2.RUN_STATUS_FAILED


async def test_on_failure_runs_once_with_the_event_and_error_after_retries_are_exhausted(
    plait: Running,
) -> None:
    app = App("fail")
    attempts: list[int] = []
    handled: list[tuple[str, dict[str, Any]]] = []

    async def on_failure(ctx: Context, step: Step) -> str:
        handled.append((ctx.run_id, dict(ctx.event.data)))
        return "handled"

    @app.function("always", trigger=TriggerEvent("fail/start"), retries=1,
                  on_failure=on_failure)
    async def always(ctx: Context, step: Step) -> None:
        attempts.append(ctx.attempt)
        raise RuntimeError(f"broken on attempt {ctx.attempt}")

    async with running_worker(app, plait.client):
        event_id = await plait.client.send("fail/start", {"order": 7})
        run = await plait.client.finished_run_of(event_id)
        assert run.status == FAILED
        await eventually(lambda: _len(handled), lambda n: n >= 1, what="the failure handler")
        handler_run = await eventually(
            lambda: plait.client.run_if_recorded(handled[0][0]),
            lambda r: r is not None and r.status == COMPLETED,
            what="the failure handler's run")

    assert attempts == [0, 1]
    assert len(handled) == 1
    data = handled[0][1]
    assert data["function_id"] == "fail-always"
    assert data["run_id"] == run.id
    assert data["event"]["id"] == event_id
    assert data["event"]["name"] == "fail/start"
    assert data["event"]["data"] == {"order": 7}
    assert data["error"]["name"] == "RuntimeError"
    assert "broken on attempt 1" in data["error"]["message"]
    assert handler_run is not None and handler_run.function_id == "fail-always-failure"


async def test_function_finished_carries_the_output_and_triggers_another_function(
    plait: Running,
) -> None:
    app = App("fin")
    seen: list[dict[str, Any]] = []

    @app.function("work", trigger=TriggerEvent("fin/start"))
    async def work(ctx: Context, step: Step) -> dict[str, int]:
        return {"total": ctx.event.data["a"] + 1}

    @app.function("after", trigger=TriggerEvent(
        "inngest/function.finished", "event.data.function_id == 'fin-work'"))
    async def after(ctx: Context, step: Step) -> None:
        seen.append(dict(ctx.event.data))

    async with running_worker(app, plait.client):
        event_id = await plait.client.send("fin/start", {"a": 41})
        run = await plait.client.finished_run_of(event_id)
        await eventually(lambda: _len(seen), lambda n: n >= 1, what="the finished handler")

    assert run.status == COMPLETED
    assert seen[0]["run_id"] == run.id
    assert seen[0]["function_id"] == "fin-work"
    assert seen[0]["result"] == {"total": 42}
    assert seen[0]["event"]["data"] == {"a": 41}
    assert "error" not in seen[0]


async def _len(items: list[Any]) -> int:
    return len(items)
