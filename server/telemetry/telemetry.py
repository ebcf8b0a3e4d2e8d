"""The telemetry of one server process: the hooks the data path calls, in one object.

`tracing` is the one flag the step path checks: when no OTEL_* setting asks for export it is
False, no exporter exists, and every hook below returns at once. Metrics are always on.

Hooks, whichever transport runs a job (see docs/architecture.md, "Telemetry"):
- the executor calls `with_trace_context(jobs)` before handing jobs to a driver, so each job
  carries the W3C traceparent of its step span (drivers put it in gRPC fields / HTTP headers);
- a driver calls `dispatch_started(job, transport)` when it sends a job and
  `dispatch_ended(job, outcome, ...)` when the answer is back (or the job was given up), which
  makes the job's dispatch span; an HTTP driver passes `status_code` (counted per status);
- the history writer calls `history_written(records, roots)` after each committed batch;
- `run()` is the export task (a role of every process), `shutdown()` sends what is left.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import structlog
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.trace import SpanKind as OtelSpanKind
from redis.asyncio import Redis
from redis.exceptions import RedisError

from server.config import Settings
from server.history.records import Record
from server.keys import Keys
from server.telemetry.ids import SpanKind, format_traceparent, span_id, trace_id
from server.telemetry.metrics import Metrics, probe_queues
from server.telemetry.otlp import OtlpConfig, SpanExport
from server.telemetry.spans import (
    ATTEMPT,
    FUNCTION_ID,
    LEASE_ID,
    OUTCOME,
    RUN_ID,
    STATUS_ERROR,
    STATUS_OK,
    TRANSPORT,
    SpanBatch,
    SpanRow,
)
from server.types import Job, Opcode

__all__ = ["Telemetry", "outcome_of"]

# Dispatches still waiting for their answer; beyond this the oldest are forgotten (a job that
# never answers would otherwise be remembered for ever).
_MAX_IN_FLIGHT = 100_000
_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")

QUEUE_PROBE_FAILED = "metrics.queue_probe_failed"
_PROBE_TIMEOUT_S = 5.0

_log = structlog.get_logger(__name__)


def outcome_of(op: Opcode) -> str:
    """An opcode's name as a span outcome: StepCompleted -> "step_completed"."""
    return _CAMEL.sub("_", type(op).__name__).lower()


@dataclass(frozen=True, slots=True)
class _Dispatch:
    started_ns: int
    transport: str
    target: str


