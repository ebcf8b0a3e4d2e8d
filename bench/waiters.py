"""Wait-for-event matching cost against the number of waiting runs: one JSON object on stdout.

For each N, N runs of one function wait for `bench/paid` (each run's event has a distinct
`data.id`); then a batch holding ONE matching event goes through the runner's real
`WaitMatcher`, repeated with fresh targets. With an indexed `if`
(`event.data.id == async.data.id`) the time and the Redis commands per match should not grow
with N; with an `if` the index cannot serve (scanned), they do. Runs directly against the
server's modules (Queue, StateStore, WaitMatcher) on a Redis db: no server, no worker.
The runs' jobs are never run: a resumed run's job is taken out of the ready set once checked,
and a new waiting run takes its place, so N stays N.

    python bench/waiters.py [--sizes 100,1000,10000] [--scanned-sizes 100,1000]
                            [--repeats 50] [--redis-db 9]

The db (of Redis 127.0.0.1:6379) is claimed with the test suite's lock key, like
`run.py --production`, and flushed before and after. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog
import uvloop
from _machine import git_sha, machine_facts
from redis.asyncio import Connection, Redis
from redis.typing import EncodableT

from server.config import Settings
from server.keys import Keys, ShardKeys
from server.queue import NewRun, Queue
from server.runner.waits import WaitMatcher
from server.state import Outcome, StateStore
from server.types import AppId, EventId, FunctionId, Job, RunId, StepId, WaitForEvent

FN = FunctionId("bench-waiter")
APP = AppId("bench")
TRIGGER = "bench/start"
EVENT = "bench/paid"
STEP = StepId("paid")
INDEXED_IF = "event.data.id == async.data.id"
SCANNED_IF = "async.data.id == event.data.id && async.data.ok == true"
BATCH = 1000  # runs per enqueue / lease / apply call while setting up
WARMUP_MATCHES = 3  # untimed matches first (script load, CEL compile, connection)
TIMEOUT_MS = 24 * 3600 * 1000
_MB = 1024 * 1024


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class CountingConnection(Connection):
    """Counts the commands this process sends and the writes (round trips) they take."""

    commands = 0
    round_trips = 0

    def pack_command(self, *args: EncodableT) -> list[bytes]:
        CountingConnection.commands += 1
        return super().pack_command(*args)

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.round_trips += 1
        await super().send_packed_command(command, check_health)


@dataclass(frozen=True, slots=True)
class Options:
    sizes: tuple[int, ...]
    scanned_sizes: tuple[int, ...]
    repeats: int
    redis_db: int
    seed: int


@dataclass(slots=True)
class _Match:
    ms: float
    client_commands: int
    round_trips: int
    server_commands: int
    right_run: bool


def _run_id(i: int) -> RunId:
    return RunId(f"w{i:06d}")


def _event_json(i: int) -> bytes:
    return json.dumps({"id": f"start-{i}", "name": TRIGGER, "data": {"id": i},
                       "ts": 0}).encode()


async def _command_calls(admin: Redis) -> int:
    """Commands Redis ran (server-wide, commands inside scripts included), INFO left out."""
    stats = await admin.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if not k.startswith("cmdstat_info"))


async def _used_memory(admin: Redis) -> int:
    return int((await admin.info("memory"))["used_memory"])


class _Waiters:
    """N runs of FN, each leased and parked on a wait for EVENT with `if_expression`."""

    def __init__(self, redis: Redis, admin: Redis, n: int, if_expression: str, seed: int
                 ) -> None:
        self.redis = redis
        self.admin = admin
        self.n = n
        self.if_expression = if_expression
        self.keys = Keys()
        self.sk: ShardKeys = self.keys.shard(0)
        settings = Settings()
        self.queue = Queue(redis, self.keys, settings.lease_ms, settings.finished_run_ttl_s)
        self.state = StateStore(redis, self.keys, settings)
        self.matcher = WaitMatcher(redis, self.keys, self.state, _no_cancel)
        self.rng = random.Random(seed)
        self.now_ms = int(time.time() * 1000)
        self.memory: dict[str, int] = {}

    async def setup(self) -> None:
        await self.redis.flushdb()
        self.memory["empty"] = await _used_memory(self.admin)
        await self._park(range(self.n), self.now_ms, measure=True)
        waiting = await self.redis.hlen(self.sk.waits(EVENT))
        if waiting != self.n:
            raise RuntimeError(f"{waiting} wait entries for {self.n} runs")

    async def _park(self, indexes: range, now_ms: int, measure: bool = False) -> None:
        """Creates runs #indexes, leases their jobs and commits a WaitForEvent for each."""
        for start in range(indexes.start, indexes.stop, BATCH):
            runs = [NewRun(_run_id(i), FN, APP, EventId(f"start-{i}"), _event_json(i), 1,
                           now_ms) for i in range(start, min(start + BATCH, indexes.stop))]
            created = await self.queue.enqueue_runs(runs, now_ms)
            if not all(created):
                raise RuntimeError("enqueue_runs: a run already existed in a flushed db")
        jobs: list[Job] = []
        while len(jobs) < len(indexes):
            take = min(BATCH, len(indexes) - len(jobs))
            leased, _ = await self.queue.lease(self.sk, [(FN, take)], take, now_ms)
            if not leased:
                raise RuntimeError(f"leased {len(jobs)} of {len(indexes)} jobs")
            jobs.extend(leased)
        if measure:
            self.memory["leased"] = await _used_memory(self.admin)
        op = WaitForEvent(STEP, "paid", EVENT, self.if_expression, self.now_ms + TIMEOUT_MS)
        for start in range(0, len(jobs), BATCH):
            applied = await self.state.apply(
                [(job, op) for job in jobs[start:start + BATCH]], now_ms, relock=False)
            bad = [a for a in applied if a.outcome is not Outcome.SCHEDULED]
            if bad:
                raise RuntimeError(f"WaitForEvent not applied: {bad[0]}")
        if measure:
            self.memory["waiting"] = await _used_memory(self.admin)

    def targets(self, count: int) -> list[int]:
        """Run #N/2 first, then distinct others at random."""
        middle = self.n // 2
        others = self.rng.sample([i for i in range(self.n) if i != middle],
                                 min(count, self.n) - 1)
        return [middle, *others]

    async def match(self, i: int, k: int) -> _Match:
        """One batch holding one event that matches run #i only."""
        now = self.now_ms + 1000 + k
        raw = json.dumps({"id": f"paid-{k}", "name": EVENT, "data": {"id": i, "ok": True},
                          "ts": now}).encode()
        before_server = await _command_calls(self.admin)
        before_commands = CountingConnection.commands
        before_trips = CountingConnection.round_trips
        started = time.perf_counter()
        resumed = await self.matcher.process([(EVENT, raw)], now)
        elapsed_ms = (time.perf_counter() - started) * 1000
        commands = CountingConnection.commands - before_commands
        trips = CountingConnection.round_trips - before_trips
        server = await _command_calls(self.admin) - before_server
        right = resumed == 1 and await self._resumed(i, now, raw)
        await self._replace(i, k, now)
        return _Match(elapsed_ms, commands, trips, server, right)

    async def _replace(self, i: int, k: int, now: int) -> None:
        """Keeps N runs waiting: the resumed run's job leaves the ready set (no worker runs
        it) and a new run #N+k takes its place."""
        await self.redis.zrem(self.sk.ready(FN), _run_id(i))
        await self._park(range(self.n + k, self.n + k + 1), now)

    async def _resumed(self, i: int, now: int, raw: bytes) -> bool:
        """Run #i's job is due now, its step holds the event, its wait entry is gone."""
        run = _run_id(i)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zscore(self.sk.ready(FN), run)
            pipe.hget(self.sk.steps(run), STEP)
            pipe.hexists(self.sk.waits(EVENT), f"{run}/{STEP}")
            pipe.hlen(self.sk.waits(EVENT))
            score, memo, still_waiting, left = await pipe.execute()
        return (score == now and memo == b'{"data":' + raw + b"}" and not still_waiting
                and left == self.n - 1)


