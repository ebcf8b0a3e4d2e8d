"""Debounce in enqueue_runs.lua: one queued run per key takes the last event and waits a quiet
period again, capped by the timeout from its first event."""

from __future__ import annotations

import json

from redis.asyncio import Redis

from server.queue.queue import CREATED, MERGED
from server.types import DebounceConfig, FlowControl
from tests.queue.flow_support import NOW, function, make_flow, run_of

DEBOUNCE = FlowControl(debounce=DebounceConfig(period_ms=1000, key="event.data.user",
                                               timeout_ms=2500))


async def test_the_last_event_wins_and_the_timeout_caps_the_delay(redis: Redis) -> None:
    flow = make_flow(redis)
    fn = function("fn", DEBOUNCE)
    first = run_of(fn, {"user": "a", "n": 1})
    assert (await flow.queue.enqueue([first], NOW)).codes == [CREATED]
    assert await flow.score(fn, first.run_id) == NOW + 1000
    assert (await flow.run_hash(first.run_id))["why"] == "debouncing"
    second = run_of(fn, {"user": "a", "n": 2}, at=NOW + 500)
    assert (await flow.queue.enqueue([second], NOW + 500)).codes == [MERGED]
    assert await flow.score(fn, first.run_id) == NOW + 1500
    third = run_of(fn, {"user": "a", "n": 3}, at=NOW + 1400)
    await flow.queue.enqueue([third], NOW + 1400)
    assert await flow.score(fn, first.run_id) == NOW + 2400
    fourth = run_of(fn, {"user": "a", "n": 4}, at=NOW + 2000)
    await flow.queue.enqueue([fourth], NOW + 2000)
    assert await flow.score(fn, first.run_id) == NOW + 2500  # capped: first + timeout
    assert await flow.lease(fn, now=NOW + 2499) == []
    (job,) = await flow.lease(fn, now=NOW + 2500)
    assert job.run_id == first.run_id
    assert json.loads(job.event_json)["data"] == {"user": "a", "n": 4}
    assert "why" not in await flow.run_hash(first.run_id)
    # Once started, the key's next event debounces a new run.
    fifth = run_of(fn, {"user": "a", "n": 5}, at=NOW + 2600)
    assert (await flow.queue.enqueue([fifth], NOW + 2600)).codes == [CREATED]


async def test_debounce_is_per_key(redis: Redis) -> None:
    flow = make_flow(redis)
    fn = function("fn", DEBOUNCE)
    runs = [run_of(fn, {"user": u}, at=NOW + i) for i, u in enumerate("aba")]
    assert (await flow.queue.enqueue(runs, NOW)).codes == [CREATED, CREATED, MERGED]


async def test_the_run_is_recorded_again_with_the_event_it_takes(redis: Redis) -> None:
    flow = make_flow(redis)
    fn = function("fn", DEBOUNCE)
    first = run_of(fn, {"user": "a", "n": 1})
    second = run_of(fn, {"user": "a", "n": 2}, at=NOW + 500)
    await flow.queue.enqueue([first], NOW)
    await flow.queue.enqueue([second], NOW + 500)
    entries = await flow.redis.xrange(flow.shard().history)
    records = [{k.decode(): v.decode() for k, v in f.items()} for _, f in entries]
    assert [(r["run"], r["event"], r["ts"]) for r in records if r["k"] == "run"] == [
        (first.run_id, first.event_id, str(NOW)), (first.run_id, second.event_id, str(NOW))]


async def test_an_older_event_read_again_after_a_crash_does_not_replace_a_later_one(
        redis: Redis) -> None:
    flow = make_flow(redis)
    fn = function("fn", DEBOUNCE)
    first = run_of(fn, {"user": "a", "n": 1})
    second = run_of(fn, {"user": "a", "n": 2}, at=NOW + 500)
    await flow.queue.enqueue([first, second], NOW + 500)
    assert (await flow.queue.enqueue([second], NOW + 600)).codes == [MERGED]
    assert (await flow.queue.enqueue([first], NOW + 700)).codes == [0]
    assert await flow.score(fn, first.run_id) == NOW + 1500
    (job,) = await flow.lease(fn, now=NOW + 1500)
    assert json.loads(job.event_json)["data"]["n"] == 2
