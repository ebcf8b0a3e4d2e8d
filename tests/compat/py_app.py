"""A FastAPI app on the official `inngest` SDK, unchanged for Plait: only the SDK's own
environment variables (INNGEST_DEV, INNGEST_BASE_URL, INNGEST_SIGNING_KEY, …) point it at the
server. Run as `python tests/compat/py_app.py <port>`; COMPAT_APP_ID names the app (and the
prefix of its event names), so several copies can be told apart.

Step bodies count their calls per event `key`: GET /calls?key=… reports the counts, and
POST /send sends its JSON body with the SDK's own client, answering {"ids": […]}.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import os
import sys
import time
from typing import Any

import fastapi
import inngest
import inngest.fast_api
import uvicorn

APP_ID = os.environ.get("COMPAT_APP_ID", "compat-py")
client = inngest.Inngest(app_id=APP_ID)
calls: collections.Counter[str] = collections.Counter()


def bump(ctx: inngest.Context | inngest.ContextSync, name: str) -> int:
    calls[f"{ctx.event.data['key']}/{name}"] += 1
    return calls[f"{ctx.event.data['key']}/{name}"]


def counts(ctx: inngest.Context | inngest.ContextSync, *names: str) -> dict[str, int]:
    return {name: calls[f"{ctx.event.data['key']}/{name}"] for name in names}


@client.create_function(fn_id="sequential",
                        trigger=inngest.TriggerEvent(event=f"{APP_ID}/sequential"))
def sequential(ctx: inngest.ContextSync) -> dict[str, Any]:
    """Three steps in a row; a sync handler, run by the SDK in its thread pool."""
    a = ctx.step.run("a", lambda: bump(ctx, "a") and 1)
    b = ctx.step.run("b", lambda: bump(ctx, "b") and a + 1)
    c = ctx.step.run("c", lambda: bump(ctx, "c") and b + 1)
    return {"steps": [a, b, c], "calls": counts(ctx, "a", "b", "c")}


@client.create_function(fn_id="flaky", retries=3,
                        trigger=inngest.TriggerEvent(event=f"{APP_ID}/flaky"))
async def flaky(ctx: inngest.Context) -> dict[str, Any]:
    async def attempt() -> int:
        n = bump(ctx, "flaky")
        if n < 3:
            raise ValueError(f"attempt {n} fails")
        return n

    return {"succeeded_on": await ctx.step.run("flaky", attempt)}


@client.create_function(fn_id="doomed", retries=3,
                        trigger=inngest.TriggerEvent(event=f"{APP_ID}/doomed"))
async def doomed(ctx: inngest.Context) -> None:
    async def attempt() -> None:
        raise inngest.NonRetriableError(f"gave up on call {bump(ctx, 'doomed')}")

    await ctx.step.run("doomed", attempt)


async def mourn(ctx: inngest.Context) -> None:
    """`mourned`'s failure handler: the failed run's event and error, as counts."""
    original, error = ctx.event.data["event"], ctx.event.data["error"]
    calls[f"{original['data']['key']}/mourned"] += 1
    calls[f"{original['data']['key']}/error={error['message']}"] += 1


@client.create_function(fn_id="mourned", retries=1, on_failure=mourn,
                        trigger=inngest.TriggerEvent(event=f"{APP_ID}/mourned"))
async def mourned(ctx: inngest.Context) -> None:
    async def attempt() -> None:
        raise ValueError(f"failed call {bump(ctx, 'attempt')}")

    await ctx.step.run("attempt", attempt)


@client.create_function(fn_id="napper", trigger=inngest.TriggerEvent(event=f"{APP_ID}/sleep"))
async def napper(ctx: inngest.Context) -> dict[str, Any]:
    before = await ctx.step.run("before", lambda: bump(ctx, "before") and time.time())
    await ctx.step.sleep("nap", datetime.timedelta(seconds=2))
    after = await ctx.step.run("after", lambda: bump(ctx, "after") and time.time())
    return {"slept_s": after - before, "calls": counts(ctx, "before", "after")}


@client.create_function(fn_id="parallel", trigger=inngest.TriggerEvent(event=f"{APP_ID}/parallel"))
async def parallel(ctx: inngest.Context) -> dict[str, Any]:
    async def side(name: str) -> dict[str, Any]:
        bump(ctx, name)
        start = time.time()
        await asyncio.sleep(0.5)
        return {"name": name.upper(), "start": start, "end": time.time()}

    left, right = await ctx.group.parallel((
        lambda: ctx.step.run("left", side, "left"),
        lambda: ctx.step.run("right", side, "right"),
    ))
    joined = await ctx.step.run("join",
                                lambda: bump(ctx, "join") and f"{left['name']}+{right['name']}")
    return {"joined": joined, "sides": [left, right],
            "calls": counts(ctx, "left", "right", "join")}


@client.create_function(fn_id="waiter", trigger=inngest.TriggerEvent(event=f"{APP_ID}/waiter"))
async def waiter(ctx: inngest.Context) -> dict[str, Any]:
    """Waits for `<app>/paid` with the same key, for `timeout_s` seconds."""
    paid = await ctx.step.wait_for_event(
        "paid", event=f"{APP_ID}/paid", if_exp="async.data.key == event.data.key",
        timeout=datetime.timedelta(seconds=ctx.event.data["timeout_s"]))
    return {"paid": None if paid is None else {"name": paid.name, "data": paid.data}}


@client.create_function(fn_id="laggard",
                        timeouts=inngest.Timeouts(finish=datetime.timedelta(seconds=1)),
                        trigger=inngest.TriggerEvent(event=f"{APP_ID}/laggard"))
async def laggard(ctx: inngest.Context) -> None:
    """A step of 3 s in a function with a finish timeout of 1 s: the run fails."""
    async def nap() -> None:
        await asyncio.sleep(3)

    await ctx.step.run("nap", nap)


app = fastapi.FastAPI()


@app.get("/calls")
async def get_calls(key: str) -> dict[str, int]:
    prefix = f"{key}/"
    return {k[len(prefix):]: v for k, v in calls.items() if k.startswith(prefix)}


@app.post("/send")
async def send(event: dict[str, Any]) -> fastapi.responses.JSONResponse:
    try:
        ids = await client.send(inngest.Event(name=event["name"], data=event.get("data", {})))
    except Exception as e:  # the SDK's SendEventsError, e.g. for a key Plait does not know
        return fastapi.responses.JSONResponse({"error": str(e)}, 502)
    return fastapi.responses.JSONResponse({"ids": ids})


inngest.fast_api.serve(app, client, [sequential, flaky, doomed, mourned, napper, parallel, waiter,
                          laggard])

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