async def _no_cancel(run_id: RunId) -> None:
    return None


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def _measure(redis: Redis, admin: Redis, n: int, if_expression: str, repeats: int,
                   seed: int) -> tuple[dict[str, Any], bool, dict[str, int]]:
    waiters = _Waiters(redis, admin, n, if_expression, seed)
    started = time.monotonic()
    await waiters.setup()
    setup_s = time.monotonic() - started
    # Run #N/2 is the first one timed; the untimed warm-ups take random others, if N allows.
    targets = waiters.targets(repeats + WARMUP_MATCHES)
    warmups = WARMUP_MATCHES if len(targets) > WARMUP_MATCHES + 1 else 0
    warm, timed = targets[1:1 + warmups], [targets[0], *targets[1 + warmups:]]
    k, right = 0, True
    for i in warm:
        right = (await waiters.match(i, k)).right_run and right
        k += 1
    matches: list[_Match] = []
    for i in timed:
        matches.append(await waiters.match(i, k))
        k += 1
    right = right and all(m.right_run for m in matches)
    ms = [m.ms for m in matches]
    result = {
        "waiting_runs": n,
        "matches": len(matches),
        "setup_s": round(setup_s, 3),
        "match_ms_p50": round(statistics.median(ms), 3),
        "match_ms_p99": round(_pct(ms, 0.99), 3),
        "match_ms_max": round(max(ms), 3),
        "redis_commands_per_match": statistics.median_low(
            m.client_commands for m in matches),
        "redis_round_trips_per_match": statistics.median_low(m.round_trips for m in matches),
        "redis_server_commands_per_match": statistics.median_low(
            m.server_commands for m in matches),
        "resumed_right_run": right,
    }
    return result, right, waiters.memory


