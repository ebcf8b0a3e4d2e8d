"""Flow control configuration checked at registration, the same for both transports: ranges,
CEL keys compiled under the cost budget, and the combinations Inngest refuses."""

from __future__ import annotations

from server.errors import InvalidArgument
from server.runner.expressions import compile_expression
from server.types import ConcurrencyScope, FlowControl, FunctionConfig, SingletonMode

MAX_CONCURRENCY_LIMITS = 2  # Inngest's MaxConcurrencyLimits
MAX_LIMIT = 100_000
SECOND_MS = 1000
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
MAX_PERIOD_MS = 7 * DAY_MS
# A rate limit counts over at most a day, as Inngest's (idempotency is one per 24 h).
MAX_RATE_LIMIT_PERIOD_MS = DAY_MS
MAX_BATCH_SIZE = 1000
MAX_BATCH_TIMEOUT_MS = HOUR_MS

# Field names in errors are those of the transport: plait.v1's by default; an Inngest SDK's
# register body names them in its own words.
SDK_NAMES = {"rate_limit": "rateLimit", "batch_events": "batchEvents", "max_size": "maxSize",
             "period_ms": "period", "timeout_ms": "timeout", "if_expression": "if",
             "priority_run": "priority.run", "cancel_on": "cancel"}


class _Names:
    def __init__(self, at: str, names: dict[str, str]) -> None:
        self._at = at
        self._names = names

    def __call__(self, path: str) -> str:
        parts = (self._names.get(p, p) for p in path.split("."))
        return ".".join((self._at, *parts))


def _limit(value: int, field: str) -> None:
    if not 1 <= value <= MAX_LIMIT:
        raise InvalidArgument(field, f"{value} is not in 1..{MAX_LIMIT}")


def _period(value: int, field: str, low: int, high: int) -> None:
    if not low <= value <= high:
        raise InvalidArgument(field, f"{_human(value)} is not in {_human(low)}..{_human(high)}")


def _human(ms: int) -> str:
    for unit, size in (("d", DAY_MS), ("h", HOUR_MS), ("m", 60_000), ("s", SECOND_MS)):
        if ms >= size and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def _key(source: str, field: str) -> None:
    if source:
        compile_expression(field, source)


def validate_flow(fn: FunctionConfig, at: str, names: dict[str, str] | None = None) -> None:
    """InvalidArgument naming the first bad field under `at` (e.g.
    `functions[0].concurrency[1].scope`), in plait.v1's words or those of `names`."""
    flow = fn.flow
    if not flow.configured:
        return
    f = _Names(at, names or {})
    _concurrency(flow, f)
    if (t := flow.throttle) is not None:
        _limit(t.limit, f("throttle.limit"))
        _period(t.period_ms, f("throttle.period_ms"), SECOND_MS, MAX_PERIOD_MS)
        if not 1 <= t.burst <= MAX_LIMIT:
            raise InvalidArgument(f("throttle.burst"), f"{t.burst} is not in 1..{MAX_LIMIT}")
        _key(t.key, f("throttle.key"))
    if (r := flow.rate_limit) is not None:
        _limit(r.limit, f("rate_limit.limit"))
        _period(r.period_ms, f("rate_limit.period_ms"), SECOND_MS, MAX_RATE_LIMIT_PERIOD_MS)
        _key(r.key, f("rate_limit.key"))
    if (d := flow.debounce) is not None:
        _period(d.period_ms, f("debounce.period_ms"), SECOND_MS, MAX_PERIOD_MS)
        if d.timeout_ms:
            _period(d.timeout_ms, f("debounce.timeout_ms"), d.period_ms, MAX_PERIOD_MS)
        _key(d.key, f("debounce.key"))
    if flow.batch is not None:
        _batch(fn, f)
    _key(flow.priority_run, f("priority_run"))
    _key(flow.idempotency, f("idempotency"))
    if (s := flow.singleton) is not None:
        if not isinstance(s.mode, SingletonMode):
            raise InvalidArgument(f("singleton.mode"), f"{s.mode!r} is not skip or cancel")
        _key(s.key, f("singleton.key"))


def _concurrency(flow: FlowControl, f: _Names) -> None:
    if len(flow.concurrency) > MAX_CONCURRENCY_LIMITS:
        raise InvalidArgument(f("concurrency"),
                              f"{len(flow.concurrency)} limits, at most "
                              f"{MAX_CONCURRENCY_LIMITS}")
    for k, c in enumerate(flow.concurrency):
        where = f"concurrency[{k}]"
        _limit(c.limit, f(f"{where}.limit"))
        if not isinstance(c.scope, ConcurrencyScope):
            raise InvalidArgument(f(f"{where}.scope"), f"{c.scope!r} is not fn, env or account")
        if c.scope is not ConcurrencyScope.FN and not c.key:
            # As Inngest: an env/account limit without a key would cap every function at once.
            raise InvalidArgument(f(f"{where}.key"), f"is required for scope {c.scope.value!r}")
        _key(c.key, f(f"{where}.key"))


def _batch(fn: FunctionConfig, f: _Names) -> None:
    b = fn.flow.batch
    assert b is not None
    if not 1 <= b.max_size <= MAX_BATCH_SIZE:
        raise InvalidArgument(f("batch_events.max_size"),
                              f"{b.max_size} is not in 1..{MAX_BATCH_SIZE}")
    _period(b.timeout_ms, f("batch_events.timeout_ms"), SECOND_MS, MAX_BATCH_TIMEOUT_MS)
    _key(b.key, f("batch_events.key"))
    _key(b.if_expression, f("batch_events.if_expression"))
    # Inngest refuses these together: a batch run has many events, so neither a cancel
    # match, a debounce nor a per-event priority has one event to apply to.
    if fn.cancel_on:
        raise InvalidArgument(f("batch_events"), "batching and cancel_on cannot be used together")
    if fn.flow.debounce is not None:
        raise InvalidArgument(f("batch_events"), "batching and debounce cannot be used together")
    if fn.flow.priority_run:
        raise InvalidArgument(f("batch_events"), "batching and priority cannot be used together")
