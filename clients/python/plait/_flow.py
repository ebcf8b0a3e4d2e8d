"""Flow control a function declares (`@app.function(concurrency=…, throttle=…)`): the same
controls as the Inngest SDKs'. Types are checked here; the server checks ranges and CEL keys
at registration and refuses the app naming the field."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

Period = float | timedelta


def _period(value: object, what: str) -> None:
    from plait._messages import positive_ms  # _messages holds FlowSpec: imported late

    positive_ms(value, what)


def _count(owner: str, field: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner} {field} has value {value!r}. Expected an int of at least 1.")


def _cel(owner: str, field: str, value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{owner} {field} has value {value!r}. Expected a CEL expression string.")


@dataclass(frozen=True, slots=True)
class Concurrency:
    """At most `limit` steps of runs sharing a key run at once (a sleeping or waiting run holds
    no slot). `key`: CEL over `event` ("" = one limit); `scope` "env" or "account" shares the
    key's limit with every function that names it (a key is then required)."""

    limit: int
    key: str = ""
    scope: Literal["fn", "env", "account"] = "fn"

    def __post_init__(self) -> None:
        _count("Concurrency", "limit", self.limit)
        _cel("Concurrency", "key", self.key)
        if self.scope not in ("fn", "env", "account"):
            raise ValueError(
                f"Concurrency scope has value {self.scope!r}. Expected 'fn', 'env' or 'account'.")


@dataclass(frozen=True, slots=True)
class Throttle:
    """Starts at most `limit` runs per `period` (seconds or a timedelta) per key, `burst` at
    once; runs past it wait, in order (none is dropped)."""

    limit: int
    period: Period
    burst: int = 1
    key: str = ""

    def __post_init__(self) -> None:
        _count("Throttle", "limit", self.limit)
        _period(self.period, "Throttle period")
        _count("Throttle", "burst", self.burst)
        _cel("Throttle", "key", self.key)


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most `limit` runs per `period` per key; events past it start nothing (the run is
    recorded as skipped)."""

    limit: int
    period: Period
    key: str = ""

    def __post_init__(self) -> None:
        _count("RateLimit", "limit", self.limit)
        _period(self.period, "RateLimit period")
        _cel("RateLimit", "key", self.key)


@dataclass(frozen=True, slots=True)
class Debounce:
    """One run per key, `period` after the last event of a burst, with that event; `timeout`
    caps the delay from the first event (None: no cap)."""

    period: Period
    key: str = ""
    timeout: Period | None = None

    def __post_init__(self) -> None:
        _period(self.period, "Debounce period")
        _cel("Debounce", "key", self.key)
        if self.timeout is not None:
            _period(self.timeout, "Debounce timeout")


@dataclass(frozen=True, slots=True)
class Batch:
    """One run for up to `max_size` events per key (`ctx.events`), started when full or
    `timeout` after the first; events `if_exp` rejects run on their own."""

    max_size: int
    timeout: Period
    key: str = ""
    if_exp: str = ""

    def __post_init__(self) -> None:
        _count("Batch", "max_size", self.max_size)
        _period(self.timeout, "Batch timeout")
        _cel("Batch", "key", self.key)
        _cel("Batch", "if_exp", self.if_exp)


@dataclass(frozen=True, slots=True)
class Singleton:
    """At most one active run per key: `mode` "skip" starts nothing while one is active,
    "cancel" cancels the active run and starts the new one."""

    mode: Literal["skip", "cancel"]
    key: str = ""

    def __post_init__(self) -> None:
        if self.mode not in ("skip", "cancel"):
            raise ValueError(
                f"Singleton mode has value {self.mode!r}. Expected 'skip' or 'cancel'.")
        _cel("Singleton", "key", self.key)


@dataclass(frozen=True, slots=True)
class FlowSpec:
    """A function's flow control as declared."""

    concurrency: tuple[Concurrency, ...] = ()
    throttle: Throttle | None = None
    rate_limit: RateLimit | None = None
    debounce: Debounce | None = None
    batch_events: Batch | None = None
    priority: str = ""
    idempotency: str = ""
    singleton: Singleton | None = None


def flow_spec(
    function_id: str,
    concurrency: int | Concurrency | Sequence[Concurrency] | None,
    throttle: Throttle | None, rate_limit: RateLimit | None, debounce: Debounce | None,
    batch_events: Batch | None, priority: str | None, idempotency: str | None,
    singleton: Singleton | None,
) -> FlowSpec:
    """The decorator's flow control arguments, type-checked; TypeError names the argument."""
    if concurrency is None:
        limits: tuple[Concurrency, ...] = ()
    elif isinstance(concurrency, int) and not isinstance(concurrency, bool):
        limits = (Concurrency(concurrency),)
    elif isinstance(concurrency, Concurrency):
        limits = (concurrency,)
    elif (isinstance(concurrency, Sequence) and not isinstance(concurrency, str | bytes)
          and all(isinstance(c, Concurrency) for c in concurrency)):
        limits = tuple(concurrency)
    else:
        raise TypeError(f"function {function_id!r} concurrency has value {concurrency!r}. "
                        "Expected an int, a Concurrency or a list of at most two.")
    for name, value, kind in (("throttle", throttle, Throttle),
                              ("rate_limit", rate_limit, RateLimit),
                              ("debounce", debounce, Debounce),
                              ("batch_events", batch_events, Batch),
                              ("singleton", singleton, Singleton)):
        if value is not None and not isinstance(value, kind):
            raise TypeError(f"function {function_id!r} {name} has value {value!r}. "
                            f"Expected a {kind.__name__} or None.")
    for name, text in (("priority", priority), ("idempotency", idempotency)):
        if text is not None and not isinstance(text, str):
            raise TypeError(f"function {function_id!r} {name} has value {text!r}. "
                            "Expected a CEL expression string or None.")
    return FlowSpec(limits, throttle, rate_limit, debounce, batch_events, priority or "",
                    idempotency or "", singleton)
