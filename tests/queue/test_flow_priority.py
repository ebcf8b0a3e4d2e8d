"""Priority: a new run's job is scored -priority ms (clamped to ±600 s), so among runnable
new runs of a function the higher priority is leased first."""

from __future__ import annotations

import math

from redis.asyncio import Redis

from server.types import FlowControl
from tests.queue.flow_support import NOW, function, make_flow, run_of


async def test_higher_priority_runs_lease_first(redis: Redis) -> None:
    flow = make_flow(redis)
    fn = function("fn", FlowControl(priority_run="event.data.p"))
    runs = [run_of(fn, {"p": p}, at=NOW + i) for i, p in enumerate([-10, 0, 10, 5000])]
    await flow.queue.enqueue_runs(runs, NOW)
    # The fraction below 1 ms is the run's arrival order (queue._arrival_score).
    assert math.floor(await flow.score(fn, runs[3].run_id)) == -600_000
    jobs = await flow.lease(fn)
    assert [j.run_id for j in jobs] == [runs[3].run_id, runs[2].run_id, runs[1].run_id,
                                        runs[0].run_id]


async def test_runs_of_one_priority_lease_in_the_order_they_were_queued(redis: Redis) -> None:
    """Run ids are hashes: without the arrival fraction, runs of one call tied at one score
    and leased in run-id order (a throttle then started them out of event order)."""
    flow = make_flow(redis)
    fn = function("fn", FlowControl(priority_run="0"))
    runs = [run_of(fn, {"n": i}, at=NOW) for i in range(50)]
    await flow.queue.enqueue_runs(runs[:25], NOW)
    await flow.queue.enqueue_runs(runs[25:], NOW + 1)
    jobs = await flow.lease(fn, now=NOW + 1)
    assert [j.run_id for j in jobs] == [r.run_id for r in runs]
