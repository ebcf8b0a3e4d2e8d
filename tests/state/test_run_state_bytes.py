"""The cap on a run's memoised state (max_run_state_bytes): the opcode scripts and
resume_wait.lua keep the run hash's `bytes` equal to the total length of its memos, and a memo
that would pass the cap fails the run, non-retriably, naming the cap."""

from __future__ import annotations

import json

from redis.asyncio import Redis

from server.config import Settings
from server.keys import Keys
from server.queue import NewRun, Queue
from server.state import Outcome, StateStore, WaitEntry
from server.types import (
    AppId,
    ErrorInfo,
    EventId,
    FunctionId,
    Job,
    RunId,
    RunStatus,
    SendEvents,
    Sleep,
    StepCompleted,
    StepFailed,
    StepId,
    WaitForEvent,
)

NOW = 1_700_000_000_000
FN = FunctionId("app-a")
RUN = RunId("r1")
SK = Keys().shard(0)


async def _leased(redis: Redis, cap: int) -> tuple[Queue, StateStore, Job]:
    settings = Settings(backoff_base_ms=100, max_run_state_bytes=cap)
    queue = Queue(redis, Keys(), lease_ms=5000)
    state = StateStore(redis, Keys(), settings)
    await queue.enqueue_runs(
        [NewRun(RUN, FN, AppId("app"), EventId("e1"), b'{"data":{}}', 1, NOW)], NOW)
    (job,), _ = await queue.lease(SK, [(FN, 1)], 1, NOW)
    return queue, state, job


async def _memo_bytes(redis: Redis) -> tuple[int, int]:
    """(the run hash's `bytes`, the real total length of the memos)."""
    counted = int(await redis.hget(SK.run(RUN), "bytes") or 0)
    memos = await redis.hgetall(SK.steps(RUN))
    return counted, sum(len(v) for v in memos.values())


async def _error(redis: Redis) -> dict[str, str]:
    raw = await redis.hget(SK.run(RUN), "error")
    assert raw is not None
    return dict(json.loads(raw))


async def test_every_kind_of_memo_is_counted_in_the_runs_bytes(redis: Redis) -> None:
    _, state, job = await _leased(redis, cap=10_000)
    ops = [
        StepCompleted(StepId("a"), "a", b'{"x":"' + b"y" * 100 + b'"}'),
        StepFailed(StepId("b"), "b", ErrorInfo("E", "boom"), non_retriable=True),
        SendEvents(StepId("c"), "c", ()),
        Sleep(StepId("d"), "d", NOW),
    ]
    for op in ops:
        (applied,) = await state.apply([(job, op)], NOW, relock=True)
        assert applied.next_job is not None, applied
        job = applied.next_job
    counted, real = await _memo_bytes(redis)
    assert counted == real > 100
    assert set(job.steps) == {"a", "b", "c", "d"}


async def test_a_step_output_that_would_pass_the_cap_fails_the_run_naming_it(
    redis: Redis,
) -> None:
    _, state, job = await _leased(redis, cap=1000)
    (first,) = await state.apply([(job, StepCompleted(StepId("a"), "a", b'"' + b"x" * 500 + b'"'))],
                                 NOW, relock=True)
    assert first.next_job is not None
    before = await _memo_bytes(redis)
    (second,) = await state.apply(
        [(first.next_job, StepCompleted(StepId("b"), "b", b'"' + b"x" * 500 + b'"'))],
        NOW, relock=True)
    assert second.outcome is Outcome.FINISHED
    assert await redis.hget(SK.run(RUN), "status") == b"failed"
    assert await redis.hexists(SK.steps(RUN), "b") is False
    assert await _memo_bytes(redis) == before
    error = await _error(redis)
    assert error["name"] == "RunStateLimitError"
    assert error["message"] == (
        "the run's memoised state would be 1022 bytes, over the limit of 1000 "
        "(max_run_state_bytes)")
    ends = [f for _, f in await redis.xrange(SK.history) if f[b"k"] == b"end"]
    assert [(f[b"status"], json.loads(f[b"error"])["name"]) for f in ends] == [
        (b"failed", "RunStateLimitError")]


async def test_a_memo_at_the_cap_exactly_is_stored(redis: Redis) -> None:
    _, state, job = await _leased(redis, cap=len(b'{"data":"' + b"x" * 50 + b'"}'))
    (applied,) = await state.apply(
        [(job, StepCompleted(StepId("a"), "a", b'"' + b"x" * 50 + b'"'))], NOW, relock=True)
    assert applied.outcome is Outcome.CONTINUED


async def test_a_step_error_that_would_pass_the_cap_fails_the_run(redis: Redis) -> None:
    _, state, job = await _leased(redis, cap=100)
    (applied,) = await state.apply(
        [(job, StepFailed(StepId("a"), "a", ErrorInfo("E", "m" * 200), non_retriable=True))],
        NOW, relock=True)
    assert applied.outcome is Outcome.FINISHED
    assert (await _error(redis))["name"] == "RunStateLimitError"


async def test_a_cap_of_zero_counts_but_never_fails(redis: Redis) -> None:
    _, state, job = await _leased(redis, cap=0)
    (applied,) = await state.apply(
        [(job, StepCompleted(StepId("a"), "a", b'"' + b"x" * 5000 + b'"'))], NOW, relock=True)
    assert applied.outcome is Outcome.CONTINUED
    counted, real = await _memo_bytes(redis)
    assert counted == real


async def _waiting(redis: Redis, cap: int) -> tuple[StateStore, WaitEntry]:
    _, state, job = await _leased(redis, cap)
    wait = WaitForEvent(StepId("w"), "w", "order/paid", "", NOW + 5000)
    (applied,) = await state.apply([(job, wait)], NOW, relock=True)
    assert applied.outcome is Outcome.SCHEDULED
    ((field, raw),) = (await redis.hgetall(SK.waits("order/paid"))).items()
    return state, WaitEntry.parse("order/paid", field.decode(), raw)


async def test_a_resumed_wait_counts_its_memo_instead_of_the_null(redis: Redis) -> None:
    state, entry = await _waiting(redis, cap=10_000)
    memo = json.dumps({"data": {"name": "order/paid", "data": {"n": "z" * 300}}}).encode()
    assert await state.resume_wait(entry, memo, NOW + 1)
    counted, real = await _memo_bytes(redis)
    assert counted == real == len(memo)


async def test_a_resumed_wait_over_the_cap_fails_the_run(redis: Redis) -> None:
    state, entry = await _waiting(redis, cap=200)
    memo = json.dumps({"data": {"n": "z" * 300}}).encode()
    assert not await state.resume_wait(entry, memo, NOW + 1)
    run = await state.get_run(RUN)
    assert run is not None and run.status is RunStatus.FAILED
    assert json.loads(run.error_json)["name"] == "RunStateLimitError"
    assert run.steps == {"w": b'{"data":null}'}
    assert await redis.zscore(SK.ready(FN), RUN) is None
    assert await redis.exists(SK.job(RUN)) == 0
    assert await redis.hlen(SK.wait_refs(RUN)) == 0
