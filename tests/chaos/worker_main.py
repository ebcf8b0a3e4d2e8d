"""The chaos suite's worker: `python -m tests.chaos.worker_main TARGET SIDE_EFFECT_LOG`.

Every step body first appends one line to SIDE_EFFECT_LOG: "<run id> <step id> <pid> <ms>",
the wall-clock start of that execution. The driver compares these lines with the step
completions history recorded, to find bodies run again after their result was committed.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

from plait import App, Context, Step, TriggerEvent, Worker

app = App("chaos")
LOG = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("chaos-steps.log")
# Long enough for a kill to land inside a body now and then, short enough for 1,000 runs.
MAX_BODY_S = 0.05
SLEEP_S = 1
WAIT_S = 2


def _mark(run_id: str, step_id: str) -> None:
    line = f"{run_id} {step_id} {os.getpid()} {time.time_ns() // 1_000_000}\n"
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _body(ctx: Context, step_id: str) -> Any:
    async def body() -> str:
        _mark(ctx.run_id, step_id)
        await asyncio.sleep(random.uniform(0, MAX_BODY_S))
        return f"{step_id}-{ctx.event.data['n']}"

    return body


@app.function("steps", trigger=TriggerEvent("chaos/steps"))
async def steps(ctx: Context, step: Step) -> dict[str, Any]:
    out = [await step.run(sid, _body(ctx, sid)) for sid in ("a", "b", "c")]
    return {"n": ctx.event.data["n"], "out": out}


@app.function("sleep", trigger=TriggerEvent("chaos/sleep"))
async def sleep(ctx: Context, step: Step) -> dict[str, Any]:
    a = await step.run("a", _body(ctx, "a"))
    await step.sleep("nap", SLEEP_S)
    b = await step.run("b", _body(ctx, "b"))
    return {"n": ctx.event.data["n"], "out": [a, b]}


@app.function("wait", trigger=TriggerEvent("chaos/wait"))
async def wait(ctx: Context, step: Step) -> dict[str, Any]:
    a = await step.run("a", _body(ctx, "a"))
    signal = await step.wait_for_event("signal", event="chaos/signal", timeout=WAIT_S,
                                       if_exp="async.data.n == event.data.n")
    b = await step.run("b", _body(ctx, "b"))
    return {"n": ctx.event.data["n"], "out": [a, b], "signalled": signal is not None}


@app.function("parallel", trigger=TriggerEvent("chaos/parallel"))
async def parallel(ctx: Context, step: Step) -> dict[str, Any]:
    out = await asyncio.gather(*(step.run(sid, _body(ctx, sid)) for sid in ("p1", "p2", "p3")))
    final = await step.run("final", _body(ctx, "final"))
    return {"n": ctx.event.data["n"], "out": [*out, final]}


@app.function("child", trigger=TriggerEvent("chaos/child"))
async def child(ctx: Context, step: Step) -> dict[str, Any]:
    return {"n": ctx.event.data["n"], "out": await step.run("c", _body(ctx, "c"))}


@app.function("invoke", trigger=TriggerEvent("chaos/invoke"))
async def invoke(ctx: Context, step: Step) -> dict[str, Any]:
    a = await step.run("a", _body(ctx, "a"))
    called = await step.invoke("call", function=child, data={"n": ctx.event.data["n"]})
    b = await step.run("b", _body(ctx, "b"))
    return {"n": ctx.event.data["n"], "out": [a, called, b]}


KINDS = ("steps", "sleep", "wait", "parallel", "invoke")

if __name__ == "__main__":
    Worker(app, server=sys.argv[1], max_concurrent_jobs=32, shutdown_grace_s=1).run()
