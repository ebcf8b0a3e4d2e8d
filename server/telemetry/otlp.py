"""OTLP export: the OTEL_* settings resolved, and spans handed to the OpenTelemetry SDK.

Spans are built with their final ids, parents and times (`spans.py`, `ids.py`), because a run
outlives any one process; they are turned into the SDK's ReadableSpan and exported by its
BatchSpanProcessor and OTLP exporters (gRPC or HTTP), on the SDK's own thread.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote, urlparse

import grpc
import structlog
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from server import __version__
from server.config import Settings
from server.tasks import raise_if_cancelling
from server.telemetry.ids import parse_traceparent
from server.telemetry.spans import STATUS_ERROR, STATUS_OK, SpanRow

__all__ = ["OtlpConfig", "SpanExport", "Value", "build_exporter"]

Value = str | int | bool
_STATUS = {STATUS_OK: StatusCode.OK, STATUS_ERROR: StatusCode.ERROR}

SPANS_DROPPED = "otlp.spans_dropped"
EXPORT_BROKEN = "otlp.export_broken"
_ID_LIMIT = 2**64
# The queue absorbs a history batch's spans at once (a thousand records make a few thousand
# spans); spans are dropped only when export falls this far behind.
_MAX_QUEUE = 100_000
_EXPORT_BATCH = 2_048
_SCHEDULE_DELAY_S = 0.5
_SHUTDOWN_TIMEOUT_S = 10.0

_log = structlog.get_logger(__name__)


def _pairs(text: str) -> dict[str, str]:
    """`k=v,k2=v2` with URL-encoded values, as OTEL_*_HEADERS and _ATTRIBUTES are written."""
    out: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = pair.partition("=")
        out[unquote(key.strip())] = unquote(value.strip())
    return out


@dataclass(frozen=True, slots=True)
class OtlpConfig:
    endpoint: str
    protocol: str  # "grpc" or "http/protobuf"
    headers: Mapping[str, str] = field(default_factory=dict)
    insecure: bool = False  # gRPC only
    gzip: bool = False
    timeout_s: float = 10.0
    resource: Mapping[str, str] = field(default_factory=dict)
    ratio: float = 1.0  # the share of runs traced (by trace id)

    @classmethod
    def from_settings(cls, s: Settings) -> OtlpConfig | None:
        """The export the settings ask for; None when tracing is off."""
        exporter = s.otel_traces_exporter.lower()
        sampler = s.otel_traces_sampler.lower()
        wanted = exporter == "otlp" or any((
            s.otel_exporter_otlp_endpoint, s.otel_exporter_otlp_traces_endpoint,
            s.otel_service_name))
        off = (s.otel_sdk_disabled.lower() == "true" or exporter == "none"
               or sampler in ("always_off", "parentbased_always_off"))
        if off or not wanted:
            return None
        protocol = (s.otel_exporter_otlp_traces_protocol or s.otel_exporter_otlp_protocol
                    or "grpc").lower()
        if s.otel_exporter_otlp_traces_endpoint:
            endpoint = s.otel_exporter_otlp_traces_endpoint
        elif s.otel_exporter_otlp_endpoint:
            endpoint = s.otel_exporter_otlp_endpoint
            if protocol != "grpc":
                endpoint = endpoint.rstrip("/") + "/v1/traces"
        else:
            endpoint = ("http://localhost:4317" if protocol == "grpc"
                        else "http://localhost:4318/v1/traces")
        scheme = urlparse(endpoint).scheme if "://" in endpoint else ""
        insecure = scheme == "http" or (
            not scheme and s.otel_exporter_otlp_insecure.lower() == "true")
        resource = _pairs(s.otel_resource_attributes)
        resource["service.name"] = s.otel_service_name or resource.get("service.name", "plait")
        resource.setdefault("service.version", __version__)
        resource.setdefault("service.instance.id", s.instance_id or socket.gethostname())
        ratio = 1.0
        if sampler in ("traceidratio", "parentbased_traceidratio"):
            ratio = float(s.otel_traces_sampler_arg or "1")
        return cls(
            endpoint=endpoint, protocol=protocol,
            headers=_pairs(s.otel_exporter_otlp_traces_headers or s.otel_exporter_otlp_headers),
            insecure=insecure, gzip=s.otel_exporter_otlp_compression.lower() == "gzip",
            timeout_s=s.otel_exporter_otlp_timeout / 1000, resource=resource, ratio=ratio,
        )


def build_exporter(config: OtlpConfig) -> SpanExporter:
    """The OpenTelemetry SDK's OTLP exporter for the configured protocol."""
    if config.protocol == "grpc":
        return GrpcSpanExporter(
            endpoint=config.endpoint, insecure=config.insecure, headers=dict(config.headers),
            timeout=config.timeout_s, compression=grpc.Compression.Gzip if config.gzip else None)
    return HttpSpanExporter(
        endpoint=config.endpoint, headers=dict(config.headers), timeout=config.timeout_s,
        compression=HttpCompression.Gzip if config.gzip else HttpCompression.NoCompression)


