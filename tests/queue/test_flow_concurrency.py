"""Concurrency limits in lease.lua and the slot release every script taking a job out of the
leased set does (_flow.lua's free_slots), against the real Redis."""

from __future__ import annotations

from redis.asyncio import Redis

from server.queue.queue import HeldLease
from server.types import (
    ConcurrencyLimit,
    ConcurrencyScope,
    FlowControl,
    RunCompleted,
    Sleep,
    StepCompleted,
    StepId,
    StepsPlanned,
)
from tests.queue.flow_support import LEASE_MS, NOW, function, make_flow, run_of

LIMIT_2 = FlowControl(concurrency=(ConcurrencyLimit(2),))
KEYED_1 = FlowControl(concurrency=(ConcurrencyLimit(1, key="event.data.user"),))


async def test_the_lease_script_alone_never_leases_past_the_limit(redis: Redis) -> None:
    flow = make_flow(redis)
    fn = function("fn", LIMIT_2)
    runs = [run_of(fn, {"n": i}, at=NOW + i) for i in range(10)]
    await flow.queue.enqueue_runs(runs, NOW)
    first = await flow.lease(fn)
    assert [j.run_id for j in first] == [runs[0].run_id, runs[1].run_id]
    assert await flow.lease(fn) == []
    assert await flow.lease(fn, now=NOW + 1000) == []
    waiting = await flow.run_hash(runs[9].run_id)
    assert waiting["why"] == "concurrency limit"
    # Parked waiters cost the lease scan nothing: none is due.
    assert await flow.redis.zcount(flow.shard().ready(fn.id), "-inf", NOW + 10_000) == 0


async def test_a_freed_slot_wakes_the_next_waiter_in_the_same_script(redis: Redis) -> None:
    flow = make_flow(redis)
    fn = function("fn", LIMIT_2)
    runs = [run_of(fn, {"n": i}, at=NOW + i) for i in range(4)]
    await flow.queue.enqueue_runs(runs, NOW)
    held = await flow.lease(fn)
    assert {j.run_id for j in held} == {runs[0].run_id, runs[1].run_id}
    await flow.state.apply([(held[0], RunCompleted(b"1"))], NOW + 10, relock=False)
    # The commit itself put the first waiter back, with its original score (a new run's:
    # 0 and its arrival order as a fraction of a ms).
    assert 0 <= (await flow.score(fn, runs[2].run_id) or -1) < 1
    assert await flow.score(fn, runs[3].run_id) is not None
    assert (await flow.score(fn, runs[3].run_id) or 0) >= 9e15
    again = await flow.lease(fn, now=NOW + 11)
    assert [j.run_id for j in again] == [runs[2].run_id]
    assert "why" not in await flow.run_hash(runs[2].run_id)


async def test_an_expired_lease_frees_its_slot_and_never_leaks_it(redis: Redis) -> None:
    flow = make_flow(redis)
    fn = function("fn", FlowControl(concurrency=(ConcurrencyLimit(1),)))
    runs = [run_of(fn, {"n": i}, at=NOW + i) for i in range(2)]
    await flow.queue.enqueue_runs(runs, NOW)
    assert len(await flow.lease(fn)) == 1
    # The worker and its server die (kill -9): nothing releases the lease; it expires.
    assert await flow.queue.requeue_expired(flow.shard(), NOW + LEASE_MS + 1) == 1
    assert 0 <= (await flow.score(fn, runs[1].run_id) or -1) < 1
    jobs = await flow.lease(fn, now=NOW + LEASE_MS + 2)
    assert [j.run_id for j in jobs] == [runs[1].run_id]


async def test_a_slot_lost_from_the_leased_set_is_taken_back_when_counted(
        redis: Redis) -> None:
    flow = make_flow(redis)
    fn = function("fn", FlowControl(concurrency=(ConcurrencyLimit(1),)))
    first = run_of(fn, {"n": 1})
    await flow.queue.enqueue_runs([first], NOW)
    (held,) = await flow.lease(fn)
    # A job taken out of `leased` by a path that did not free its slot.
    await flow.redis.zrem(flow.shard().leased, held.job_id)
    second = run_of(fn, {"n": 2}, at=NOW + 1)
    await flow.queue.enqueue_runs([second], NOW + 1)
    # Until the recorded expiry the slot counts; past it, it is checked and dropped.
    assert await flow.lease(fn, now=NOW + 2) == []
    await flow.redis.zadd(flow.shard().ready(fn.id), {second.run_id: 0})
    jobs = await flow.lease(fn, now=NOW + LEASE_MS + 1)
    assert [j.run_id for j in jobs] == [second.run_id]


