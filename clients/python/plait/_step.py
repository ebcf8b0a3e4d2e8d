"""Steps: a memoised step replays its stored result; the first new step runs and ends the job."""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, NoReturn, TypeVar, TypeVarTuple, overload

from plait._context import Event
from plait._encode import OutputError, dumps, error_info, is_non_retriable, retry_after_ms
from plait._errors import StepError, _Interrupt
from plait._messages import (
    ErrorInfo,
    Opcode,
    RunFailed,
    Sleep,
    StepCompleted,
    StepFailed,
    WaitForEvent,
)

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

_NEW = object()


class _Run:
    """Replay state of one job: the memo, the step ids seen so far, and the job's one opcode."""

    def __init__(self, steps: Mapping[str, bytes], loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.outcome: Opcode | None = None
        self.cancelled = False
        self.finished = asyncio.Event()
        self._steps = steps
        self._counts: dict[str, int] = {}
        self._hits = 0
        self._claimed = False

    @property
    def replaying(self) -> bool:
        """True until every memoised step has been replayed."""
        return self._hits < len(self._steps)

    def step_id(self, base: str) -> str:
        """The id of this call: repeats of an id get ":1", ":2"... in call order, so loops work."""
        if not isinstance(base, str) or not base:
            raise ValueError(f"step id has value {base!r}. It must be a non-empty string.")
        seen = self._counts.get(base, 0)
        self._counts[base] = seen + 1
        return base if seen == 0 else f"{base}:{seen}"

    def replay(self, step_id: str) -> Any:
        """The memoised output of a step, `_NEW` when it has none; a stored error raises."""
        raw = self._steps.get(step_id)
        if raw is None:
            return _NEW
        self._hits += 1
        try:
            memo = json.loads(raw)
        except ValueError:
            memo = None
        if not isinstance(memo, dict):
            self.finish(_bad_memo(step_id, "is not a JSON object"))
        if "error" in memo:
            error = memo["error"]
            if not isinstance(error, dict):
                self.finish(_bad_memo(step_id, 'has an "error" that is not an object'))
            name, message = str(error.get("name", "")), str(error.get("message", ""))
            raise StepError(name, message, str(error.get("stack", "")))
        return memo.get("data")

    def claim(self) -> bool:
        """Admits the job's first new step; False for any later one, which must not run."""
        if self.cancelled:
            raise _Interrupt
        if self._claimed:
            return False
        self._claimed = True
        return True

    async def yield_to_sibling(self) -> NoReturn:
        """Parks a new step run in parallel (`asyncio.gather`) until the claiming one answers.

        The sibling runs in a later job, once the claiming step is memoised.
        """
        await self.finished.wait()
        raise _Interrupt

    def finish(self, opcode: Opcode) -> NoReturn:
        self.outcome = opcode
        # Only async steps wait on it, so a set() from a sync function's thread finds no waiter.
        self.finished.set()
        raise _Interrupt

    def complete(self, step_id: str, name: str, output: Any) -> NoReturn:
        try:
            data = dumps(output, f"step {name!r}")
        except OutputError as exc:
            self.finish(StepFailed(step_id, name, error_info(exc), non_retriable=True))
        self.finish(StepCompleted(step_id, name, data))

    def fail(self, step_id: str, name: str, exc: Exception) -> NoReturn:
        self.finish(
            StepFailed(
                step_id,
                name,
                error_info(exc),
                non_retriable=is_non_retriable(exc),
                retry_after_ms=retry_after_ms(exc),
            )
        )

    def sleep_memoised(self, step_id: str) -> bool:
        if step_id in self._steps:
            self._hits += 1
            return True
        return False


class Step:
    """Durable steps for an `async def` function."""

    def __init__(self, run: _Run) -> None:
        self._run = run

    @overload
    async def run(self, step_id: str, fn: Callable[[*Ts], Awaitable[T]], *args: *Ts) -> T: ...
    @overload
    async def run(self, step_id: str, fn: Callable[[*Ts], T], *args: *Ts) -> T: ...
    async def run(self, step_id: str, fn: Callable[[*Ts], Any], *args: *Ts) -> Any:
        """Runs `fn(*args)` once per run and returns its JSON output, memoised across replays.

        Sync callables run in a thread. A memoised failure raises `StepError`.
        """
        run = self._run
        sid = run.step_id(step_id)
        value = run.replay(sid)
        if value is not _NEW:
            return value
        if not run.claim():
            await run.yield_to_sibling()
        try:
            if inspect.iscoroutinefunction(fn):
                output = await fn(*args)
            else:
                output = await asyncio.to_thread(fn, *args)
                if inspect.isawaitable(output):
                    output = await output
        except Exception as exc:
            run.fail(sid, step_id, exc)
        run.complete(sid, step_id, output)

    async def sleep(self, step_id: str, duration: float | timedelta) -> None:
        """Pauses the run for `duration` (seconds or a timedelta) without holding a worker."""
        await self._sleep(step_id, _now_ms() + _duration_ms(duration))

    async def sleep_until(self, step_id: str, until: datetime | int) -> None:
        """Pauses the run until `until`: a datetime, or Unix milliseconds."""
        await self._sleep(step_id, _until_ms(until))

    async def _sleep(self, name: str, until_ms: int) -> None:
        run = self._run
        sid = run.step_id(name)
        if run.sleep_memoised(sid):
            return
        if not run.claim():
            await run.yield_to_sibling()
        run.finish(Sleep(sid, name, until_ms))

    async def wait_for_event(
        self, step_id: str, *, event: str, timeout: float | timedelta, if_exp: str = ""  # noqa: ASYNC109
    ) -> Event | None:
        """Waits up to `timeout` for a later event named `event` for which the CEL `if_exp`
        over `event` (this run's event) and `async` (the awaited one) holds; None on timeout."""
        run = self._run
        sid = run.step_id(step_id)
        value = run.replay(sid)
        if value is not _NEW:
            return _event_of(value)
        if not run.claim():
            await run.yield_to_sibling()
        run.finish(_wait_opcode(sid, step_id, event, if_exp, timeout))


class SyncStep:
    """Durable steps for a plain `def` function, which runs in a worker thread."""

    def __init__(self, run: _Run) -> None:
        self._run = run

    @overload
    def run(self, step_id: str, fn: Callable[[*Ts], Awaitable[T]], *args: *Ts) -> T: ...
    @overload
    def run(self, step_id: str, fn: Callable[[*Ts], T], *args: *Ts) -> T: ...
    def run(self, step_id: str, fn: Callable[[*Ts], Any], *args: *Ts) -> Any:
        """Runs `fn(*args)` once per run and returns its JSON output, memoised across replays.

        An awaitable result is awaited on the worker's event loop. A memoised failure raises
        `StepError`.
        """
        run = self._run
        sid = run.step_id(step_id)
        value = run.replay(sid)
        if value is not _NEW:
            return value
        if not run.claim():
            raise _Interrupt
        try:
            output = fn(*args)
            if inspect.isawaitable(output):
                output = asyncio.run_coroutine_threadsafe(_wait(output), run.loop).result()
        except Exception as exc:
            run.fail(sid, step_id, exc)
        run.complete(sid, step_id, output)

    def sleep(self, step_id: str, duration: float | timedelta) -> None:
        """Pauses the run for `duration` (seconds or a timedelta) without holding a worker."""
        self._sleep(step_id, _now_ms() + _duration_ms(duration))

    def sleep_until(self, step_id: str, until: datetime | int) -> None:
        """Pauses the run until `until`: a datetime, or Unix milliseconds."""
        self._sleep(step_id, _until_ms(until))

    def _sleep(self, name: str, until_ms: int) -> None:
        run = self._run
        sid = run.step_id(name)
        if run.sleep_memoised(sid):
            return
        if not run.claim():
            raise _Interrupt
        run.finish(Sleep(sid, name, until_ms))

    def wait_for_event(
        self, step_id: str, *, event: str, timeout: float | timedelta, if_exp: str = ""
    ) -> Event | None:
        """Waits up to `timeout` for a later event named `event` for which the CEL `if_exp`
        over `event` (this run's event) and `async` (the awaited one) holds; None on timeout."""
        run = self._run
        sid = run.step_id(step_id)
        value = run.replay(sid)
        if value is not _NEW:
            return _event_of(value)
        if not run.claim():
            raise _Interrupt
        run.finish(_wait_opcode(sid, step_id, event, if_exp, timeout))


def _wait_opcode(
    sid: str, name: str, event: str, if_exp: str, timeout: float | timedelta
) -> WaitForEvent:
    if not isinstance(event, str) or not event:
        raise ValueError(f"wait_for_event event has value {event!r}. It must be an event name.")
    return WaitForEvent(sid, name, event, if_exp or "", _now_ms() + _duration_ms(timeout))


def _event_of(value: Any) -> Event | None:
    """The memo of a wait: the awaited event as stored by the server, or null (timed out)."""
    if not isinstance(value, dict):
        return None
    data = value.get("data")
    return Event(
        id=str(value.get("id", "")), name=str(value.get("name", "")),
        data=data if isinstance(data, dict) else {}, ts_ms=int(value.get("ts") or 0),
    )


async def _wait(awaitable: Awaitable[T]) -> T:
    return await awaitable


def _bad_memo(step_id: str, reason: str) -> RunFailed:
    message = f"memoised step {step_id!r} {reason}; the run state is corrupt"
    return RunFailed(ErrorInfo("InvalidMemo", message), non_retriable=True)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _duration_ms(duration: float | timedelta) -> int:
    if isinstance(duration, timedelta):
        return round(duration.total_seconds() * 1000)
    if isinstance(duration, bool) or not isinstance(duration, int | float):
        raise TypeError(
            f"sleep duration has value {duration!r}. Expected seconds (int or float) "
            "or a timedelta."
        )
    return round(duration * 1000)


def _until_ms(until: datetime | int) -> int:
    if isinstance(until, datetime):
        return round(until.timestamp() * 1000)
    if isinstance(until, bool) or not isinstance(until, int):
        raise TypeError(
            f"sleep_until until has value {until!r}. Expected a datetime or Unix milliseconds."
        )
    return until
