"""Flow control end to end on the gRPC worker SDK (issue 12), on the embedded backend and on
Redis + PostgreSQL: each control asserted from the intervals the step bodies record themselves
(tests/e2e/flow_support.py), never from timing the test."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import timedelta
from typing import Any

import httpx
from plait import (
    App,
    Batch,
    Concurrency,
    Context,
    Debounce,
    RateLimit,
    Singleton,
    Step,
    Throttle,
    TriggerEvent,
)
from plait_proto.v1 import run_pb2

from tests.e2e.conftest import Running, running_worker
from tests.e2e.flow_support import (
    Interval,
    Recorder,
    by_key,
    max_overlap,
    max_overlap_by_key,
    runs,
    steady_rate_per_s,
)
from tests.e2e.harness import Client, eventually

COMPLETED = run_pb2.RUN_STATUS_COMPLETED
CANCELLED = run_pb2.RUN_STATUS_CANCELLED
# Added with flow control; -1 until the proto has it, so this module still imports.
SKIPPED = getattr(run_pb2, "RUN_STATUS_SKIPPED", -1)
ENDED = (COMPLETED, run_pb2.RUN_STATUS_FAILED, CANCELLED, SKIPPED)
HOLD_S = 0.1  # how long a step body runs: long enough for overlaps to show


async def _runs_of(client: Client, event_id: str) -> list[run_pb2.Run]:
    return await client.runs_of_event(event_id)


async def _ended(client: Client, event_ids: list[str], timeout_s: float = 30
                 ) -> dict[str, list[run_pb2.Run]]:
    """Each event's runs, once every one of them has ended (skipped counts as ended)."""
    async def probe() -> dict[str, list[run_pb2.Run]]:
        return {e: await _runs_of(client, e) for e in event_ids}

    return await eventually(
        probe, lambda got: all(rs and all(r.status in ENDED for r in rs) for rs in got.values()),
        timeout_s, f"the runs of {len(event_ids)} events to end")


async def _statuses(client: Client, event_ids: list[str]) -> list[list[int]]:
    got = await _ended(client, event_ids)
    return [[r.status for r in got[e]] for e in event_ids]


async def test_concurrency_one_never_runs_two_steps_at_once_and_a_sleeping_run_holds_no_slot(
    plait: Running,
) -> None:
    app = App("flow-c1")
    rec = Recorder()

    @app.function("one", trigger=TriggerEvent("flow-c1/go"),
                  concurrency=Concurrency(limit=1))
    async def one(ctx: Context, step: Step) -> None:
        async def work(name: str) -> None:
            await rec.hold(ctx.run_id, name, HOLD_S, ctx.event.data["n"])

        await step.run("a", work, "a")
        if ctx.event.data["nap"]:
            await step.sleep("nap", timedelta(seconds=1))
        await step.run("b", work, "b")

    async with running_worker(app, plait.client):
        sleeper = await plait.client.send("flow-c1/go", {"n": 0, "nap": True})
        await eventually(rec.count, lambda n: n >= 1, 20, "the sleeper's first step")
        others = await plait.client.send_many(
            "flow-c1/go", [{"n": n, "nap": False} for n in range(1, 6)])
        statuses = await _statuses(plait.client, [sleeper, *others])

    assert statuses == [[COMPLETED]] * 6
    got = rec.intervals()
    assert len(got) == 12 and max_overlap(got) == 1, got
    # While the sleeper slept (between its steps), other runs used the one slot.
    sleeper_steps = sorted((i for i in got if i.data == 0), key=lambda i: i.start)
    during_nap = [i for i in got if i.data != 0
                  and sleeper_steps[0].end <= i.start and i.end <= sleeper_steps[1].start]
    assert during_nap, got


