"""Prometheus metrics of one server process, in a registry of its own, served on GET /metrics.

Counters of the run lifecycle are fed by the history writer from the history records (each
record is read by one process, so sums over processes are exact and the step path pays
nothing); events by the event API; retries by the executor; queue gauges are read from Redis
when scraped (every process reports the same queues: aggregate them with max, not sum).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from redis.asyncio import Redis

from server.history.records import Record, RunEnded, RunStarted, StepRecorded
from server.keys import Keys
from server.queue.flow import REASONS as WAITING_REASONS
from server.queue.queue import NEW_RUN_SCORES
from server.types import RunStatus

__all__ = ["CONTENT_TYPE", "Metrics", "QueueSample", "probe_queues"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Seconds; steps and queue waits range from sub-millisecond to minutes.
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            10.0, 30.0, 60.0, 300.0)


@dataclass(frozen=True, slots=True)
class QueueSample:
    function_id: str
    ready: int  # runnable now, not leased
    scheduled: int  # due later: retry backoffs, sleeps
    oldest_ready_ms: int | None  # when the longest-waiting runnable job became runnable
    # Runs flow control holds, by reason (concurrency, throttle, debounce, batch).
    waiting: tuple[tuple[str, int], ...] = ()


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.events_received = Counter(
            "plait_events_received", "Events accepted by the event APIs.", registry=r)
        self.runs_started = Counter(
            "plait_runs_started", "Runs whose first job was leased.", ["function_id"],
            registry=r)
        self.runs_finished = Counter(
            "plait_runs_finished", "Runs that ended, by status (completed, failed, cancelled).",
            ["function_id", "status"], registry=r)
        self.step_attempts = Counter(
            "plait_step_attempts", "Jobs that ran to an outcome (completed, failed, sleeping).",
            ["function_id", "outcome"], registry=r)
        self.step_duration = Histogram(
            "plait_step_duration_seconds", "From a job's lease to its committed outcome.",
            ["function_id"], buckets=_BUCKETS, registry=r)
        self.lease_latency = Histogram(
            "plait_lease_latency_seconds",
            "From a job becoming runnable to its lease (queue wait).", ["function_id"],
            buckets=_BUCKETS, registry=r)
        self.retries = Counter(
            "plait_retries", "Failed attempts scheduled to run again.", ["function_id"],
            registry=r)
        self.queue_depth = Gauge(
            "plait_queue_depth", "Jobs runnable now and not leased.", ["function_id"],
            registry=r)
        self.queue_scheduled = Gauge(
            "plait_queue_scheduled", "Jobs due later (retry backoffs, sleeps).",
            ["function_id"], registry=r)
        self.queue_age = Gauge(
            "plait_queue_age_seconds", "How long the oldest runnable job has waited.",
            ["function_id"], registry=r)
        self.runs_waiting = Gauge(
            "plait_runs_waiting", "Queued runs flow control holds, by reason (concurrency, "
            "throttle, debounce, batch): what each run's `why` says.",
            ["function_id", "reason"], registry=r)
        self.jobs_leased = Gauge(
            "plait_jobs_leased", "Jobs leased to workers or apps right now.", registry=r)
        self.worker_connections = Gauge(
            "plait_worker_connections", "Open gRPC worker streams on this process.", ["app_id"],
            registry=r)
        self.gateway_calls = Counter(
            "plait_gateway_calls", "Calls to Inngest SDK apps, by HTTP status (or error).",
            ["status"], registry=r)
        self.role_restarts = Counter(
            "plait_role_restarts", "Role loops restarted after an unexpected failure.",
            ["role"], registry=r)
        self.events_unprocessable = Counter(
            "plait_events_unprocessable",
            "Events the runner could not process (logged as event.unprocessable, then dropped "
            "from the stream).", registry=r)

        # Labelled children by (metric, labels): labels() validates on every call.
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def record(self, records: Iterable[Record]) -> None:
        """Counts what a batch of history records says happened."""
        for record in records:
            if isinstance(record, RunStarted):
                self._child(self.runs_started, record.function_id).inc()
            elif isinstance(record, StepRecorded) and record.lease_id:
                # (A record without a lease ends a wait or an invoke: no attempt ran.)
                self._attempt(record.function_id, record.status.value, record.ts_ms,
                              record.started_ms, record.ready_ms)
            elif isinstance(record, RunEnded):
                self._child(self.runs_finished, record.function_id, record.status.value).inc()
                if record.status is RunStatus.COMPLETED and record.started_ms is not None:
                    self._attempt(record.function_id, record.status.value, record.ts_ms,
                                  record.started_ms, record.ready_ms)

    def _attempt(self, fn: str, outcome: str, ended_ms: int, started_ms: int | None,
                 ready_ms: int | None) -> None:
        self._child(self.step_attempts, fn, outcome).inc()
        if started_ms is None:
            return
        self._child(self.step_duration, fn).observe(max(0, ended_ms - started_ms) / 1000)
        if ready_ms is not None:
            self._child(self.lease_latency, fn).observe(max(0, started_ms - ready_ms) / 1000)

    def retry(self, function_id: str) -> None:
        self._child(self.retries, function_id).inc()

    def role_restarted(self, role: str) -> None:
        self._child(self.role_restarts, role).inc()

    def set_queues(self, samples: Sequence[QueueSample], leased: int, now_ms: int) -> None:
        for gauge in (self.queue_depth, self.queue_scheduled, self.queue_age, self.runs_waiting):
            gauge.clear()
        for s in samples:
            for reason, count in s.waiting:
                self.runs_waiting.labels(s.function_id, reason).set(count)
            self.queue_depth.labels(s.function_id).set(s.ready)
            self.queue_scheduled.labels(s.function_id).set(s.scheduled)
            age_ms = 0 if s.oldest_ready_ms is None else max(0, now_ms - s.oldest_ready_ms)
            self.queue_age.labels(s.function_id).set(age_ms / 1000)
        self.jobs_leased.set(leased)


async def probe_queues(
    redis: Redis, keys: Keys, function_ids: Sequence[str], now_ms: int
) -> tuple[list[QueueSample], int]:
    """Reads every function's ready sets (all shards) and the leased sets, pipelined."""
    shards = keys.all_shards()
    async with redis.pipeline(transaction=False) as pipe:
        for fn in function_ids:
            for sk in shards:
                pipe.zcount(sk.ready(fn), "-inf", now_ms)
                pipe.zcard(sk.ready(fn))
                pipe.zrange(sk.ready(fn), 0, 0, withscores=True)
                pipe.zrangebyscore(sk.ready(fn), NEW_RUN_SCORES, now_ms, start=0, num=1,
                                   withscores=True)
        for sk in shards:
            pipe.zcard(sk.leased)
        for fn in function_ids:
            for sk in shards:
                for reason in WAITING_REASONS:
                    pipe.scard(sk.waiting(fn, reason))
        replies = await pipe.execute()
    # A new run's first job is queued below NEW_RUN_SCORES ("runnable at once"): its run's
    # creation time tells how long it has waited.
    creations: list[tuple[int, str]] = []
    samples: list[QueueSample] = []
    i = 0
    for fn in function_ids:
        ready = total = 0
        oldest: int | None = None
        for sk in shards:
            due, count, first, first_timed = replies[i:i + 4]
            i += 4
            ready += int(due)
            total += int(count)
            if first and first[0][1] < NEW_RUN_SCORES:
                creations.append((len(samples), sk.run(_str(first[0][0]))))
            if first_timed and (oldest is None or first_timed[0][1] < oldest):
                oldest = int(first_timed[0][1])
        samples.append(QueueSample(fn, ready, total - ready, oldest))
    leased = sum(int(r) for r in replies[i:i + len(shards)])
    i += len(shards)
    for n in range(len(function_ids)):
        counts = dict.fromkeys(WAITING_REASONS, 0)
        for _ in shards:
            for reason in WAITING_REASONS:
                counts[reason] += int(replies[i])
                i += 1
        samples[n] = dataclasses.replace(samples[n], waiting=tuple(counts.items()))
    if creations:
        async with redis.pipeline(transaction=False) as pipe:
            for _, run_key in creations:
                pipe.hget(run_key, "created")
            created = await pipe.execute()
        for (n, _), raw in zip(creations, created, strict=True):
            if raw is None:
                continue
            s = samples[n]
            at = int(raw)
            if s.oldest_ready_ms is None or at < s.oldest_ready_ms:
                samples[n] = dataclasses.replace(s, oldest_ready_ms=at)
    return samples, leased


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
