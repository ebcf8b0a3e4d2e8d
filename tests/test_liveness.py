"""Process liveness against the real Redis: heartbeats, dead lease holders whose leases come
back at once while a live holder's keep their expiry, and stream entries of dead consumers
taken over without waiting for an idle time."""

from __future__ import annotations

import dataclasses
import time

from redis.asyncio import Redis

from server.config import Settings
from server.executor.executor import Executor
from server.keys import Keys
from server.liveness import Liveness, StreamTakeover
from server.queue import NewRun, Queue
from server.queue.queue import Redelivery
from server.redis_client import open_redis
from server.state import StateStore
from server.types import (
    AppId,
    EventId,
    FunctionId,
    JobId,
    LeaseId,
    RunId,
    StepCompleted,
    StepId,
)
from tests.e2e.harness import eventually

SHARD = Keys().shard(0)
FN = FunctionId("app-a")
LEASE_MS = 60_000


def _now() -> int:
    return int(time.time() * 1000)


def _run(n: int) -> NewRun:
    return NewRun(RunId(f"run{n:04d}"), FN, AppId("app"), EventId(f"ev{n}"),
                  b'{"name":"e","data":{}}', 3, 0)


async def _process(redis: Redis, name: str, ttl_ms: int = 2_000) -> tuple[Liveness, Queue]:
    liveness = Liveness(redis, Keys(), name, ttl_ms=ttl_ms)
    await liveness.join()
    return liveness, Queue(redis, Keys(), LEASE_MS, holder=liveness.holder)


async def test_a_joined_process_is_alive_and_named_in_every_shards_holders(
    redis: Redis,
) -> None:
    keys = Keys(shards=3)
    a = Liveness(redis, keys, "a")
    b = Liveness(redis, keys, "b")
    await a.join()
    for shard in keys.all_shards():
        assert await b.holders(shard) == [a.holder]
    assert await b.dead_holders([a.holder]) == []
    assert await b.dead_consumers(["a"]) == []
    # A process never takes itself for dead, whatever Redis says.
    assert await b.dead_holders([b.holder]) == [] and await b.dead_consumers(["b"]) == []


async def test_a_process_whose_heartbeat_expires_is_dead_and_a_clean_stop_says_so_at_once(
    redis: Redis,
) -> None:
    watcher = Liveness(redis, Keys(), "watcher")
    lapsing = Liveness(redis, Keys(), "lapsing", ttl_ms=150)
    await lapsing.join()
    assert await watcher.dead_holders([lapsing.holder]) == []
    await eventually(lambda: watcher.dead_holders([lapsing.holder]),
                     lambda dead: dead == [lapsing.holder], 5, "the heartbeat to expire")
    assert await watcher.dead_consumers(["lapsing"]) == ["lapsing"]

    stopping = Liveness(redis, Keys(), "stopping")
    await stopping.join()
    await stopping.leave()
    assert await watcher.dead_holders([stopping.holder]) == [stopping.holder]
    assert await watcher.dead_consumers(["stopping"]) == ["stopping"]


async def test_a_restarted_instance_is_alive_but_its_previous_start_is_a_dead_holder(
    redis: Redis,
) -> None:
    watcher = Liveness(redis, Keys(), "watcher")
    before = Liveness(redis, Keys(), "host-1", ttl_ms=150)
    await before.join()
    after = Liveness(redis, Keys(), "host-1")
    await after.join()
    await eventually(lambda: watcher.dead_holders([before.holder, after.holder]),
                     lambda dead: dead == [before.holder], 5, "the old start's heartbeat")
    # The stream consumer "host-1" is the new start: its entries are its own to re-read.
    assert await watcher.dead_consumers(["host-1"]) == []