async def test_a_released_sleeping_or_cancelled_job_frees_its_slot(redis: Redis) -> None:
    flow = make_flow(redis)
    fn = function("fn", FlowControl(concurrency=(ConcurrencyLimit(1),)))
    runs = [run_of(fn, {"n": i}, at=NOW + i) for i in range(4)]
    await flow.queue.enqueue_runs(runs, NOW)
    (a,) = await flow.lease(fn)
    await flow.queue.release([HeldLease(a.job_id, a.lease_id, a.run_id)], NOW + 1, "gone")
    (b,) = await flow.lease(fn, now=NOW + 2)
    assert b.run_id == runs[1].run_id
    await flow.state.apply([(b, Sleep(StepId("s"), "s", NOW + 60_000))], NOW + 3, relock=False)
    (c,) = await flow.lease(fn, now=NOW + 4)
    assert c.run_id == runs[2].run_id
    await flow.state.cancel_run(c.run_id, NOW + 5)
    jobs = await flow.lease(fn, now=NOW + 6)
    assert [j.run_id for j in jobs] == [runs[3].run_id]


async def test_a_relocked_step_keeps_its_slot(redis: Redis) -> None:
    flow = make_flow(redis)
    fn = function("fn", FlowControl(concurrency=(ConcurrencyLimit(1),)))
    runs = [run_of(fn, {"n": i}, at=NOW + i) for i in range(2)]
    await flow.queue.enqueue_runs(runs, NOW)
    (a,) = await flow.lease(fn)
    (applied,) = await flow.state.apply([(a, StepCompleted(StepId("s1"), "s1", b"1"))],
                                        NOW + 1, relock=True)
    assert applied.next_job is not None
    assert await flow.lease(fn, now=NOW + 2) == []
    await flow.state.apply([(applied.next_job, RunCompleted(b"2"))], NOW + 3, relock=False)
    assert [j.run_id for j in await flow.lease(fn, now=NOW + 4)] == [runs[1].run_id]


async def test_a_hot_key_does_not_hold_back_other_keys(redis: Redis) -> None:
    flow = make_flow(redis)
    fn = function("fn", KEYED_1)
    hot = [run_of(fn, {"user": "hot"}, at=NOW + i) for i in range(20)]
    cold = run_of(fn, {"user": "cold"}, at=NOW + 50)
    await flow.queue.enqueue_runs([*hot, cold], NOW)
    jobs = await flow.lease(fn, total=2)
    assert {j.run_id for j in jobs} == {hot[0].run_id, cold.run_id}
    assert (await flow.run_hash(hot[5].run_id))["why"] == 'concurrency limit on key "hot"'


async def test_two_limits_both_hold(redis: Redis) -> None:
    flow = make_flow(redis)
    fn = function("fn", FlowControl(concurrency=(
        ConcurrencyLimit(3), ConcurrencyLimit(1, key="event.data.user"))))
    runs = [run_of(fn, {"user": u}, at=NOW + i) for i, u in enumerate("aabbcd")]
    await flow.queue.enqueue_runs(runs, NOW)
    jobs = await flow.lease(fn)
    # One per user, three in all: a, b, c (d waits for the function-wide limit).
    assert [j.run_id for j in jobs] == [runs[0].run_id, runs[2].run_id, runs[4].run_id]
    await flow.state.apply([(jobs[0], RunCompleted(b"1"))], NOW + 1, relock=False)
    # The freed slot of both keys: user a's next run is woken and fits both limits.
    again = await flow.lease(fn, now=NOW + 2)
    assert [j.run_id for j in again] == [runs[1].run_id]


