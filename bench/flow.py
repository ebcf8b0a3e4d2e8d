"""Flow control's cost (issue 12): one JSON object on stdout.

lease: N runs of a function with a concurrency limit of 2 per `event.data.k`, over K keys (10,
then 10,000), made as the runner makes them (server/runner/flow.py) and enqueued; then, timed,
leased `--batch` at a time, each job completed at once (its slot freed and the key's next
waiter woken, in the completing script) until none is left. Jobs/s per K and their ratio: a
blocked job leaves the ready set, so 10,000 keys should lease as fast as 10. Runs directly on
the server's modules (Queue, StateStore) over the embedded backend's Redis (appendfsync always,
as `plait dev`), or over 127.0.0.1:6379 with --redis-db; no server, no worker.

slot_to_start: a `plait dev` server subprocess (the embedded backend, as bench/run.py) and a
worker in this process; M runs of a function with a concurrency limit of 1, whose bodies record
their own start and end. For each run after the first, its start minus the end of the run
before it: the freed slot's way back to the server, the completing script waking the next run,
the lease loop and the dispatch to the worker. p50, p99, max.

    python bench/flow.py [--runs 20000] [--keys 10,10000] [--batch 20]
                         [--latency-runs 300] [--redis-db N] [--skip-latency]

Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import structlog
import uvloop
from _backend import embedded
from _machine import git_sha, machine_facts
from _processes import ServerProcess
from _stats import summary_ms
from plait import App, Context, Step, TriggerEvent, Worker
from plait_proto.v1 import event_pb2, event_pb2_grpc, management_pb2, management_pb2_grpc
from redis.asyncio import Redis

from server.config import Settings
from server.dev.redis import EmbeddedRedis
from server.keys import Keys
from server.queue import Queue
from server.runner.flow import new_run
from server.state import StateStore
from server.types import (
    AppId,
    ConcurrencyLimit,
    EventTrigger,
    FlowControl,
    FunctionConfig,
    FunctionId,
    Job,
    RunCompleted,
)

LIMIT = 2
ENQUEUE_BATCH = 1000
FN = FunctionConfig(
    id=FunctionId("bench-flow"), app_id=AppId("bench"), slug="flow", name="flow",
    triggers=(EventTrigger("bench/flow"),),
    flow=FlowControl(concurrency=(ConcurrencyLimit(LIMIT, "event.data.k"),)))
LATENCY_APP = "flowbench"
LATENCY_EVENT = "flowbench/go"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True, slots=True)
class Options:
    runs: int
    keys: tuple[int, ...]
    batch: int
    latency_runs: int
    redis_db: int | None
    skip_latency: bool


def _event(i: int, keys: int) -> tuple[str, bytes, dict[str, Any]]:
    event_id = f"01JD{i:022d}"
    event = {"id": event_id, "name": "bench/flow", "data": {"k": f"key-{i % keys}"}, "ts": 0}
    return event_id, json.dumps(event, separators=(",", ":")).encode(), event


async def _enqueue(queue: Queue, n: int, keys: int, now_ms: int) -> None:
    shards = queue.keys.shards
    for start in range(0, n, ENQUEUE_BATCH):
        runs = []
        for i in range(start, min(start + ENQUEUE_BATCH, n)):
            event_id, raw, event = _event(i, keys)
            runs.append(new_run(FN, event_id, raw, shards, event))
        created = await queue.enqueue_runs(runs, now_ms)
        if not all(created):
            raise RuntimeError("enqueue_runs: a run already existed in a flushed db")


async def _drain(queue: Queue, state: StateStore, n: int, batch: int) -> tuple[float, int]:
    """Leases and completes every job; (seconds, lease calls)."""
    sk = queue.keys.shard(0)  # one shard: a flow-controlled function's runs share one
    done = calls = 0
    started = time.perf_counter()
    while done < n:
        now_ms = int(time.time() * 1000)
        jobs, _ = await queue.lease(sk, [(FN.id, batch)], batch, now_ms)
        calls += 1
        if not jobs:
            raise RuntimeError(f"nothing leasable after {done} of {n} jobs: a slot leaked")
        ops: list[tuple[Job, Any]] = [(job, RunCompleted(b"null")) for job in jobs]
        await state.apply(ops, now_ms, relock=False)
        done += len(jobs)
    return time.perf_counter() - started, calls


async def measure_lease(redis_url: str, runs: int, keys: Sequence[int], batch: int
                        ) -> dict[str, Any]:
    """Jobs/s of leasing and completing `runs` concurrency-limited jobs, per key count."""
    redis = Redis.from_url(redis_url)
    out: dict[str, Any] = {}
    try:
        for k in keys:
            await redis.flushdb()
            settings = Settings()
            key_map = Keys()
            queue = Queue(redis, key_map, settings.lease_ms, settings.finished_run_ttl_s)
            state = StateStore(redis, key_map, settings)
            log(f"lease: {runs} runs over {k} keys")
            await _enqueue(queue, runs, k, int(time.time() * 1000))
            seconds, calls = await _drain(queue, state, runs, batch)
            out[str(k)] = {"runs": runs, "keys": k, "lease_calls": calls,
                           "jobs_per_s": round(runs / seconds, 1), "seconds": round(seconds, 3)}
        await redis.flushdb()
    finally:
        await redis.aclose()
    rates = [v["jobs_per_s"] for v in out.values()]
    return {"by_keys": out, "ratio_min_to_max": round(min(rates) / max(rates), 3)}


async def measure_slot_to_start(target: str, runs: int) -> dict[str, Any]:
    """Latency from one run's end to the next run's start under a limit of 1 (from the
    bodies' own recorded times)."""
    app = App(LATENCY_APP)
    marks: list[tuple[int, int]] = []
    all_done = asyncio.Event()

    @app.function("serial", trigger=TriggerEvent(LATENCY_EVENT), retries=0, concurrency=1)
    async def serial(ctx: Context, step: Step) -> None:
        start = time.time_ns()
        await asyncio.sleep(0.001)  # a body that takes a moment
        marks.append((start, time.time_ns()))
        if len(marks) >= runs:
            all_done.set()

    worker = Worker(app, server=target, max_concurrent_jobs=10, shutdown_grace_s=1)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(worker.arun())
        try:
            async with grpc.aio.insecure_channel(target) as channel:
                management = management_pb2_grpc.ManagementServiceStub(channel)
                await _wait_registered(management, f"{LATENCY_APP}-serial")
                events = event_pb2_grpc.EventServiceStub(channel)
                await events.SendEvents(event_pb2.SendEventsRequest(events=[
                    event_pb2.EventInput(name=LATENCY_EVENT, data_json=b"{}")
                    for _ in range(runs)]), timeout=30)
                async with asyncio.timeout(30 + runs * 0.1):
                    await all_done.wait()
        finally:
            await worker.stop()
    ordered = sorted(marks)
    gaps = [(b[0] - a[1]) / 1e6 for a, b in itertools.pairwise(ordered)]
    overlapping = sum(1 for g in gaps if g < 0)
    return {"runs": len(marks), "slot_to_start_ms": summary_ms(gaps),
            "overlapping_runs": overlapping}


async def _wait_registered(management: management_pb2_grpc.ManagementServiceStub,
                           function_id: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        reply = await management.ListFunctions(management_pb2.ListFunctionsRequest(),
                                               timeout=10)
        if function_id in {f.id for f in reply.functions}:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{function_id} not registered after 30s")


@contextlib.asynccontextmanager
async def _lease_redis(opts: Options, tmp: Path) -> AsyncIterator[str]:
    if opts.redis_db is not None:
        from _backend import _redis_db  # the test suite's lock on the db, flushed after

        async with _redis_db(opts.redis_db) as url:
            yield url
        return
    redis = EmbeddedRedis(tmp / "lease-redis")
    url = await redis.start()
    try:
        yield url
    finally:
        await redis.stop()


@contextlib.asynccontextmanager
async def _server(tmp: Path) -> AsyncIterator[ServerProcess]:
    async with embedded(tmp) as args:
        server = ServerProcess(args, tmp / "server.log")
        server.start()
        try:
            await server.wait_ready(60)
            yield server
        finally:
            server.stop()


async def _bench(opts: Options) -> dict[str, Any]:
    result: dict[str, Any] = {"bench": "flow", **machine_facts(),
                              "backend": "production" if opts.redis_db is not None
                              else "embedded", "limit_per_key": LIMIT, "batch": opts.batch}
    with tempfile.TemporaryDirectory(prefix="plait-flow-bench-") as tmp_name:
        tmp = Path(tmp_name)
        async with _lease_redis(opts, tmp) as url:
            result["lease"] = await measure_lease(url, opts.runs, opts.keys, opts.batch)
        if not opts.skip_latency:
            log(f"slot to start: {opts.latency_runs} runs, limit 1, embedded server")
            async with _server(tmp) as server:
                result["latency"] = await measure_slot_to_start(server.target, opts.latency_runs)
    result["notes"] = {
        "lease": "jobs leased --batch at a time and completed at once (apply RunCompleted), "
                 "per number of keys; ratio_min_to_max near 1 means the key count costs "
                 "nothing",
        "slot_to_start_ms": "next run's body start - previous run's body end, limit 1: an "
                            "upper bound of freed slot -> next start (includes the worker's "
                            "answer reaching the server)",
    }
    return result


def _keys(text: str) -> tuple[int, ...]:
    return tuple(int(part.replace("_", "")) for part in text.split(",") if part.strip())


def _options(argv: list[str] | None = None) -> Options:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=20_000, help="runs per lease measurement")
    p.add_argument("--keys", type=_keys, default=(10, 10_000),
                   help="concurrency keys per lease measurement (comma-separated)")
    p.add_argument("--batch", type=int, default=20, help="jobs per lease call")
    p.add_argument("--latency-runs", type=int, default=300, help="runs of the latency phase")
    p.add_argument("--redis-db", type=int, default=None,
                   help="lease phase on this db of Redis 127.0.0.1:6379 instead of an "
                        "embedded Redis (flushed before and after)")
    p.add_argument("--skip-latency", action="store_true", help="skip the slot-to-start phase")
    a = p.parse_args(argv)
    for name in ("runs", "batch", "latency_runs"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} has value {getattr(a, name)}: must be at least 1")
    if not a.keys or min(a.keys) < 1:
        p.error(f"--keys has value {a.keys}: give positive counts")
    return Options(a.runs, a.keys, a.batch, a.latency_runs, a.redis_db, a.skip_latency)


def main(argv: list[str] | None = None) -> None:
    opts = _options(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
                        logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    try:
        result = uvloop.run(_bench(opts))
    except Exception as exc:
        log(f"benchmark failed: {type(exc).__name__}: {exc}")
        print(json.dumps({"bench": "flow", "git_sha": git_sha(),
                          "errors": [f"{type(exc).__name__}: {exc}"]}))
        sys.exit(1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
