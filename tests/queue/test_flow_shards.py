"""Shard placement: the runs of a flow-controlled function all live in its flow shard (every
key its scripts touch shares that hash tag); other functions' run ids are unchanged."""

from __future__ import annotations

import hashlib
import zlib

from redis.asyncio import Redis
from ulid import ULID

from server.keys import shard_of
from server.runner.flow import fresh_run_id, run_id_for
from server.types import (
    ConcurrencyLimit,
    ConcurrencyScope,
    FlowControl,
    RunCompleted,
)
from tests.queue.flow_support import NOW, event, function, make_flow, run_of

SHARDS = 4


async def test_runs_of_a_flow_controlled_function_share_its_shard(redis: Redis) -> None:
    flow = make_flow(redis, SHARDS)
    fn = function("limited", FlowControl(concurrency=(ConcurrencyLimit(1),)))
    home = zlib.crc32(b"limited") % SHARDS
    runs = [run_of(fn, {"n": i}, at=NOW + i, shards=SHARDS) for i in range(12)]
    assert {shard_of(r.run_id, SHARDS) for r in runs} == {home}
    await flow.queue.enqueue_runs(runs, NOW)
    (job,) = await flow.lease(fn, shard=home)
    await flow.state.apply([(job, RunCompleted(b"1"))], NOW + 1, relock=False)
    assert len(await flow.lease(fn, shard=home, now=NOW + 2)) == 1
    keys = {k.decode() for k in await redis.keys("plait:*")}
    assert all(k.startswith(f"plait:{{p{home}}}:") for k in keys)
    assert shard_of(fresh_run_id(fn, SHARDS), SHARDS) == home


def test_an_env_scoped_limit_puts_the_function_in_shard_zero() -> None:
    fn = function("x", FlowControl(concurrency=(
        ConcurrencyLimit(1, key="event.data.a", scope=ConcurrencyScope.ENV),)))
    assert {shard_of(run_of(fn, {"n": i}, shards=SHARDS).run_id, SHARDS)
            for i in range(10)} == {0}


def test_run_ids_are_deterministic_and_unchanged_without_flow_control() -> None:
    event_id, _ = event({})
    # The formula from before flow control: runs created then are found again.
    digest = hashlib.sha256(f"{event_id}/plain".encode()).digest()[:10]
    before = str(ULID.from_bytes(ULID.from_str(event_id).milliseconds.to_bytes(6, "big")
                                 + digest))
    assert run_id_for(event_id, "plain") == before
    assert run_id_for(event_id, "plain", None, SHARDS) == before
    assert run_id_for(event_id, "f", 2, SHARDS) == run_id_for(event_id, "f", 2, SHARDS)
    assert shard_of(run_id_for(event_id, "f", 2, SHARDS), SHARDS) == 2
