"""Flow control evaluated for a new run: the function's CEL keys and priority over the run's
event, compiled once per function configuration, hashed into key ids (server/queue/flow.py).
Every run creation (events, cron ticks, invokes, replays) goes through `new_run`, which also
places the run in its function's flow shard."""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import structlog
from ulid import ULID

from server.keys import shard_of
from server.queue import NewRun
from server.queue.flow import (
    NO_FLOW,
    BatchSlot,
    ConcurrencySlot,
    DebounceSlot,
    RateLimitSlot,
    RunFlow,
    SingletonSlot,
    ThrottleSlot,
)
from server.runner.expressions import Expression, compile_expression, matches, within_budget
from server.types import ConcurrencyScope, EventId, FlowControl, FunctionConfig, RunId

log = structlog.get_logger(__name__)

MAX_PRIORITY_S = 600
# A key's value in a `why` sentence is cut to this many characters.
MAX_WHY_VALUE_CHARS = 200
_SCOPE_PREFIX = {ConcurrencyScope.ENV: "env", ConcurrencyScope.ACCOUNT: "acct"}


@dataclass(frozen=True, slots=True)
class CompiledFlow:
    """A function's flow-control expressions, compiled (None: no expression)."""

    concurrency: tuple[Expression | None, ...]
    throttle: Expression | None
    rate_limit: Expression | None
    debounce: Expression | None
    batch_key: Expression | None
    batch_if: Expression | None
    priority: Expression | None
    idempotency: Expression | None
    singleton: Expression | None


def _compile(field: str, source: str) -> Expression | None:
    return compile_expression(field, source) if source else None


@lru_cache(maxsize=4096)
def compile_flow(flow: FlowControl) -> CompiledFlow:
    """Compiles once per configuration (FlowControl is frozen and hashable), so a function
    version's expressions are compiled on its first run, never per event."""
    return CompiledFlow(
        concurrency=tuple(_compile(f"concurrency[{i}].key", c.key)
                          for i, c in enumerate(flow.concurrency)),
        throttle=_compile("throttle.key", flow.throttle.key) if flow.throttle else None,
        rate_limit=_compile("rate_limit.key", flow.rate_limit.key) if flow.rate_limit else None,
        debounce=_compile("debounce.key", flow.debounce.key) if flow.debounce else None,
        batch_key=_compile("batch_events.key", flow.batch.key) if flow.batch else None,
        batch_if=_compile("batch_events.if", flow.batch.if_expression) if flow.batch else None,
        priority=_compile("priority.run", flow.priority_run),
        idempotency=_compile("idempotency", flow.idempotency),
        singleton=_compile("singleton.key", flow.singleton.key) if flow.singleton else None,
    )


_MISSING = object()


def _evaluate(expression: Expression | None, variables: dict[str, Any]) -> Any:
    """The expression's value; _MISSING when it fails (a missing field) or is over budget."""
    if expression is None:
        return _MISSING
    if not within_budget(expression, variables):
        log.warning("flow.key_over_budget", expression=expression.source[:200])
        return _MISSING
    try:
        return expression.program.execute(variables)
    except Exception:
        return _MISSING


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def _digest(value: Any) -> str:
    """A key's value as a fixed-size Redis key part: "" (no key, or it failed) is "-"."""
    if value is _MISSING:
        return "-"
    encoded = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(encoded.encode()).hexdigest()[:32]


def _concurrency(fn: FunctionConfig, compiled: CompiledFlow,
                 variables: dict[str, Any]) -> tuple[ConcurrencySlot, ...]:
    slots = []
    for i, (limit, expression) in enumerate(zip(fn.flow.concurrency, compiled.concurrency,
                                                strict=True)):
        value = _evaluate(expression, variables)
        digest = _digest(value)
        prefix = _SCOPE_PREFIX.get(limit.scope)
        # fn scope: per function and limit; env / account scope: shared by every function
        # whose key has that value.
        key_id = f"{prefix}:{digest}" if prefix else f"fn:{fn.id}:{i}:{digest}"
        why = "concurrency limit"
        if expression is not None:
            shown = "" if value is _MISSING else _text(value)[:MAX_WHY_VALUE_CHARS]
            why = f"concurrency limit on key {json.dumps(shown)}"
        slots.append(ConcurrencySlot(key_id, limit.limit, why))
    return tuple(slots)


def _priority_ms(compiled: CompiledFlow, variables: dict[str, Any]) -> int:
    value = _evaluate(compiled.priority, variables)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return int(max(-MAX_PRIORITY_S, min(MAX_PRIORITY_S, value)) * 1000)


