"""A benchmark worker process: serves `bench-3step` and `bench-sleeper` and times each step body.

Progress goes to stdout as "<completed> <asleep>" lines; timings go to a JSON file on SIGTERM.
The hot path only appends to a list and sets an event; the writer task coalesces the lines.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import uvloop
from plait import App, Context, Step, TriggerEvent, Worker

# Shared with run.py, which drives these names; kept in both so each file runs on its own.
APP_ID = "bench"
THREE_STEP = "bench-3step"
THREE_STEP_EVENT = "bench/go"
SLEEPER = "bench-sleeper"
SLEEPER_EVENT = "bench/sleep"
SLEEP_S = 60

# (run_id, event index, mark, time_ns): mark is "a", "b", "c" (step body start) or "end".
Record = tuple[str, int, str, int]


class _Progress:
    """Counters read by the stdout writer; the hot path bumps one and sets `changed`."""

    def __init__(self) -> None:
        self.completed = 0
        self.asleep = 0
        self.changed = asyncio.Event()


def build_app(records: list[Record], progress: _Progress) -> App:
    app = App(APP_ID)

    @app.function(THREE_STEP, trigger=TriggerEvent(THREE_STEP_EVENT), retries=0)
    async def three_step(ctx: Context, step: Step) -> int:
        run_id = ctx.run_id
        index = int(ctx.event.data.get("i", -1))

        async def body(mark: str, value: int) -> int:
            records.append((run_id, index, mark, time.time_ns()))
            return value

        a = await step.run("a", body, "a", 1)
        b = await step.run("b", body, "b", 2)
        c = await step.run("c", body, "c", 3)
        # Reached once per run: by the job that replays a, b and c and returns.
        records.append((run_id, index, "end", time.time_ns()))
        progress.completed += 1
        progress.changed.set()
        return a + b + c

    @app.function(SLEEPER, trigger=TriggerEvent(SLEEPER_EVENT), retries=0)
    async def sleeper(ctx: Context, step: Step) -> int:
        # Counted before the sleep opcode goes back: run.py confirms with the server.
        progress.asleep += 1
        progress.changed.set()
        await step.sleep("nap", SLEEP_S)
        return 0

    return app


async def _report(progress: _Progress) -> None:
    while True:
        await progress.changed.wait()
        progress.changed.clear()
        os.write(1, f"{progress.completed} {progress.asleep}\n".encode())


async def _serve(server: str, concurrency: int, out: Path) -> None:
    records: list[Record] = []
    progress = _Progress()
    worker = Worker(
        build_app(records, progress), server=server, max_concurrent_jobs=concurrency,
        shutdown_grace_s=1.0,
    )
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    async with asyncio.TaskGroup() as tg:
        serving = tg.create_task(worker.arun())
        reporter = tg.create_task(_report(progress))
        await stopping.wait()
        await worker.stop()
        await serving
        reporter.cancel()
    body: dict[str, Any] = {"records": records, "completed": progress.completed}
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(body))
    tmp.replace(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--server", required=True, help="host:port of the gRPC API")
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--out", type=Path, required=True, help="timings file written on stop")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(_serve(args.server, args.concurrency, args.out))
    sys.exit(0)


if __name__ == "__main__":
    main()
