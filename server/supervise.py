"""Keeps a process's role loops running: a loop that fails is logged, counted and restarted
with backoff, and `StorageHealth` watches Redis and SQL, ending the process only when storage
has been unreachable for longer than the configured grace.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from redis import exceptions as redis_errors
from redis.asyncio import Redis
from sqlalchemy import exc as sql_errors
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from server.errors import Unavailable
from server.redis_client import drop_connections, open_probe
from server.tasks import raise_if_cancelling

__all__ = [
    "ROLE_CRASHED",
    "Backoff",
    "StorageHealth",
    "StorageUnavailable",
    "describe",
    "is_storage_error",
    "supervise",
]

ROLE_CRASHED = "role.crashed"
ROLE_ENDED = "role.ended"
STORAGE_UNREACHABLE = "storage.unreachable"
STORAGE_REACHABLE = "storage.reachable"
STORAGE_GRACE_EXCEEDED = "storage.grace_exceeded"

log = structlog.get_logger(__name__)

Role = Callable[[], Coroutine[Any, Any, None]]
Check = Callable[[], Awaitable[object]]

# Replies of a Redis that is up but cannot serve now (loading its AOF, out of memory, a replica
# being promoted): not the fault of the item being processed.
_BUSY_REPLIES = ("LOADING", "BUSY", "MASTERDOWN", "READONLY", "TRYAGAIN", "CLUSTERDOWN", "OOM")


class StorageUnavailable(Unavailable):
    """Redis or the database stayed unreachable for longer than --storage-grace-s."""


def is_storage_error(error: BaseException) -> bool:
    """Whether an error says storage is away (connection, timeout, a busy Redis) rather than
    that the item being processed is bad; an exception group is one if any member is."""
    if isinstance(error, BaseExceptionGroup):
        return any(is_storage_error(e) for e in error.exceptions)
    if isinstance(error, redis_errors.ResponseError):
        return (isinstance(error, redis_errors.OutOfMemoryError | redis_errors.ReadOnlyError)
                or any(word in str(error) for word in _BUSY_REPLIES))
    if isinstance(error, sql_errors.DBAPIError):
        return error.connection_invalidated or isinstance(
            error, sql_errors.OperationalError | sql_errors.InterfaceError)
    return isinstance(error, redis_errors.ConnectionError | redis_errors.TimeoutError
                      | redis_errors.InvalidResponse | sql_errors.TimeoutError
                      | TimeoutError | OSError | Unavailable)


def describe(error: BaseException) -> str:
    """`KeyError: 'name'`: the class and message (redis-py's repr drops the message)."""
    return f"{type(error).__name__}: {error}"


@dataclass(frozen=True, slots=True)
class Backoff:
    first_s: float = 0.1
    max_s: float = 10.0
    # A loop that ran this long before failing starts again from first_s.
    healthy_s: float = 60.0


async def supervise(
    name: str, role: Role, *, backoff: Backoff = Backoff(),
    on_restart: Callable[[str], None] | None = None,
    on_storage_error: Callable[[BaseException], None] | None = None,
) -> None:
    """Runs `role()` until it returns; an exception restarts it after a growing pause.

    A cancellation of this task always ends it, even when a client library turned it into an
    ordinary error on the way out (redis-py and SQLAlchemy can). Each attempt runs in a task
    of its own, awaited here: a role whose TaskGroup failed can be left "cancelling" by
    Python 3.11 (the group cancels its parent and, when the parent was already waiting in
    __aexit__, never uncancels it), and that stale state must die with the attempt instead
    of making every later check think shutdown was asked for.
    """
    delay_s = backoff.first_s
    while True:
        raise_if_cancelling()
        started = time.monotonic()
        attempt = asyncio.create_task(role(), name=f"{name}-attempt")
        try:
            await attempt
        except asyncio.CancelledError:
            raise_if_cancelling()  # we were asked to stop: the attempt was cancelled with us
            error: Exception = RuntimeError("the role ended by a CancelledError nobody asked for")
        except Exception as e:
            raise_if_cancelling()
            error = e
        else:
            # Only a role with nothing to do (no span export) or one told to stop (the HTTP
            # server on shutdown) returns.
            log.debug(ROLE_ENDED, role=name)
            return
        finally:
            if not attempt.done():  # only when this task is being cancelled
                attempt.cancel()
        if time.monotonic() - started >= backoff.healthy_s:
            delay_s = backoff.first_s
        # Storage away is an outage, not a bug: its traceback says nothing the error does not.
        log.error(ROLE_CRASHED, role=name, error=describe(error), restart_in_s=delay_s,
                  exc_info=None if is_storage_error(error) else error)
        if on_restart is not None:
            on_restart(name)
        if on_storage_error is not None and is_storage_error(error):
            on_storage_error(error)
        await asyncio.sleep(delay_s)
        delay_s = min(backoff.max_s, delay_s * 2)


@dataclass(slots=True)
class _State:
    down_since: float | None = None
    error: str = ""


class StorageHealth:
    """Probes each store (a PING, a SELECT 1) with a deadline every `interval_s`, and at once
    when a role reports a storage error. `run()` raises StorageUnavailable once a store has
    been unreachable for longer than `grace_s` (0: never)."""

    def __init__(self, checks: Mapping[str, Check], grace_s: float, *, interval_s: float = 1.0,
                 deadline_s: float = 2.0, clock: Callable[[], float] = time.monotonic,
                 close: Callable[[], Awaitable[None]] | None = None,
                 on_reachable: Mapping[str, Check] | None = None) -> None:
        """`on_reachable[name]` runs when that store answers again after being away."""
        self._checks = dict(checks)
        self._close = close
        self._on_reachable = dict(on_reachable or {})
        self._grace_s = grace_s
        self._interval_s = interval_s
        self._deadline_s = deadline_s
        self._clock = clock
        self._states = {name: _State() for name in self._checks}
        self._wake = asyncio.Event()

    @classmethod
    def of(cls, redis: Redis, redis_url: str, engine: AsyncEngine,
           grace_s: float) -> StorageHealth:
        """Probes the server's Redis (over its own connection, without retries, so a probe
        answers within its deadline) and its database. When Redis is back, the server
        client's pooled connections are closed: one left waiting on a peer that will never
        answer (a half-open socket) cannot hold a role, whose call is retried on a new one."""
        probe = open_probe(redis_url, timeout_s=2.0)
        return cls({"redis": probe.ping, "database": lambda: _select_one(engine)}, grace_s,
                   close=probe.aclose,
                   on_reachable={"redis": lambda: drop_connections(redis)})

    @property
    def ok(self) -> bool:
        return all(s.down_since is None for s in self._states.values())

    def status(self) -> dict[str, str]:
        """{"status": "ok"}, or "degraded" with what each store answered."""
        if self.ok:
            return {"status": "ok"}
        now = self._clock()
        body = {"status": "degraded"}
        for name, s in self._states.items():
            body[name] = ("ok" if s.down_since is None else
                          f"unreachable for {now - s.down_since:.0f}s: {s.error}")
        return body

    def report(self, error: BaseException) -> None:
        """A role saw a storage error: probe now rather than at the next interval."""
        self._wake.set()

    async def run(self) -> None:
        try:
            while True:
                raise_if_cancelling()
                await self.probe()
                self._give_up_if_too_long()
                self._wake.clear()
                try:
                    async with asyncio.timeout(self._interval_s):
                        await self._wake.wait()
                except TimeoutError:
                    pass
        finally:
            if self._close is not None:
                await asyncio.shield(self._close())

    async def probe(self) -> None:
        """Checks every store once (twice before calling it away: a pooled connection the
        store closed while restarting fails once, then a fresh one answers)."""
        for name, check in self._checks.items():
            error = await self._attempt(check)
            if error is not None:
                error = await self._attempt(check)
            state = self._states[name]
            if error is None:
                if state.down_since is not None:
                    log.info(STORAGE_REACHABLE, store=name,
                             after_s=round(self._clock() - state.down_since, 1))
                    hook = self._on_reachable.get(name)
                    if hook is not None and (failed := await self._attempt(hook)):
                        log.warning(STORAGE_REACHABLE, store=name, hook_failed=failed)
                state.down_since, state.error = None, ""
            else:
                if state.down_since is None:
                    state.down_since = self._clock()
                    log.warning(STORAGE_UNREACHABLE, store=name, error=error,
                                grace_s=self._grace_s or None)
                state.error = error

    async def _attempt(self, check: Check) -> str | None:
        try:
            async with asyncio.timeout(self._deadline_s):
                await check()
        except Exception as e:
            raise_if_cancelling()
            return f"timed out after {self._deadline_s}s" if isinstance(e, TimeoutError) \
                else describe(e)
        return None

    def _give_up_if_too_long(self) -> None:
        if self._grace_s <= 0:
            return
        now = self._clock()
        for name, s in self._states.items():
            if s.down_since is not None and now - s.down_since > self._grace_s:
                log.error(STORAGE_GRACE_EXCEEDED, store=name, grace_s=self._grace_s,
                          error=s.error)
                raise StorageUnavailable(
                    f"{name} unreachable for more than --storage-grace-s={self._grace_s:g}s: "
                    f"{s.error}")


async def _select_one(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