async def test_a_key_limit_and_a_function_limit_both_hold_and_both_are_reached(
    plait: Running,
) -> None:
    app = App("flow-c2")
    rec = Recorder()

    @app.function("two", trigger=TriggerEvent("flow-c2/go"), concurrency=[
        Concurrency(limit=2, key="event.data.user"), Concurrency(limit=3)])
    async def two(ctx: Context, step: Step) -> None:
        async def work() -> None:
            await rec.hold(ctx.run_id, ctx.event.data["user"], 0.2)

        await step.run("work", work)

    async with running_worker(app, plait.client, max_jobs=20):
        # Each user's events together: runs lease in arrival order, so ann's first two fill
        # her key's limit and bob's first then fills the function's.
        ids = await plait.client.send_many(
            "flow-c2/go", [{"user": u} for u in ("ann", "bob", "cy") for _ in range(4)])
        statuses = await _statuses(plait.client, ids)

    assert statuses == [[COMPLETED]] * 12
    got = rec.intervals()
    per_user = max_overlap_by_key(got)
    assert max_overlap(got) == 3, got  # never above the function's limit, and reached
    assert max(per_user.values()) == 2 and set(per_user) == {"ann", "bob", "cy"}, per_user


async def test_an_env_scoped_key_is_one_limit_shared_by_two_functions(plait: Running) -> None:
    app = App("flow-c3")
    rec = Recorder()
    shared = Concurrency(limit=1, key="'shared'", scope="env")

    async def body(ctx: Context, step: Step) -> None:
        async def work() -> None:
            await rec.hold(ctx.run_id, ctx.function_id, HOLD_S)

        await step.run("work", work)

    app.function("left", trigger=TriggerEvent("flow-c3/go"), concurrency=shared)(body)
    app.function("right", trigger=TriggerEvent("flow-c3/go"), concurrency=shared)(body)

    async with running_worker(app, plait.client):
        ids = await plait.client.send_many("flow-c3/go", [{}] * 4)
        got_runs = await _ended(plait.client, ids)

    assert [sorted(r.status for r in got_runs[e]) for e in ids] == [[COMPLETED] * 2] * 4
    got = rec.intervals()
    assert len(got) == 8 and set(by_key(got)) == {"flow-c3-left", "flow-c3-right"}
    assert max_overlap(got) == 1, got


THROTTLE_LIMIT, THROTTLE_PERIOD_S = 4, 1.0  # a start every 250 ms


async def _throttled(plait: Running) -> Recorder:
    app = App("flow-th")
    rec = Recorder()

    @app.function("paced", trigger=TriggerEvent("flow-th/go"), throttle=Throttle(
        limit=THROTTLE_LIMIT, period=timedelta(seconds=THROTTLE_PERIOD_S)))
    async def paced(ctx: Context, step: Step) -> None:
        async def work() -> None:
            await rec.hold(ctx.run_id, "", 0.01, ctx.event.data["n"])

        await step.run("work", work)

    async with running_worker(app, plait.client):
        ids = await plait.client.send_many("flow-th/go", [{"n": n} for n in range(10)])
        statuses = await _statuses(plait.client, ids)
    assert statuses == [[COMPLETED]] * 10
    return rec


async def test_throttle_starts_runs_at_its_rate_and_drops_none(plait: Running) -> None:
    rec = await _throttled(plait)
    rate = steady_rate_per_s([i.start for i in rec.intervals()])
    wanted = THROTTLE_LIMIT / THROTTLE_PERIOD_S
    assert abs(rate - wanted) <= 0.1 * wanted, rate


async def test_throttled_runs_start_in_the_order_of_their_events(plait: Running) -> None:
    rec = await _throttled(plait)
    started = [i.data for i in sorted(rec.intervals(), key=lambda i: i.start)]
    assert started == list(range(10))


async def _skipped_and_ran(plait: Running, app: App, rec: Recorder, event: str,
                           datas: list[dict[str, Any]]) -> tuple[list[list[run_pb2.Run]], set[str]]:
    async with running_worker(app, plait.client):
        ids = []
        for data in datas:  # one at a time: the order decides which one runs
            ids.append(await plait.client.send(event, data))
        got = await _ended(plait.client, ids)
    return [got[e] for e in ids], runs(rec.intervals())


def _assert_skipped(run: run_pb2.Run) -> None:
    assert run.status == SKIPPED, run
    assert run.error.name == "FlowControlSkipped" and run.error.message, run.error
    assert run.started_at_ms == 0 and not run.steps, run


