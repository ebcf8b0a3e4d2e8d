"""Flow control (issue 12) on the official `inngest` Python SDK, unchanged for Plait: a FastAPI
app like py_app.py, with one function per control. Run as
`python tests/compat/py_flow_app.py <port>` with FLOW_RECORD naming a folder: each step body
appends its interval to `<function>.jsonl` there as a JSON line (run id, key, wall-clock start
and end, data), in the shape of tests/e2e/flow_support.py's `Interval`; POST /release?key=…
lets the bodies held on that key return. COMPAT_APP_ID names the app (default compat-flow-py)
and prefixes its events.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import sys
import time
from typing import Any

import fastapi
import inngest
import inngest.fast_api
import uvicorn

APP_ID = os.environ.get("COMPAT_APP_ID", "compat-flow-py")
RECORD = os.environ.get("FLOW_RECORD", ".")
client = inngest.Inngest(app_id=APP_ID)
gates: dict[str, asyncio.Event] = {}
SECOND = datetime.timedelta(seconds=1)


def record(fn: str, run_id: str, key: str, start: float, data: Any = None) -> None:
    line = json.dumps({"run_id": run_id, "key": key, "start": start, "end": time.time(),
                       "data": data}) + "\n"
    fd = os.open(os.path.join(RECORD, f"{fn}.jsonl"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())  # one write: lines never interleave
    finally:
        os.close(fd)


async def hold(ctx: inngest.Context, fn: str, key: str, seconds: float, data: Any = None
               ) -> None:
    """The body of a step: held while `block` is set and its key not released, then
    `seconds` more; records its interval under the function's name."""
    start = time.time()
    if ctx.event.data.get("block"):
        await asyncio.wait_for(gates.setdefault(key, asyncio.Event()).wait(), 30)
    await asyncio.sleep(seconds)
    record(fn, ctx.run_id, key, start, data)


def _event(name: str) -> inngest.TriggerEvent:
    return inngest.TriggerEvent(event=f"{APP_ID}/{name}")


@client.create_function(fn_id="conc", trigger=_event("conc"), concurrency=[
    inngest.Concurrency(limit=2, key="event.data.user"), inngest.Concurrency(limit=3)])
async def conc(ctx: inngest.Context) -> None:
    await ctx.step.run("work", lambda: hold(ctx, "conc", ctx.event.data["user"], 0.2))


@client.create_function(fn_id="throttled", trigger=_event("throttled"),
                        throttle=inngest.Throttle(limit=2, period=SECOND))
async def throttled(ctx: inngest.Context) -> None:
    await ctx.step.run("work", lambda: hold(ctx, "throttled", "", 0.01))


@client.create_function(fn_id="limited", trigger=_event("limited"), rate_limit=inngest.RateLimit(
    limit=1, period=datetime.timedelta(minutes=1), key="event.data.k"))
async def limited(ctx: inngest.Context) -> None:
    await ctx.step.run("work", lambda: hold(ctx, "limited", ctx.event.data["k"], 0.01))


@client.create_function(fn_id="idem", trigger=_event("idem"), idempotency="event.data.order")
async def idem(ctx: inngest.Context) -> None:
    await ctx.step.run("work", lambda: hold(ctx, "idem", ctx.event.data["order"], 0.01))


@client.create_function(fn_id="debounced", trigger=_event("debounced"),
                        debounce=inngest.Debounce(period=SECOND, key="event.data.k"))
async def debounced(ctx: inngest.Context) -> None:
    data = {"n": ctx.event.data["n"], "event_id": ctx.event.id}
    await ctx.step.run("work",
                       lambda: hold(ctx, "debounced", ctx.event.data["k"], 0.01, data))


@client.create_function(fn_id="batched", trigger=_event("batched"),
                        batch_events=inngest.Batch(max_size=3, timeout=SECOND))
async def batched(ctx: inngest.Context) -> int:
    ids = [e.id for e in ctx.events]
    await ctx.step.run("work", lambda: hold(ctx, "batched", "", 0.01, ids))
    return len(ids)


@client.create_function(fn_id="ranked", trigger=_event("ranked"), concurrency=[
    inngest.Concurrency(limit=1)], priority=inngest.Priority(run="event.data.prio"))
async def ranked(ctx: inngest.Context) -> None:
    """One run at a time, the queued ones in the order of their priority."""
    prio = ctx.event.data["prio"]
    await ctx.step.run("work", lambda: hold(ctx, "ranked", "ranked", 0.01, prio))


@client.create_function(fn_id="only", trigger=_event("only"),
                        singleton=inngest.Singleton(mode="skip", key="event.data.k"))
async def only(ctx: inngest.Context) -> None:
    await ctx.step.run("work", lambda: hold(ctx, "only", ctx.event.data["k"], 0.01))


@client.create_function(fn_id="latest", trigger=_event("latest"),
                        singleton=inngest.Singleton(mode="cancel", key="event.data.k"))
async def latest(ctx: inngest.Context) -> None:
    await ctx.step.run("before", lambda: hold(ctx, "latest", "before", 0.01))
    await ctx.step.sleep("nap", datetime.timedelta(seconds=ctx.event.data["nap_s"]))
    await ctx.step.run("after", lambda: hold(ctx, "latest", "after", 0.01))


@client.create_function(fn_id="held", trigger=_event("held"), concurrency=[
    inngest.Concurrency(limit=1, key="event.data.k")])
async def held(ctx: inngest.Context) -> None:
    await ctx.step.run("work", lambda: hold(ctx, "held", ctx.event.data["k"], 0.01))


app = fastapi.FastAPI()


@app.post("/release")
async def release(key: str) -> dict[str, bool]:
    gates.setdefault(key, asyncio.Event()).set()
    return {"released": True}


inngest.fast_api.serve(app, client, [conc, throttled, limited, idem, debounced, batched, ranked,
                                     only, latest, held])

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
