"""server.telemetry's public names, pinned so the surface grows only on purpose."""

from __future__ import annotations

import server.telemetry


def test_the_exported_names() -> None:
    assert sorted(server.telemetry.__all__) == [
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
    for name in server.telemetry.__all__:
        assert hasattr(server.telemetry, name)
