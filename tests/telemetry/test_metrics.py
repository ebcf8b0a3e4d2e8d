"""Acceptance: GET /metrics is Prometheus exposition whose counters match the runs executed."""

from __future__ import annotations

import httpx
import pytest
from plait import App, Context, NonRetriableError, Step, TriggerEvent
from plait_proto.v1 import run_pb2
from prometheus_client.parser import text_string_to_metric_families

from server.history.db import open_database
from server.history.spans import list_spans
from server.telemetry import SpanKind
from tests.e2e.conftest import Running, running_worker
from tests.e2e.harness import eventually

pytestmark = pytest.mark.timeout(90)

APP = "metered"
RETRIED = f"{APP}-retried"
BROKEN = f"{APP}-broken"
RUNS = 3

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def metered_app() -> App:
    app = App(APP)

    @app.function("retried", trigger=TriggerEvent("metered/go"), retries=2)
    async def retried(ctx: Context, step: Step) -> int:
        await step.run("a", lambda: 1)

        def b() -> int:
            if ctx.attempt == 0:
                raise RuntimeError("the first attempt of b fails")
            return 2

        return int(await step.run("b", b))

    @app.function("broken", trigger=TriggerEvent("metered/broken"))
    async def broken(ctx: Context, step: Step) -> None:
        raise NonRetriableError("broken for good")

    return app


async def scrape(running: Running) -> Samples:
    async with httpx.AsyncClient() as http:
        reply = await http.get(f"http://127.0.0.1:{running.endpoints.http_port}/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_count_the_runs_executed(plait: Running) -> None:
    async with running_worker(metered_app(), plait.client):
        event_ids = await plait.client.send_many("metered/go", [{"n": n} for n in range(RUNS)])
        broken_id = await plait.client.send("metered/broken")
        for event_id in event_ids:
            run = await plait.client.finished_run_of(event_id)
            assert run.status == run_pb2.RUN_STATUS_COMPLETED
        run = await plait.client.finished_run_of(broken_id)
        assert run.status == run_pb2.RUN_STATUS_FAILED

        def finished(s: Samples) -> bool:
            return (value(s, "plait_runs_finished_total", function_id=RETRIED,
                          status="completed") >= RUNS
                    and value(s, "plait_runs_finished_total", function_id=BROKEN,
                              status="failed") >= 1)

        samples = await eventually(lambda: scrape(plait), finished, 20, "the runs' metrics")
        assert value(samples, "plait_worker_connections", app_id=APP) == 1

    assert value(samples, "plait_events_received_total") == RUNS + 1
    assert value(samples, "plait_runs_started_total", function_id=RETRIED) == RUNS
    assert value(samples, "plait_runs_started_total", function_id=BROKEN) == 1
    assert value(samples, "plait_runs_finished_total", function_id=RETRIED,
                 status="completed") == RUNS
    assert value(samples, "plait_runs_finished_total", function_id=RETRIED,
                 status="failed") == 0
    assert value(samples, "plait_runs_finished_total", function_id=BROKEN, status="failed") == 1
    # Per run: a, b (failed), b again, and the job that returned.
    assert value(samples, "plait_step_attempts_total", function_id=RETRIED,
                 outcome="completed") == 3 * RUNS
    assert value(samples, "plait_step_attempts_total", function_id=RETRIED,
                 outcome="failed") == RUNS
    assert value(samples, "plait_retries_total", function_id=RETRIED) == RUNS
    assert value(samples, "plait_retries_total", function_id=BROKEN) == 0
    assert value(samples, "plait_step_duration_seconds_count", function_id=RETRIED) == 4 * RUNS
    # Each run's first job and its retry of b were leased from the queue.
    assert value(samples, "plait_lease_latency_seconds_count", function_id=RETRIED) == 2 * RUNS
    assert value(samples, "plait_queue_depth", function_id=RETRIED) == 0
    assert value(samples, "plait_queue_age_seconds", function_id=RETRIED) == 0
    assert value(samples, "plait_jobs_leased") == 0

    # Tracing is off here, and the dashboard still has every run's spans.
    engine = await open_database(plait.endpoints.database_url)
    try:
        spans = await list_spans(engine, run.id)
    finally:
        await engine.dispose()
    assert [s.kind for s in spans] == [SpanKind.RUN, SpanKind.QUEUE, SpanKind.STEP]
    assert spans[0].outcome == "failed" and spans[0].status == "error"
    assert spans[2].status_message == "broken for good"
    assert spans[1].end_ms == spans[2].start_ms


async def test_the_queue_gauges_show_work_no_worker_takes(plait: Running) -> None:
    app = metered_app()
    async with running_worker(app, plait.client):
        pass  # registers the functions, then leaves
    await plait.client.send_many("metered/go", [{}, {}])

    def queued(s: Samples) -> bool:
        # The age counts from the runs' creation, so it grows from 0 while nobody leases.
        return (value(s, "plait_queue_depth", function_id=RETRIED) == 2
                and value(s, "plait_queue_age_seconds", function_id=RETRIED) > 0)

    samples = await eventually(lambda: scrape(plait), queued, 20, "two queued runs")
    assert value(samples, "plait_queue_scheduled", function_id=RETRIED) == 0
    assert value(samples, "plait_worker_connections", app_id=APP) == 0
