"""Parallel groups holding sleeps, waits and invokes in the state scripts (steps_planned.lua,
sleep.lua, wait_for_event.lua, invoke.lua, resume_wait.lua, _waits.lua's end_planned): each
parks in a job of its own, ends at its time or its match like a completed step, and the main
job runs again when the last ends, or the first in a race."""

from __future__ import annotations

import json

from redis.asyncio import Redis

from server.config import Settings
from server.executor.opcodes import ended_step
from server.keys import Keys
from server.queue import NewRun, Queue
from server.state import Outcome, StateStore, WaitEntry
from server.types import (
    AppId,
    ConcurrencyLimit,
    EventId,
    FlowControl,
    FunctionId,
    InvokeFunction,
    Job,
    RunId,
    RunStatus,
    Sleep,
    StepCompleted,
    StepId,
    StepsPlanned,
    WaitForEvent,
)
from tests.queue.flow_support import NOW as FLOW_NOW
from tests.queue.flow_support import function, make_flow, run_of

NOW = 1_700_000_000_000
FN = FunctionId("app-g")
RUN = RunId("r1")
SK = Keys().shard(0)


def _wait(step: str, event: str, until: int = NOW + 5000) -> WaitForEvent:
    return WaitForEvent(StepId(step), step, event, "", until)


async def _main(redis: Redis) -> tuple[Queue, StateStore, Job]:
    queue = Queue(redis, Keys(), lease_ms=60_000)
    state = StateStore(redis, Keys(), Settings())
    await queue.enqueue_runs(
        [NewRun(RUN, FN, AppId("app"), EventId("e1"), b'{"data":{}}', 3, NOW)], NOW)
    (job,), _ = await queue.lease(SK, [(FN, 10)], 10, NOW)
    return queue, state, job


async def _lease(queue: Queue, at: int) -> dict[str, Job]:
    jobs, _ = await queue.lease(SK, [(FN, 10)], 10, at)
    return {job.target_step or "main": job for job in jobs}


async def _entry(redis: Redis, event: str) -> WaitEntry:
    ((field, raw),) = (await redis.hgetall(SK.waits(event))).items()
    return WaitEntry.parse(event, field.decode(), raw)


async def _planned(redis: Redis) -> set[str]:
    return {m.decode() for m in await redis.smembers(SK.planned(RUN))}


async def test_a_sleep_in_a_group_parks_its_own_job_and_ends_at_its_time(redis: Redis) -> None:
    queue, state, main = await _main(redis)
    plan = StepsPlanned((StepId("a"),), (Sleep(StepId("s"), "nap", NOW + 1000),))
    (applied,) = await state.apply([(main, plan)], NOW, relock=True)
    assert applied.outcome is Outcome.SCHEDULED
    assert await _planned(redis) == {"a", "s"}
    jobs = await _lease(queue, NOW)
    assert set(jobs) == {"a"}  # the sleep's job waits for its end, the main job for both
    await state.apply([(jobs["a"], StepCompleted(StepId("a"), "a", b"1"))], NOW + 1, True)
    assert await _lease(queue, NOW + 999) == {}
    due = await _lease(queue, NOW + 1000)
    assert set(due) == {"s"} and due["s"].job_id == "r1:s"
    op = ended_step(due["s"])
    assert op == StepCompleted(StepId("s"), "s", b"null")
    (woke,) = await state.apply([(due["s"], op)], NOW + 1001, relock=True)
    assert woke.next_job is not None and woke.next_job.job_id == RUN
    assert woke.next_job.steps == {"a": b'{"data":1}', "s": b'{"data":null}'}
    assert await _planned(redis) == set()


async def test_two_waits_in_a_group_resume_the_function_when_both_matched(redis: Redis) -> None:
    queue, state, main = await _main(redis)
    plan = StepsPlanned((), (_wait("w1", "a/one"), _wait("w2", "a/two")))
    await state.apply([(main, plan)], NOW, relock=True)
    one, two = await _entry(redis, "a/one"), await _entry(redis, "a/two")
    assert (one.job_id, two.job_id) == ("r1:w1", "r1:w2")  # each entry names its own job
    assert await state.resume_wait(one, b'{"data":{"n":1}}', NOW + 10)
    assert await _lease(queue, NOW + 10) == {}  # the other is still waiting
    assert not await redis.exists(SK.job("r1:w1"))
    assert await state.resume_wait(two, b'{"data":{"n":2}}', NOW + 20)
    jobs = await _lease(queue, NOW + 20)
    assert set(jobs) == {"main"}
    assert jobs["main"].steps == {"w1": b'{"data":{"n":1}}', "w2": b'{"data":{"n":2}}'}
    assert await redis.hlen(SK.wait_refs(RUN)) == 0


