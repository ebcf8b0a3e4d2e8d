"""Singleton in enqueue_runs.lua: `skip` records a new run skipped while a run of its key is
active; `cancel` creates it and names the active run for the caller to cancel."""

from __future__ import annotations

from redis.asyncio import Redis

from server.queue.queue import CREATED, SKIPPED
from server.types import FlowControl, RunCompleted, SingletonConfig, SingletonMode
from tests.queue.flow_support import NOW, function, make_flow, run_of


async def test_skip_mode_skips_while_a_run_of_the_key_is_active(redis: Redis) -> None:
    flow = make_flow(redis)
    fn = function("fn", FlowControl(singleton=SingletonConfig(SingletonMode.SKIP,
                                                              key="event.data.user")))
    runs = [run_of(fn, {"user": u}, at=NOW + i) for i, u in enumerate("aab")]
    assert (await flow.queue.enqueue(runs, NOW)).codes == [CREATED, SKIPPED, CREATED]
    jobs = await flow.lease(fn)
    first = next(j for j in jobs if j.run_id == runs[0].run_id)
    await flow.state.apply([(first, RunCompleted(b"1"))], NOW + 5, relock=False)
    # Ended: checked from the stored run's status, nothing had to clear the key.
    again = run_of(fn, {"user": "a"}, at=NOW + 6)
    assert (await flow.queue.enqueue([again], NOW + 6)).codes == [CREATED]


async def test_cancel_mode_starts_the_new_run_and_names_the_active_one(redis: Redis) -> None:
    flow = make_flow(redis)
    fn = function("fn", FlowControl(singleton=SingletonConfig(SingletonMode.CANCEL)))
    first, second = run_of(fn, {"n": 1}), run_of(fn, {"n": 2}, at=NOW + 1)
    assert (await flow.queue.enqueue([first], NOW)).cancels == []
    done = await flow.queue.enqueue([second], NOW + 1)
    assert done.codes == [CREATED] and done.cancels == [first.run_id]
