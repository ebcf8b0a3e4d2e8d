"""What holds each queued run (flow control's `why` in the run hash), for GetRun, ListRuns and
the REST run; read from Redis, since history does not know it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from server.history.store import RunRecord
from server.keys import Keys
from server.tasks import raise_if_cancelling

log = structlog.get_logger(__name__)

WHY_FIELD = "why"  # the run hash field flow control's scripts write (FLOW-DESIGN contract 2)
READ_TIMEOUT_S = 2.0
WAITING_UNREADABLE = "api.waiting.unreadable"


class WaitingReasons:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    async def of(self, runs: Sequence[RunRecord]) -> list[str]:
        """One reason per run, "" for an ended run or one nothing holds: one pipelined HGET
        per run that has not ended. When Redis does not answer the runs are still shown
        (from history), without reasons."""
        reasons = [""] * len(runs)
        waiting = [i for i, r in enumerate(runs) if not r.status.terminal]
        if not waiting:
            return reasons
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                async with self._redis.pipeline(transaction=False) as pipe:
                    for i in waiting:
                        run_id = runs[i].id
                        pipe.hget(self._keys.for_run(run_id).run(run_id), WHY_FIELD)
                    found = await pipe.execute()
        except (RedisError, OSError, TimeoutError) as e:
            raise_if_cancelling()
            log.warning(WAITING_UNREADABLE, error=f"{type(e).__name__}: {e}")
            return reasons
        for i, value in zip(waiting, found, strict=True):
            if isinstance(value, bytes):
                value = value.decode(errors="replace")
            reasons[i] = value if isinstance(value, str) else ""
        return reasons
