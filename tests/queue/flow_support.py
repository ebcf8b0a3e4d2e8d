"""Shared helpers of the flow-control script tests: functions with flow control, runs of them
made as the runner makes them (server/runner/flow.py), and the queue and state store."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from ulid import ULID

from server.config import Settings
from server.keys import Keys, ShardKeys
from server.queue import NewRun, Queue
from server.runner.flow import new_run
from server.state import StateStore
from server.types import AppId, EventTrigger, FlowControl, FunctionConfig, FunctionId, Job

NOW = 1_700_000_000_000
LEASE_MS = 5000


@dataclass
class Flow:
    """The queue and state store of one shard layout, and shorthands over them."""

    redis: Redis
    keys: Keys
    queue: Queue
    state: StateStore

    def shard(self, n: int = 0) -> ShardKeys:
        return self.keys.shard(n)

    async def lease(self, *fns: FunctionConfig, now: int = NOW, total: int = 100,
                    shard: int = 0) -> list[Job]:
        jobs, _ = await self.queue.lease(self.shard(shard), [(f.id, total) for f in fns],
                                         total, now)
        return jobs

    async def run_hash(self, run_id: str) -> dict[str, str]:
        raw = await self.redis.hgetall(self.keys.for_run(run_id).run(run_id))
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def score(self, fn: FunctionConfig, job_id: str) -> float | None:
        sk = self.keys.for_run(job_id.split(":", 1)[0])
        value = await self.redis.zscore(sk.ready(fn.id), job_id)
        return None if value is None else float(value)


def make_flow(redis: Redis, shards: int = 1) -> Flow:
    keys = Keys(shards)
    return Flow(redis, keys, Queue(redis, keys, lease_ms=LEASE_MS),
                StateStore(redis, keys, Settings(backoff_base_ms=100)))


def function(fn_id: str, flow: FlowControl, start_timeout_ms: int = 0) -> FunctionConfig:
    return FunctionConfig(id=FunctionId(fn_id), app_id=AppId("app"), slug=fn_id, name=fn_id,
                          triggers=(EventTrigger("e"),), flow=flow,
                          start_timeout_ms=start_timeout_ms)


def event(data: dict[str, Any], at: int = NOW) -> tuple[str, bytes]:
    # The event's ms exactly (a float timestamp can round): runs order by their event time.
    event_id = str(ULID.from_bytes(at.to_bytes(6, "big") + os.urandom(10)))
    body = json.dumps({"id": event_id, "name": "e", "data": data, "ts": at},
                      separators=(",", ":")).encode()
    return event_id, body


def run_of(fn: FunctionConfig, data: dict[str, Any] | None = None, at: int = NOW,
           shards: int = 1) -> NewRun:
    event_id, body = event(data or {}, at)
    return new_run(fn, event_id, body, shards)
