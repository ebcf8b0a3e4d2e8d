"""The chaos driver: N runs of mixed functions under seeded kill -9 of server, worker and Redis.

A Plait server (tests/e2e/harness.py `ServerProcess`), a worker (tests/chaos/worker_main.py)
and Redis run as processes of their own; on the production backend Redis is a redis-server this
driver starts on a free loopback port (AOF, appendfsync always), on the embedded backend it is
the server's private Redis. While events are sent at a steady pace, a seeded schedule kills one
of the three with SIGKILL at random moments and starts it again. After the last restart every
run must reach a final status within a bound, and the invariants are read from history
(ManagementService) and from the side-effect log the step bodies write:

- lost_events: an acknowledged event history does not know;
- lost_runs: an acknowledged trigger event without a run (sends carry an idempotency key, so
  the run may belong to an unacknowledged earlier attempt: `deduplicated` counts those);
- duplicate_runs / duplicate_children: more than one run per idempotency key, or per invoke;
- stuck: a run not finished within the bound after the last restart;
- failed: a run that failed (no function here raises, so any failure is a fault);
- rerun_after_commit: a step body started after history recorded that step's result;
- double_commits: a step with two completed attempts in history;
- duplicates_in_flight: extra executions that started before the result was committed (an
  attempt cut short by a kill): allowed, counted;
- crashes: a server or worker that exited without being killed (a Redis kill must not end
  Plait), restarted by the driver and counted;
- unknown_errors: UNKNOWN / INTERNAL answers to the driver's sends (reported, not asserted).

`python -m tests.chaos.driver --backend embedded --runs 100 --kills 2 --workdir /tmp/c` runs it
alone (logs kept in the workdir); pytest runs it from tests/chaos/test_chaos.py. It prints one
JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
from plait_proto.v1 import event_pb2, management_pb2, run_pb2

from tests.chaos.processes import ChaosServer, RedisServer, WorkerProcess
from tests.chaos.report import KILL_KINDS, Report, check_steps, side_effects
from tests.chaos.worker_main import KINDS
from tests.e2e.harness import Client, free_port, settings_for, wait_for_port

T = TypeVar("T")
TERMINAL = (run_pb2.RUN_STATUS_COMPLETED, run_pb2.RUN_STATUS_FAILED, run_pb2.RUN_STATUS_CANCELLED)
FUNCTIONS = [f"chaos-{k}" for k in (*KINDS, "child")]
CALL_TIMEOUT_S = 5.0
# How long a killed process stays down, at most (seeded).
MAX_DOWN_S = 1.0


@dataclass
class ChaosConfig:
    backend: str  # "embedded" or "production"
    runs: int
    kills: int  # of each kind
    seed: int
    workdir: Path
    database_url: str = ""  # production only
    load_s: float = 0.0  # how long events are sent for; 0: derived from runs
    settle_s: float = 120.0  # the bound on finishing after the last restart

    def load_seconds(self) -> float:
        return self.load_s or max(8.0, self.runs * 0.12)


async def _call(make: Callable[[], Awaitable[T]]) -> T:
    return await asyncio.wait_for(make(), CALL_TIMEOUT_S)


class Chaos:
    def __init__(self, cfg: ChaosConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.report = Report(cfg.backend, cfg.seed)
        cfg.workdir.mkdir(parents=True, exist_ok=True)
        self.side_effects = cfg.workdir / "steps.log"
        self.redis = RedisServer(cfg.workdir) if cfg.backend == "production" else None
        ports = {"http_port": free_port(), "grpc_port": free_port()}
        settings = settings_for(cfg.backend, cfg.workdir, self.redis.url if self.redis else "",
                                cfg.database_url, **ports)
        self.settings = settings
        self.server = ChaosServer(settings, cfg.workdir / "server.log")
        self.client = Client(settings.grpc_port)
        self.worker = WorkerProcess(self.client.target, self.side_effects,
                                    cfg.workdir / "worker.log")
        self.triggers: dict[str, tuple[str, int]] = {}  # acked event id -> (kind, n)
        self.signals: list[str] = []
        self.restarting: set[str] = set()  # kinds being killed on purpose right now
        self.last_restart = time.monotonic()

    # Processes.

    async def start(self) -> None:
        if self.redis is not None:
            self.redis.start()
        self.server.start()
        await wait_for_port(self.settings.grpc_port, 60)
        self.worker.start()
        await self._registered()

    async def stop(self) -> None:
        await self.client.close()
        self.worker.stop()
        self.server.stop()
        if self.redis is not None:
            self.redis.stop()

    async def _registered(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(grpc.aio.AioRpcError, TimeoutError):
                reply = await _call(lambda: self.client.management.ListFunctions(
                    management_pb2.ListFunctionsRequest()))
                if set(FUNCTIONS) <= {f.id for f in reply.functions}:
                    return
            if time.monotonic() > deadline:
                raise AssertionError("the chaos worker did not register within 60 s")
            await asyncio.sleep(0.1)

    def _embedded_redis_pid(self) -> int | None:
        try:
            pid = int((self.settings.data_dir / "redis.pid").read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    async def _kill(self, kind: str) -> None:
        self.restarting.add(kind)
        try:
            down_s = self.rng.uniform(0.05, MAX_DOWN_S)
            if kind == "server":
                if self.server.alive():
                    self.server.kill()
                await asyncio.sleep(down_s)
                self.server.start()
                await wait_for_port(self.settings.grpc_port, 60)
            elif kind == "worker":
                self.worker.kill()
                await asyncio.sleep(down_s)
                self.worker.start()
            elif self.redis is not None:
                self.redis.kill()
                await asyncio.sleep(down_s)
                self.redis.start()
            else:
                # The private Redis of `plait dev`: Plait itself is to restart it from its AOF.
                pid = self._embedded_redis_pid()
                if pid is not None:
                    os.kill(pid, signal.SIGKILL)
                await self._until(lambda: self._embedded_redis_pid() not in (None, pid), 30)
            self.report.kills[kind] += 1
        finally:
            self.restarting.discard(kind)
            self.last_restart = time.monotonic()

    async def _until(self, done: Callable[[], bool], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if done() or time.monotonic() > deadline:
                return
            await asyncio.sleep(0.05)

    async def _monitor(self) -> None:
        """Restarts (and counts) a server or worker that exited without being killed."""
        while True:
            await asyncio.sleep(0.2)
            if "server" not in self.restarting and not self.server.alive():
                self.report.crashes["server"] += 1
                self.report.note(f"server exited by itself: code {self.server.proc.returncode}"
                                 if self.server.proc else "server exited")
                self.server.start()
                self.last_restart = time.monotonic()
            if "worker" not in self.restarting and not self.worker.alive():
                self.report.crashes["worker"] += 1
                self.worker.start()
                self.last_restart = time.monotonic()

    # Load.

    async def _send(self, name: str, data: dict[str, Any]) -> str:
        """Sends until acknowledged. An unacknowledged attempt may still have been stored: the
        idempotency key makes the retries of one event start one run at most."""
        request = event_pb2.SendEventsRequest(events=[event_pb2.EventInput(
            name=name, data_json=json.dumps(data).encode(),
            idempotency_key=f"chaos-{self.cfg.seed}-{name}-{data['n']}")])
        while True:
            try:
                reply = await _call(lambda: self.client.events.SendEvents(request))
                return str(reply.ids[0])
            except grpc.aio.AioRpcError as e:
                if e.code() in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL):
                    self.report.unknown_errors += 1
                    self.report.note(f"SendEvents answered {e.code().name}: {e.details()}"[:300])
                await asyncio.sleep(0.1)
            except TimeoutError:
                await asyncio.sleep(0.1)

    async def _load(self) -> None:
        load_s = self.cfg.load_seconds()
        start = time.monotonic()
        async with asyncio.TaskGroup() as signals:
            for n in range(self.cfg.runs):
                await asyncio.sleep(
                    max(0.0, start + n * load_s / self.cfg.runs - time.monotonic()))
                kind = KINDS[n % len(KINDS)]
                event_id = await self._send(f"chaos/{kind}", {"n": n})
                self.triggers[event_id] = (kind, n)
                if kind == "wait":
                    signals.create_task(self._signal(n))

    async def _signal(self, n: int) -> None:
        await asyncio.sleep(self.rng.uniform(0.1, 1.5))
        self.signals.append(await self._send("chaos/signal", {"n": n}))

    async def _kills(self) -> None:
        load_s = self.cfg.load_seconds()
        kinds = [k for k in KILL_KINDS for _ in range(self.cfg.kills)]
        self.rng.shuffle(kinds)
        moments = sorted(self.rng.uniform(0.5, load_s) for _ in kinds)
        start = time.monotonic()
        for moment, kind in zip(moments, kinds, strict=True):
            await asyncio.sleep(max(0.0, start + moment - time.monotonic()))
            await self._kill(kind)

    # Checks.

    async def _all_runs(self) -> list[run_pb2.Run]:
        runs: list[run_pb2.Run] = []
        token = ""
        while True:
            request = management_pb2.ListRunsRequest(page_size=1000, page_token=token)
            reply = await _call(lambda r=request: self.client.management.ListRuns(r))  # type: ignore[misc]
            runs.extend(reply.runs)
            token = reply.next_page_token
            if not token:
                return runs

    async def _settled(self) -> list[run_pb2.Run]:
        """Every run, once all have finished and every trigger has its run (or at the bound)."""
        runs: list[run_pb2.Run] = []
        # A crash loop keeps moving the last restart: the wait ends at this bound anyway.
        hard_deadline = time.monotonic() + 3 * self.cfg.settle_s
        while True:
            with contextlib.suppress(grpc.aio.AioRpcError, TimeoutError):
                runs = await self._all_runs()
                # One run per trigger (an acknowledged retry the idempotency key stopped has
                # its run under its first attempt's event id: counted by key in _check).
                started = sum(1 for r in runs if r.function_id != "chaos-child")
                if all(r.status in TERMINAL for r in runs) and started >= len(self.triggers):
                    return runs
            now = time.monotonic()
            if now > self.last_restart + self.cfg.settle_s or now > hard_deadline:
                return runs
            await asyncio.sleep(0.5)

    async def _check(self, runs: list[run_pb2.Run]) -> None:
        r = self.report
        r.runs = len(self.triggers)
        r.signals = len(self.signals)
        by_event: dict[str, list[run_pb2.Run]] = defaultdict(list)
        for run in runs:
            by_event[run.event_id].append(run)
        for event_id in [*self.triggers, *self.signals]:
            try:
                await _call(lambda e=event_id: self.client.management.GetEvent(  # type: ignore[misc]
                    management_pb2.GetEventRequest(event_id=e)))
            except grpc.aio.AioRpcError as e:
                if e.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                r.lost_events += 1
                r.note(f"acknowledged event {event_id} is not in history")
        executions = side_effects(self.side_effects)
        children: Counter[str] = Counter()
        per_key: Counter[tuple[str, int]] = Counter()
        for run in runs:
            data = await self._data_of(run.event_id)
            if run.function_id == "chaos-child":
                r.child_runs += 1
                children[data.get("_inngest", {}).get("source_run_id", "")] += 1
            else:
                per_key[(run.function_id, int(data.get("n", -1)))] += 1
            if run.status not in TERMINAL:
                r.stuck += 1
                r.note(f"run {run.id} ({run.function_id}) stuck in "
                       f"{run_pb2.RunStatus.Name(run.status)}")
                continue
            if run.status != run_pb2.RUN_STATUS_COMPLETED:
                r.failed += 1
                r.note(f"run {run.id} ({run.function_id}) ended "
                       f"{run_pb2.RunStatus.Name(run.status)}: {run.error.message[:300]}")
            full = await _call(lambda run_id=run.id: self.client.run(run_id))  # type: ignore[misc]
            check_steps(r, full, executions.get(run.id, {}))
        for event_id, (kind, n) in self.triggers.items():
            if per_key[(f"chaos-{kind}", n)] == 0:
                r.lost_runs += 1
                r.note(f"event {event_id} ({kind} {n}) has no run")
            elif not any(run.function_id == f"chaos-{kind}" for run in by_event.get(event_id, [])):
                # The acknowledged event is a retry the idempotency key stopped: its first
                # attempt (unacknowledged, yet stored) started the run.
                r.deduplicated += 1
        for parent, count in children.items():
            if count > 1:
                r.duplicate_children += count - 1
                r.note(f"the invoke of run {parent} started {count} child runs")
        for (function_id, n), count in per_key.items():
            if count > 1:
                r.duplicate_runs += count - 1
                r.note(f"{function_id} n={n}: {count} runs for one idempotency key")

    async def _data_of(self, event_id: str) -> dict[str, Any]:
        reply = await _call(lambda: self.client.management.GetEvent(
            management_pb2.GetEventRequest(event_id=event_id)))
        data = json.loads(reply.event.data_json or b"{}")
        return data if isinstance(data, dict) else {}

    async def run(self) -> Report:
        began = time.monotonic()
        await self.start()
        try:
            async with asyncio.TaskGroup() as tg:
                monitor = tg.create_task(self._monitor())
                try:
                    await asyncio.gather(self._load(), self._kills())
                    runs = await self._settled()
                finally:
                    monitor.cancel()
            await self._check(runs)
        finally:
            await self.stop()
        self.report.seconds = round(time.monotonic() - began, 1)
        return self.report


async def run_chaos(cfg: ChaosConfig) -> Report:
    return await Chaos(cfg).run()


@contextlib.contextmanager
def _workdir(given: str) -> Iterator[Path]:
    if given:
        yield Path(given)
        return
    with tempfile.TemporaryDirectory(prefix="plait-chaos-") as tmp:
        yield Path(tmp)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["embedded", "production"], default="embedded")
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--kills", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--workdir", default="")
    args = parser.parse_args()
    if args.backend == "production" and not args.database_url:
        parser.error("--database-url is needed for the production backend")
    with _workdir(args.workdir) as workdir:
        report = asyncio.run(run_chaos(ChaosConfig(
            args.backend, args.runs, args.kills, args.seed, workdir, args.database_url)))
    print(report.line())


if __name__ == "__main__":
    main()
