"""An app: the functions one worker serves, declared with the `@app.function` decorator."""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from plait._context import Context
from plait._flow import Batch, Concurrency, Debounce, RateLimit, Singleton, Throttle, flow_spec
from plait._messages import CancelOn, FunctionSpec, Timeouts
from plait._registry import remember as _remember
from plait._step import Step, SyncStep
from plait._triggers import TriggerCron, TriggerEvent

AsyncHandler = Callable[[Context, Step], Awaitable[Any]]
SyncHandler = Callable[[Context, SyncStep], Any]
F = TypeVar("F", bound=AsyncHandler | SyncHandler)

# The server's rule for app and function ids.
_ID = re.compile(r"[a-z0-9._-]{1,128}")
_MAX_RETRIES = 20
_MAX_CANCEL_ON = 10
FAILURE_SUFFIX = "-failure"
FUNCTION_FAILED = "inngest/function.failed"


@dataclass(frozen=True, slots=True)
class _Function:
    spec: FunctionSpec
    handler: Callable[..., Any]
    is_async: bool


class App:
    """A named group of functions, registered together by a `Worker`."""

    def __init__(self, app_id: str) -> None:
        _check_id("App app_id", app_id)
        self.id = app_id
        self._functions: dict[str, _Function] = {}

    def function(
        self,
        function_id: str,
        *,
        trigger: TriggerEvent | TriggerCron | Sequence[TriggerEvent | TriggerCron],
        name: str | None = None,
        retries: int | None = None,
        on_failure: AsyncHandler | SyncHandler | None = None,
        timeouts: Timeouts | None = None,
        cancel_on: CancelOn | Sequence[CancelOn] | None = None,
        concurrency: int | Concurrency | Sequence[Concurrency] | None = None,
        throttle: Throttle | None = None,
        rate_limit: RateLimit | None = None,
        debounce: Debounce | None = None,
        batch_events: Batch | None = None,
        priority: str | None = None,
        idempotency: str | None = None,
        singleton: Singleton | None = None,
    ) -> Callable[[F], F]:
        """Declares a function: `async def f(ctx, step: Step)` or `def f(ctx, step: SyncStep)`.

        `retries` counts retries per step after the first attempt (0..20); None leaves the
        server's default. `on_failure`, a handler of the same shape, runs once a run of this
        function has failed (retries exhausted): it is the function `<function_id>-failure`,
        triggered by `inngest/function.failed`, so `ctx.event.data` holds the failed run's
        `event`, `error` ({name, message, stack}), `function_id` and `run_id`. The decorated
        function is returned unchanged. `timeouts` (`Timeouts(start_s=…, finish_s=…)`) fail a
        run that waits too long to start or takes too long to finish. `cancel_on`
        (`CancelOn(event, if_exp=…, timeout=…)`, at most 10) cancels a run when a matching
        event arrives.

        Flow control, as in the Inngest SDKs (keys and `priority` are CEL over `event`):
        `concurrency` (an int, a `Concurrency` or two), `throttle` (`Throttle`), `rate_limit`
        (`RateLimit`), `debounce` (`Debounce`), `batch_events` (`Batch`: the run's events are
        `ctx.events`), `priority` (seconds, -600..600, a run moves ahead), `idempotency` (one
        run per key per 24 h) and `singleton` (`Singleton`). The server checks them when the
        worker registers and refuses the app naming the field.
        """
        _check_id("function id", function_id)
        if function_id in self._functions:
            raise ValueError(f"function id {function_id!r} is declared twice in app {self.id!r}")
        failure_id = f"{function_id}{FAILURE_SUFFIX}"
        if on_failure is not None:
            _check_id("function id of the on_failure handler", failure_id)
            if failure_id in self._functions:
                raise ValueError(
                    f"function id {failure_id!r} is declared twice in app {self.id!r}")
            if not callable(on_failure):
                raise TypeError(
                    f"function {function_id!r} on_failure must be a callable, not {on_failure!r}")
        triggers = _triggers(function_id, trigger)
        if retries is not None and (
            isinstance(retries, bool)
            or not isinstance(retries, int)
            or not 0 <= retries <= _MAX_RETRIES
        ):
            raise ValueError(
                f"function {function_id!r} retries has value {retries!r}. "
                f"Expected an int from 0 to {_MAX_RETRIES}."
            )
        _check_timeouts(function_id, timeouts)
        cancels = _cancel_on(function_id, cancel_on)
        flow = flow_spec(function_id, concurrency, throttle, rate_limit, debounce,
                         batch_events, priority, idempotency, singleton)
        spec = FunctionSpec(
            function_id, name or function_id, triggers, retries, timeouts, cancels, flow)

        def register(fn: F) -> F:
            if not callable(fn):
                raise TypeError(f"function {function_id!r} must decorate a callable, not {fn!r}")
            self._functions[function_id] = _Function(spec, fn, inspect.iscoroutinefunction(fn))
            _remember(fn, f"{self.id}-{function_id}")
            if on_failure is not None:
                # As the Inngest SDKs do it: failures of this function's runs, matched by id.
                expression = f"event.data.function_id == '{self.id}-{function_id}'"
                trigger = TriggerEvent(FUNCTION_FAILED, expression)
                failure = FunctionSpec(failure_id, f"{spec.name} (failure)", (trigger,), 0)
                self._functions[failure_id] = _Function(
                    failure, on_failure, inspect.iscoroutinefunction(on_failure))
                _remember(on_failure, f"{self.id}-{failure_id}")
            return fn

        return register

    def _specs(self) -> tuple[FunctionSpec, ...]:
        """The declared functions, in declaration order."""
        return tuple(f.spec for f in self._functions.values())

    def _lookup(self, function_slug: str, function_id: str) -> _Function | None:
        found = self._functions.get(function_slug)
        if found is None and function_id.startswith(f"{self.id}-"):
            # Global ids are "{app_id}-{slug}"; used when a server leaves the slug out.
            found = self._functions.get(function_id.removeprefix(f"{self.id}-"))
        return found