def evaluate(fn: FunctionConfig, event: dict[str, Any]) -> RunFlow:
    """The flow control of a run of `fn` for `event` (the run's event object). A key that
    fails to evaluate (a missing field) counts as the empty key, except an idempotency key,
    which then does not apply: an error never drops an event."""
    flow = fn.flow
    if not flow.configured:
        return NO_FLOW
    compiled = compile_flow(flow)
    variables = {"event": event}

    def key(expression: Expression | None) -> str:
        return f"{fn.id}:{_digest(_evaluate(expression, variables))}"

    throttle = rate = debounce = batch = singleton = None
    if flow.throttle is not None:
        t = flow.throttle
        throttle = ThrottleSlot(key(compiled.throttle), t.limit, t.period_ms, t.burst)
    if flow.rate_limit is not None:
        r = flow.rate_limit
        rate = RateLimitSlot(key(compiled.rate_limit), r.limit, r.period_ms,
                             f"rate limit of {r.limit} per {r.period_ms} ms reached")
    if flow.debounce is not None:
        debounce = DebounceSlot(key(compiled.debounce), flow.debounce.period_ms,
                                flow.debounce.timeout_ms)
    if flow.batch is not None:
        b = flow.batch
        if compiled.batch_if is None or matches(compiled.batch_if, variables):
            batch = BatchSlot(key(compiled.batch_key), b.max_size, b.timeout_ms)
        else:
            batch = BatchSlot("", 1, 0)
    if flow.singleton is not None:
        singleton = SingletonSlot(key(compiled.singleton), flow.singleton.mode)
    idempotency = ""
    if compiled.idempotency is not None:
        value = _evaluate(compiled.idempotency, variables)
        idempotency = "" if value is _MISSING else f"{fn.id}:{_digest(value)}"
    return RunFlow(
        concurrency=_concurrency(fn, compiled, variables), throttle=throttle, rate_limit=rate,
        idempotency=idempotency, debounce=debounce, batch=batch, singleton=singleton,
        priority_ms=_priority_ms(compiled, variables))


def flow_shard(fn: FunctionConfig, shards: int) -> int | None:
    """The one shard all runs of a flow-controlled function live in (their keys must share a
    hash tag); None when the function has no flow control (runs spread by their id). A
    function with an env- or account-scoped concurrency limit shares keys with other
    functions: shard 0."""
    if shards <= 1 or not fn.flow.configured:
        return None
    if any(c.scope is not ConcurrencyScope.FN for c in fn.flow.concurrency):
        return 0
    return zlib.crc32(fn.id.encode()) % shards


def _in_shard(make: Callable[[int], RunId], shard: int | None, shards: int) -> RunId:
    run_id = make(0)
    n = 0
    while shard is not None and shard_of(run_id, shards) != shard:
        n += 1
        run_id = make(n)
    return run_id


def run_id_for(event_id: str, function_id: str, shard: int | None = None,
               shards: int = 1) -> RunId:
    """A ULID with the event's time and randomness hashed from (event, function): the same
    run for the same event, however often it is read. With `shard`, the first of the ids
    hashed from (event, function, n) for n = 0, 1, ... that lives in that shard (n = 0 is the
    id without a shard, so functions without flow control keep their ids)."""
    ts = ULID.from_str(event_id).milliseconds.to_bytes(6, "big")

    def make(n: int) -> RunId:
        seed = f"{event_id}/{function_id}" + (f"/{n}" if n else "")
        return RunId(str(ULID.from_bytes(ts + hashlib.sha256(seed.encode()).digest()[:10])))

    return _in_shard(make, shard, shards)


def fresh_run_id(fn: FunctionConfig, shards: int) -> RunId:
    """A new random run id (a replay) in the function's flow shard."""
    return _in_shard(lambda _: RunId(str(ULID())), flow_shard(fn, shards), shards)


def new_run(fn: FunctionConfig, event_id: EventId | str, event_json: bytes, shards: int,
            event: dict[str, Any] | None = None, run_id: RunId | None = None) -> NewRun:
    """A run of `fn` for an event, with its flow control evaluated and its id derived from
    (event, function) in the function's flow shard (or `run_id`, already placed)."""
    if run_id is None:
        run_id = run_id_for(event_id, fn.id, flow_shard(fn, shards), shards)
    if not fn.flow.configured:
        return NewRun.of(fn, run_id, event_id, event_json)
    if event is None:
        event = json.loads(event_json)
    return NewRun.of(fn, run_id, event_id, event_json, evaluate(fn, event))
