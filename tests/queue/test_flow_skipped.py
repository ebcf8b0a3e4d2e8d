"""Rate limit and idempotency in enqueue_runs.lua: an event past them starts nothing and its
run is recorded as skipped (run hash and history), with the reason."""

from __future__ import annotations

import json

from redis.asyncio import Redis

from server.queue.queue import CREATED, SKIPPED
from server.types import FlowControl, RateLimitConfig
from tests.queue.flow_support import NOW, Flow, function, make_flow, run_of


async def _history(flow: Flow, run_id: str) -> list[dict[str, str]]:
    entries = await flow.redis.xrange(flow.shard().history)
    out = [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]
    return [e for e in out if e.get("run") == run_id]


async def test_runs_past_the_rate_limit_are_recorded_skipped_and_start_nothing(
        redis: Redis) -> None:
    flow = make_flow(redis)
    fn = function("fn", FlowControl(rate_limit=RateLimitConfig(limit=1, period_ms=20_000)))
    runs = [run_of(fn, {"n": i}, at=NOW + i) for i in range(3)]
    done = await flow.queue.enqueue(runs, NOW)
    assert done.codes == [CREATED, SKIPPED, SKIPPED]
    skipped = await flow.run_hash(runs[1].run_id)
    assert skipped["status"] == "skipped"
    assert json.loads(skipped["error"]) == {
        "name": "FlowControlSkipped", "stack": "",
        "message": "rate limit of 1 per 20000 ms reached"}
    assert [e["k"] for e in await _history(flow, runs[1].run_id)] == ["run", "end"]
    assert (await _history(flow, runs[1].run_id))[1]["status"] == "skipped"
    assert [j.run_id for j in await flow.lease(fn)] == [runs[0].run_id]
    # The period over, the next event runs.
    later = run_of(fn, {"n": 9}, at=NOW + 20_000)
    assert (await flow.queue.enqueue([later], NOW + 20_000)).codes == [CREATED]


async def test_a_rate_limit_counts_per_key(redis: Redis) -> None:
    flow = make_flow(redis)
    fn = function("fn", FlowControl(rate_limit=RateLimitConfig(
        limit=1, period_ms=20_000, key="event.data.user")))
    runs = [run_of(fn, {"user": u}, at=NOW + i) for i, u in enumerate("aba")]
    assert (await flow.queue.enqueue(runs, NOW)).codes == [CREATED, CREATED, SKIPPED]


async def test_a_second_event_with_the_same_idempotency_key_is_skipped(redis: Redis) -> None:
    flow = make_flow(redis)
    fn = function("fn", FlowControl(idempotency="event.data.order"))
    runs = [run_of(fn, {"order": o}, at=NOW + i) for i, o in enumerate([1, 1, 2])]
    assert (await flow.queue.enqueue(runs, NOW)).codes == [CREATED, SKIPPED, CREATED]
    error = json.loads((await flow.run_hash(runs[1].run_id))["error"])
    assert error["message"] == \
        f"idempotency: run {runs[0].run_id} already ran for this key within 24 h"
    # The same event read again after a crash is the same run, not a skip.
    assert (await flow.queue.enqueue(runs[:1], NOW + 5)).codes == [0]
