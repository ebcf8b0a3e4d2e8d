"""Acceptance: every run is one trace in the OTLP receiver, with a span per step attempt,
queue wait and dispatch, worker spans nested under their step, and links to the sender of
the event; the same spans are kept in the history database."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from plait import App, Context, Step, SyncStep, TriggerEvent
from plait_proto.v1 import event_pb2, run_pb2

from server.history.db import open_database
from server.history.spans import list_spans
from server.telemetry import SpanKind, span_id_hex, trace_id_hex
from tests.e2e.conftest import Running, running_worker
from tests.e2e.harness import eventually
from tests.telemetry.conftest import Receiver, Span

pytestmark = pytest.mark.timeout(90)

APP = "traced"
FLAKY = f"{APP}-flaky"
SENDER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def worker_tracing(otlp: Receiver) -> Iterator[TracerProvider]:
    """The worker process's own OpenTelemetry, exporting to the same receiver."""
    provider = TracerProvider(resource=Resource({"service.name": "worker"}))
    provider.add_span_processor(BatchSpanProcessor(
        OTLPSpanExporter(endpoint=otlp.endpoint, insecure=True), schedule_delay_millis=50))
    yield provider
    provider.shutdown()


def flaky_app(provider: TracerProvider) -> App:
    """Three steps; the second fails on its first attempt; both step bodies make a span."""
    app = App(APP)
    tracer = provider.get_tracer("worker")
    tries: dict[str, int] = {}

    @app.function("flaky", trigger=TriggerEvent("traced/go"), retries=2)
    async def flaky(ctx: Context, step: Step) -> int:
        a = await step.run("a", lambda: 1)

        async def b() -> int:
            tries[ctx.run_id] = tries.get(ctx.run_id, 0) + 1
            with tracer.start_as_current_span("worker b"):
                if tries[ctx.run_id] == 1:
                    raise RuntimeError("b fails once")
            return 2

        def c() -> int:
            # A sync body runs in a thread: the step's context must reach it too.
            with tracer.start_as_current_span("worker c"):
                return 3

        return a + await step.run("b", b) + await step.run("c", c)

    @app.function("sync", trigger=TriggerEvent("traced/sync"))
    def sync_fn(ctx: Context, step: SyncStep) -> int:
        def body() -> int:
            with tracer.start_as_current_span("worker sync"):
                return 1

        return int(step.run("only", body))

    return app


@pytest.fixture
async def worker(traced: Running, worker_tracing: TracerProvider) -> AsyncIterator[None]:
    async with running_worker(flaky_app(worker_tracing), traced.client):
        yield


async def _run_id(traced: Running, event_id: str) -> str:
    run = await traced.client.finished_run_of(event_id)
    assert run.status == run_pb2.RUN_STATUS_COMPLETED, run
    return str(run.id)


async def _trace(otlp: Receiver, run_id: str, provider: TracerProvider | None = None,
                 worker_spans: int = 0) -> list[Span]:
    """Waits until the run's root and `worker_spans` worker spans have arrived."""
    trace_id = trace_id_hex(run_id)

    async def probe() -> list[Span]:
        if provider is not None:
            await asyncio.to_thread(provider.force_flush)
        return otlp.in_trace(trace_id)

    def complete(spans: list[Span]) -> bool:
        return (any(s.parent_id == "" and s.service != "worker" for s in spans)
                and sum(s.service == "worker" for s in spans) >= worker_spans)

    return await eventually(probe, complete, 30, f"the trace of run {run_id}")


def _one(spans: list[Span], **where: Any) -> Span:
    found = [s for s in spans if all(_get(s, k) == v for k, v in where.items())]
    assert len(found) == 1, (where, found)
    return found[0]


def _get(span: Span, key: str) -> Any:
    return span.attributes.get(key.replace("__", ".")) if "__" in key else getattr(span, key)