async def test_a_dead_holders_leases_come_back_at_once_and_a_live_holders_keep_their_expiry(
    redis: Redis,
) -> None:
    dead, dead_queue = await _process(redis, "dead", ttl_ms=150)
    live, live_queue = await _process(redis, "live")
    await live_queue.enqueue_runs([_run(1), _run(2)], _now())
    (held_by_dead,), _ = await dead_queue.lease(SHARD, [(FN, 1)], 1, _now())
    (held_by_live,), _ = await live_queue.lease(SHARD, [(FN, 1)], 1, _now())
    assert await redis.hget(SHARD.job(held_by_dead.job_id), "holder") == dead.holder.encode()
    live_expiry = await redis.zscore(SHARD.leased, held_by_live.job_id)

    # The scavenger's check while both are alive hands nothing back.
    assert await live.dead_holders(await live.holders(SHARD)) == []

    async def dead_in_shard() -> list[str]:
        return await live.dead_holders(await live.holders(SHARD))

    holders = await eventually(dead_in_shard, lambda d: d == [dead.holder], 5,
                               "the dead holder")
    now = _now()
    assert await live_queue.release_dead(SHARD, holders, now, Redelivery(backoff_ms=200)) == 1

    # Handed back as a redelivery (attempt unchanged), due after the first backoff.
    assert await redis.zscore(SHARD.leased, held_by_dead.job_id) is None
    assert await redis.zscore(SHARD.ready(FN), held_by_dead.job_id) == now + 200
    job = await redis.hgetall(SHARD.job(held_by_dead.job_id))
    assert job[b"redeliveries"] == b"1" and job[b"attempt"] == b"0"
    assert b"stopped" in job[b"redelivery_reason"]
    # The live process's lease is untouched, however long its step takes.
    assert await redis.zscore(SHARD.leased, held_by_live.job_id) == live_expiry
    assert await live.holders(SHARD) == [live.holder]
    # A late answer from the dead process's worker is stale: the lease fenced it.
    settings = Settings(lease_ms=LEASE_MS)
    state = StateStore(redis, Keys(), settings)
    (applied,) = await state.apply(
        [(held_by_dead, StepCompleted(StepId("s"), "s", b'{"data": 1}'))], _now(), relock=False)
    assert applied.outcome.name == "STALE"


async def test_a_job_relocked_after_its_planned_steps_goes_to_the_holder_that_ended_them(
    redis: Redis,
) -> None:
    """The main job of a run whose parallel steps another process ran is that process's."""
    first, first_queue = await _process(redis, "first")
    second, _ = await _process(redis, "second")
    await first_queue.enqueue_runs([_run(1)], _now())
    (main,), _ = await first_queue.lease(SHARD, [(FN, 1)], 1, _now())
    await redis.hset(SHARD.job(main.job_id), "holder", first.holder)
    # The planned step's job, leased by `second`, copies its holder to the main job when its
    # relock wakes it: the prelude's continue_job with key ~= job.
    await redis.hset(SHARD.job("run0001:p"), mapping={
        "run": "run0001", "fn": FN, "attempt": 0, "step": "p", "lease": "99",
        "holder": second.holder})
    await redis.sadd(SHARD.planned("run0001"), "p")
    await redis.zadd(SHARD.leased, {"run0001:p": _now() + LEASE_MS})
    await redis.hset(SHARD.job(main.job_id), "lease", "")
    await redis.zrem(SHARD.leased, main.job_id)
    planned_job = dataclasses.replace(main, job_id=JobId("run0001:p"), lease_id=LeaseId("99"),
                                      target_step="p")
    state = StateStore(redis, Keys(), Settings(lease_ms=LEASE_MS))
    (applied,) = await state.apply(
        [(planned_job, StepCompleted(StepId("p"), "p", b'{"data": 1}'))], _now(), relock=True)
    assert applied.next_job is not None and applied.next_job.job_id == main.job_id
    assert await redis.hget(SHARD.job(main.job_id), "holder") == second.holder.encode()