async def test_a_wait_in_a_group_times_out_on_its_own_job(redis: Redis) -> None:
    queue, state, main = await _main(redis)
    plan = StepsPlanned((), (_wait("w", "a/one", NOW + 500), Sleep(StepId("s"), "s", NOW + 900)))
    await state.apply([(main, plan)], NOW, relock=True)
    (due,) = (await _lease(queue, NOW + 500)).values()
    assert due.job_id == "r1:w"
    await state.apply([(due, ended_step(due) or StepCompleted(StepId("x"), "x", b""))],
                      NOW + 501, relock=False)
    # A late match loses: the job that waited is gone.
    assert not await state.resume_wait(await _entry(redis, "a/one"), b'{"data":{}}', NOW + 502)
    (sleep_job,) = (await _lease(queue, NOW + 900)).values()
    (woke,) = await state.apply([(sleep_job, ended_step(sleep_job) or StepCompleted(
        StepId("x"), "x", b""))], NOW + 901, relock=False)
    assert woke.outcome is Outcome.SCHEDULED
    (again,) = (await _lease(queue, NOW + 901)).values()
    assert again.job_id == RUN and again.steps == {"w": b'{"data":null}', "s": b'{"data":null}'}


async def test_in_a_race_the_first_to_end_wakes_the_function_and_settles_the_rest(
        redis: Redis) -> None:
    queue, state, main = await _main(redis)
    plan = StepsPlanned((StepId("a"),),
                        (_wait("w", "a/one"), Sleep(StepId("s"), "s", NOW + 60_000)), race=True)
    await state.apply([(main, plan)], NOW, relock=True)
    jobs = await _lease(queue, NOW)
    assert set(jobs) == {"a"}
    assert await state.resume_wait(await _entry(redis, "a/one"), b'{"data":{"n":1}}', NOW + 5)
    # The sleep lost: its job is gone with its timeout answer memoised; the running step.run
    # keeps its job.
    assert await _planned(redis) == {"a"}
    assert not await redis.exists(SK.job("r1:s"))
    woken = await _lease(queue, NOW + 5)
    assert set(woken) == {"main"}
    assert woken["main"].steps == {"w": b'{"data":{"n":1}}', "s": b'{"data":null}'}
    # The main job runs; the step.run that ends meanwhile does not move it.
    (ended,) = await state.apply([(jobs["a"], StepCompleted(StepId("a"), "a", b"1"))],
                                 NOW + 6, relock=True)
    assert ended.outcome is Outcome.SCHEDULED and ended.next_job is None
    assert await redis.zscore(SK.leased, RUN) is not None


async def test_a_planned_steps_job_sleeps_and_waits_for_its_own_step(redis: Redis) -> None:
    queue, state, main = await _main(redis)
    await state.apply([(main, StepsPlanned((StepId("s"), StepId("w"), StepId("i"))))], NOW,
                      relock=True)
    jobs = await _lease(queue, NOW)
    applied = await state.apply([
        (jobs["s"], Sleep(StepId("s"), "s", NOW + 100)),
        (jobs["w"], _wait("w", "a/one")),
        (jobs["i"], InvokeFunction(StepId("i"), "i", "app-child", b"{}", NOW + 200)),
    ], NOW + 1, relock=True)
    assert [a.outcome for a in applied] == [Outcome.SCHEDULED] * 3
    assert (await _entry(redis, "a/one")).job_id == "r1:w"
    assert (await _entry(redis, "inngest/function.finished")).job_id == "r1:i"
    emits = [f for _, f in await redis.xrange(SK.history) if f[b"k"] == b"emit"]
    assert len(emits) == 1 and b"inngest/function.invoked" in emits[0][b"events"]
    assert await _lease(queue, NOW + 99) == {}
    assert await state.resume_wait(await _entry(redis, "a/one"), b'{"data":{}}', NOW + 50)
    (sleep_job,) = (await _lease(queue, NOW + 100)).values()
    await state.apply([(sleep_job, ended_step(sleep_job) or Sleep(StepId("s"), "s", 0))],
                      NOW + 101, relock=False)
    (invoke_job,) = (await _lease(queue, NOW + 200)).values()
    # While it waits the invoke is null (another branch's job must not see an error)...
    assert invoke_job.steps["i"] == b'{"data":null}'
    timeout = ended_step(invoke_job)
    assert timeout == StepCompleted(StepId("i"), "i", b"null")
    (woke,) = await state.apply([(invoke_job, timeout)], NOW + 201, relock=True)
    # ...and at its time it ends with the timeout's error, recorded as failed.
    assert woke.next_job is not None and woke.next_job.job_id == RUN
    assert json.loads(woke.next_job.steps["i"])["error"]["name"] == "InvokeTimeoutError"
    last = [f for _, f in await redis.xrange(SK.history) if f[b"k"] == b"step"][-1]
    assert (last[b"step"], last[b"status"]) == (b"i", b"failed")


