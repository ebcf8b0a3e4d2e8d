"""Steps: a memoised step replays its stored result; the first new step runs and ends the job."""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, NoReturn, TypeVar, TypeVarTuple, overload

from plait._context import Event
from plait._encode import OutputError, dumps, error_info, is_non_retriable, retry_after_ms
from plait._errors import StepError, _Interrupt
from plait._messages import (
    ErrorInfo,
    EventInput,
    InvokeFunction,
    Opcode,
    RunFailed,
    SendEvent,
    SendEvents,
    Sleep,
    StepCompleted,
    StepFailed,
    StepsPlanned,
    WaitForEvent,
    positive_ms,
)
from plait._registry import global_function_id

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

_NEW = object()
# Event-loop turns the first new step of a round waits for its siblings to reach theirs.
_ROUND_YIELDS = 3
_MAX_PLANNED = 100
_MAX_SENT = 100
# The server's limit on an event's data.
_MAX_DATA_BYTES = 512 * 1024


class _Run:
    """Replay state of one job: the memo, the step ids seen so far, and the job's one opcode.

    A main job (no `target`) runs the first new step it reaches, or, when several new steps
    are reached at once (`asyncio.gather`, a TaskGroup), runs none of them and answers
    `StepsPlanned`. A planned step's job (`target` set) runs only that step: a `step.run` or
    a send, or a sleep, wait or invoke, which parks that job on the server until it ends.
    """

    def __init__(
        self,
        steps: Mapping[str, bytes],
        loop: asyncio.AbstractEventLoop,
        target: str = "",
        root: asyncio.Task[Any] | None = None,
    ) -> None:
        self.loop = loop
        self.outcome: Opcode | None = None
        self.cancelled = False
        self.finished = asyncio.Event()
        self.target = target
        # The task running the function itself: a step it awaits directly has no sibling yet.
        self._root = root
        self._steps = steps
        self._counts: dict[str, int] = {}
        self._hits = 0
        self._claimed = False
        # New steps reached in the current round, in call order.
        self._pending: list[str] = []
        # The steps being reached are a race's (Step.race): planned with `race` set.
        self.race = False

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

    def claim(self, step_id: str) -> bool:
        """For sync functions: admits the job's first new step; False for any later one.

        A sync function is sequential, so in a planned step's job the first new step is the
        target, or the target is not reachable without it: it runs either way.
        """
        if self.cancelled or self.finished.is_set():
            raise _Interrupt
        if self._claimed:
            return False
        self._claimed = True
        return True

    async def reach(self, step_id: str) -> None:
        """Called by an async step not memoised: returns when this job is to run it.

        Otherwise it parks until the job has its answer, then ends the job's function. In a
        main job, the first step of a round lets the event loop turn a few times so that
        steps started at the same time (siblings in `asyncio.gather`) reach theirs; two or
        more are then planned instead of run, whatever their kind.
        """
        if self.cancelled or self.finished.is_set():
            raise _Interrupt
        if self.target and step_id == self.target and not self._claimed:
            self._claimed = True
            return
        if self._claimed:
            await self._park()
        self._pending.append(step_id)
        try:
            if len(self._pending) > 1:
                await self._park()  # the round's first step decides for all
            if self.target or asyncio.current_task() is not self._root:
                for _ in range(_ROUND_YIELDS):
                    await asyncio.sleep(0)
                if self.cancelled or self.finished.is_set():
                    raise _Interrupt
                if self._claimed:  # the target was reached meanwhile
                    await self._park()
        except asyncio.CancelledError:  # a race's loser (Step.race): not a step of this round
            if step_id in self._pending:
                self._pending.remove(step_id)
            raise
        pending = self._pending
        self._pending = []
        if not self.target and len(pending) > 1:
            self.finish(StepsPlanned(tuple(pending[:_MAX_PLANNED]), race=self.race))
        # One new step, or a planned step's job whose target is not reachable without this
        # step.
        self._claimed = True

    async def _park(self) -> NoReturn:
        """Parks a new step that does not run in this job until the job has its answer.

        It runs in a later job, once the step that answers this one is memoised.
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

        Sync callables run in a thread. A memoised failure raises `StepError`. New steps
        started together (`asyncio.gather`, a TaskGroup) run in parallel, each in a job of its
        own.
        """
        run = self._run
        sid = run.step_id(step_id)
        value = run.replay(sid)
        if value is not _NEW:
            return value
        await run.reach(sid)
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

    async def race(self, *steps: Awaitable[T]) -> list[T | None]:
        """Runs `steps` (each a step's awaitable: `step.wait_for_event(...)`, `step.sleep(...)`,
        `step.run(...)`, ...) in parallel as `asyncio.gather` does, but as a race: the function
        goes on as soon as the first of them ends. Returns their results in order; a step that
        lost is None (a sleep, wait or invoke that had not ended gets its timeout answer,
        null; a `step.run` still running finishes in the background and is not awaited).
        """
        if not steps:
            return []
        run = self._run
        run.race = True
        tasks = [asyncio.ensure_future(s) for s in steps]
        try:
            done, losers = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            run.race = False
            for task in tasks:
                if not task.done():
                    task.cancel()
        # A loser's task is cancelled; wait for it to unwind (its error is not the race's).
        await asyncio.wait(tasks)
        for task in done:
            task.result()  # a step's error, or the end of this job (_Interrupt), is raised
        return [None if task in losers else task.result() for task in tasks]

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
        await run.reach(sid)
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
        await run.reach(sid)
        run.finish(_wait_opcode(sid, step_id, event, if_exp, timeout))

    async def invoke(
        self,
        step_id: str,
        *,
        function: str | Callable[..., Any],
        data: Mapping[str, Any] | None = None,
        timeout: float | timedelta | None = None,  # noqa: ASYNC109
    ) -> Any:
        """Runs another function (any app's) and returns its output, memoised like a step.

        `function` is its global id, "<app id>-<function id>", or a function declared with
        `@app.function`; `data` becomes the invoked run's `event.data`. A failed run, or one not
        finished within `timeout` (seconds or a timedelta; None waits for ever), raises
        `StepError` with its error (a timeout's name is "InvokeTimeoutError").
        """
        run = self._run
        sid = run.step_id(step_id)
        value = run.replay(sid)
        if value is not _NEW:
            return value
        await run.reach(sid)
        run.finish(_invoke_opcode(sid, step_id, function, data, timeout))

    async def send_event(self, step_id: str, events: SendEvent | Sequence[SendEvent]) -> list[str]:
        """Sends one event or a list of them (1..100) exactly once; returns their ids."""
        run = self._run
        sid = run.step_id(step_id)
        value = run.replay(sid)
        if value is not _NEW:
            return _ids_of(value)
        await run.reach(sid)
        run.finish(_send_opcode(sid, step_id, events))


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
        if not run.claim(sid):
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
        if not run.claim(sid):
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
        if not run.claim(sid):
            raise _Interrupt
        run.finish(_wait_opcode(sid, step_id, event, if_exp, timeout))

    def invoke(
        self,
        step_id: str,
        *,
        function: str | Callable[..., Any],
        data: Mapping[str, Any] | None = None,
        timeout: float | timedelta | None = None,
    ) -> Any:
        """Runs another function (any app's) and returns its output, memoised like a step.

        `function` is its global id, "<app id>-<function id>", or a function declared with
        `@app.function`; `data` becomes the invoked run's `event.data`. A failed run, or one not
        finished within `timeout` (seconds or a timedelta; None waits for ever), raises
        `StepError` with its error (a timeout's name is "InvokeTimeoutError").
        """
        run = self._run
        sid = run.step_id(step_id)
        value = run.replay(sid)
        if value is not _NEW:
            return value
        if not run.claim(sid):
            raise _Interrupt
        run.finish(_invoke_opcode(sid, step_id, function, data, timeout))

    def send_event(self, step_id: str, events: SendEvent | Sequence[SendEvent]) -> list[str]:
        """Sends one event or a list of them (1..100) exactly once; returns their ids."""
        run = self._run
        sid = run.step_id(step_id)
        value = run.replay(sid)
        if value is not _NEW:
            return _ids_of(value)
        if not run.claim(sid):
            raise _Interrupt
        run.finish(_send_opcode(sid, step_id, events))


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