async def test_a_run_is_one_trace_with_a_span_per_attempt_queue_wait_and_dispatch(
    traced: Running, otlp: Receiver, worker: None, worker_tracing: TracerProvider
) -> None:
    event_id = await traced.client.send("traced/go")
    run_id = await _run_id(traced, event_id)
    spans = await _trace(otlp, run_id, worker_tracing, worker_spans=3)

    trace_id = trace_id_hex(run_id)
    assert {s.trace_id for s in spans} == {trace_id}
    server = [s for s in spans if s.service == "plait-test"]
    root = _one(server, parent_id="")
    assert root.span_id == span_id_hex(run_id, SpanKind.RUN)
    assert root.name == f"run {FLAKY}"
    assert root.attributes["plait.run.id"] == run_id
    assert root.attributes["plait.function.id"] == FLAKY
    assert root.attributes["plait.app.id"] == APP
    assert root.attributes["plait.event.id"] == event_id
    assert root.attributes["plait.run.status"] == "completed"
    assert root.status_code == trace_pb2.Status.STATUS_CODE_OK

    # One span per attempt: a, b (failed), b again, c, and the job that returned.
    attempts = [s for s in server if s.name.startswith("step ") or s.name == "function"]
    assert sorted((s.attributes["plait.step.id"], s.attributes["plait.attempt"],
                   s.attributes["plait.outcome"]) for s in attempts) == [
        ("$function", 0, "completed"), ("a", 0, "completed"), ("b", 0, "failed"),
        ("b", 1, "completed"), ("c", 0, "completed")]
    for span in attempts:
        assert span.parent_id == root.span_id
        assert span.attributes["plait.run.id"] == run_id
        assert span.attributes["plait.function.id"] == FLAKY
        assert span.attributes["plait.app.id"] == APP
        assert root.start_ns <= span.start_ns <= span.end_ns <= root.end_ns
    failed = _one(attempts, plait__step__id="b", plait__attempt=0)
    assert failed.error and failed.status_message == "b fails once"
    assert failed.attributes["error.type"] == "RuntimeError"
    assert "exception" in failed.events
    assert not any(s.error for s in attempts if s is not failed)

    # The first job waited in the queue from the run's creation; the retry of b from its
    # backoff's end. Relocked jobs (step after step on one worker) never waited.
    waits = [s for s in server if s.name == "queue.wait"]
    assert len(waits) == 2
    for wait in waits:
        assert wait.parent_id == root.span_id
        leased = _one(attempts, plait__lease__id=wait.attributes["plait.lease.id"])
        assert wait.end_ns == leased.start_ns
    retried = _one(attempts, plait__step__id="b", plait__attempt=1)
    assert retried.attributes["plait.lease.id"] in {
        w.attributes["plait.lease.id"] for w in waits}

    # Each attempt was dispatched once to the gRPC worker, under its step span.
    dispatches = [s for s in server if s.name == "dispatch grpc"]
    assert len(dispatches) == len(attempts)
    by_id = {s.span_id: s for s in attempts}
    for dispatch in dispatches:
        assert dispatch.kind == trace_pb2.Span.SPAN_KIND_CLIENT
        assert dispatch.parent_id in by_id
        assert dispatch.attributes["plait.transport"] == "grpc"
    assert _one(dispatches, parent_id=failed.span_id).attributes["plait.outcome"] == "step_failed"
    final = _one(attempts, plait__step__id="$function")
    assert _one(dispatches, parent_id=final.span_id).attributes["plait.outcome"] == "run_completed"

    # The worker's own spans, async and sync step bodies alike, nest under their attempt.
    worker_spans = [s for s in spans if s.service == "worker"]
    assert sorted(s.name for s in worker_spans) == ["worker b", "worker b", "worker c"]
    b_attempts = {s.span_id for s in attempts if s.attributes["plait.step.id"] == "b"}
    assert {s.parent_id for s in worker_spans if s.name == "worker b"} == b_attempts
    c_attempt = _one(attempts, plait__step__id="c")
    assert _one(worker_spans, name="worker c").parent_id == c_attempt.span_id


