"""Bounded run state with the Python SDK worker, on the embedded backend and on Redis +
PostgreSQL: memoised outputs too large for one message reach the worker through
StateService.GetSteps, a run over max_run_state_bytes fails naming the limit, and the
`inngest/function.finished` event of an invoke with large data still resumes its caller."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import grpc
import plait._worker
import pytest
from plait import App, Context, Step, TriggerEvent, Worker
from plait._stream import Stream
from plait_proto.v1 import management_pb2, management_pb2_grpc, run_pb2

from server.config import Settings
from tests.e2e.conftest import Running, running_server, running_worker
from tests.e2e.harness import eventually

COMPLETED = run_pb2.RUN_STATUS_COMPLETED
FAILED = run_pb2.RUN_STATUS_FAILED
TERMINAL = (COMPLETED, FAILED, run_pb2.RUN_STATUS_CANCELLED)
MIB = 1024 * 1024


@pytest.fixture
async def management(plait: Running) -> AsyncIterator[management_pb2_grpc.ManagementServiceStub]:
    """A management client that accepts runs whose steps hold several MiB."""
    channel = grpc.aio.insecure_channel(
        plait.client.target, options=[("grpc.max_receive_message_length", 64 * MIB)])
    yield management_pb2_grpc.ManagementServiceStub(channel)
    await channel.close()


async def _finished(plait: Running, event_id: str, timeout_s: float = 60) -> run_pb2.Run:
    """The event's one run once it ended, without its steps."""
    runs = await eventually(
        lambda: plait.client.runs_of_event(event_id),
        lambda rs: len(rs) == 1 and rs[0].status in TERMINAL,
        timeout_s, f"the run of event {event_id}")
    return runs[0]


