"""Liveness of Plait processes: each keeps short heartbeat keys in Redis, so the others take
over what a process that died held (leases, stream entries) within a couple of seconds
instead of waiting for a lease or an idle time to run out.

Two keys per process, both in the `{meta}` slot with a TTL of ALIVE_TTL_MS, refreshed every
BEAT_INTERVAL_S: `alive:<instance id>` (the name it consumes streams as, shared by every
start of that instance) and `holder:<instance id>/<nonce>` (this start only: the holder its
leases carry in their job hash). A holder whose key is gone is dead, even when a process of
the same instance id has started again since; a stream consumer whose key is gone is dead.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Sequence
from typing import Any

import structlog
from redis.asyncio import Redis

from server.keys import Keys, ShardKeys
from server.tasks import raise_if_cancelling

log = structlog.get_logger(__name__)

ALIVE_TTL_MS = 2_000
BEAT_INTERVAL_S = 0.5
# A process re-adds its holder to every shard's holders set this often, in case a scavenger
# took it for dead (its heartbeat lapsed while it was alive) and removed it.
JOIN_EVERY_BEATS = 10
# A dead consumer's entries are claimed only when idle this long: a second live claimer
# racing the first one does not take them back from it straight away. Below ALIVE_TTL_MS, so
# an entry read just before the death is already this idle when the death is seen.
CLAIM_DEAD_IDLE_MS = 1_000
# How often a stream consumer looks for dead consumers' pending entries.
TAKEOVER_EVERY_S = 0.25
REDIS_CALL_S = 5.0

LIVENESS_LAPSED = "liveness.lapsed"
CONSUMER_DEAD = "stream.consumer_dead"


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Liveness:
    """This process's heartbeat, and the checks of the others'."""

    def __init__(self, redis: Redis, keys: Keys, instance_id: str, *,
                 ttl_ms: int = ALIVE_TTL_MS, beat_s: float = BEAT_INTERVAL_S,
                 nonce: str | None = None) -> None:
        self._redis = redis
        self._keys = keys
        self.instance_id = instance_id
        self.holder = f"{instance_id}/{nonce or secrets.token_hex(8)}"
        self._ttl_ms = ttl_ms
        self._beat_s = beat_s
        self._last_beat = 0.0

    async def beat(self) -> None:
        """Refreshes both heartbeat keys (one round trip)."""
        async with asyncio.timeout(REDIS_CALL_S), self._redis.pipeline(
                transaction=False) as pipe:
            pipe.set(self._keys.alive(self.instance_id), self.holder, px=self._ttl_ms)
            pipe.set(self._keys.holder_alive(self.holder), 1, px=self._ttl_ms)
            await pipe.execute()
        now = time.monotonic()
        if self._last_beat and (now - self._last_beat) * 1000 > self._ttl_ms:
            # The others may have taken this process for dead and handed its leases back:
            # its late results are dropped as stale (the leases fence them), nothing worse.
            log.warning(LIVENESS_LAPSED, holder=self.holder,
                        gap_ms=int((now - self._last_beat) * 1000), ttl_ms=self._ttl_ms)
        self._last_beat = now

    async def join(self) -> None:
        """Beats, then names this holder in every shard's holders set: in that order, so a
        scavenger never sees the holder before its heartbeat. Call before leasing."""
        await self.beat()
        for shard in self._keys.all_shards():
            async with asyncio.timeout(REDIS_CALL_S):
                await self._redis.sadd(shard.holders, self.holder)

    async def run(self) -> None:
        """Beats until cancelled (a role: a Redis error ends it, the supervisor restarts it)."""
        beats = 0
        while True:
            raise_if_cancelling()
            if beats % JOIN_EVERY_BEATS == 0:
                await self.join()
            else:
                await self.beat()
            beats += 1
            await asyncio.sleep(self._beat_s)

    async def leave(self) -> None:
        """Drops this process's heartbeat (a clean stop): what it still holds is taken over
        at once."""
        async with asyncio.timeout(REDIS_CALL_S):
            await self._redis.delete(self._keys.holder_alive(self.holder))
            # Another start of the same instance may be beating the shared key: leave it.
            mine = await self._redis.get(self._keys.alive(self.instance_id))
            if mine is not None and _s(mine) == self.holder:
                await self._redis.delete(self._keys.alive(self.instance_id))

    async def holders(self, shard: ShardKeys) -> list[str]:
        async with asyncio.timeout(REDIS_CALL_S):
            members = await self._redis.smembers(shard.holders)
        return sorted(_s(m) for m in members)

    async def dead_holders(self, holders: Sequence[str]) -> list[str]:
        """The holders among `holders` whose heartbeat is gone (never this process's own)."""
        others = [h for h in holders if h != self.holder]
        return await self._missing(others, [self._keys.holder_alive(h) for h in others])

    async def dead_consumers(self, names: Sequence[str]) -> list[str]:
        """The stream consumers among `names` whose instance's heartbeat is gone."""
        others = [n for n in names if n != self.instance_id]
        return await self._missing(others, [self._keys.alive(n) for n in others])

    async def _missing(self, names: list[str], keys: list[str]) -> list[str]:
        if not names:
            return []
        async with asyncio.timeout(REDIS_CALL_S):
            values = await self._redis.mget(keys)
        return [n for n, v in zip(names, values, strict=True) if v is None]


class StreamTakeover:
    """Claims the pending entries of a consumer group's dead consumers for `consumer`, as
    soon as their heartbeat is gone; looked for at most every TAKEOVER_EVERY_S per stream."""

    def __init__(self, redis: Redis, liveness: Liveness, group: str, consumer: str,
                 every_s: float = TAKEOVER_EVERY_S) -> None:
        self._redis = redis
        self._liveness = liveness
        self._group = group
        self._consumer = consumer
        self._every_s = every_s
        self._last: dict[str, float] = {}

    async def claim(self, stream: str, count: int = 500) -> list[Any]:
        """Up to `count` entries (XCLAIM's reply: (id, fields) pairs) taken from dead
        consumers; [] when none, or when the stream was looked at a moment ago."""
        now = time.monotonic()
        if now - self._last.get(stream, 0.0) < self._every_s:
            return []
        self._last[stream] = now
        async with asyncio.timeout(REDIS_CALL_S):
            consumers: Any = await self._redis.xinfo_consumers(stream, self._group)
        pending = [_s(c["name"]) for c in consumers
                   if int(c.get("pending", 0)) > 0 and _s(c["name"]) != self._consumer]
        claimed: list[Any] = []
        for name in await self._liveness.dead_consumers(pending):
            async with asyncio.timeout(REDIS_CALL_S):
                entries: Any = await self._redis.xpending_range(
                    stream, self._group, min="-", max="+", count=count - len(claimed),
                    consumername=name)
                ids = [e["message_id"] for e in entries]
                got: Any = await self._redis.xclaim(
                    stream, self._group, self._consumer, CLAIM_DEAD_IDLE_MS, ids) if ids else []
            if got:
                log.warning(CONSUMER_DEAD, stream=stream, consumer=name, claimed=len(got))
            claimed += got
            if len(claimed) >= count:
                break
        return claimed


__all__ = ["ALIVE_TTL_MS", "BEAT_INTERVAL_S", "Liveness", "StreamTakeover"]
