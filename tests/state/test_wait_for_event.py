"""wait_for_event.lua, invoke.lua, send_events.lua, resume_wait.lua and the wait index:
park until the timeout, a match wins once, a run's end removes what it left."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from server.config import Settings
from server.keys import Keys
from server.queue import NewRun, Queue
from server.state import Outcome, StateStore, WaitEntry
from server.state.waits import digest
from server.types import (
    AppId,
    CancelOn,
    EventId,
    FunctionId,
    InvokeFunction,
    Job,
    OutgoingEvent,
    RunCompleted,
    RunId,
    SendEvents,
    StepId,
    WaitForEvent,
)

NOW = 1_700_000_000_000
FN = FunctionId("app-a")
RUN = RunId("r1")
SK = Keys().shard(0)
WAIT = WaitForEvent(StepId("w"), "w", "order/paid", "async.data.id == event.data.id", NOW + 5000)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def _started(redis: Redis, cancel_on: tuple[CancelOn, ...] = ()
                   ) -> tuple[Queue, StateStore, Job]:
    queue = Queue(redis, Keys(), lease_ms=5000)
    state = StateStore(redis, Keys(), Settings())
    await queue.enqueue_runs(
        [NewRun(RUN, FN, AppId("app"), EventId("e1"), b'{"data":{"id":1}}', 3, NOW,
                cancel_on=cancel_on)], NOW)
    (job,), _ = await queue.lease(SK, [(FN, 1)], 1, NOW)
    return queue, state, job


async def _entry(redis: Redis, name: str) -> WaitEntry:
    ((field, raw),) = (await redis.hgetall(SK.waits(name))).items()
    return WaitEntry.parse(name, field.decode(), raw)


async def _waiting(redis: Redis, op: WaitForEvent = WAIT) -> tuple[Queue, StateStore, WaitEntry]:
    queue, state, job = await _started(redis)
    (applied,) = await state.apply([(job, op)], NOW, relock=True)
    assert applied.outcome is Outcome.SCHEDULED
    return queue, state, await _entry(redis, op.event)


async def _lease(queue: Queue, at_ms: int) -> list[Job]:
    jobs, _ = await queue.lease(SK, [(FN, 1)], 1, at_ms)
    return jobs


async def test_a_wait_is_registered_by_event_name_and_parks_the_job(redis: Redis) -> None:
    queue, _, entry = await _waiting(redis)
    assert (entry.kind, entry.run_id, entry.step_id, entry.function_id, entry.until_ms) == (
        "wait", RUN, "w", FN, NOW + 5000)
    assert entry.if_expression == WAIT.if_expression
    assert await _lease(queue, NOW + 4999) == []


async def test_an_equality_with_the_runs_event_is_indexed_by_the_value(redis: Redis) -> None:
    _, _, entry = await _waiting(redis)
    assert entry.set_key == SK.wait_index("order/paid", "data.id", digest(1))
    assert await redis.smembers(entry.set_key) == {entry.field.encode()}
    assert await redis.smembers(SK.wait_paths("order/paid")) == {b"data.id"}
    assert await redis.scard(SK.wait_scan("order/paid")) == 0


async def test_any_other_expression_is_scanned(redis: Redis) -> None:
    op = WaitForEvent(StepId("w"), "w", "order/paid", "async.data.total > 10", NOW + 5000)
    _, _, entry = await _waiting(redis, op)
    assert entry.set_key == SK.wait_scan("order/paid")
    assert await redis.smembers(SK.wait_scan("order/paid")) == {entry.field.encode()}


async def test_a_matching_event_is_memoised_and_the_run_is_due_now(redis: Redis) -> None:
    queue, state, entry = await _waiting(redis)
    memo = b'{"data":{"data":{"id":1}}}'
    assert await state.resume_wait(entry, memo, NOW + 10)
    assert not await state.resume_wait(entry, memo, NOW + 11)
    (job,) = await _lease(queue, NOW + 10)
    assert job.steps == {"w": memo}
    assert await redis.hlen(SK.waits("order/paid")) == 0
    assert await redis.scard(entry.set_key) == 0
    assert await redis.hlen(SK.wait_refs(RUN)) == 0
    # History: the wait recorded as sleeping, then its end with the event it returned.
    records = [f for _, f in await redis.xrange(SK.history) if f[b"k"] == b"step"]
    assert [(r[b"step"], r[b"status"]) for r in records] == [
        (b"w", b"sleeping"), (b"w", b"completed")]
    assert json.loads(records[-1][b"output"]) == {"data": {"id": 1}}


async def test_an_invoke_ended_by_a_failed_child_is_recorded_as_failed(redis: Redis) -> None:
    _, state, job = await _started(redis)
    op = InvokeFunction(StepId("i"), "call", "other-fn", b"{}", NOW + 3000)
    await state.apply([(job, op)], NOW, relock=True)
    entry = await _entry(redis, "inngest/function.finished")
    error = {"name": "E", "message": "m", "stack": ""}
    assert await state.resume_wait(entry, json.dumps({"error": error}).encode(), NOW + 10)
    last = [f for _, f in await redis.xrange(SK.history) if f[b"k"] == b"step"][-1]
    assert (last[b"name"], last[b"status"]) == (b"call", b"failed")
    assert json.loads(last[b"error"]) == error


async def test_a_timed_out_wait_is_null_and_a_late_match_loses(redis: Redis) -> None:
    queue, state, entry = await _waiting(redis)
    (job,) = await _lease(queue, NOW + 5000)
    assert job.steps == {"w": b'{"data":null}'}
    assert not await state.resume_wait(entry, b'{"data":{"id":1}}', NOW + 5001)
    assert await redis.hlen(SK.waits("order/paid")) == 0


async def test_the_end_of_a_run_removes_its_waits(redis: Redis) -> None:
    queue, state, entry = await _waiting(redis)
    (job,) = await _lease(queue, NOW + 5000)
    (applied,) = await state.apply([(job, RunCompleted(b"1"))], NOW + 5001, relock=False)
    assert applied.outcome is Outcome.FINISHED
    assert await redis.hlen(SK.waits("order/paid")) == 0
    assert await redis.scard(entry.set_key) == 0
    assert not await redis.exists(SK.wait_refs(RUN))


async def test_cancel_on_entries_are_made_with_the_run_and_dropped_by_a_cancel(
        redis: Redis) -> None:
    rule = CancelOn("order/cancelled", "event.data.id == async.data.id", 60_000)
    _, state, _ = await _started(redis, (rule,))
    entry = await _entry(redis, "order/cancelled")
    assert (entry.kind, entry.run_id, entry.until_ms) == ("cancel", RUN, NOW + 60_000)
    assert entry.set_key == SK.wait_index("order/cancelled", "data.id", digest(1))
    status, _ = await state.cancel_run(RUN, NOW + 1)
    assert status == "cancelled"
    assert await redis.hlen(SK.waits("order/cancelled")) == 0
    assert await redis.scard(entry.set_key) == 0


async def test_invoke_parks_with_a_timeout_error_and_records_the_invoked_event(
        redis: Redis) -> None:
    queue, state, job = await _started(redis)
    op = InvokeFunction(StepId("i"), "i", "other-fn", b'{"x":2}', NOW + 3000)
    (applied,) = await state.apply([(job, op)], NOW, relock=True)
    assert applied.outcome is Outcome.SCHEDULED
    entry = await _entry(redis, "inngest/function.finished")
    assert entry.kind == "invoke"
    assert entry.set_key == SK.wait_index("inngest/function.finished", "data.correlation_id",
                                          digest(f"{RUN}.i"))
    emitted = [f for _, f in await redis.xrange(SK.history) if f[b"k"] == b"emit"]
    (event,) = json.loads(emitted[0][b"events"])
    assert event["name"] == "inngest/function.invoked"
    assert event["data"]["x"] == 2
    assert event["data"]["_inngest"]["fn_id"] == "other-fn"
    assert event["data"]["_inngest"]["correlation_id"] == f"{RUN}.i"
    assert await _lease(queue, NOW + 2999) == []
    (timed_out,) = await _lease(queue, NOW + 3000)
    assert json.loads(timed_out.steps["i"])["error"]["name"] == "InvokeTimeoutError"


async def test_send_events_memoises_the_ids_it_records_for_sending(redis: Redis) -> None:
    _, state, job = await _started(redis)
    op = SendEvents(StepId("s"), "s", (OutgoingEvent("a/b", b'{"n":1}'),
                                       OutgoingEvent("a/c", b"{}")))
    (applied,) = await state.apply([(job, op)], NOW, relock=True)
    assert applied.outcome is Outcome.CONTINUED and applied.next_job is not None
    ids = json.loads(applied.next_job.steps["s"])["data"]["ids"]
    emitted = [f for _, f in await redis.xrange(SK.history) if f[b"k"] == b"emit"]
    events = json.loads(emitted[0][b"events"])
    assert [e["id"] for e in events] == ids and len(set(ids)) == 2
    assert [(e["name"], e["data"]) for e in events] == [("a/b", {"n": 1}), ("a/c", {})]
    # The same lease cannot answer twice: nothing is sent again.
    (again,) = await state.apply([(job, op)], NOW + 1, relock=True)
    assert again.outcome is Outcome.STALE
    assert len([f for _, f in await redis.xrange(SK.history) if f[b"k"] == b"emit"]) == 1