async def test_an_env_scoped_key_is_shared_by_two_functions(redis: Redis) -> None:
    flow = make_flow(redis)
    shared = FlowControl(concurrency=(
        ConcurrencyLimit(1, key="event.data.account", scope=ConcurrencyScope.ENV),))
    f1, f2 = function("f1", shared), function("f2", shared)
    a = run_of(f1, {"account": "x"})
    b = run_of(f2, {"account": "x"}, at=NOW + 1)
    c = run_of(f2, {"account": "y"}, at=NOW + 2)
    await flow.queue.enqueue_runs([a, b, c], NOW)
    jobs = await flow.lease(f1, f2)
    assert {j.run_id for j in jobs} == {a.run_id, c.run_id}
    first = next(j for j in jobs if j.run_id == a.run_id)
    await flow.state.apply([(first, RunCompleted(b"1"))], NOW + 3, relock=False)
    assert [j.run_id for j in await flow.lease(f1, f2, now=NOW + 4)] == [b.run_id]


async def test_parallel_steps_each_take_a_slot_and_the_main_job_is_admitted_again(
        redis: Redis) -> None:
    flow = make_flow(redis)
    fn = function("fn", FlowControl(concurrency=(ConcurrencyLimit(1),)))
    run = run_of(fn)
    await flow.queue.enqueue_runs([run], NOW)
    (main,) = await flow.lease(fn)
    await flow.state.apply([(main, StepsPlanned((StepId("a"), StepId("b"))))], NOW + 1,
                           relock=True)
    (first,) = await flow.lease(fn, now=NOW + 2)
    assert await flow.lease(fn, now=NOW + 2) == []
    await flow.state.apply([(first, StepCompleted(StepId(first.target_step), "s", b"1"))],
                           NOW + 3, relock=True)
    (second,) = await flow.lease(fn, now=NOW + 4)
    (applied,) = await flow.state.apply([(second, StepCompleted(StepId(second.target_step),
                                                                "s", b"2"))],
                                        NOW + 5, relock=True)
    # The last planned step ended: the main job is not relocked past the limit but queued
    # for the lease script, which admits it (the slot is free).
    assert applied.next_job is None
    (again,) = await flow.lease(fn, now=NOW + 6)
    assert again.job_id == run.run_id and set(again.steps) == {"a", "b"}


async def test_a_run_waiting_for_a_slot_past_its_start_timeout_fails(redis: Redis) -> None:
    flow = make_flow(redis)
    fn = function("fn", FlowControl(concurrency=(ConcurrencyLimit(1),)), start_timeout_ms=1000)
    runs = [run_of(fn, {"n": i}, at=NOW + i) for i in range(3)]
    await flow.queue.enqueue_runs(runs, NOW)
    (held,) = await flow.lease(fn)
    assert await flow.lease(fn, now=NOW + 1000) == []
    assert await flow.lease(fn, now=NOW + 1001) == []
    for run in runs[1:]:
        state = await flow.run_hash(run.run_id)
        assert state["status"] == "failed" and "StartTimeoutError" in state["error"]
        assert "why" not in state
    # The failed waiters are gone from the key's waiting set: the freed slot wakes nobody.
    await flow.state.apply([(held, RunCompleted(b"1"))], NOW + 1002, relock=False)
    assert await flow.lease(fn, now=NOW + 1003) == []


async def test_a_waiter_woken_by_one_key_and_held_by_another_passes_the_room_on(
        redis: Redis) -> None:
    flow = make_flow(redis)
    fn = function("fn", FlowControl(concurrency=(
        ConcurrencyLimit(2), ConcurrencyLimit(1, key="event.data.user"))))
    a1, b1, a2, c1 = (run_of(fn, {"user": u}, at=NOW + i) for i, u in enumerate("abac"))
    await flow.queue.enqueue_runs([a1, b1, a2, c1], NOW)
    jobs = await flow.lease(fn)
    assert [j.run_id for j in jobs] == [a1.run_id, b1.run_id]
    await flow.state.apply([(jobs[1], RunCompleted(b"1"))], NOW + 1, relock=False)
    # b1's slot wakes a2, which user a's limit holds (a1 runs): the room goes to c1.
    assert [j.run_id for j in await flow.lease(fn, now=NOW + 2)] == [c1.run_id]
    assert (await flow.run_hash(a2.run_id))["why"] == 'concurrency limit on key "a"'
