"""server/luascript.py against real Redis: pipelined script calls survive a script flush, and
an error reply of Redis itself is told apart from a script's named failure."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from server.config import Settings
from server.errors import StorageError
from server.keys import Keys
from server.luascript import StaleLease, call_pipelined, check, storage_error
from server.queue import NewRun, Queue
from server.state import Outcome, StateStore
from server.types import AppId, EventId, FunctionId, RunId, StepCompleted, StepId

NOW = 1_700_000_000_000
FN = FunctionId("app-a")


async def test_pipelined_calls_run_in_order_and_reload_flushed_scripts(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    try:
        incr = redis.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
        fail = redis.register_script("return redis.error_reply('no')")
        calls = [(incr, ["k"], [2]), (fail, [], []), (incr, ["k"], [3])]
        first = await call_pipelined(redis, calls)
        assert first[0] == 2 and first[2] == 5 and isinstance(first[1], Exception)
        await redis.script_flush()
        again = await call_pipelined(redis, calls)
        assert again[0] == 7 and again[2] == 10 and isinstance(again[1], Exception)
        assert int(await redis.get("k")) == 10
    finally:
        await redis.aclose()


async def test_a_redis_error_reply_is_a_storage_error_not_a_named_failure(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    try:
        await redis.set("s", "a string")
        wrong = redis.register_script("return redis.call('HSET', KEYS[1], 'f', 1)")
        stale = redis.register_script("return -2")
        (error, named) = await call_pipelined(redis, [(wrong, ["s"], []), (stale, [], [])])
        assert storage_error(named, "x") is None
        with pytest.raises(StaleLease):
            check(named, "x")
        found = storage_error(error, "apply")
        assert isinstance(found, StorageError) and "WRONGTYPE" in found.message
        with pytest.raises(StorageError, match="WRONGTYPE"):
            check(error, "apply")
    finally:
        await redis.aclose()


async def test_an_opcode_redis_refuses_is_unavailable_not_stale(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    try:
        queue = Queue(redis, Keys(), lease_ms=5000)
        state = StateStore(redis, Keys(), Settings())
        await queue.enqueue_runs([NewRun(RunId("r1"), FN, AppId("app"), EventId("e1"), b"{}",
                                         3, NOW)], NOW)
        (job,), _ = await queue.lease(Keys().shard(0), [(FN, 1)], 1, NOW)
        # The memo cannot be written: Redis answers the script with an error.
        await redis.set(Keys().shard(0).steps("r1"), "not a hash")
        (applied,) = await state.apply([(job, StepCompleted(StepId("s1"), "s1", b"1"))], NOW,
                                       relock=True)
        assert applied.outcome is Outcome.UNAVAILABLE and "WRONGTYPE" in applied.error
        # The lease still holds: the same result can be committed once Redis takes it.
        await redis.delete(Keys().shard(0).steps("r1"))
        (again,) = await state.apply([(job, StepCompleted(StepId("s1"), "s1", b"1"))], NOW,
                                     relock=True)
        assert again.outcome is Outcome.CONTINUED
    finally:
        await redis.aclose()