def _check_id(field: str, value: object) -> None:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise ValueError(
            f"{field} has value {value!r}. Use 1 to 128 lowercase letters, digits, "
            '"-", "_" and ".".'
        )


def _triggers(
    function_id: str, trigger: TriggerEvent | TriggerCron | Sequence[TriggerEvent | TriggerCron]
) -> tuple[TriggerEvent | TriggerCron, ...]:
    triggers = (trigger,) if isinstance(trigger, TriggerEvent | TriggerCron) else tuple(trigger)
    if not triggers:
        raise ValueError(f"function {function_id!r} trigger is empty. Give at least one trigger.")
    for t in triggers:
        if not isinstance(t, TriggerEvent | TriggerCron):
            raise TypeError(
                f"function {function_id!r} trigger has value {t!r}. "
                "Expected TriggerEvent or TriggerCron."
            )
    return triggers


def _check_timeouts(function_id: str, timeouts: Timeouts | None) -> None:
    if timeouts is None:
        return
    if not isinstance(timeouts, Timeouts):
        raise TypeError(f"function {function_id!r} timeouts must be a Timeouts, not {timeouts!r}")
    for field in ("start_s", "finish_s"):
        value = getattr(timeouts, field)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or value <= 0
        ):
            raise ValueError(
                f"function {function_id!r} timeouts.{field} has value {value!r}. "
                "Expected a positive number of seconds or None."
            )


def _cancel_on(
    function_id: str, cancel_on: CancelOn | Sequence[CancelOn] | None
) -> tuple[CancelOn, ...]:
    if cancel_on is None:
        return ()
    items = (cancel_on,) if isinstance(cancel_on, CancelOn) else cancel_on
    if isinstance(items, str | bytes) or not isinstance(items, Sequence):
        raise TypeError(
            f"function {function_id!r} cancel_on has value {cancel_on!r}. "
            "Expected a CancelOn or a list of them."
        )
    for c in items:
        if not isinstance(c, CancelOn):
            raise TypeError(
                f"function {function_id!r} cancel_on has an item {c!r}. Expected CancelOn.")
    if len(items) > _MAX_CANCEL_ON:
        raise ValueError(
            f"function {function_id!r} cancel_on has {len(items)} entries. "
            f"The limit is {_MAX_CANCEL_ON}."
        )
    return tuple(items)
