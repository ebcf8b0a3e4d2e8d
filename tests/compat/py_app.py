"""A FastAPI app on the official `inngest` SDK, unchanged for Plait: only the SDK's own
environment variables (INNGEST_DEV, INNGEST_BASE_URL, INNGEST_SIGNING_KEY, …) point it at the
server. Run as `python tests/compat/py_app.py <port>`; COMPAT_APP_ID names the app (and the
prefix of its event names), so several copies can be told apart.

Step bodies count their calls per event `key`: GET /calls?key=… reports the counts,
POST /send sends its JSON body with the SDK's own client, answering {"ids": […]}, and
POST /release?key=… lets the `hog` steps of that key return.
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
gates: dict[str, asyncio.Event] = {}
CRON = "* * * * *"


def gate(key: str) -> asyncio.Event:
    return gates.setdefault(key, asyncio.Event())


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


@client.create_function(fn_id="ticker", trigger=inngest.TriggerCron(cron=CRON))
async def ticker(ctx: inngest.Context) -> dict[str, Any]:
    """A run per cron tick; the tests move the scheduler's fake clock."""
    return {"name": ctx.event.name, "cron": ctx.event.data["cron"]}


@client.create_function(fn_id="dozer", trigger=inngest.TriggerEvent(event=f"{APP_ID}/doze"))
async def dozer(ctx: inngest.Context) -> None:
    """Sleeps `nap_s` seconds between two steps."""
    await ctx.step.run("before", lambda: bump(ctx, "before"))
    await ctx.step.sleep("nap", datetime.timedelta(seconds=ctx.event.data["nap_s"]))
    await ctx.step.run("after", lambda: bump(ctx, "after"))


@client.create_function(fn_id="hog", trigger=inngest.TriggerEvent(event=f"{APP_ID}/hog"))
async def hog(ctx: inngest.Context) -> None:
    """Holds its call to the app until POST /release for its key (30 s at most)."""
    async def hold() -> None:
        bump(ctx, "hold")
        try:
            await asyncio.wait_for(gate(ctx.event.data["key"]).wait(), 30)
        except TimeoutError:
            pass

    await ctx.step.run("hold", hold)


@client.create_function(fn_id="tardy",
                        timeouts=inngest.Timeouts(start=datetime.timedelta(seconds=1)),
                        trigger=inngest.TriggerEvent(event=f"{APP_ID}/tardy"))
async def tardy(ctx: inngest.Context) -> None:
    """A start timeout of 1 s."""
    await ctx.step.run("ran", lambda: bump(ctx, "ran"))


@client.create_function(
    fn_id="cancellable",
    cancel=[inngest.Cancel(event=f"{APP_ID}/cancel", if_exp="event.data.id == async.data.id",
                           timeout=datetime.timedelta(minutes=1))],
    trigger=inngest.TriggerEvent(event=f"{APP_ID}/cancellable"))
async def cancellable(ctx: inngest.Context) -> dict[str, Any]:
    """Sleeps `nap_s` seconds; `<app>/cancel` with the same `id` cancels it."""
    await ctx.step.run("before", lambda: bump(ctx, "before"))
    await ctx.step.sleep("nap", datetime.timedelta(seconds=ctx.event.data["nap_s"]))
    await ctx.step.run("after", lambda: bump(ctx, "after"))
    return {"id": ctx.event.data["id"]}


@client.create_function(fn_id="child", retries=0,
                        trigger=inngest.TriggerEvent(event=f"{APP_ID}/child"))
async def child(ctx: inngest.Context) -> dict[str, Any]:
    """Invoked by `parent`: doubles `n`, or fails for good when `fail` is set."""
    bump(ctx, "child")
    n = ctx.event.data["n"]
    if ctx.event.data["fail"]:
        raise inngest.NonRetriableError(f"child refused {n}")
    return {"doubled": n * 2}


@client.create_function(fn_id="parent", trigger=inngest.TriggerEvent(event=f"{APP_ID}/parent"))
async def parent(ctx: inngest.Context) -> dict[str, Any]:
    """Invokes `child`; returns its output, or the message of the error the step raised."""
    data = ctx.event.data
    try:
        out = await ctx.step.invoke(
            "call", function=child,
            data={"key": data["key"], "n": data["n"], "fail": data.get("fail", False)})
    except inngest.StepError as e:
        return {"error": e.message}
    return {"child": out}


@client.create_function(fn_id="announcer", retries=2,
                        trigger=inngest.TriggerEvent(event=f"{APP_ID}/announce"))
async def announcer(ctx: inngest.Context) -> dict[str, Any]:
    """Sends `<app>/announced` as a step; a later step fails once, so the run is replayed."""
    ids = await ctx.step.send_event(
        "send", inngest.Event(name=f"{APP_ID}/announced", data={"key": ctx.event.data["key"]}))

    async def once_flaky() -> int:
        n = bump(ctx, "flaky")
        if n < 2:
            raise ValueError(f"call {n} fails")
        return n

    return {"sent": ids, "flaky": await ctx.step.run("flaky", once_flaky)}


