"""Fixtures of the telemetry tests: an OTLP trace receiver, and servers that export to it.

The receiver is a real OTLP/gRPC endpoint (opentelemetry-proto's TraceService) on
127.0.0.1:0, so spans travel the way they do to a collector.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from server.config import Settings
from tests.e2e.conftest import Running, backend, plait, running_server, settings

__all__ = ["Captured", "Receiver", "Span", "backend", "plait", "settings"]

SERVICE = "plait-test"


def _value(v: common_pb2.AnyValue) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def _attributes(kvs: Sequence[common_pb2.KeyValue]) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs}


@dataclass(frozen=True)
class Span:
    """A received span, ids in lower-case hex."""

    service: str
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    status_code: int
    status_message: str
    links: tuple[tuple[str, str], ...]
    events: tuple[str, ...]

    @classmethod
    def from_pb(cls, span: trace_pb2.Span, service: str) -> Span:
        return cls(
            service=service, trace_id=span.trace_id.hex(), span_id=span.span_id.hex(),
            parent_id=span.parent_span_id.hex(), name=span.name, kind=span.kind,
            start_ns=span.start_time_unix_nano, end_ns=span.end_time_unix_nano,
            attributes=_attributes(span.attributes), status_code=span.status.code,
            status_message=span.status.message,
            links=tuple((link.trace_id.hex(), link.span_id.hex()) for link in span.links),
            events=tuple(e.name for e in span.events),
        )

    @property
    def error(self) -> bool:
        return self.status_code == trace_pb2.Status.STATUS_CODE_ERROR


def spans_of(request: trace_service_pb2.ExportTraceServiceRequest) -> list[Span]:
    out: list[Span] = []
    for resource_spans in request.resource_spans:
        service = str(_attributes(resource_spans.resource.attributes).get("service.name"))
        for scope_spans in resource_spans.scope_spans:
            out.extend(Span.from_pb(s, service) for s in scope_spans.spans)
    return out


class Captured(SpanExporter):
    """An exporter for Telemetry(exporter=...): keeps, as OTLP, what would have been sent."""

    def __init__(self) -> None:
        self.spans: list[Span] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans.extend(spans_of(encode_spans(spans)))
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def named(self, name: str) -> Span:
        (found,) = [s for s in self.spans if s.name == name]
        return found


@dataclass
class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    endpoint: str = ""
    spans: list[Span] = field(default_factory=list)

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.spans.extend(spans_of(request))
        return trace_service_pb2.ExportTraceServiceResponse()

    def of_run(self, run_id: str) -> list[Span]:
        """The server's spans that name the run."""
        return [s for s in self.spans
                if s.service == SERVICE and s.attributes.get("plait.run.id") == run_id]

    def in_trace(self, trace_id: str) -> list[Span]:
        return [s for s in self.spans if s.trace_id == trace_id]


@pytest.fixture
async def otlp() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    receiver.endpoint = f"http://127.0.0.1:{port}"
    try:
        yield receiver
    finally:
        await server.stop(None)


def traced_settings(settings: Settings, receiver: Receiver) -> Settings:
    return dataclasses.replace(settings, otel_exporter_otlp_endpoint=receiver.endpoint,
                               otel_service_name=SERVICE)


@pytest.fixture
async def traced(settings: Settings, otlp: Receiver) -> AsyncIterator[Running]:
    """A server (on each backend) that exports its spans to `otlp`."""
    async with running_server(traced_settings(settings, otlp)) as running:
        yield running