async def test_rate_limited_events_are_recorded_as_skipped_runs_and_run_nothing(
    plait: Running,
) -> None:
    app = App("flow-rl")
    rec = Recorder()

    @app.function("limited", trigger=TriggerEvent("flow-rl/go"), rate_limit=RateLimit(
        limit=1, period=timedelta(seconds=60), key="event.data.k"))
    async def limited(ctx: Context, step: Step) -> None:
        async def work() -> None:
            await rec.hold(ctx.run_id, ctx.event.data["k"], 0.01)

        await step.run("work", work)

    (a1, a2, b1, a3), ran = await _skipped_and_ran(
        plait, app, rec, "flow-rl/go", [{"k": "a"}, {"k": "a"}, {"k": "b"}, {"k": "a"}])
    assert [len(r) for r in (a1, a2, b1, a3)] == [1, 1, 1, 1]
    assert a1[0].status == COMPLETED and b1[0].status == COMPLETED
    _assert_skipped(a2[0])
    _assert_skipped(a3[0])
    assert ran == {a1[0].id, b1[0].id}


async def test_idempotent_duplicates_are_recorded_as_skipped_runs_and_run_nothing(
    plait: Running,
) -> None:
    app = App("flow-id")
    rec = Recorder()

    @app.function("charge", trigger=TriggerEvent("flow-id/go"),
                  idempotency="event.data.order")
    async def charge(ctx: Context, step: Step) -> None:
        async def work() -> None:
            await rec.hold(ctx.run_id, ctx.event.data["order"], 0.01)

        await step.run("work", work)

    (first, dup, other), ran = await _skipped_and_ran(
        plait, app, rec, "flow-id/go", [{"order": "o-1"}, {"order": "o-1"}, {"order": "o-2"}])
    assert first[0].status == COMPLETED and other[0].status == COMPLETED
    _assert_skipped(dup[0])
    assert ran == {first[0].id, other[0].id}


async def _debounced(plait: Running) -> tuple[Recorder, list[str]]:
    app = App("flow-db")
    rec = Recorder()

    @app.function("quiet", trigger=TriggerEvent("flow-db/go"), debounce=Debounce(
        period=timedelta(seconds=1), key="event.data.k"))
    async def quiet(ctx: Context, step: Step) -> None:
        async def work() -> None:
            await rec.hold(ctx.run_id, ctx.event.data["k"], 0.01,
                           {"n": ctx.event.data["n"], "event_id": ctx.event.id})

        await step.run("work", work)

    async with running_worker(app, plait.client):
        ids = []
        for data in ({"k": "a", "n": 1}, {"k": "b", "n": 9}, {"k": "a", "n": 2},
                     {"k": "a", "n": 3}):
            ids.append(await plait.client.send("flow-db/go", data))
        await eventually(rec.count, lambda n: n >= 2, 20, "the debounced runs")
        for run_id in runs(rec.intervals()):
            await eventually(lambda r=run_id: plait.client.run_if_recorded(r),
                             lambda r: r is not None and r.status == COMPLETED, 20, "its end")
    return rec, ids


async def test_debounce_runs_once_per_key_with_the_last_event(plait: Running) -> None:
    rec, ids = await _debounced(plait)
    got = by_key(rec.intervals())
    assert {k: [i.data for i in v] for k, v in got.items()} == {
        "a": [{"n": 3, "event_id": ids[3]}], "b": [{"n": 9, "event_id": ids[1]}]}


async def test_a_debounced_run_is_recorded_with_the_event_it_ran_with(plait: Running) -> None:
    rec, ids = await _debounced(plait)
    (ran,) = by_key(rec.intervals())["a"]
    assert (await plait.client.run(ran.run_id)).event_id == ids[3]
    assert [r.id for r in await _runs_of(plait.client, ids[3])] == [ran.run_id]


async def test_batches_are_of_the_configured_size_and_a_partial_one_runs_at_its_timeout(
    plait: Running,
) -> None:
    app = App("flow-bt")
    rec = Recorder()

    @app.function("batched", trigger=TriggerEvent("flow-bt/go"), batch_events=Batch(
        max_size=3, timeout=timedelta(seconds=1)))
    async def batched(ctx: Context, step: Step) -> int:
        async def work() -> None:
            await rec.hold(ctx.run_id, "", 0.01, [e.id for e in ctx.events])

        await step.run("work", work)
        return len(ctx.events)

    async with running_worker(app, plait.client):
        ids = await plait.client.send_many("flow-bt/go", [{"n": n} for n in range(7)])
        await eventually(rec.count, lambda n: n >= 3, 20, "three batches")

    batches = [i.data for i in rec.intervals()]
    assert sorted(len(b) for b in batches) == [1, 3, 3], batches
    assert sorted(e for b in batches for e in b) == sorted(ids)
    assert ctx_event_first(batches, ids)


