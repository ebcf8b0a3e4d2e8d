"""Telemetry: OpenTelemetry traces of every run (one trace per run, a span per step attempt,
queue wait, sleep and dispatch), the same spans in SQL, and Prometheus metrics."""

from server.telemetry.ids import (
    SpanKind,
    TraceParent,
    parse_traceparent,
    span_id_hex,
    trace_id_hex,
)
from server.telemetry.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from server.telemetry.metrics import Metrics
from server.telemetry.spans import SpanBatch, SpanRow
from server.telemetry.telemetry import Telemetry, outcome_of

__all__ = [
    "METRICS_CONTENT_TYPE",
    "Metrics",
    "SpanBatch",
    "SpanKind",
    "SpanRow",
    "Telemetry",
    "TraceParent",
    "outcome_of",
    "parse_traceparent",
    "span_id_hex",
    "trace_id_hex",
]
