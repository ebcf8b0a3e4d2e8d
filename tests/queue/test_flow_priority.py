"""Priority: a new run's job is scored -priority ms (clamped to ±600 s), so among runnable
new runs of a function the higher priority is leased first."""

from __future__ import annotations

from redis.asyncio import Redis

from server.types import FlowControl
from tests.queue.flow_support import NOW, function, make_flow, run_of


async def test_higher_priority_runs_lease_first(redis: Redis) -> None:
    flow = make_flow(redis)
    fn = function("fn", FlowControl(priority_run="event.data.p"))
    runs = [run_of(fn, {"p": p}, at=NOW + i) for i, p in enumerate([-10, 0, 10, 5000])]
    await flow.queue.enqueue_runs(runs, NOW)
    assert await flow.score(fn, runs[3].run_id) == -600_000
    jobs = await flow.lease(fn)
    assert [j.run_id for j in jobs] == [runs[3].run_id, runs[2].run_id, runs[1].run_id,
                                        runs[0].run_id]
