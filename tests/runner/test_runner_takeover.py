"""The runner starts the runs of events a dead runner had read, as soon as its heartbeat is
gone (server/liveness.py), without waiting the 5 s idle takeover; a live runner's are its own."""

from __future__ import annotations

import json

from redis.asyncio import Redis
from ulid import ULID

from server.config import Settings
from server.keys import Keys
from server.liveness import CLAIM_DEAD_IDLE_MS, Liveness
from server.queue import Queue
from server.runner.index import FunctionIndex
from server.runner.runner import GROUP, Runner, run_id_for
from server.state import StateStore
from server.types import AppId, EventTrigger, FunctionConfig, FunctionId

KEYS = Keys()
FN = FunctionConfig(id=FunctionId("app-plain"), app_id=AppId("app"), slug="plain",
                    name="plain", triggers=(EventTrigger("order/placed"),))


class _Registry:
    def __init__(self) -> None:
        self.index = FunctionIndex()
        self.index.replace([FN])

    async def refresh(self) -> None:
        pass


async def _runner(redis: Redis, name: str) -> Runner:
    liveness = Liveness(redis, KEYS, name)
    await liveness.join()
    runner = Runner(redis, KEYS, Queue(redis, KEYS, lease_ms=60_000), _Registry(),  # type: ignore[arg-type]
                    name, lambda: None, StateStore(redis, KEYS, Settings()), liveness=liveness)
    await runner._ensure_group()
    return runner


async def _read_by(redis: Redis, consumer: str) -> str:
    """An event read by `consumer` and not processed, idle just past the dead-claim minimum
    (set, not waited for) and below the 5 s idle takeover."""
    event_id = str(ULID())
    body = json.dumps({"id": event_id, "name": "order/placed", "data": {}}).encode()
    entry = await redis.xadd(KEYS.events, {"id": event_id, "name": "order/placed", "e": body,
                                           "idem": ""})
    await redis.xreadgroup(GROUP, consumer, {KEYS.events: ">"})
    await redis.xclaim(KEYS.events, GROUP, consumer, 0, [entry], idle=CLAIM_DEAD_IDLE_MS + 500)
    return event_id


async def _run_exists(redis: Redis, event_id: str) -> bool:
    run_id = run_id_for(event_id, FN.id)
    return bool(await redis.exists(KEYS.for_run(run_id).run(run_id)))


async def test_a_dead_runners_events_start_their_runs_without_the_idle_wait(
    redis: Redis,
) -> None:
    runner = await _runner(redis, "survivor")
    event_id = await _read_by(redis, "dead")  # "dead" never beat
    await runner._claim_abandoned()  # the 5 s idle takeover: not yet
    assert not await _run_exists(redis, event_id)

    await runner._claim_dead()
    assert await _run_exists(redis, event_id)
    assert (await redis.xpending(KEYS.events, GROUP))["pending"] == 0


async def test_a_live_runners_events_are_left_to_it(redis: Redis) -> None:
    runner = await _runner(redis, "other")
    await _runner(redis, "busy")
    event_id = await _read_by(redis, "busy")
    await runner._claim_dead()
    assert not await _run_exists(redis, event_id)
    pending = await redis.xpending_range(KEYS.events, GROUP, "-", "+", 10)
    assert [p["consumer"] for p in pending] == [b"busy"]