def _invoke_opcode(
    sid: str,
    name: str,
    function: object,
    data: Mapping[str, Any] | None,
    timeout: float | timedelta | None,
) -> InvokeFunction:
    function_id = global_function_id(function, "step.invoke function")
    if data is not None and not isinstance(data, Mapping):
        raise TypeError(
            f"step.invoke data has value {data!r}. Expected a dict (a JSON object) or None.")
    data_json = _json_object(data, "step.invoke data")
    until_ms = 0
    if timeout is not None:
        ms = positive_ms(timeout, "step.invoke timeout")
        until_ms = _now_ms() + ms
    return InvokeFunction(sid, name, function_id, data_json, until_ms)


def _send_opcode(sid: str, name: str, events: object) -> SendEvents:
    items = (events,) if isinstance(events, SendEvent) else events
    if isinstance(items, str | bytes | Mapping) or not isinstance(items, Sequence):
        raise TypeError(
            f"step.send_event events has value {events!r}. "
            "Expected a SendEvent or a list of them."
        )
    if not 1 <= len(items) <= _MAX_SENT:
        raise ValueError(
            f"step.send_event events has {len(items)} events. Send 1 to {_MAX_SENT} per step.")
    inputs = []
    for i, e in enumerate(items):
        if not isinstance(e, SendEvent):
            raise TypeError(f"step.send_event events[{i}] has value {e!r}. Expected SendEvent.")
        inputs.append(EventInput(e.name, _json_object(e.data, f"step.send_event events[{i}].data")))
    return SendEvents(sid, name, tuple(inputs))


def _json_object(data: Mapping[str, Any] | None, what: str) -> bytes:
    if not data:
        return b"{}"
    try:
        text = json.dumps(dict(data), separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"{what} is not JSON-serialisable: {exc}") from exc
    encoded = text.encode()
    if len(encoded) > _MAX_DATA_BYTES:
        raise ValueError(
            f"{what} is {len(encoded)} bytes of JSON. The limit is {_MAX_DATA_BYTES} bytes.")
    return encoded


def _ids_of(value: Any) -> list[str]:
    """The memo of a send: `{"ids": [...]}` as stored by the server."""
    ids = value.get("ids") if isinstance(value, dict) else None
    return [str(i) for i in ids] if isinstance(ids, list) else []


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
