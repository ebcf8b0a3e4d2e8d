"""Runs a job inside the server's trace context when OpenTelemetry is installed (best effort)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

try:
    from opentelemetry import context as otel_context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    _PROPAGATOR: TraceContextTextMapPropagator | None = TraceContextTextMapPropagator()
except ImportError:  # the `otel` extra is not installed
    _PROPAGATOR = None


@contextlib.contextmanager
def trace_context(traceparent: str, tracestate: str) -> Iterator[None]:
    """Makes the job's step span the current span, so user spans nest under it."""
    if not traceparent or _PROPAGATOR is None:
        yield
        return
    carrier = {"traceparent": traceparent}
    if tracestate:
        carrier["tracestate"] = tracestate
    token = otel_context.attach(_PROPAGATOR.extract(carrier))
    try:
        yield
    finally:
        otel_context.detach(token)