_NOTES = {
    "match_ms": "one WaitMatcher.process call with a batch of one event that matches one "
    "waiting run, through its resume (resume_wait.lua); p50/p99/max over the timed matches",
    "redis_commands_per_match": "median commands this process sent (EVALSHA counts as one)",
    "redis_round_trips_per_match": "median writes to the socket (a pipeline is one)",
    "redis_server_commands_per_match": "median INFO commandstats delta around the call: "
    "includes the commands run inside Lua scripts; server-wide, so other clients of this "
    "Redis can add to it",
    "indexed": f"if = {INDEXED_IF!r}: found through the wait index",
    "scanned": f"if = {SCANNED_IF!r}: not indexable, every entry is evaluated (one HGET "
    "of its run's event each)",
    "waiting_runs_redis_mb": "used_memory at the largest indexed N, all runs waiting, minus "
    "the flushed db (run, job, steps, history records and wait entries); server-wide",
    "waiting_run_redis_bytes": "waiting_runs_redis_mb per run, in bytes",
    "wait_entries_redis_mb": "the same from the runs leased to all waiting: the wait entries, "
    "index sets, memos and history records of the WaitForEvent commits",
}


async def measure(redis_url: str, sizes: Sequence[int], scanned_sizes: Sequence[int],
                  repeats: int, seed: int = 1) -> dict[str, Any]:
    """Runs every size on the (flushed, then left flushed) db of `redis_url`."""
    redis = Redis.from_url(redis_url, connection_class=CountingConnection)
    admin = Redis.from_url(redis_url)
    try:
        info = await admin.info("server")
        result: dict[str, Any] = {
            "bench": "waiters",
            **machine_facts(),
            "redis_version": info.get("redis_version"),
            "repeats": repeats,
            "indexed": {},
            "scanned": {},
        }
        right = True
        memory: dict[str, int] = {}
        for kind, expression, ns in (("indexed", INDEXED_IF, sizes),
                                     ("scanned", SCANNED_IF, scanned_sizes)):
            for n in ns:
                log(f"{kind}: {n} waiting runs, {repeats} matches")
                one, ok, mem = await _measure(redis, admin, n, expression, repeats, seed)
                result[kind][str(n)] = one
                right = right and ok
                if kind == "indexed" and n == max(sizes):
                    memory = mem
        if memory:
            result["waiting_runs_redis_mb"] = round(
                (memory["waiting"] - memory["empty"]) / _MB, 2)
            result["wait_entries_redis_mb"] = round(
                (memory["waiting"] - memory["leased"]) / _MB, 2)
            result["waiting_run_redis_bytes"] = round(
                (memory["waiting"] - memory["empty"]) / max(sizes))
        indexed = result["indexed"]
        if len(indexed) > 1:
            small, large = indexed[str(min(sizes))], indexed[str(max(sizes))]
            result["indexed_p50_ratio_largest_to_smallest"] = round(
                large["match_ms_p50"] / small["match_ms_p50"], 2)
        result["resumed_right_run"] = right
        result["notes"] = _NOTES
        return result
    finally:
        await redis.flushdb()
        await redis.aclose()
        await admin.aclose()


def _sizes(text: str) -> tuple[int, ...]:
    sizes = tuple(int(s.replace("_", "")) for s in text.split(",") if s.strip())
    if any(n < 1 for n in sizes):
        raise argparse.ArgumentTypeError(f"{text}: every size must be at least 1")
    return sizes


def _options(argv: list[str] | None = None) -> Options:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sizes", type=_sizes, default=(100, 1_000, 10_000),
                   help="waiting runs per indexed measurement (comma-separated)")
    p.add_argument("--scanned-sizes", type=_sizes, default=(100, 1_000),
                   help="waiting runs per scanned measurement (comma-separated; '' for none)")
    p.add_argument("--repeats", type=int, default=50, help="timed matches per size")
    p.add_argument("--redis-db", type=int, default=9,
                   help="db of Redis 127.0.0.1:6379; flushed before and after")
    p.add_argument("--seed", type=int, default=1, help="seed of the targets' order")
    a = p.parse_args(argv)
    if a.repeats < 1:
        p.error(f"--repeats has value {a.repeats}: must be at least 1")
    if not a.sizes:
        p.error("--sizes is empty")
    return Options(a.sizes, a.scanned_sizes, a.repeats, a.redis_db, a.seed)


async def _bench(opts: Options) -> dict[str, Any]:
    # The test suite's lock on the db (in db 0), flushed before and after.
    from _backend import _redis_db

    async with _redis_db(opts.redis_db) as url:
        return await measure(url, opts.sizes, opts.scanned_sizes, opts.repeats, opts.seed)


def main(argv: list[str] | None = None) -> None:
    opts = _options(argv)
    # stdout is the JSON alone: the server's info logs (wait.resumed) are not measured.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
                        logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    try:
        result = uvloop.run(_bench(opts))
    except Exception as exc:
        log(f"benchmark failed: {type(exc).__name__}: {exc}")
        print(json.dumps({"bench": "waiters", "git_sha": git_sha(),
                          "errors": [f"{type(exc).__name__}: {exc}"]}, indent=2))
        sys.exit(1)
    print(json.dumps(result, indent=2))
    sys.exit(0 if result["resumed_right_run"] else 1)


if __name__ == "__main__":
    main()
