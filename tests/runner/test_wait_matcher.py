"""server/runner/waits.py against real Redis: indexed and scanned waits, invoke results,
cancel-on entries, expiry, and the invoked event of an unknown function."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from server.config import Settings
from server.keys import Keys
from server.queue import NewRun, Queue
from server.runner.waits import WaitMatcher, invoke_memo
from server.state import Outcome, StateStore
from server.types import (
    AppId,
    CancelOn,
    EventId,
    FunctionId,
    InvokeFunction,
    RunId,
    StepId,
    WaitForEvent,
)

NOW = 1_700_000_000_000
FN = FunctionId("app-a")
SK = Keys().shard(0)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


class _World:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.queue = Queue(redis, Keys(), lease_ms=60_000)
        self.state = StateStore(redis, Keys(), Settings())
        self.cancelled: list[RunId] = []
        self.matcher = WaitMatcher(redis, Keys(), self.state, self._cancel)

    async def _cancel(self, run_id: RunId) -> object:
        self.cancelled.append(run_id)
        return await self.state.cancel_run(run_id, NOW)

    async def runs(self, ids: list[int], cancel_on: tuple[CancelOn, ...] = ()) -> None:
        await self.queue.enqueue_runs([
            NewRun(RunId(f"r{i}"), FN, AppId("app"), EventId(f"e{i}"),
                   json.dumps({"name": "order/placed", "data": {"id": i}}).encode(), 1, NOW,
                   cancel_on=cancel_on)
            for i in ids], NOW)

    async def wait(self, ids: list[int], op: WaitForEvent | InvokeFunction) -> None:
        await self.runs(ids)
        jobs, _ = await self.queue.lease(SK, [(FN, len(ids))], len(ids), NOW)
        applied = await self.state.apply([(job, op) for job in jobs], NOW, relock=False)
        assert all(a.outcome is Outcome.SCHEDULED for a in applied)

    async def due_now(self, run: str) -> bool:
        return await self.redis.zscore(SK.ready(FN), run) == NOW + 1

    async def process(self, *events: tuple[str, dict[str, object]]) -> int:
        batch = [(name, json.dumps({"name": name, "data": data}).encode())
                 for name, data in events]
        return await self.matcher.process(batch, NOW + 1)


def _wait(expression: str) -> WaitForEvent:
    return WaitForEvent(StepId("w"), "w", "order/paid", expression, NOW + 60_000)


async def test_an_indexed_wait_is_resumed_only_by_its_value(redis: Redis) -> None:
    world = _World(redis)
    await world.wait([1, 2, 3], _wait("event.data.id == async.data.id"))
    assert await world.process(("order/paid", {"id": 9}), ("order/paid", {"id": "2"})) == 0
    assert await world.process(("order/paid", {"id": 2})) == 1
    assert await world.due_now("r2")
    assert not await world.due_now("r1") and not await world.due_now("r3")
    steps = await redis.hgetall(SK.steps("r2"))
    assert json.loads(steps[b"w"])["data"]["data"] == {"id": 2}
    # The entry is gone: the same event again resumes nothing.
    assert await world.process(("order/paid", {"id": 2})) == 0


async def test_a_scanned_wait_is_evaluated_and_the_first_matching_event_wins(
        redis: Redis) -> None:
    world = _World(redis)
    await world.wait([1], _wait("async.data.total > 10 && event.data.id == 1"))
    assert await world.process(("order/paid", {"total": 5})) == 0
    assert await world.process(("order/paid", {"total": 11, "n": "first"}),
                               ("order/paid", {"total": 12, "n": "second"})) == 1
    steps = await redis.hgetall(SK.steps("r1"))
    assert json.loads(steps[b"w"])["data"]["data"]["n"] == "first"


async def test_an_invoke_is_resumed_with_the_childs_result_or_error(redis: Redis) -> None:
    world = _World(redis)
    await world.wait([1], InvokeFunction(StepId("i"), "i", "app-b", b"{}", NOW + 60_000))
    await world.wait([2], InvokeFunction(StepId("i"), "i", "app-b", b"{}", NOW + 60_000))
    assert await world.process(
        ("inngest/function.finished", {"correlation_id": "r1.i", "result": {"ok": 1}}),
        ("inngest/function.finished", {"correlation_id": "r2.i",
                                       "error": {"name": "E", "message": "m"}})) == 2
    one = await redis.hget(SK.steps("r1"), "i")
    two = await redis.hget(SK.steps("r2"), "i")
    assert json.loads(one) == {"data": {"ok": 1}}
    assert json.loads(two) == {"error": {"name": "E", "message": "m"}}


def test_the_invoke_memo_of_a_finished_event() -> None:
    assert invoke_memo({"data": {"result": None}}) == b'{"data": null}'
    assert json.loads(invoke_memo({"data": {"error": {"name": "X"}}})) == {
        "error": {"name": "X"}}


async def test_a_cancel_on_event_cancels_only_the_matching_run(redis: Redis) -> None:
    world = _World(redis)
    await world.runs([1, 2], (CancelOn("order/cancelled", "event.data.id == async.data.id"),))
    await world.process(("order/cancelled", {"id": 3}))
    assert world.cancelled == []
    await world.process(("order/cancelled", {"id": 2}))
    assert world.cancelled == ["r2"]
    assert await redis.hget(SK.run("r2"), "status") == b"cancelled"
    assert await redis.hget(SK.run("r1"), "status") == b"queued"


async def test_a_cancel_on_past_its_timeout_cancels_nothing_and_is_dropped(
        redis: Redis) -> None:
    world = _World(redis)
    await world.runs([1], (CancelOn("order/cancelled", "", timeout_ms=1),))
    await world.process(("order/cancelled", {"id": 1}))
    assert world.cancelled == []
    assert await redis.hlen(SK.waits("order/cancelled")) == 0