def ctx_event_first(batches: list[list[str]], ids: list[str]) -> bool:
    """Each batch holds its events in the order they were sent."""
    order = {e: n for n, e in enumerate(ids)}
    return all([order[e] for e in b] == sorted(order[e] for e in b) for b in batches)


async def test_priority_orders_the_queued_runs_of_one_worker_slot(plait: Running) -> None:
    app = App("flow-pr")
    rec = Recorder()
    blocker_started, release = asyncio.Event(), asyncio.Event()

    @app.function("ranked", trigger=TriggerEvent("flow-pr/go"),
                  priority="event.data.prio")
    async def ranked(ctx: Context, step: Step) -> None:
        rec.record(Interval(ctx.run_id, "", 0, 0, ctx.event.data["prio"]))  # start order
        if ctx.event.data.get("block"):
            blocker_started.set()
            await asyncio.wait_for(release.wait(), 20)

    async with running_worker(app, plait.client, max_jobs=1):
        blocker = await plait.client.send("flow-pr/go", {"prio": 0, "block": True})
        await asyncio.wait_for(blocker_started.wait(), 20)
        queued = await plait.client.send_many(
            "flow-pr/go", [{"prio": p} for p in (0, 120, -120, 60, -60)])
        await eventually(lambda: _all_recorded(plait.client, queued), bool, 20,
                         "the queued runs")
        release.set()
        statuses = await _statuses(plait.client, [blocker, *queued])

    assert statuses == [[COMPLETED]] * 6
    assert [i.data for i in rec.intervals()] == [0, 120, 60, 0, -60, -120]


async def _all_recorded(client: Client, event_ids: list[str]) -> bool:
    return all([await _runs_of(client, e) for e in event_ids])


async def test_singleton_skip_starts_nothing_while_a_run_of_the_key_is_active(
    plait: Running,
) -> None:
    app = App("flow-ss")
    rec = Recorder()
    release = asyncio.Event()

    @app.function("only", trigger=TriggerEvent("flow-ss/go"),
                  singleton=Singleton(mode="skip", key="event.data.k"))
    async def only(ctx: Context, step: Step) -> None:
        async def work() -> None:
            if ctx.event.data.get("block"):
                await asyncio.wait_for(release.wait(), 20)
            await rec.hold(ctx.run_id, ctx.event.data["k"], 0.01)

        await step.run("work", work)

    async with running_worker(app, plait.client):
        first = await plait.client.send("flow-ss/go", {"k": "a", "block": True})
        (run,) = await eventually(lambda: _runs_of(plait.client, first), len, 20, "the run")
        await eventually(lambda: plait.client.run(run.id),
                         lambda r: r.status == run_pb2.RUN_STATUS_RUNNING, 20, "it to start")
        dup = await plait.client.send("flow-ss/go", {"k": "a"})
        other = await plait.client.send("flow-ss/go", {"k": "b"})
        mid = await _ended(plait.client, [dup, other])
        release.set()
        await plait.client.finished_run_of(first)
        later = await plait.client.send("flow-ss/go", {"k": "a"})  # the first one has ended
        end = await _ended(plait.client, [first, later])

    _assert_skipped(mid[dup][0])
    assert mid[other][0].status == COMPLETED
    assert [end[e][0].status for e in (first, later)] == [COMPLETED, COMPLETED]
    assert runs(rec.intervals()) == {run.id, mid[other][0].id, end[later][0].id}


async def test_singleton_cancel_cancels_the_active_run_and_starts_the_new_one(
    plait: Running,
) -> None:
    app = App("flow-sc")
    rec = Recorder()

    @app.function("latest", trigger=TriggerEvent("flow-sc/go"),
                  singleton=Singleton(mode="cancel", key="event.data.k"))
    async def latest(ctx: Context, step: Step) -> None:
        async def work(name: str) -> None:
            await rec.hold(ctx.run_id, name, 0.01)

        await step.run("before", work, "before")
        await step.sleep("nap", timedelta(seconds=ctx.event.data["nap_s"]))
        await step.run("after", work, "after")

    async with running_worker(app, plait.client):
        first = await plait.client.send("flow-sc/go", {"k": "a", "nap_s": 60})
        (old,) = await eventually(lambda: _runs_of(plait.client, first), len, 20, "the run")
        await eventually(lambda: plait.client.run(old.id), _asleep, 20, "the nap")
        second = await plait.client.send("flow-sc/go", {"k": "a", "nap_s": 0.1})
        end = await _ended(plait.client, [first, second])

    assert end[first][0].status == CANCELLED
    assert end[second][0].status == COMPLETED
    steps = {(i.run_id, i.key) for i in rec.intervals()}
    assert steps == {(old.id, "before"), (end[second][0].id, "before"),
                     (end[second][0].id, "after")}