async def test_a_parked_invoke_is_null_to_the_group_until_its_child_ends(redis: Redis) -> None:
    queue, state, main = await _main(redis)
    plan = StepsPlanned((StepId("a"),),
                        (InvokeFunction(StepId("i"), "i", "app-child", b"{}", NOW + 1000),))
    await state.apply([(main, plan)], NOW, relock=True)
    jobs = await _lease(queue, NOW)
    assert jobs["a"].steps == {"i": b'{"data":null}'}
    await state.apply([(jobs["a"], StepCompleted(StepId("a"), "a", b"1"))], NOW + 1, True)
    (due,) = (await _lease(queue, NOW + 1000)).values()
    (woke,) = await state.apply([(due, ended_step(due) or Sleep(StepId("x"), "x", 0))],
                                NOW + 1001, relock=True)
    assert woke.next_job is not None
    assert json.loads(woke.next_job.steps["i"])["error"]["name"] == "InvokeTimeoutError"


async def test_a_planned_sleep_already_over_ends_its_job_at_once(redis: Redis) -> None:
    queue, state, main = await _main(redis)
    await state.apply([(main, StepsPlanned((StepId("s"),)))], NOW, relock=True)
    (job,) = (await _lease(queue, NOW)).values()
    (woke,) = await state.apply([(job, Sleep(StepId("s"), "s", NOW - 1))], NOW, relock=True)
    assert woke.next_job is not None and woke.next_job.job_id == RUN
    assert woke.next_job.steps == {"s": b'{"data":null}'}


async def test_a_parked_sleep_over_at_planning_needs_no_job(redis: Redis) -> None:
    _, state, main = await _main(redis)
    (applied,) = await state.apply(
        [(main, StepsPlanned((), (Sleep(StepId("s"), "s", NOW),)))], NOW, relock=True)
    assert applied.next_job is not None and applied.next_job.steps == {"s": b'{"data":null}'}


async def test_cancelling_a_run_drops_its_parked_jobs_and_their_waits(redis: Redis) -> None:
    queue, state, main = await _main(redis)
    plan = StepsPlanned((), (_wait("w", "a/one"), Sleep(StepId("s"), "s", NOW + 100)))
    await state.apply([(main, plan)], NOW, relock=True)
    status, _ = await state.cancel_run(RUN, NOW + 1)
    assert status is RunStatus.CANCELLED
    assert await _lease(queue, NOW + 10_000) == {}
    assert not await redis.exists(SK.job("r1:w"), SK.job("r1:s"), SK.planned(RUN))
    assert await redis.hlen(SK.waits("a/one")) == 0


async def test_a_planned_job_that_parks_frees_its_concurrency_slot(redis: Redis) -> None:
    flow = make_flow(redis)
    fn = function("fn", FlowControl(concurrency=(ConcurrencyLimit(1),)))
    run, other = run_of(fn, {"n": 1}), run_of(fn, {"n": 2}, at=FLOW_NOW + 1)
    await flow.queue.enqueue_runs([run], FLOW_NOW)
    (main,) = await flow.lease(fn)
    await flow.state.apply([(main, StepsPlanned((StepId("s"),)))], FLOW_NOW + 1, relock=True)
    (planned,) = await flow.lease(fn, now=FLOW_NOW + 2)
    await flow.queue.enqueue_runs([other], FLOW_NOW + 2)
    assert await flow.lease(fn, now=FLOW_NOW + 3) == []  # the planned job holds the slot
    await flow.state.apply([(planned, Sleep(StepId("s"), "s", FLOW_NOW + 60_000))],
                           FLOW_NOW + 4, relock=True)
    (next_run,) = await flow.lease(fn, now=FLOW_NOW + 5)  # parked: the slot is free again
    assert next_run.run_id == other.run_id


async def test_a_group_over_the_state_cap_fails_the_run_before_any_invoke_is_sent(
        redis: Redis) -> None:
    queue = Queue(redis, Keys(), lease_ms=60_000)
    state = StateStore(redis, Keys(), Settings(max_run_state_bytes=40))
    await queue.enqueue_runs(
        [NewRun(RUN, FN, AppId("app"), EventId("e1"), b'{"data":{}}', 3, NOW)], NOW)
    (main,), _ = await queue.lease(SK, [(FN, 10)], 10, NOW)
    plan = StepsPlanned((), tuple(
        InvokeFunction(StepId(f"i{n}"), "i", "app-child", b"{}", NOW + 1000) for n in range(5)))
    (applied,) = await state.apply([(main, plan)], NOW, relock=True)
    assert applied.outcome is Outcome.FINISHED
    assert (await state.get_run(RUN)).status is RunStatus.FAILED  # type: ignore[union-attr]
    assert not [f for _, f in await redis.xrange(SK.history) if f[b"k"] == b"emit"]
    assert await redis.hlen(SK.waits("inngest/function.finished")) == 0
    assert await _lease(queue, NOW + 10_000) == {}
