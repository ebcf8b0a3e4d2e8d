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
from redis.exceptions import NoScriptError
from redis.typing import EncodableT

from server.errors import FailedPrecondition, NotFound, PlaitError, StorageError


def load_script(
    redis: Redis, package: str, name: str, prelude: str | Sequence[str] = ()
) -> AsyncScript:
    """Registers `lua/<name>.lua` of `package`, after the prelude file(s) named, in order; a
    prelude of another package is named "<package>:<name>"."""
    preludes = [prelude] if isinstance(prelude, str) else list(prelude)
    parts = [_read(*p.split(":")) if ":" in p else _read(package, p) for p in preludes]
    parts.append(_read(package, name))
    return redis.register_script("\n".join(parts))


ScriptCall = tuple[AsyncScript, Sequence[EncodableT], Sequence[EncodableT]]


def hash_from_flat(flat: Sequence[Any]) -> dict[str, bytes]:
    """A hash as a script returns HGETALL's reply (field, value, ...): fields decoded."""
    return {_field(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}


def _field(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def call_pipelined(redis: Redis, calls: Sequence[ScriptCall]) -> list[Any]:
    """Runs (script, keys, args) calls in one pipelined round trip of EVALSHAs; Redis' error
    replies come back as exception objects in the replies (see `storage_error`).

    redis-py's pipeline would first send SCRIPT EXISTS for its scripts, a second round trip
    on the step path. A call answered NOSCRIPT (Redis restarted, SCRIPT FLUSH) did not run:
    its script is loaded and it runs again.
    """
    replies = await _evalshas(redis, calls)
    missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
    if missing:
        for script in {id(calls[i][0]): calls[i][0] for i in missing}.values():
            script.sha = await redis.script_load(script.script)
        again = await _evalshas(redis, [calls[i] for i in missing])
        for i, reply in zip(missing, again, strict=True):
            replies[i] = reply
    return replies


async def _evalshas(redis: Redis, calls: Sequence[ScriptCall]) -> list[Any]:
    async with redis.pipeline(transaction=False) as pipe:
        for script, keys, args in calls:
            # execute_command, not evalsha: redis-py's cluster pipeline refuses its evalsha
            # method, but routes an EVALSHA command by its first key like any other.
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        return list(await pipe.execute(raise_on_error=False))


def _read(package: str, name: str) -> str:
    return resources.files(package).joinpath("lua", f"{name}.lua").read_text()


class StaleLease(PlaitError):
    """A result came for a lease that is no longer current; it is dropped."""


class RunNotRunning(FailedPrecondition):
    """A result came for a run that was cancelled or finished meanwhile."""


_FAILURES: dict[int, type[PlaitError]] = {-1: NotFound, -2: StaleLease, -3: RunNotRunning}


def storage_error(reply: Any, what: str) -> StorageError | None:
    """The StorageError of a reply that is Redis' own error (OOM, a script that failed, ...),
    as a pipeline hands it back; None for a script's answer, named failures included."""
    if isinstance(reply, Exception):
        error = StorageError(f"{what}: Redis answered {type(reply).__name__}: {reply}")
        error.__cause__ = reply
        return error
    return None


def check(reply: Any, what: str) -> Any:
    """Turns a script's negative reply into its named exception (one convention for all),
    and an error reply from Redis itself into StorageError: never taken for a named failure
    such as a stale lease, so the caller keeps what it holds."""
    error = storage_error(reply, what)
    if error is not None:
        raise error
    if isinstance(reply, int) and reply < 0:
        raise _FAILURES.get(reply, PlaitError)(f"{what}: script returned {reply}")
    return reply
