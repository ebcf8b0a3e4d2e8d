"""StateService.GetSteps: the memos a job left out, for the holder of its lease, a page within
the caller's limit at a time."""

from __future__ import annotations

from typing import Any, NoReturn

import grpc
import pytest
from plait_proto.v1 import state_pb2
from redis.asyncio import Redis

from server.api.state_service import StateServicer
from server.config import Settings
from server.keys import Keys
from server.queue import NewRun, Queue
from server.state import StateStore
from server.types import AppId, EventId, FunctionId, Job, RunId, StepCompleted, StepId

NOW = 1_700_000_000_000
FN = FunctionId("app-a")
RUN = RunId("01JAAAAAAAAAAAAAAAAAAAAAAA")
KIB = 1024


class _Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code


class _Context:
    async def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        raise _Aborted(code, details)


async def _job_with_steps(redis: Redis, sizes: dict[str, int]) -> tuple[StateServicer, Job]:
    queue = Queue(redis, Keys(), lease_ms=5000)
    state = StateStore(redis, Keys(), Settings())
    await queue.enqueue_runs(
        [NewRun(RUN, FN, AppId("app"), EventId("e1"), b'{"data":{}}', 1, NOW)], NOW)
    (job,), _ = await queue.lease(Keys().shard(0), [(FN, 1)], 1, NOW)
    for step_id, size in sizes.items():
        (applied,) = await state.apply(
            [(job, StepCompleted(StepId(step_id), step_id, b'"' + b"x" * size + b'"'))],
            NOW, relock=True)
        assert applied.next_job is not None
        job = applied.next_job
    return StateServicer(state), job


def _request(job: Job, ids: list[str], max_bytes: int = 0, **over: Any
             ) -> state_pb2.GetStepsRequest:
    fields: dict[str, Any] = dict(run_id=job.run_id, job_id=job.job_id, lease_id=job.lease_id,
                                  step_ids=ids, max_response_bytes=max_bytes)
    fields.update(over)
    return state_pb2.GetStepsRequest(**fields)


async def _get(servicer: StateServicer, request: state_pb2.GetStepsRequest
               ) -> state_pb2.GetStepsResponse:
    return await servicer.GetSteps(request, _Context())  # type: ignore[arg-type]


async def test_the_steps_come_back_in_pages_within_the_callers_limit(redis: Redis) -> None:
    servicer, job = await _job_with_steps(redis, {"a": 100 * KIB, "b": 100 * KIB,
                                                  "c": 100 * KIB})
    wanted = ["c", "a", "b"]
    pages = []
    while wanted:
        reply = await _get(servicer, _request(job, wanted, 250 * KIB))
        assert reply.ByteSize() <= 250 * KIB
        pages.append(set(reply.steps))
        wanted = list(reply.remaining_step_ids)
    assert pages == [{"c", "a"}, {"b"}]


async def test_one_call_returns_everything_that_fits(redis: Redis) -> None:
    servicer, job = await _job_with_steps(redis, {"a": 10, "b": 20})
    reply = await _get(servicer, _request(job, ["a", "b"]))
    assert dict(reply.steps) == {"a": b'{"data":"' + b"x" * 10 + b'"}',
                                 "b": b'{"data":"' + b"x" * 20 + b'"}'}
    assert list(reply.remaining_step_ids) == []
    # What server/api/auth.py checks for a token limited to apps.
    assert reply.function_id == FN


async def test_a_stale_lease_reads_nothing(redis: Redis) -> None:
    servicer, job = await _job_with_steps(redis, {"a": 10})
    with pytest.raises(_Aborted) as caught:
        await _get(servicer, _request(job, ["a"], lease_id="999999"))
    assert caught.value.code is grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(_Aborted) as caught:
        await _get(servicer, _request(job, ["a"], lease_id=""))
    assert caught.value.code is grpc.StatusCode.FAILED_PRECONDITION


async def test_another_runs_id_with_this_jobs_lease_reads_nothing(redis: Redis) -> None:
    servicer, job = await _job_with_steps(redis, {"a": 10})
    with pytest.raises(_Aborted) as caught:
        await _get(servicer, _request(job, ["a"], run_id="01JBBBBBBBBBBBBBBBBBBBBBBB"))
    assert caught.value.code is grpc.StatusCode.FAILED_PRECONDITION


async def test_a_step_not_memoised_and_bad_requests_are_named(redis: Redis) -> None:
    servicer, job = await _job_with_steps(redis, {"a": 10})
    with pytest.raises(_Aborted) as caught:
        await _get(servicer, _request(job, ["a", "nope"]))
    assert caught.value.code is grpc.StatusCode.NOT_FOUND and "nope" in str(caught.value)
    for request in (_request(job, []), _request(job, [""]), _request(job, ["a"], -1)):
        with pytest.raises(_Aborted) as caught:
            await _get(servicer, request)
        assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