async def test_a_sync_function_runs_its_steps_inside_the_step_span(
    traced: Running, otlp: Receiver, worker: None, worker_tracing: TracerProvider
) -> None:
    event_id = await traced.client.send("traced/sync")
    run_id = await _run_id(traced, event_id)
    spans = await _trace(otlp, run_id, worker_tracing, worker_spans=1)
    step = _one(spans, name="step only")
    assert _one(spans, name="worker sync").parent_id == step.span_id


async def test_the_spans_are_kept_in_the_history_database(
    traced: Running, otlp: Receiver, worker: None, worker_tracing: TracerProvider
) -> None:
    event_id = await traced.client.send("traced/go")
    run_id = await _run_id(traced, event_id)
    exported = [s for s in await _trace(otlp, run_id) if s.service == "plait-test"]
    engine = await open_database(traced.endpoints.database_url)
    try:
        stored = await eventually(
            lambda: list_spans(engine, run_id),
            lambda rows: any(r.kind == SpanKind.RUN and r.end_ms for r in rows),
            20, "the run's spans in SQL")
    finally:
        await engine.dispose()
    assert stored[0].kind == SpanKind.RUN and stored[0].outcome == "completed"
    assert [r.start_ms for r in stored[1:]] == sorted(r.start_ms or 0 for r in stored[1:])
    # Everything but the per-process dispatch spans is in SQL, under the same ids.
    assert {r.id for r in stored} == {s.span_id for s in exported if s.name != "dispatch grpc"}
    assert {r.trace_id for r in stored} == {trace_id_hex(run_id)}


async def test_an_event_sent_over_http_with_a_traceparent_links_its_run_trace(
    traced: Running, otlp: Receiver, worker: None
) -> None:
    async with httpx.AsyncClient() as http:
        reply = await http.post(
            f"http://127.0.0.1:{traced.endpoints.http_port}/e/dev",
            json={"name": "traced/sync", "data": {}}, headers={"traceparent": SENDER})
    assert reply.status_code == 200, reply.text
    run_id = await _run_id(traced, reply.json()["ids"][0])
    root = _one(await _trace(otlp, run_id), parent_id="")
    _, sender_trace, sender_span, _ = SENDER.split("-")
    assert root.links == ((sender_trace, sender_span),)
    assert root.trace_id == trace_id_hex(run_id) != sender_trace


async def test_an_event_sent_over_grpc_with_a_traceparent_links_its_run_trace(
    traced: Running, otlp: Receiver, worker: None
) -> None:
    reply = await traced.client.events.SendEvents(
        event_pb2.SendEventsRequest(events=[
            event_pb2.EventInput(name="traced/sync", data_json=json.dumps({}).encode())]),
        metadata=[("traceparent", SENDER)])
    run_id = await _run_id(traced, reply.ids[0])
    root = _one(await _trace(otlp, run_id), parent_id="")
    _, sender_trace, sender_span, _ = SENDER.split("-")
    assert root.links == ((sender_trace, sender_span),)


async def test_an_invalid_traceparent_is_ignored(
    traced: Running, otlp: Receiver, worker: None
) -> None:
    reply = await traced.client.events.SendEvents(
        event_pb2.SendEventsRequest(events=[event_pb2.EventInput(name="traced/sync")]),
        metadata=[("traceparent", "00-not-a-trace-01")])
    run_id = await _run_id(traced, reply.ids[0])
    assert _one(await _trace(otlp, run_id), parent_id="").links == ()


async def test_without_otel_settings_workers_get_no_trace_context(plait: Running) -> None:
    app = App("untraced")
    seen: list[bool] = []

    @app.function("one", trigger=TriggerEvent("untraced/go"))
    async def one(ctx: Context, step: Step) -> None:
        def body() -> None:
            seen.append(trace.get_current_span().get_span_context().is_valid)

        await step.run("only", body)

    async with running_worker(app, plait.client):
        run = await plait.client.finished_run_of(await plait.client.send("untraced/go"))
    assert run.status == run_pb2.RUN_STATUS_COMPLETED
    assert seen == [False]