class Telemetry:
    def __init__(self, settings: Settings | None = None, *,
                 exporter: SpanExporter | None = None) -> None:
        """`exporter` replaces the OTLP one the settings ask for (tests)."""
        self.metrics = Metrics()
        config = OtlpConfig.from_settings(settings) if settings is not None else None
        self._export = SpanExport(config, exporter) if config is not None else None
        self.tracing = self._export is not None
        self._lease_ms = settings.lease_ms if settings is not None else 0
        self._in_flight: OrderedDict[tuple[str, str], _Dispatch] = OrderedDict()
        self._queues: tuple[Redis, Keys, Callable[[], Sequence[str]]] | None = None

    # -- jobs: the W3C context of their step spans, for workers and apps

    def traceparent(self, job: Job) -> str:
        """The traceparent of the span of the attempt a job is leased for."""
        assert self._export is not None
        trace = trace_id(job.run_id)
        return format_traceparent(trace, span_id(job.run_id, SpanKind.STEP, job.lease_id),
                                  self._export.sampled(trace))

    def with_trace_context(self, jobs: Sequence[Job]) -> list[Job]:
        """The jobs with their traceparent filled in (unchanged when tracing is off)."""
        if self._export is None:
            return list(jobs)
        return [dataclasses.replace(j, traceparent=self.traceparent(j)) for j in jobs]

    # -- drivers: one dispatch span per job sent

    def dispatch_started(self, job: Job, transport: str, target: str = "") -> None:
        if self._export is None or not self._export.sampled(trace_id(job.run_id)):
            return
        self._in_flight[(job.job_id, job.lease_id)] = _Dispatch(time.time_ns(), transport, target)
        if len(self._in_flight) > _MAX_IN_FLIGHT:
            self._in_flight.popitem(last=False)

    def dispatch_ended(self, job: Job, outcome: str, *, error: str = "",
                       status_code: int | None = None) -> None:
        """Ends the job's dispatch span: `outcome` is what came back (see `outcome_of`), or
        why nothing did ("released", "cancelled", "error"); `error` fails the span."""
        if status_code is not None:
            self.metrics.gateway_calls.labels(str(status_code)).inc()
        elif outcome == "error":
            self.metrics.gateway_calls.labels("error").inc()
        if self._export is None:
            return
        sent = self._in_flight.pop((job.job_id, job.lease_id), None)
        if sent is None:
            return
        trace = trace_id(job.run_id)
        if not self._export.sampled(trace):
            return
        now = time.time_ns()
        step = span_id(job.run_id, SpanKind.STEP, job.lease_id)
        # The attempt's own attributes are on its step span, the parent of this one.
        attributes: dict[str, str | int] = {
            RUN_ID: job.run_id, FUNCTION_ID: job.function_id, OUTCOME: outcome,
            TRANSPORT: sent.transport,
        }
        if sent.target:
            attributes["plait.target"] = sent.target
        if status_code is not None:
            attributes["http.response.status_code"] = status_code
        status = STATUS_ERROR if error else STATUS_OK
        self._export.span(
            f"dispatch {sent.transport}", trace, span_id(job.run_id, SpanKind.DISPATCH,
                                                         job.lease_id),
            step, sent.started_ns, now, attributes, status, error, kind=OtelSpanKind.CLIENT)
        if outcome == "released":
            # No history record will end this attempt: its step span is made here.
            root = span_id(job.run_id, SpanKind.RUN)
            started_ns = (job.lease_expires_at_ms - self._lease_ms) * 1_000_000
            self._export.span(
                "step (released)", trace, step, root, min(started_ns, sent.started_ns), now,
                {RUN_ID: job.run_id, FUNCTION_ID: job.function_id, ATTEMPT: job.attempt,
                 LEASE_ID: job.lease_id, OUTCOME: outcome}, STATUS_ERROR,
                error or "the job was released for redelivery")

    # -- history: metrics and the spans of each committed batch

    def history_written(self, records: Sequence[Record], roots: Iterable[SpanRow]) -> None:
        """Counts a committed batch of history records and, when tracing, exports the spans
        of the attempts they end and the roots of the runs that are now complete."""
        self.metrics.record(records)
        if self._export is not None:
            batch = SpanBatch()
            sampled = self._export.sampled
            for record in records:
                if sampled(trace_id(record.run_id)):
                    batch.add(record)
            self._export.rows(batch.spans.values())
            self._export.rows(roots)

    # -- events and retries

    def events_received(self, count: int) -> None:
        self.metrics.events_received.inc(count)

    def retry_scheduled(self, job: Job) -> None:
        self.metrics.retry(job.function_id)

    def worker_connected(self, app_id: str, delta: int) -> None:
        self.metrics.worker_connections.labels(app_id).inc(delta)

    # -- /metrics

    def watch_queues(self, redis: Redis, keys: Keys,
                     function_ids: Callable[[], Sequence[str]]) -> None:
        """Reads the queues of these functions into the gauges before each scrape."""
        self._queues = (redis, keys, function_ids)

    async def render_metrics(self) -> bytes:
        """The exposition text of GET /metrics, queue gauges read from Redis just now."""
        if self._queues is not None:
            redis, keys, function_ids = self._queues
            now_ms = int(time.time() * 1000)
            try:
                async with asyncio.timeout(_PROBE_TIMEOUT_S):
                    samples, leased = await probe_queues(redis, keys, function_ids(), now_ms)
            except (RedisError, OSError, TimeoutError) as e:
                # The counters are still worth serving; the gauges keep their last values.
                _log.warning(QUEUE_PROBE_FAILED, error=repr(e))
            else:
                self.metrics.set_queues(samples, leased, now_ms)
        return self.metrics.render()

    async def run(self) -> None:
        """The export role: sends spans in batches until cancelled (no-op without tracing)."""
        if self._export is not None:
            await self._export.run()

    async def shutdown(self) -> None:
        """Sends the spans still queued; after the roles stopped, so nothing is left out."""
        if self._export is not None:
            await self._export.shutdown()

