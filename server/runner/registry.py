"""Function registration: validates an app's functions, stores them, and keeps every
process's trigger index current (a Redis counter moves on each registration)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence

import structlog
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from server.errors import InvalidArgument
from server.history import store
from server.keys import Keys
from server.runner import flow_rules
from server.runner.expressions import compile_expression, validate_cron
from server.runner.index import FunctionIndex
from server.supervise import describe
from server.tasks import raise_if_cancelling
from server.types import AppRegistration, CronTrigger, EventTrigger, FunctionConfig

log = structlog.get_logger(__name__)

_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}\Z")  # \Z: "$" lets a final "\n" by
MAX_FUNCTIONS = 500
MAX_RETRIES = 20
MAX_CANCEL_ON = 10
FUNCTION_UNINDEXABLE = "function.unindexable"
WATCH_TIMEOUT_S = 10.0


def validate_registration(reg: AppRegistration) -> None:
    """Raises InvalidArgument naming the first bad field (e.g. functions[1].triggers[0].event)."""
    if not _ID.match(reg.app_id):
        raise InvalidArgument("app_id", f"{reg.app_id!r} must match {_ID.pattern}")
    if len(reg.functions) > MAX_FUNCTIONS:
        raise InvalidArgument("functions", f"at most {MAX_FUNCTIONS} functions per app")
    seen: set[str] = set()
    for i, fn in enumerate(reg.functions):
        at = f"functions[{i}]"
        if not _ID.match(fn.slug):
            raise InvalidArgument(f"{at}.id", f"{fn.slug!r} must match {_ID.pattern}")
        if fn.slug in seen:
            raise InvalidArgument(f"{at}.id", f"{fn.slug!r} is declared twice")
        seen.add(fn.slug)
        if not 0 <= fn.retries <= MAX_RETRIES:
            raise InvalidArgument(f"{at}.retries", f"{fn.retries} is not in 0..{MAX_RETRIES}")
        if not fn.triggers:
            raise InvalidArgument(f"{at}.triggers", "at least one trigger is required")
        for j, trigger in enumerate(fn.triggers):
            where = f"{at}.triggers[{j}]"
            if isinstance(trigger, EventTrigger):
                if not trigger.event or len(trigger.event) > 256:
                    raise InvalidArgument(f"{where}.event", "must be 1..256 characters")
                if trigger.expression:
                    compile_expression(f"{where}.expression", trigger.expression)
            elif isinstance(trigger, CronTrigger):
                validate_cron(f"{where}.cron", trigger.cron)
        if len(fn.cancel_on) > MAX_CANCEL_ON:
            raise InvalidArgument(f"{at}.cancel_on", f"at most {MAX_CANCEL_ON} entries")
        for k, cancel in enumerate(fn.cancel_on):
            where = f"{at}.cancel_on[{k}]"
            if not cancel.event or len(cancel.event) > 256:
                raise InvalidArgument(f"{where}.event", "must be 1..256 characters")
            if cancel.if_expression:
                compile_expression(f"{where}.if_expression", cancel.if_expression)
            if cancel.timeout_ms < 0:
                raise InvalidArgument(f"{where}.timeout_ms", "must not be negative")
        flow_rules.validate_flow(fn, at)


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _indexable(fn: FunctionConfig) -> bool:
    try:
        FunctionIndex().replace([fn])
    except Exception as e:
        log.error(FUNCTION_UNINDEXABLE, function_id=fn.id, error=describe(e))
        return False
    return True


class Registry:
    def __init__(self, engine: AsyncEngine, redis: Redis, keys: Keys,
                 index: FunctionIndex) -> None:
        self._engine = engine
        self._redis = redis
        self._keys = keys
        self.index = index
        self._version: int | None = None

    async def register(self, reg: AppRegistration, now_ms: int) -> None:
        validate_registration(reg)
        await store.upsert_app(self._engine, reg, now_ms)
        await self._redis.incr(self._keys.functions_version)
        await self.reload()
        log.info("app.registered", app_id=reg.app_id, functions=len(reg.functions))

    async def reload(self) -> None:
        raw = await self._redis.get(self._keys.functions_version)
        self._version = int(raw or 0)
        functions = await store.load_functions(self._engine)
        raw_paused = await self._redis.smembers(self._keys.paused_functions)
        paused = [p.decode() if isinstance(p, bytes) else str(p) for p in raw_paused]
        try:
            self.index.replace(functions, paused)
        except Exception:
            raise_if_cancelling()
            # A stored function this version refuses (an `if` a stricter check rejects) must
            # not stop the index: it is left out, logged, and the others are served.
            self.index.replace([f for f in functions if _indexable(f)], paused)

    async def paused_ids(self) -> set[str]:
        """The ids of paused functions, as Redis has them now."""
        raw = await self._redis.smembers(self._keys.paused_functions)
        return {p.decode() if isinstance(p, bytes) else str(p) for p in raw}

    async def disabled_triggers(self, function_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        """Per function id, its cron triggers the scheduler disabled -> why (Keys.cron_disabled);
        functions with none are left out."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for function_id in function_ids:
                pipe.hgetall(self._keys.cron_disabled(function_id))
            replies = await pipe.execute()
        return {function_id: {_text(k): _text(v) for k, v in reply.items()}
                for function_id, reply in zip(function_ids, replies, strict=True) if reply}

    async def set_paused(self, function_id: str, paused: bool) -> None:
        """Pauses or resumes a function in every process's index (the version moves)."""
        await store.get_function(self._engine, function_id)  # NotFound when unknown
        if paused:
            await self._redis.sadd(self._keys.paused_functions, function_id)
        else:
            await self._redis.srem(self._keys.paused_functions, function_id)
        await self._redis.incr(self._keys.functions_version)
        await self.reload()
        log.info("function.paused" if paused else "function.resumed", function_id=function_id)

    async def refresh(self) -> None:
        """Reloads the index if any process registered functions since the last load."""
        raw = await self._redis.get(self._keys.functions_version)
        if int(raw or 0) != self._version:
            await self.reload()

    async def watch(self, interval_s: float = 1.0) -> None:
        """Reloads the index when another process registered functions."""
        while True:
            raise_if_cancelling()
            await asyncio.sleep(interval_s)
            async with asyncio.timeout(WATCH_TIMEOUT_S):  # a silent peer fails, never hangs
                raw = await self._redis.get(self._keys.functions_version)
                if int(raw or 0) != self._version:
                    await self.reload()
