"""Plait's benchmark: a server subprocess, W worker processes, one JSON object on stdout.

Phases: low-load step latency, saturation with N three-step runs, event ingest, and the
server's RSS with 10,000 runs asleep. See bench/README.md for each key of the output.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import uvloop
from _backend import embedded, production
from _machine import machine_facts
from _otlp import SpanCounter, otlp_receiver
from _processes import RssSampler, ServerProcess, WorkerPool, log
from _stats import (
    event_to_first_step_ms,
    last_end_ns,
    last_step_to_end_ms,
    load_runs,
    runs_in,
    step_to_step_ms,
    summary_ms,
)
from plait_proto.v1 import event_pb2, event_pb2_grpc, management_pb2, management_pb2_grpc, run_pb2
from worker import APP_ID, SLEEP_S, SLEEPER, SLEEPER_EVENT, THREE_STEP, THREE_STEP_EVENT

THREE_STEP_ID = f"{APP_ID}-{THREE_STEP}"
SLEEPER_ID = f"{APP_ID}-{SLEEPER}"
NOBODY_EVENT = "bench/nobody"
INGEST_BATCH = 1000
INGEST_IN_FLIGHT = 4
SLEEPERS = 10_000
WARMUP_RUNS = 20
LOW_LOAD_RUNS = 200
# Event indexes per phase, so worker timings map back to their send times.
SATURATION_BASE = 0
WARMUP_BASE = 1_000_000
LOW_LOAD_BASE = 2_000_000
_RPC_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class Options:
    production: bool
    events: int
    workers: int
    concurrency: int
    batch: int
    ingest_events: int
    skip_sleepers: bool
    timeout_s: float
    redis_db: int
    server_log_level: str
    keep_tmp: bool
    tracing: bool
    durability: str = "fsync"


class _Client:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.events = event_pb2_grpc.EventServiceStub(channel)
        self.management = management_pb2_grpc.ManagementServiceStub(channel)

    async def send(self, name: str, indexes: Iterable[int]) -> None:
        await self.send_request(_request(name, indexes))

    async def send_request(self, request: event_pb2.SendEventsRequest) -> None:
        await self.events.SendEvents(request, timeout=_RPC_TIMEOUT_S)

    async def count_runs(self, function_id: str, status: run_pb2.RunStatus) -> int:
        count, token = 0, ""
        while True:
            reply = await self.management.ListRuns(
                management_pb2.ListRunsRequest(
                    function_id=function_id, status=status, page_size=1000, page_token=token),
                timeout=_RPC_TIMEOUT_S)
            count += len(reply.runs)
            token = reply.next_page_token
            if not token:
                return count

    async def function_ids(self) -> set[str]:
        reply = await self.management.ListFunctions(
            management_pb2.ListFunctionsRequest(app_id=APP_ID), timeout=_RPC_TIMEOUT_S)
        return {f.id for f in reply.functions}


def _request(name: str, indexes: Iterable[int]) -> event_pb2.SendEventsRequest:
    return event_pb2.SendEventsRequest(events=[
        event_pb2.EventInput(name=name, data_json=b'{"i":%d}' % i) for i in indexes])


def _completed_at_least(n: int) -> Callable[[WorkerPool], bool]:
    return lambda pool: pool.completed >= n


def _asleep_at_least(n: int) -> Callable[[WorkerPool], bool]:
    return lambda pool: pool.asleep >= n


async def _poll(probe: Callable[[], Any], done: Callable[[Any], bool], timeout_s: float) -> Any:
    """Polls `probe()` (a coroutine) until `done(value)`; returns the last value either way."""
    deadline = time.monotonic() + timeout_s
    value = await probe()
    while not done(value) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        value = await probe()
    return value


async def _send_concurrently(client: _Client, requests: list[event_pb2.SendEventsRequest]) -> None:
    pending = iter(requests)

    async def sender() -> None:
        for request in pending:
            await client.send_request(request)

    async with asyncio.TaskGroup() as tg:
        for _ in range(INGEST_IN_FLIGHT):
            tg.create_task(sender())


class _Bench:
    def __init__(self, opts: Options, client: _Client, pool: WorkerPool, sampler: RssSampler
                 ) -> None:
        self.opts = opts
        self.client = client
        self.pool = pool
        self.sampler = sampler
        self.sent_ns: dict[int, int] = {}
        self.result: dict[str, Any] = {}
        self.errors: list[str] = []

    async def registered(self) -> None:
        wanted = {THREE_STEP_ID, SLEEPER_ID}
        found = await _poll(self.client.function_ids, lambda ids: wanted <= ids, 30)
        if not wanted <= found:
            raise TimeoutError(f"functions {sorted(wanted - found)} not registered after 30s")

    async def low_load(self) -> None:
        self.sampler.begin_phase("low_load")
        log(f"warm-up: {WARMUP_RUNS} runs")
        target = self.pool.completed + WARMUP_RUNS
        await self.client.send(THREE_STEP_EVENT, range(WARMUP_BASE, WARMUP_BASE + WARMUP_RUNS))
        if not await self.pool.wait_until(_completed_at_least(target), 30):
            self.errors.append("warm-up runs did not complete within 30s")
            return
        log(f"low load: {LOW_LOAD_RUNS} runs one at a time")
        for i in range(LOW_LOAD_BASE, LOW_LOAD_BASE + LOW_LOAD_RUNS):
            target = self.pool.completed + 1
            self.sent_ns[i] = time.time_ns()
            await self.client.send(THREE_STEP_EVENT, [i])
            if not await self.pool.wait_until(_completed_at_least(target), 10):
                self.errors.append(f"low-load run {i - LOW_LOAD_BASE} did not complete in 10s")
                return

    async def saturation(self) -> None:
        n, batch = self.opts.events, self.opts.batch
        self.sampler.begin_phase("saturation")
        log(f"saturation: {n} runs in batches of {batch}")
        target = self.pool.completed + n
        started = time.monotonic()
        self.result["first_send_ns"] = time.time_ns()
        for start in range(SATURATION_BASE, SATURATION_BASE + n, batch):
            indexes = range(start, min(start + batch, SATURATION_BASE + n))
            sent = time.time_ns()
            for i in indexes:
                self.sent_ns[i] = sent
            await self.client.send(THREE_STEP_EVENT, indexes)
        self.result["saturation_send_s"] = round(time.monotonic() - started, 3)
        left_s = max(1.0, self.opts.timeout_s - (time.monotonic() - started))
        if not await self.pool.wait_until(_completed_at_least(target), left_s):
            self.errors.append(
                f"saturation: {self.pool.completed - (target - n)} of {n} runs completed "
                f"within --timeout {self.opts.timeout_s}s")
        self.result["saturation_worker_done_s"] = round(time.monotonic() - started, 3)

    async def confirm_completed(self) -> None:
        expected = WARMUP_RUNS + LOW_LOAD_RUNS + self.opts.events
        started = time.monotonic()
        count = await _poll(
            lambda: self.client.count_runs(THREE_STEP_ID, run_pb2.RUN_STATUS_COMPLETED),
            lambda c: c >= expected, 30)
        self.result["confirmed_completed_runs"] = count
        self.result["history_confirm_wait_s"] = round(time.monotonic() - started, 3)
        if count < expected:
            self.errors.append(f"ListRuns shows {count} of {expected} runs COMPLETED after 30s")

    async def ingest(self) -> None:
        total = self.opts.ingest_events
        self.sampler.begin_phase("ingest")
        log(f"ingest: {total} events, batches of {INGEST_BATCH}, {INGEST_IN_FLIGHT} in flight")
        requests = [
            _request(NOBODY_EVENT, range(start, min(start + INGEST_BATCH, total)))
            for start in range(0, total, INGEST_BATCH)
        ]
        started = time.perf_counter()
        await _send_concurrently(self.client, requests)
        elapsed = time.perf_counter() - started
        self.result["ingest_s"] = round(elapsed, 3)
        self.result["events_per_s_accepted"] = round(total / elapsed, 1)

    async def sleepers(self) -> None:
        self.sampler.begin_phase("sleepers")
        log(f"sleepers: {SLEEPERS} runs that sleep {SLEEP_S}s")
        target = self.pool.asleep + SLEEPERS
        requests = [
            _request(SLEEPER_EVENT, range(start, min(start + INGEST_BATCH, SLEEPERS)))
            for start in range(0, SLEEPERS, INGEST_BATCH)
        ]
        started = time.monotonic()
        await _send_concurrently(self.client, requests)
        # Measure before the first of them wakes up, 60 s after it was sent.
        budget_s = SLEEP_S - 10
        if not await self.pool.wait_until(_asleep_at_least(target), budget_s / 2):
            self.errors.append(f"sleepers: {self.pool.asleep} of {SLEEPERS} reached the sleep")
        count = await _poll(
            lambda: self.client.count_runs(SLEEPER_ID, run_pb2.RUN_STATUS_RUNNING),
            lambda c: c >= SLEEPERS, max(1.0, budget_s - (time.monotonic() - started)))
        self.result["sleepers_running"] = count
        self.result["sleepers_asleep_s"] = round(time.monotonic() - started, 3)
        if count < SLEEPERS:
            self.errors.append(f"sleepers: ListRuns shows {count} of {SLEEPERS} RUNNING")
        self.result["queued_10k_server_rss_mb"] = round(self.sampler.sample_now(), 1)


def _timings(bench: _Bench) -> dict[str, Any]:
    runs = load_runs(bench.pool.timing_files)
    n = bench.opts.events
    saturated = runs_in(runs, range(SATURATION_BASE, SATURATION_BASE + n))
    low = runs_in(runs, range(LOW_LOAD_BASE, LOW_LOAD_BASE + LOW_LOAD_RUNS))
    out: dict[str, Any] = {}
    last_ns = last_end_ns(saturated)
    first_ns = bench.result.get("first_send_ns")
    if last_ns is not None and first_ns is not None and len(saturated) == n:
        out["runs_per_s_completed"] = round(n / ((last_ns - first_ns) / 1e9), 1)
    else:
        out["runs_per_s_completed"] = None
    out["event_to_first_step_ms"] = summary_ms(event_to_first_step_ms(saturated, bench.sent_ns))
    out["step_to_step_ms"] = summary_ms(step_to_step_ms(saturated))
    out["last_step_to_return_ms"] = summary_ms(last_step_to_end_ms(saturated))
    out["low_load_step_to_step_ms"] = summary_ms(step_to_step_ms(low))
    out["low_load_event_to_first_step_ms"] = summary_ms(event_to_first_step_ms(low, bench.sent_ns))
    return out


def _header(opts: Options) -> dict[str, Any]:
    return {
        "mode": "production" if opts.production else "embedded",
        # fsync: each acknowledgement waits for its fsync (embedded Redis appendfsync always,
        # SQLite synchronous=FULL); relaxed: everysec / NORMAL. Production uses the
        # Redis and PostgreSQL as they are configured.
        "durability": opts.durability,
        "events": opts.events,
        "workers": opts.workers,
        "concurrency": opts.concurrency,
        "batch": opts.batch,
        "ingest_events": opts.ingest_events,
        **machine_facts(),  # the server runs in this interpreter's environment
        # Server spans exported over OTLP (--tracing); the worker makes no spans of its own.
        "tracing": opts.tracing,
        "worker_loop": "uvloop",
    }


_NOTES = {
    "step_to_step_ms": "b start - a start and c start - b start, pooled; includes the step "
    "body (~0 ms) and the replay of the steps before it",
    "runs_per_s_completed": "events / (last run's return in a worker - first send)",
    "last_step_to_return_ms": "c start to the function's return: the 4th job of each run",
    "server_peak_rss_mb": "server process alone, sampled every 100 ms over every phase",
    "redis_peak_rss_mb": "embedded Redis child of the server; null in production",
}


@contextlib.contextmanager
def _tmp_dir(keep: bool) -> Iterator[Path]:
    if keep:
        path = Path(tempfile.mkdtemp(prefix="plait-bench-"))
        log(f"keeping {path}")
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="plait-bench-") as tmp:
        yield Path(tmp)


@contextlib.asynccontextmanager
async def _receiver(opts: Options) -> AsyncIterator[SpanCounter | None]:
    if not opts.tracing:
        yield None
        return
    async with otlp_receiver() as counter:
        log(f"tracing: the server exports spans over OTLP/gRPC to {counter.endpoint}")
        yield counter


@contextlib.asynccontextmanager
async def _server(opts: Options, tmp: Path, receiver: SpanCounter | None
                  ) -> AsyncIterator[ServerProcess]:
    backend = production(opts.redis_db) if opts.production else embedded(tmp)
    env = {}
    if receiver is not None:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
               "OTEL_SERVICE_NAME": "plait-bench"}
    async with backend as args:
        args = [*args, "--durability", opts.durability]
        server = ServerProcess(args, tmp / "server.log", opts.server_log_level, env)
        log(f"starting server: {' '.join(args[:1])} on {server.target}")
        try:
            server.start()
            await server.wait_ready(60)
            yield server
        finally:
            log("stopping server")
            server.stop()


def _count_spans(result: dict[str, Any], receiver: SpanCounter) -> None:
    result["spans_received"] = receiver.spans


async def _bench(opts: Options) -> dict[str, Any]:
    result = _header(opts)
    errors: list[str] = []
    with _tmp_dir(opts.keep_tmp) as tmp:
        async with contextlib.AsyncExitStack() as stack:
            receiver = await stack.enter_async_context(_receiver(opts))
            if receiver is not None:
                # Counted once the server has stopped: it exports what it still holds then.
                stack.callback(_count_spans, result, receiver)
            server = await stack.enter_async_context(_server(opts, tmp, receiver))
            sampler = RssSampler(server.pid)
            sampler.start()
            pool = WorkerPool(tmp, server.target, opts.workers, opts.concurrency)
            channel = grpc.aio.insecure_channel(server.target)
            bench = _Bench(opts, _Client(channel), pool, sampler)
            try:
                async with asyncio.TaskGroup() as tg:
                    try:
                        await pool.start(tg)
                        await bench.registered()
                        await bench.low_load()
                        await bench.saturation()
                        await bench.confirm_completed()
                        await bench.ingest()
                        if not opts.skip_sleepers:
                            await bench.sleepers()
                    finally:
                        log("stopping workers")
                        await pool.stop()
                result.update(bench.result)
                result.update(_timings(bench))
            finally:
                await channel.close()
                sampler.stop()
                errors.extend(bench.errors)
            result["server_peak_rss_mb"] = round(sampler.peak_mb, 1)
            result["server_peak_rss_mb_by_phase"] = {
                k: round(v, 1) for k, v in sampler.phase_peaks_mb.items()}
            redis_mb = sampler.redis_peak_mb
            result["redis_peak_rss_mb"] = None if redis_mb is None else round(redis_mb, 1)
    result.setdefault("queued_10k_server_rss_mb", None)
    result.pop("first_send_ns", None)
    result["notes"] = _NOTES
    result["errors"] = errors
    return result


def _options(argv: list[str] | None = None) -> Options:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--production", action="store_true",
                   help="Redis + PostgreSQL on 127.0.0.1 instead of the embedded backend")
    p.add_argument("--events", type=int, default=2000, help="three-step runs at saturation")
    p.add_argument("--workers", type=int, default=1, help="worker processes")
    p.add_argument("--concurrency", type=int, default=200, help="max_concurrent_jobs per worker")
    p.add_argument("--batch", type=int, default=500, help="events per SendEvents at saturation")
    p.add_argument("--ingest-events", type=int, default=20_000, help="events of the ingest phase")
    p.add_argument("--skip-sleepers", action="store_true", help="skip the 10k sleepers phase")
    p.add_argument("--timeout", type=float, default=120.0,
                   help="seconds the saturation phase may take")
    p.add_argument("--redis-db", type=int, default=14, help="Redis db of --production, flushed")
    p.add_argument("--server-log-level", default="warning",
                   choices=("debug", "info", "warning", "error"), help="the server's --log-level")
    p.add_argument("--keep-tmp", action="store_true",
                   help="keep the tmp dir (server and worker logs) and print its path")
    p.add_argument("--tracing", action="store_true",
                   help="the server exports its spans over OTLP to a receiver in the bench")
    p.add_argument("--durability", default="fsync", choices=("fsync", "relaxed"),
                   help="the server's --durability, to measure what fsync costs")
    a = p.parse_args(argv)
    for name in ("events", "workers", "concurrency", "batch", "ingest_events"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} has value {getattr(a, name)}: must be at least 1")
    return Options(a.production, a.events, a.workers, a.concurrency, a.batch, a.ingest_events,
                   a.skip_sleepers, a.timeout, a.redis_db, a.server_log_level, a.keep_tmp,
                   a.tracing, a.durability)


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) task-group exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def main() -> None:
    opts = _options()
    try:
        result = uvloop.run(_bench(opts))
    except Exception as exc:
        reasons = [f"{type(e).__name__}: {e}" for e in _leaves(exc)]
        for reason in reasons:
            log(f"benchmark failed: {reason}")
        print(json.dumps({**_header(opts), "errors": reasons}, indent=2))
        sys.exit(1)
    print(json.dumps(result, indent=2))
    sys.exit(1 if result["errors"] else 0)


if __name__ == "__main__":
    main()
