"""An Inngest SDK function's flow control as the register body has it (`concurrency`,
`throttle`, `rateLimit`, `debounce`, `batchEvents`, `priority`, `idempotency`, `singleton`),
read into FlowControl; InvalidArgument names the field in the SDK's words."""

from __future__ import annotations

from typing import Any

from server.durations import duration_ms
from server.errors import InvalidArgument
from server.types import (
    BatchConfig,
    ConcurrencyLimit,
    ConcurrencyScope,
    DebounceConfig,
    FlowControl,
    RateLimitConfig,
    SingletonConfig,
    SingletonMode,
    ThrottleConfig,
)

MAX_CONCURRENCY_ITEMS = 2


def _object(raw: dict[str, Any], key: str, at: str) -> dict[str, Any] | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidArgument(f"{at}.{key}", "must be an object")
    return value


def _int(raw: dict[str, Any], key: str, at: str, default: int | None = None) -> int:
    value = raw.get(key)
    if value is None and default is not None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{at}.{key}", f"{value!r:.64} is not an integer")
    return value


def _text(raw: dict[str, Any], key: str, at: str) -> str:
    value = raw.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidArgument(f"{at}.{key}", f"{value!r:.64} is not a string")
    return value


def _duration(raw: dict[str, Any], key: str, at: str, required: bool = True) -> int:
    value = raw.get(key)
    if (value is None or value == "") and not required:
        return 0
    ms = duration_ms(value) if isinstance(value, str) else None
    if not ms:
        raise InvalidArgument(f"{at}.{key}",
                              f"{value!r:.64} is not a positive duration such as '10s' or '1h'")
    return ms


def _concurrency(raw: Any, at: str) -> tuple[ConcurrencyLimit, ...]:
    """A number, an object, or a list of up to two objects (py always sends a list)."""
    if raw is None:
        return ()
    if isinstance(raw, int) and not isinstance(raw, bool):
        return (ConcurrencyLimit(raw),)
    items = [raw] if isinstance(raw, dict) else raw
    if not isinstance(items, list):
        raise InvalidArgument(at, "must be a number, an object or a list of objects")
    if len(items) > MAX_CONCURRENCY_ITEMS:
        raise InvalidArgument(at, f"{len(items)} limits, at most {MAX_CONCURRENCY_ITEMS}")
    out = []
    for k, item in enumerate(items):
        where = f"{at}[{k}]" if isinstance(raw, list) else at
        if not isinstance(item, dict):
            raise InvalidArgument(where, "must be an object with `limit`")
        scope = item.get("scope") or "fn"
        if scope not in ("fn", "env", "account"):
            raise InvalidArgument(f"{where}.scope", f"{scope!r:.64} is not fn, env or account")
        out.append(ConcurrencyLimit(_int(item, "limit", where), _text(item, "key", where),
                                    ConcurrencyScope(scope)))
    return tuple(out)


def flow_from_sdk(raw: dict[str, Any], at: str) -> FlowControl:
    """The function object's flow control; fields it leaves out (or null) are off."""
    throttle = rate_limit = debounce = batch = singleton = None
    if (t := _object(raw, "throttle", at)) is not None:
        where = f"{at}.throttle"
        # The SDKs leave `burst` out or send 1; Inngest reads 0 as 1.
        throttle = ThrottleConfig(_int(t, "limit", where), _duration(t, "period", where),
                                  _int(t, "burst", where, 1) or 1, _text(t, "key", where))
    if (r := _object(raw, "rateLimit", at)) is not None:
        where = f"{at}.rateLimit"
        rate_limit = RateLimitConfig(_int(r, "limit", where), _duration(r, "period", where),
                                     _text(r, "key", where))
    if (d := _object(raw, "debounce", at)) is not None:
        where = f"{at}.debounce"
        debounce = DebounceConfig(_duration(d, "period", where), _text(d, "key", where),
                                  _duration(d, "timeout", where, required=False))
    if (b := _object(raw, "batchEvents", at)) is not None:
        where = f"{at}.batchEvents"
        batch = BatchConfig(_int(b, "maxSize", where), _duration(b, "timeout", where),
                            _text(b, "key", where), _text(b, "if", where))
    priority = _object(raw, "priority", at)
    if (s := _object(raw, "singleton", at)) is not None:
        mode = s.get("mode")
        if mode not in ("skip", "cancel"):
            raise InvalidArgument(f"{at}.singleton.mode", f"{mode!r:.64} is not skip or cancel")
        singleton = SingletonConfig(SingletonMode(mode), _text(s, "key", f"{at}.singleton"))
    idempotency = _text(raw, "idempotency", at)
    if idempotency:
        # As the Inngest server: an idempotency key replaces the rate limit (it is one, of
        # 1 per 24 h per key), so a function sending both is limited by its key alone.
        rate_limit = None
    return FlowControl(
        concurrency=_concurrency(raw.get("concurrency"), f"{at}.concurrency"),
        throttle=throttle, rate_limit=rate_limit, debounce=debounce, batch=batch,
        priority_run=_text(priority, "run", f"{at}.priority") if priority else "",
        idempotency=idempotency, singleton=singleton,
    )