async def test_a_dead_consumers_pending_entries_are_claimed_without_waiting_an_idle_time(
    redis: Redis,
) -> None:
    stream = "plait:{events}:stream"
    await redis.xgroup_create(stream, "g", id="0", mkstream=True)
    ids = [await redis.xadd(stream, {"n": str(n)}) for n in range(3)]
    dying = Liveness(redis, Keys(), "dying", ttl_ms=150)
    await dying.join()
    live = Liveness(redis, Keys(), "live")
    await live.join()
    await redis.xreadgroup("g", "dying", {stream: ">"}, count=10)
    takeover = StreamTakeover(redis, live, "g", "live", every_s=0)
    assert await takeover.claim(stream) == []  # its owner is alive: left alone

    async def claimed() -> list[object]:
        return [entry_id for entry_id, _ in await takeover.claim(stream)]

    # Claimed once the heartbeat is gone and the entries were idle a second: well under the
    # idle takeover's 5-10 s.
    assert await eventually(claimed, lambda got: got == ids, 5, "the takeover") == ids
    pending = await redis.xpending_range(stream, "g", "-", "+", 10, consumername="live")
    assert [p["message_id"] for p in pending] == ids


async def test_heartbeats_hand_backs_and_takeovers_work_on_a_redis_cluster(
    redis_cluster_url: str,
) -> None:
    """Every key one call touches shares a slot: `{meta}` for heartbeats, `{pN}` per shard."""
    cluster = open_redis(redis_cluster_url)
    keys = Keys(shards=3)
    try:
        dead = Liveness(cluster, keys, "dead", ttl_ms=150)
        await dead.join()
        live = Liveness(cluster, keys, "live")
        await live.join()
        dead_queue = Queue(cluster, keys, LEASE_MS, holder=dead.holder)
        runs = [_run(n) for n in range(6)]
        await dead_queue.enqueue_runs(runs, _now())
        leased = 0
        for shard in keys.all_shards():
            jobs, _ = await dead_queue.lease(shard, [(FN, 10)], 10, _now())
            leased += len(jobs)
        assert leased == 6

        async def dead_everywhere() -> list[list[str]]:
            return [await live.dead_holders(await live.holders(s)) for s in keys.all_shards()]

        await eventually(dead_everywhere, lambda d: all(x == [dead.holder] for x in d), 5,
                         "the dead holder in every shard")
        handed_back = 0
        for shard in keys.all_shards():
            handed_back += await dead_queue.release_dead(shard, [dead.holder], _now())
            assert await cluster.zcard(shard.leased) == 0
        assert handed_back == 6

        stream = keys.shard(1).history
        await cluster.xgroup_create(stream, "g", id="0", mkstream=True)
        entry = await cluster.xadd(stream, {"n": "1"})
        await cluster.xreadgroup("g", "dead", {stream: ">"})
        await cluster.xclaim(stream, "g", "dead", 0, [entry], idle=5_000)
        takeover = StreamTakeover(cluster, live, "g", "live", every_s=0)
        assert [e for e, _ in await takeover.claim(stream)] == [entry]
    finally:
        await cluster.aclose()


async def test_the_scavenger_hands_a_dead_holders_jobs_back_due_at_once_as_redeliveries(
    redis: Redis,
) -> None:
    _, dead_queue = await _process(redis, "dead", ttl_ms=150)
    live, live_queue = await _process(redis, "live")
    await live_queue.enqueue_runs([_run(1)], _now())
    (job,), _ = await dead_queue.lease(SHARD, [(FN, 1)], 1, _now())
    settings = Settings(lease_ms=LEASE_MS, redelivery_backoff_ms=5_000)
    executor = Executor(live_queue, StateStore(redis, Keys(), settings), settings,
                        liveness=live)

    async def handed_back() -> bool:
        await executor._release_dead(SHARD)
        return await redis.zscore(SHARD.leased, job.job_id) is None

    before = _now()
    await eventually(handed_back, bool, 5, "the dead holder's job to come back")
    # Due now, not after the 5 s backoff; counted as a redelivery all the same.
    assert (await redis.zscore(SHARD.ready(FN), job.job_id) or 0) <= _now()
    assert (await redis.zscore(SHARD.ready(FN), job.job_id) or 0) >= before
    assert await redis.hget(SHARD.job(job.job_id), "redeliveries") == b"1"