def _context(trace: int, span: int) -> SpanContext:
    return SpanContext(trace_id=trace % 2**128, span_id=span % _ID_LIMIT, is_remote=False,
                       trace_flags=TraceFlags(TraceFlags.SAMPLED))


class SpanExport:
    """Finished spans with their final ids and times, handed to the SDK's span processor.

    Production uses the SDK's BatchSpanProcessor (its own thread batches and exports off the
    event loop); an injected exporter (tests) gets each span at once.
    """

    def __init__(self, config: OtlpConfig, exporter: SpanExporter | None = None) -> None:
        self.config = config
        self._bound = round(config.ratio * _ID_LIMIT)
        self._resource = Resource.create(dict(config.resource))
        self._scope = InstrumentationScope("plait", __version__)
        self._processor: SpanProcessor = (
            SimpleSpanProcessor(exporter) if exporter is not None else BatchSpanProcessor(
                build_exporter(config), max_queue_size=_MAX_QUEUE,
                max_export_batch_size=_EXPORT_BATCH,
                schedule_delay_millis=_SCHEDULE_DELAY_S * 1000,
                export_timeout_millis=config.timeout_s * 1000))

    def sampled(self, trace_id: int) -> bool:
        """The same answer for a run in every process: the ratio applies to the trace id."""
        return self._bound >= _ID_LIMIT or (trace_id % _ID_LIMIT) < self._bound

    def rows(self, rows: Iterable[SpanRow]) -> None:
        """Exports spans built from history (times in ms); runs going on are skipped."""
        for row in rows:
            if row.end_ms is None or not self.sampled(row.trace):
                continue
            events: tuple[Event, ...] = ()
            if row.error is not None and row.status == STATUS_ERROR:
                events = (Event("exception", {
                    "exception.type": row.error.name, "exception.message": row.error.message,
                    "exception.stacktrace": row.error.stack}, row.end_ms * 1_000_000),)
            links = []
            for value in row.links:
                sender = parse_traceparent(value)
                if sender is not None:
                    links.append(Link(_context(sender.trace_id, sender.span_id),
                                      {"plait.link": "event"}))
            self._emit(row.name, row.trace, row.span, row.parent, row.start_ms * 1_000_000,
                       max(row.start_ms, row.end_ms) * 1_000_000, row.attributes, row.status,
                       row.status_message, links=links, events=events)

    def span(
        self, name: str, trace_id: int, span_id: int, parent_id: int, start_ns: int,
        end_ns: int, attributes: Mapping[str, Value], status: str, message: str = "", *,
        kind: SpanKind = SpanKind.INTERNAL,
    ) -> None:
        """Exports one finished span with the given ids (parent 0: a root)."""
        self._emit(name, trace_id, span_id, parent_id, start_ns, max(start_ns, end_ns),
                   attributes, status, message, kind=kind)

    def _emit(
        self, name: str, trace: int, span: int, parent: int, start_ns: int, end_ns: int,
        attributes: Mapping[str, Value], status: str, message: str, *,
        kind: SpanKind = SpanKind.INTERNAL, links: Sequence[Link] = (),
        events: Sequence[Event] = (),
    ) -> None:
        code = _STATUS.get(status, StatusCode.UNSET)
        self._processor.on_end(ReadableSpan(
            name=name, context=_context(trace, span),
            parent=_context(trace, parent) if parent else None, resource=self._resource,
            attributes=dict(attributes), events=events, links=links, kind=kind,
            status=Status(code, message if code is StatusCode.ERROR and message else None),
            start_time=start_ns, end_time=end_ns, instrumentation_scope=self._scope,
        ))

    async def run(self) -> None:
        """Nothing to drive: the processor exports on its own thread. Waits to be cancelled."""
        while True:
            raise_if_cancelling()
            await asyncio.sleep(3600)

    async def shutdown(self) -> None:
        """Exports what is still queued (within the export timeout), then stops."""
        try:
            async with asyncio.timeout(_SHUTDOWN_TIMEOUT_S):
                await asyncio.to_thread(self._processor.shutdown)
        except TimeoutError:
            _log.error(EXPORT_BROKEN, error="span export did not finish within the deadline")