async def test_three_outputs_of_3_mib_reach_the_worker_and_the_run_completes(
    plait: Running, management: management_pb2_grpc.ManagementServiceStub,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = App("big-state")
    ran: Counter[str] = Counter()
    fetched: list[tuple[str, ...]] = []
    fetch = Stream.fetch_steps

    async def counted(self: Stream, job: Any) -> dict[str, bytes]:
        fetched.append(tuple(job.fetch_steps))
        return await fetch(self, job)

    monkeypatch.setattr(Stream, "fetch_steps", counted)

    @app.function("steps", trigger=TriggerEvent("big-state/go"))
    async def steps(ctx: Context, step: Step) -> dict[str, int]:
        sizes = {}
        for name in ("a", "b", "c"):
            def make(name: str = name) -> str:
                ran[name] += 1
                return name * (3 * MIB)

            sizes[name] = len(await step.run(name, make))
        ran["end"] += 1
        return sizes

    async with running_worker(app, plait.client):
        event_id = await plait.client.send("big-state/go", {})
        run = await _finished(plait, event_id)

    assert run.status == COMPLETED, run.error
    assert json.loads(run.output_json) == {"a": 3 * MIB, "b": 3 * MIB, "c": 3 * MIB}
    # No step ran again: the replay that needed all three fetched what its job left out.
    assert (ran["a"], ran["b"], ran["c"]) == (1, 1, 1)
    assert fetched and all(len(ids) == 1 for ids in fetched)
    full = await management.GetRun(management_pb2.GetRunRequest(run_id=run.id))
    assert [s.status for s in full.run.steps].count(run_pb2.STEP_STATUS_COMPLETED) >= 3


async def test_a_run_whose_state_passes_max_run_state_bytes_fails_naming_the_limit(
    settings: Settings,
) -> None:
    app = App("capped")
    ran: Counter[str] = Counter()

    @app.function("grow", trigger=TriggerEvent("capped/go"), retries=3)
    async def grow(ctx: Context, step: Step) -> None:
        for i in range(10):
            def chunk(i: int = i) -> str:
                ran[f"s{i}"] += 1
                return "x" * 40_000

            await step.run(f"s{i}", chunk)

    async with running_server(dataclasses.replace(settings, max_run_state_bytes=100_000)) as srv, \
            running_worker(app, srv.client):
        event_id = await srv.client.send("capped/go", {})
        run = await _finished(srv, event_id)
        full = await srv.client.run(run.id)

    assert run.status == FAILED
    assert run.error.name == "RunStateLimitError"
    assert "over the limit of 100000 (max_run_state_bytes)" in run.error.message
    # Non-retriable: the third step's output would pass the cap, and nothing ran after it.
    assert sorted(ran) == ["s0", "s1", "s2"] and set(ran.values()) == {1}
    assert full.status == FAILED


async def test_an_invoke_with_300_kb_of_data_resumes_its_caller_with_the_childs_result(
    plait: Running,
) -> None:
    app = App("big-invoke")

    @app.function("child", trigger=TriggerEvent("big-invoke/child"))
    async def child(ctx: Context, step: Step) -> dict[str, Any]:
        return {"got": len(ctx.event.data["blob"])}

    @app.function("parent", trigger=TriggerEvent("big-invoke/parent"))
    async def parent(ctx: Context, step: Step) -> Any:
        return await step.invoke("call", function=child, data={"blob": "b" * 300_000},
                                 timeout=600)

    async with running_worker(app, plait.client):
        event_id = await plait.client.send("big-invoke/parent", {})
        run = await _finished(plait, event_id, timeout_s=30)

    assert run.status == COMPLETED, run.error
    assert json.loads(run.output_json) == {"got": 300_000}


async def test_an_invoked_child_with_an_output_over_the_event_limit_still_answers(
    plait: Running,
) -> None:
    app = App("big-answer")

    @app.function("child", trigger=TriggerEvent("big-answer/child"))
    async def child(ctx: Context, step: Step) -> str:
        return "r" * (2 * MIB)

    @app.function("parent", trigger=TriggerEvent("big-answer/parent"))
    async def parent(ctx: Context, step: Step) -> int:
        answer = await step.invoke("call", function=child, data={"blob": "b" * 400_000},
                                   timeout=600)
        return len(answer)

    async with running_worker(app, plait.client):
        event_id = await plait.client.send("big-answer/parent", {})
        run = await _finished(plait, event_id, timeout_s=30)

    assert run.status == COMPLETED, run.error
    assert json.loads(run.output_json) == 2 * MIB


def _announcing(monkeypatch: pytest.MonkeyPatch, max_bytes: int) -> None:
    """Makes the SDK announce `max_bytes` as its receive limit at registration."""
    monkeypatch.setattr(plait._worker, "Register", functools.partial(
        plait._worker.Register, max_receive_message_bytes=max_bytes))


async def test_an_output_no_message_to_the_worker_can_hold_fails_the_run_saying_so(
    plait: Running, monkeypatch: pytest.MonkeyPatch,
) -> None:
    _announcing(monkeypatch, MIB)
    app = App("small-worker")
    ran: Counter[str] = Counter()

    @app.function("big", trigger=TriggerEvent("small-worker/go"), retries=3)
    async def big(ctx: Context, step: Step) -> None:
        def make() -> str:
            ran["big"] += 1
            return "x" * (2 * MIB)

        await step.run("big", make)
        ran["after"] += 1

    async with running_worker(app, plait.client):
        event_id = await plait.client.send("small-worker/go", {})
        run = await _finished(plait, event_id)

    assert run.status == FAILED
    assert run.error.name == "JobTooLargeError"
    assert "step 'big'" in run.error.message
    assert "max_receive_message_bytes" in run.error.message
    assert dict(ran) == {"big": 1}


async def test_a_worker_announcing_less_than_1_mib_is_refused(
    plait: Running, monkeypatch: pytest.MonkeyPatch,
) -> None:
    _announcing(monkeypatch, 1000)
    app = App("tiny-worker")

    @app.function("fn", trigger=TriggerEvent("tiny-worker/go"))
    async def fn(ctx: Context, step: Step) -> None:
        return None

    worker = Worker(app, server=plait.client.target, shutdown_grace_s=1)
    with pytest.raises(RuntimeError, match="max_receive_message_bytes"):
        async with asyncio.timeout(20):
            await worker.arun()


async def test_an_invoke_with_data_at_the_event_limit_still_starts_its_child(
    plait: Running,
) -> None:
    app = App("edge-invoke")
    blob = "b" * (plait.server.settings.max_event_bytes - 100)

    @app.function("child", trigger=TriggerEvent("edge-invoke/child"))
    async def child(ctx: Context, step: Step) -> int:
        return len(ctx.event.data["blob"])

    @app.function("parent", trigger=TriggerEvent("edge-invoke/parent"))
    async def parent(ctx: Context, step: Step) -> Any:
        # With the server's `_inngest` metadata the invoked event passes the sender limit.
        return await step.invoke("call", function=child, data={"blob": blob}, timeout=600)

    async with running_worker(app, plait.client):
        event_id = await plait.client.send("edge-invoke/parent", {})
        run = await _finished(plait, event_id, timeout_s=30)

    assert run.status == COMPLETED, run.error
    assert json.loads(run.output_json) == len(blob)
