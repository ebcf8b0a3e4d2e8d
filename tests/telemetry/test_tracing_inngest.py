"""Acceptance, through an app on the official Inngest SDK (PyPI `inngest`): the run is one
trace with a span per attempt and an HTTP dispatch span per call to the app, and the
gateway's calls are counted by status.

Embedded backend only: the compat suite runs the gateway on both backends, and
test_tracing.py runs the traced data path on both.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from opentelemetry.proto.trace.v1 import trace_pb2
from prometheus_client.parser import text_string_to_metric_families

from server.app import PlaitServer
from server.telemetry import trace_id_hex
from tests.compat.apps import Gateway, SdkApp, sdk_env, start_app
from tests.e2e.harness import eventually, free_port, settings_for
from tests.telemetry.conftest import SERVICE, Receiver, Span

pytestmark = pytest.mark.timeout(120)


@dataclass
class Deployment:
    server: PlaitServer
    gateway: Gateway
    app: SdkApp


@pytest.fixture
async def deployment(tmp_path: Path, otlp: Receiver) -> AsyncIterator[Deployment]:
    http_port = free_port()
    app = await start_app("py", sdk_env(http_port), tmp_path)
    settings = settings_for("embedded", tmp_path, http_port=http_port, sdk_urls=app.url,
                            otel_exporter_otlp_endpoint=otlp.endpoint, otel_service_name=SERVICE)
    server = PlaitServer(settings)
    try:
        await server.start()
        gateway = Gateway(http_port)
        await gateway.wait_registered(app.app_id)
        yield Deployment(server, gateway, app)
    finally:
        await server.stop(grace_s=1)
        app.stop()


async def gateway_calls(http_port: int) -> float:
    async with httpx.AsyncClient() as http:
        reply = await http.get(f"http://127.0.0.1:{http_port}/metrics")
    return sum(sample.value for family in text_string_to_metric_families(reply.text)
               for sample in family.samples if sample.name == "plait_gateway_calls_total")


async def test_an_inngest_sdk_run_is_one_trace_with_its_http_calls(
    deployment: Deployment, otlp: Receiver
) -> None:
    app, gateway = deployment.app, deployment.gateway
    event_id = await gateway.send(app.event("flaky"), {"key": uuid.uuid4().hex})
    run = await gateway.finished_run(event_id)
    assert run["status"] == "Completed", run
    trace_id = trace_id_hex(run["run_id"])

    async def received() -> list[Span]:
        return otlp.in_trace(trace_id)

    spans = await eventually(received, lambda found: any(s.parent_id == "" for s in found), 30,
                             "the run's trace")
    root = next(s for s in spans if s.parent_id == "")
    assert root.name == f"run {app.app_id}-flaky"
    assert root.status_code == trace_pb2.Status.STATUS_CODE_OK

    # The step fails twice, then succeeds; then the function returns.
    attempts = [s for s in spans if s.name.startswith("step ") or s.name == "function"]
    assert sorted((s.name, s.attributes["plait.attempt"], s.attributes["plait.outcome"])
                  for s in attempts) == [
        ("function", 0, "completed"), ("step flaky", 0, "failed"), ("step flaky", 1, "failed"),
        ("step flaky", 2, "completed")]
    assert all(s.parent_id == root.span_id for s in attempts)
    assert [s.error for s in attempts if s.attributes["plait.outcome"] == "failed"] == [True] * 2

    # One call to the app per attempt, each under its attempt's span, with its HTTP status.
    calls = [s for s in spans if s.name == "dispatch http"]
    assert sorted(c.parent_id for c in calls) == sorted(a.span_id for a in attempts)
    for call in calls:
        assert call.kind == trace_pb2.Span.SPAN_KIND_CLIENT
        assert isinstance(call.attributes["http.response.status_code"], int)
        assert call.attributes["plait.target"].startswith(app.url)
    assert await gateway_calls(gateway.http_port) >= len(calls)
