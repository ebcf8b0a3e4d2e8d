"""Batching in enqueue_runs.lua: one run per key gathers up to max_size events (the run hash's
`events`, delivered as Job.events by the lease and relock replies), flushed when full or at
its timeout; events the batch's `if` refuses run on their own."""

from __future__ import annotations

import json

from redis.asyncio import Redis

from server.queue.flow import MAX_BATCH_BYTES
from server.queue.queue import CREATED, MERGED
from server.types import BatchConfig, FlowControl, StepCompleted, StepId
from tests.queue.flow_support import NOW, function, make_flow, run_of


def _data(events: tuple[bytes, ...]) -> list[object]:
    return [json.loads(e)["data"]["n"] for e in events]


async def test_a_full_batch_is_one_run_with_every_event(redis: Redis) -> None:
    flow = make_flow(redis)
    fn = function("fn", FlowControl(batch=BatchConfig(max_size=3, timeout_ms=60_000)))
    runs = [run_of(fn, {"n": i}, at=NOW + i) for i in range(4)]
    assert (await flow.queue.enqueue(runs[:2], NOW)).codes == [CREATED, MERGED]
    assert (await flow.run_hash(runs[0].run_id))["why"] == "batching (2 of 3)"
    assert await flow.lease(fn) == []
    assert (await flow.queue.enqueue(runs[2:], NOW + 10)).codes == [MERGED, CREATED]
    (job,) = await flow.lease(fn, now=NOW + 10)
    assert job.run_id == runs[0].run_id
    assert _data(job.events) == [0, 1, 2]
    assert json.loads(job.event_json)["data"]["n"] == 0
    # The relocked next job of the run carries the batch too.
    (applied,) = await flow.state.apply([(job, StepCompleted(StepId("s"), "s", b"1"))],
                                        NOW + 11, relock=True)
    assert applied.next_job is not None and _data(applied.next_job.events) == [0, 1, 2]


async def test_a_batch_is_flushed_at_its_timeout(redis: Redis) -> None:
    flow = make_flow(redis)
    fn = function("fn", FlowControl(batch=BatchConfig(max_size=10, timeout_ms=1000,
                                                      key="event.data.user")))
    runs = [run_of(fn, {"n": i, "user": u}, at=NOW + i) for i, u in enumerate("aab")]
    assert (await flow.queue.enqueue(runs, NOW)).codes == [CREATED, MERGED, CREATED]
    assert await flow.lease(fn, now=NOW + 999) == []
    jobs = await flow.lease(fn, now=NOW + 1000)
    assert sorted(_data(j.events) for j in jobs) == [[0, 1], [2]]
    # The flushed batch is closed: the key's next event opens a new one.
    late = run_of(fn, {"n": 3, "user": "a"}, at=NOW + 1001)
    assert (await flow.queue.enqueue([late], NOW + 1001)).codes == [CREATED]


async def test_an_event_the_batch_if_refuses_runs_alone_at_once(redis: Redis) -> None:
    flow = make_flow(redis)
    fn = function("fn", FlowControl(batch=BatchConfig(
        max_size=5, timeout_ms=60_000, if_expression="event.data.n > 0")))
    runs = [run_of(fn, {"n": i}, at=NOW + i) for i in range(3)]
    assert (await flow.queue.enqueue(runs, NOW)).codes == [CREATED, CREATED, MERGED]
    (job,) = await flow.lease(fn)
    assert job.run_id == runs[0].run_id and _data(job.events) == [0]


async def test_an_event_read_again_after_a_crash_is_not_batched_twice(redis: Redis) -> None:
    flow = make_flow(redis)
    fn = function("fn", FlowControl(batch=BatchConfig(max_size=3, timeout_ms=1000)))
    runs = [run_of(fn, {"n": i}, at=NOW + i) for i in range(2)]
    await flow.queue.enqueue(runs, NOW)
    assert (await flow.queue.enqueue(runs, NOW + 5)).codes == [0, MERGED]
    (job,) = await flow.lease(fn, now=NOW + 1000)
    assert _data(job.events) == [0, 1]


async def test_a_batch_is_closed_before_its_events_pass_the_byte_cap(redis: Redis) -> None:
    """Any maxSize is accepted: a batch whose next event would take it past MAX_BATCH_BYTES is
    due at once, and that event opens the key's next batch."""
    flow = make_flow(redis)
    fn = function("fn", FlowControl(batch=BatchConfig(max_size=100, timeout_ms=60_000)))
    pad = "x" * (MAX_BATCH_BYTES // 3)
    runs = [run_of(fn, {"n": i, "pad": pad}, at=NOW + i) for i in range(4)]
    assert (await flow.queue.enqueue(runs, NOW)).codes == [CREATED, MERGED, CREATED, MERGED]
    (job,) = await flow.lease(fn)
    assert job.run_id == runs[0].run_id and _data(job.events) == [0, 1]
    assert sum(len(e) for e in job.events) < MAX_BATCH_BYTES
    assert (await flow.run_hash(runs[2].run_id))["why"] == "batching (2 of 100)"
