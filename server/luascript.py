"""Loads the Lua scripts kept as .lua files beside the modules that call them.

Each script is registered once (EVALSHA, reloaded by redis-py on NOSCRIPT). A script may
start with a shared prelude file, prepended here because Redis has no include.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from server.errors import FailedPrecondition, NotFound, PlaitError


def load_script(
    redis: Redis, package: str, name: str, prelude: str | Sequence[str] = ()
) -> AsyncScript:
    """Registers `lua/<name>.lua` of `package`, after the prelude file(s) named, in order; a
    prelude of another package is named "<package>:<name>"."""
    preludes = [prelude] if isinstance(prelude, str) else list(prelude)
    parts = [_read(*p.split(":")) if ":" in p else _read(package, p) for p in preludes]
    parts.append(_read(package, name))
    return redis.register_script("\n".join(parts))


def _read(package: str, name: str) -> str:
    return resources.files(package).joinpath("lua", f"{name}.lua").read_text()


class StaleLease(PlaitError):
    """A result came for a lease that is no longer current; it is dropped."""


class RunNotRunning(FailedPrecondition):
    """A result came for a run that was cancelled or finished meanwhile."""


_FAILURES: dict[int, type[PlaitError]] = {-1: NotFound, -2: StaleLease, -3: RunNotRunning}


def check(reply: Any, what: str) -> Any:
    """Turns a script's negative reply into its named exception (one convention for all)."""
    if isinstance(reply, int) and reply < 0:
        raise _FAILURES.get(reply, PlaitError)(f"{what}: script returned {reply}")
    return reply
