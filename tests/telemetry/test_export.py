"""The export path without a server: OTLP over HTTP, dispatch spans, sampling, logs."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import structlog
import structlog.testing
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from server.config import Settings
from server.logs import add_trace_id
from server.telemetry import SpanKind, Telemetry, outcome_of, span_id_hex, trace_id_hex
from server.telemetry.ids import span_id, trace_id
from server.telemetry.otlp import OtlpConfig, SpanExport
from server.telemetry.spans import SpanRow
from server.types import FunctionId, Job, JobId, LeaseId, RunCompleted, RunId, StepCompleted
from tests.e2e.harness import free_port
from tests.telemetry.conftest import Captured

RUN = "01JAAAAAAAAAAAAAAAAAAAAAAA"


def job(lease: str = "5", run: str = RUN) -> Job:
    return Job(job_id=JobId(run), lease_id=LeaseId(lease), run_id=RunId(run),
               function_id=FunctionId("shop-charge"), attempt=0, max_attempts=3,
               event_json=b"{}", lease_expires_at_ms=1_000_000 + 10_000)


class _Collector(BaseHTTPRequestHandler):
    received: list[tuple[str, str, bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, self.headers["x-team"], body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()
        self.wfile.write(trace_service_pb2.ExportTraceServiceResponse().SerializeToString())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[str]:
    _Collector.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join()


async def test_spans_are_exported_over_otlp_http(collector: str) -> None:
    settings = Settings(otel_exporter_otlp_endpoint=collector,
                        otel_exporter_otlp_protocol="http/protobuf",
                        otel_exporter_otlp_headers="x-team=blue", otel_service_name="p")
    config = OtlpConfig.from_settings(settings)
    assert config is not None
    export = SpanExport(config)
    export.rows([SpanRow(
        trace=trace_id(RUN), span=span_id(RUN, SpanKind.RUN), parent=0, run_id=RUN,
        kind=SpanKind.RUN, name="run shop-charge", start_ms=1, end_ms=2, outcome="completed",
        status="ok", attributes={"plait.run.id": RUN})])
    await export.shutdown()
    ((path, team, body),) = _Collector.received
    assert (path, team) == ("/v1/traces", "blue")
    request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
    (span,) = request.resource_spans[0].scope_spans[0].spans
    assert span.name == "run shop-charge" and span.trace_id.hex() == trace_id_hex(RUN)
    service = {a.key: a.value.string_value for a in request.resource_spans[0].resource.attributes}
    assert service["service.name"] == "p"


async def test_a_job_carries_the_context_of_its_step_span() -> None:
    telemetry = Telemetry(Settings(otel_service_name="p"), exporter=Captured())
    (stamped,) = telemetry.with_trace_context([job("5")])
    assert stamped.traceparent == (
        f"00-{trace_id_hex(RUN)}-{span_id_hex(RUN, SpanKind.STEP, '5')}-01")
    await telemetry.shutdown()
    untraced = Telemetry(Settings())
    assert untraced.with_trace_context([job("5")]) == [job("5")]


async def test_a_dispatch_span_ends_when_the_answer_is_back() -> None:
    captured = Captured()
    telemetry = Telemetry(Settings(otel_service_name="p", lease_ms=10_000), exporter=captured)
    telemetry.dispatch_started(job("5"), "grpc", "conn-1")
    telemetry.dispatch_ended(job("5"), outcome_of(StepCompleted("a", "a", b"1")))
    telemetry.dispatch_started(job("6"), "http", "http://app/api/inngest")
    telemetry.dispatch_ended(job("6"), outcome_of(RunCompleted(b"1")), status_code=200)
    telemetry.dispatch_started(job("7"), "grpc", "conn-1")
    telemetry.dispatch_ended(job("7"), "released", error="the worker disconnected")
    await telemetry.shutdown()
    spans = {s.span_id: s for s in captured.spans}
    first = spans[span_id_hex(RUN, SpanKind.DISPATCH, "5")]
    assert first.name == "dispatch grpc" and first.kind == trace_pb2.Span.SPAN_KIND_CLIENT
    assert first.parent_id == span_id_hex(RUN, SpanKind.STEP, "5")
    assert first.attributes["plait.outcome"] == "step_completed"
    http = spans[span_id_hex(RUN, SpanKind.DISPATCH, "6")]
    assert http.attributes["http.response.status_code"] == 200
    assert http.attributes["plait.outcome"] == "run_completed"
    # A released job's attempt has no history record: its step span is made here, failed.
    released = spans[span_id_hex(RUN, SpanKind.STEP, "7")]
    assert released.name == "step (released)" and released.error
    assert released.parent_id == span_id_hex(RUN, SpanKind.RUN)
    assert telemetry.metrics.registry.get_sample_value(
        "plait_gateway_calls_total", {"status": "200"}) == 1


async def test_a_ratio_sampler_exports_whole_runs_or_nothing() -> None:
    captured = Captured()
    telemetry = Telemetry(Settings(otel_service_name="p", otel_traces_sampler="traceidratio",
                                   otel_traces_sampler_arg="0.5"), exporter=captured)
    runs = [f"01JAAAAAAAAAAAAAAAAAAAA{n:03d}" for n in range(200)]
    for run in runs:
        traced = job("1", run)
        telemetry.dispatch_started(traced, "grpc")
        telemetry.dispatch_ended(traced, "step_completed")
    await telemetry.shutdown()
    kept = {s.attributes["plait.run.id"] for s in captured.spans}
    assert 50 < len(kept) < 150
    (stamped,) = telemetry.with_trace_context([job("1", runs[0])])
    assert stamped.traceparent.endswith("-01" if runs[0] in kept else "-00")


def test_a_log_record_about_a_run_carries_its_trace_id() -> None:
    event = add_trace_id(None, "info", {"event": "result.dropped", "run_id": RUN})
    assert event["trace_id"] == trace_id_hex(RUN)
    assert "trace_id" not in add_trace_id(None, "info", {"event": "server.started"})


def test_json_logs_carry_the_trace_id(capsys: pytest.CaptureFixture[str]) -> None:
    from server.logs import configure_logging

    root = logging.getLogger()
    saved = (root.handlers[:], root.level, structlog.get_config())
    configure_logging("json", "info")
    try:
        structlog.get_logger("test").info("result.dropped", run_id=RUN)
        line = capsys.readouterr().err.strip().splitlines()[-1]
    finally:
        # Left configured (it caches loggers on first use), later tests' capture_logs saw
        # nothing from the loggers first used after this test.
        root.handlers[:], root.level = saved[0], saved[1]
        structlog.configure(**saved[2])
    record = json.loads(line)
    assert (record["run_id"], record["trace_id"]) == (RUN, trace_id_hex(RUN))


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
async def test_an_unreachable_collector_costs_spans_not_the_server(protocol: str) -> None:
    settings = Settings(otel_exporter_otlp_endpoint=f"http://127.0.0.1:{free_port()}",
                        otel_exporter_otlp_protocol=protocol, otel_exporter_otlp_timeout=2000)
    telemetry = Telemetry(settings)
    telemetry.dispatch_started(job("5"), "grpc")
    telemetry.dispatch_ended(job("5"), "step_completed")
    # The SDK's exporter gives up within its timeout; the server's shutdown goes on.
    async with asyncio.timeout(15):
        await telemetry.shutdown()