def _asleep(run: run_pb2.Run) -> bool:
    return any(s.step_id == "nap" and s.status == run_pb2.STEP_STATUS_SLEEPING
               for s in run.steps)


async def test_a_queued_run_says_which_concurrency_key_holds_it(plait: Running) -> None:
    app = App("flow-why")
    release = asyncio.Event()

    @app.function("held", trigger=TriggerEvent("flow-why/go"),
                  concurrency=Concurrency(limit=1, key="event.data.k"))
    async def held(ctx: Context, step: Step) -> str:
        async def work() -> None:
            if ctx.event.data.get("block"):
                await asyncio.wait_for(release.wait(), 20)

        await step.run("work", work)
        return str(ctx.event.data["k"])

    async with running_worker(app, plait.client):
        first = await plait.client.send("flow-why/go", {"k": "cust-7", "block": True})
        (running,) = await eventually(lambda: _runs_of(plait.client, first), len, 20, "run")
        await eventually(lambda: plait.client.run(running.id),
                         lambda r: r.status == run_pb2.RUN_STATUS_RUNNING, 20, "it to start")
        second = await plait.client.send("flow-why/go", {"k": "cust-7"})
        (queued,) = await eventually(lambda: _runs_of(plait.client, second), len, 20, "run")
        waiting = await eventually(lambda: plait.client.run(queued.id),
                                   lambda r: bool(r.waiting_reason), 20, "a waiting reason")
        release.set()
        done = await plait.client.finished_run_of(second)

    assert waiting.status == run_pb2.RUN_STATUS_QUEUED
    assert waiting.waiting_reason == 'concurrency limit on key "cust-7"'
    assert done.status == COMPLETED and not done.waiting_reason
    assert json.loads(done.output_json) == "cust-7"


def _waiting_gauge(text: str, function_id: str) -> dict[str, float]:
    """The function's non-zero plait_runs_waiting samples, by reason."""
    pattern = re.compile(r'^plait_runs_waiting\{([^}]*)\} (\S+)$', re.MULTILINE)
    out = {}
    for labels, value in pattern.findall(text):
        fields = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if fields.get("function_id") == function_id and float(value):
            out[fields["reason"]] = float(value)
    return out


async def test_queued_runs_say_they_are_debouncing_batching_or_throttled_and_metrics_count_them(
    plait: Running,
) -> None:
    app = App("flow-why2")

    async def body(ctx: Context, step: Step) -> None:
        return None

    app.function("deb", trigger=TriggerEvent("flow-why2/deb"),
                 debounce=Debounce(period=timedelta(seconds=60)))(body)
    app.function("bat", trigger=TriggerEvent("flow-why2/bat"),
                 batch_events=Batch(max_size=5, timeout=timedelta(seconds=60)))(body)
    app.function("thr", trigger=TriggerEvent("flow-why2/thr"),
                 throttle=Throttle(limit=1, period=timedelta(seconds=60)))(body)

    async def reason(event_id: str) -> str:
        found = await _runs_of(plait.client, event_id)
        if not found:
            return ""
        run = await plait.client.run(found[0].id)  # GetRun, as an operator asks
        return run.waiting_reason or f"<none: {run.status} {run.id}>"

    async with running_worker(app, plait.client):
        deb = await plait.client.send("flow-why2/deb", {})
        bat = (await plait.client.send_many("flow-why2/bat", [{}, {}]))[0]
        first = await plait.client.send("flow-why2/thr", {})
        await plait.client.finished_run_of(first)
        held = await plait.client.send("flow-why2/thr", {})
        await eventually(lambda: reason(deb), lambda r: r == "debouncing", 20, "debouncing")
        await eventually(lambda: reason(bat), lambda r: r == "batching (2 of 5)", 20,
                         "batching")
        throttled = await eventually(lambda: reason(held),
                                     lambda r: r.startswith("throttled until "), 20, "throttled")
        url = f"http://127.0.0.1:{plait.endpoints.http_port}/metrics"
        async with httpx.AsyncClient(timeout=10) as http:
            text = (await http.get(url)).text

    assert re.fullmatch(r"throttled until \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", throttled), (
        throttled)
    assert {f: _waiting_gauge(text, f"flow-why2-{f}") for f in ("deb", "bat", "thr")} == {
        "deb": {"debounce": 1.0}, "bat": {"batch": 1.0}, "thr": {"throttle": 1.0}}


