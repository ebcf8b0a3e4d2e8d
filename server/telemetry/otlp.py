"""OTLP export: the OTEL_* settings resolved, and a batching export thread.

Spans are built with their final ids, parents and times (`spans.py`, `ids.py`) and encoded
at once (`_wire.py`, a few microseconds each); a thread of their own batches the bytes and
sends them (`_transport.py`), so the event loop only appends to a queue.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlparse

import structlog

from server import __version__
from server.config import Settings
from server.telemetry._transport import GrpcTransport, HttpTransport, Transport
from server.telemetry._wire import (
    KIND_INTERNAL,
    SpanEvent,
    SpanLink,
    Value,
    encode_request,
    encode_resource,
    encode_span,
)
from server.telemetry.ids import parse_traceparent
from server.telemetry.spans import STATUS_ERROR, SpanRow

__all__ = ["OtlpConfig", "SpanExport", "build_transport"]

SPANS_DROPPED = "otlp.spans_dropped"
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


def build_transport(config: OtlpConfig) -> Transport:
    if config.protocol == "grpc":
        return GrpcTransport(config.endpoint, config.insecure, config.headers, config.timeout_s,
                             config.gzip)
    return HttpTransport(config.endpoint, config.headers, config.timeout_s, config.gzip)


class SpanExport:
    """Finished spans, encoded at once, sent in batches by a thread of their own."""

    def __init__(self, config: OtlpConfig, transport: Transport | None = None) -> None:
        self.config = config
        self._bound = round(config.ratio * _ID_LIMIT)
        self._transport = transport or build_transport(config)
        self._head = encode_resource(dict(config.resource), "plait", __version__)
        self._queue: deque[bytes] = deque()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="plait-otlp-export", daemon=True)
        self._thread.start()

    def sampled(self, trace_id: int) -> bool:
        """The same answer for a run in every process: the ratio applies to the trace id."""
        return self._bound >= _ID_LIMIT or (trace_id % _ID_LIMIT) < self._bound

    def rows(self, rows: Iterable[SpanRow]) -> None:
        """Exports spans built from history (times in ms); runs going on are skipped."""
        for row in rows:
            if row.end_ms is None or not self.sampled(row.trace):
                continue
            events: tuple[SpanEvent, ...] = ()
            if row.error is not None and row.status == STATUS_ERROR:
                events = (SpanEvent("exception", row.end_ms * 1_000_000, {
                    "exception.type": row.error.name, "exception.message": row.error.message,
                    "exception.stacktrace": row.error.stack}),)
            links = []
            for value in row.links:
                sender = parse_traceparent(value)
                if sender is not None:
                    links.append(SpanLink(sender.trace_id, sender.span_id, {"plait.link": "event"}))
            self._put(encode_span(
                row.trace, row.span, row.parent, row.name, KIND_INTERNAL,
                row.start_ms * 1_000_000, max(row.start_ms, row.end_ms) * 1_000_000,
                row.attributes, row.status, row.status_message, links, events))

    def span(
        self, name: str, trace_id: int, span_id: int, parent_id: int, start_ns: int,
        end_ns: int, attributes: Mapping[str, Value], status: str, message: str = "", *,
        kind: int = KIND_INTERNAL,
    ) -> None:
        """Exports one finished span with the given ids (parent 0: a root)."""
        self._put(encode_span(trace_id, span_id, parent_id, name, kind, start_ns,
                              max(start_ns, end_ns), attributes, status, message))

    def _put(self, encoded: bytes) -> None:
        if len(self._queue) >= _MAX_QUEUE:
            self.dropped += 1
            if self.dropped % 10_000 == 1:
                _log.warning(SPANS_DROPPED, dropped=self.dropped, queued=len(self._queue))
            return
        self._queue.append(encoded)
        if len(self._queue) >= _EXPORT_BATCH:
            self._wake.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(_SCHEDULE_DELAY_S)
            self._wake.clear()
            self._send_queued()
        self._send_queued()

    def _send_queued(self) -> None:
        while self._queue:
            batch = [self._queue.popleft()
                     for _ in range(min(len(self._queue), _EXPORT_BATCH))]
            self._transport.send(encode_request(self._head, batch), self._stopping)

    async def shutdown(self) -> None:
        """Sends what is queued (one try each), within a deadline, then closes."""
        self._stopping.set()
        self._wake.set()
        try:
            async with asyncio.timeout(_SHUTDOWN_TIMEOUT_S):
                await asyncio.to_thread(self._thread.join)
        finally:
            self._transport.close()
