"""Throttle (GCRA with burst) at a run's first lease, in lease.lua: runs are delayed in order,
none dropped; asserted on the scores the script gives, not on time."""

from __future__ import annotations

from redis.asyncio import Redis

from server.types import FlowControl, RunCompleted, StepCompleted, StepId, ThrottleConfig
from tests.queue.flow_support import NOW, function, make_flow, run_of


async def test_throttled_runs_are_spaced_by_the_period_in_order(redis: Redis) -> None:
    flow = make_flow(redis)
    fn = function("fn", FlowControl(throttle=ThrottleConfig(limit=1, period_ms=3000)))
    runs = [run_of(fn, {"n": i}, at=NOW + i) for i in range(3)]
    await flow.queue.enqueue_runs(runs, NOW)
    jobs = await flow.lease(fn)
    assert [j.run_id for j in jobs] == [runs[0].run_id]
    # Each later run is reserved the next opening: scored then, in arrival order.
    assert await flow.score(fn, runs[1].run_id) == NOW + 3000
    assert await flow.score(fn, runs[2].run_id) == NOW + 6000
    assert (await flow.run_hash(runs[1].run_id))["why"] == \
        "throttled until 2023-11-14T22:13:23.000Z"
    assert await flow.lease(fn, now=NOW + 2999) == []
    assert [j.run_id for j in await flow.lease(fn, now=NOW + 3000)] == [runs[1].run_id]
    assert "why" not in await flow.run_hash(runs[1].run_id)
    assert [j.run_id for j in await flow.lease(fn, now=NOW + 6000)] == [runs[2].run_id]


async def test_a_burst_starts_at_once_then_the_rate_holds(redis: Redis) -> None:
    flow = make_flow(redis)
    fn = function("fn", FlowControl(throttle=ThrottleConfig(limit=2, period_ms=2000, burst=3)))
    runs = [run_of(fn, {"n": i}, at=NOW + i) for i in range(5)]
    await flow.queue.enqueue_runs(runs, NOW)
    assert len(await flow.lease(fn)) == 3
    assert await flow.score(fn, runs[3].run_id) == NOW + 1000
    assert await flow.score(fn, runs[4].run_id) == NOW + 2000


async def test_throttle_applies_to_a_run_start_not_to_its_later_steps(redis: Redis) -> None:
    flow = make_flow(redis)
    fn = function("fn", FlowControl(throttle=ThrottleConfig(limit=1, period_ms=60_000)))
    run = run_of(fn)
    await flow.queue.enqueue_runs([run], NOW)
    (job,) = await flow.lease(fn)
    await flow.state.apply([(job, StepCompleted(StepId("a"), "a", b"1"))],
                                        NOW + 1, relock=False)
    (again,) = await flow.lease(fn, now=NOW + 2)
    await flow.state.apply([(again, RunCompleted(b"1"))], NOW + 3, relock=False)
    assert (await flow.run_hash(run.run_id))["status"] == "completed"