async def test_one_hot_key_does_not_starve_the_others(plait: Running) -> None:
    app = App("flow-hot")
    rec = Recorder()

    @app.function("keyed", trigger=TriggerEvent("flow-hot/go"),
                  concurrency=Concurrency(limit=2, key="event.data.k"))
    async def keyed(ctx: Context, step: Step) -> None:
        await rec.hold(ctx.run_id, ctx.event.data["k"], 0.02)

    async with running_worker(app, plait.client, max_jobs=50):
        # The hot key's runs all come first: a FIFO over the function would serve them first.
        hot = await plait.client.send_many("flow-hot/go", [{"k": "hot"}] * 200)
        cold = await plait.client.send_many(
            "flow-hot/go", [{"k": f"cold-{n % 20}"} for n in range(100)])
        await _ended(plait.client, [hot[-1], *cold], 60)

    got = by_key(rec.intervals())
    cold_done = max(i.end for k, v in got.items() if k != "hot" for i in v)
    hot_before = sum(1 for i in got["hot"] if i.end <= cold_done)
    # 100 cold runs at 40 at once take ~3 body times; the hot key does ~2 per body time.
    assert hot_before <= 50, (hot_before, len(got["hot"]))
    assert max(max_overlap_by_key(rec.intervals()).values()) == 2


async def test_debounce_timeout_starts_a_run_while_events_keep_coming(plait: Running) -> None:
    app = App("flow-dbt")
    rec = Recorder()

    @app.function("capped", trigger=TriggerEvent("flow-dbt/go"), debounce=Debounce(
        period=timedelta(seconds=1), timeout=timedelta(seconds=2)))
    async def capped(ctx: Context, step: Step) -> None:
        async def work() -> None:
            await rec.hold(ctx.run_id, "", 0.01, ctx.event.data["n"])

        await step.run("work", work)

    async with running_worker(app, plait.client):
        for n in range(12):  # one every 0.3 s, for 3.6 s: the period never passes quietly
            await plait.client.send("flow-dbt/go", {"n": n})
            await asyncio.sleep(0.3)
        await eventually(rec.count, lambda c: c >= 2, 20, "the capped and the last run")

    seen = [i.data for i in sorted(rec.intervals(), key=lambda i: i.start)]
    # The timeout started a run with an event before the last; the events after it made a
    # second run, with the last event.
    assert len(seen) == 2 and seen[0] < 11 and seen[1] == 11, seen


async def test_batches_are_per_key_and_events_if_rejects_run_alone(plait: Running) -> None:
    app = App("flow-btk")
    rec = Recorder()

    @app.function("batched", trigger=TriggerEvent("flow-btk/go"), batch_events=Batch(
        max_size=2, timeout=timedelta(seconds=60), key="event.data.k",
        if_exp="event.data.big == false"))
    async def batched(ctx: Context, step: Step) -> None:
        async def work() -> None:
            await rec.hold(ctx.run_id, "", 0.01, [e.data["n"] for e in ctx.events])

        await step.run("work", work)

    async with running_worker(app, plait.client):
        await plait.client.send_many("flow-btk/go", [
            {"k": "a", "n": 0, "big": False}, {"k": "b", "n": 1, "big": False},
            {"k": "a", "n": 2, "big": True}, {"k": "b", "n": 3, "big": False},
            {"k": "a", "n": 4, "big": False}])
        await eventually(rec.count, lambda c: c >= 3, 20, "three runs")

    assert sorted(i.data for i in rec.intervals()) == [[0, 4], [1, 3], [2]]