@client.create_function(fn_id="listener",
                        trigger=inngest.TriggerEvent(event=f"{APP_ID}/announced"))
async def listener(ctx: inngest.Context) -> dict[str, Any]:
    return {"heard": await ctx.step.run("heard", lambda: bump(ctx, "heard"))}


def _match_key(name: str) -> dict[str, Any]:
    return {"event": f"{APP_ID}/{name}", "if_exp": "async.data.key == event.data.key"}


@client.create_function(fn_id="pair", trigger=inngest.TriggerEvent(event=f"{APP_ID}/pair"))
async def pair(ctx: inngest.Context) -> dict[str, Any]:
    """Waits for `<app>/left` and `<app>/right` with its key at once (a parallel group)."""
    left, right = await ctx.group.parallel((
        lambda: ctx.step.wait_for_event("left", **_match_key("left"),
                                        timeout=datetime.timedelta(seconds=60)),
        lambda: ctx.step.wait_for_event("right", **_match_key("right"),
                                        timeout=datetime.timedelta(seconds=60)),
    ))
    after = await ctx.step.run("after", lambda: bump(ctx, "after"))
    return {"left": left and left.data, "right": right and right.data, "after": after}


@client.create_function(fn_id="racer", trigger=inngest.TriggerEvent(event=f"{APP_ID}/racer"))
async def racer(ctx: inngest.Context) -> dict[str, Any]:
    """Races `<app>/go` with its key against a sleep of `nap_s` (ParallelMode.RACE): the
    function goes on at the first to end; the loser keeps its timeout answer (null)."""
    paid, _ = await ctx.group.parallel((
        lambda: ctx.step.wait_for_event("go", **_match_key("go"),
                                        timeout=datetime.timedelta(seconds=300)),
        lambda: ctx.step.sleep("nap", datetime.timedelta(seconds=ctx.event.data["nap_s"])),
    ), parallel_mode=inngest.ParallelMode.RACE)
    after = await ctx.step.run("after", lambda: bump(ctx, "after"))
    return {"winner": "sleep" if paid is None else "event",
            "event": paid and paid.data, "after": after}


@client.create_function(fn_id="napgroup",
                        trigger=inngest.TriggerEvent(event=f"{APP_ID}/napgroup"))
async def napgroup(ctx: inngest.Context) -> dict[str, Any]:
    """A sleep and a step.run in one parallel group."""
    _, work = await ctx.group.parallel((
        lambda: ctx.step.sleep("nap", datetime.timedelta(seconds=1)),
        lambda: ctx.step.run("work", lambda: bump(ctx, "work") and "worked"),
    ))
    return {"work": work, "calls": counts(ctx, "work")}


@client.create_function(fn_id="fanout", trigger=inngest.TriggerEvent(event=f"{APP_ID}/fanout"))
async def fanout(ctx: inngest.Context) -> dict[str, Any]:
    """Two invokes of `child`, a send and a step.run in one parallel group."""
    key = ctx.event.data["key"]
    one, two, sent, work = await ctx.group.parallel((
        lambda: ctx.step.invoke("one", function=child, data={"key": key, "n": 1, "fail": False}),
        lambda: ctx.step.invoke("two", function=child, data={"key": key, "n": 2, "fail": False}),
        lambda: ctx.step.send_event(
            "send", inngest.Event(name=f"{APP_ID}/announced", data={"key": key})),
        lambda: ctx.step.run("work", lambda: bump(ctx, "work") and "worked"),
    ))
    return {"children": [one, two], "sent": len(sent), "work": work}


app = fastapi.FastAPI()


@app.get("/calls")
async def get_calls(key: str) -> dict[str, int]:
    prefix = f"{key}/"
    return {k[len(prefix):]: v for k, v in calls.items() if k.startswith(prefix)}


@app.post("/release")
async def release(key: str) -> dict[str, bool]:
    gate(key).set()
    return {"released": True}


@app.post("/send")
async def send(event: dict[str, Any]) -> fastapi.responses.JSONResponse:
    try:
        ids = await client.send(inngest.Event(name=event["name"], data=event.get("data", {})))
    except Exception as e:  # the SDK's SendEventsError, e.g. for a key Plait does not know
        return fastapi.responses.JSONResponse({"error": str(e)}, 502)
    return fastapi.responses.JSONResponse({"ids": ids})


inngest.fast_api.serve(app, client, [
    sequential, flaky, doomed, mourned, napper, parallel, waiter, laggard, ticker, dozer, hog,
    tardy, cancellable, child, parent, announcer, listener, pair, racer, napgroup,
    fanout])

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
