"""A run's evaluated flow control: its keys (scope and value digest) and limits, computed once
when the run is created (server/runner/flow.py) and turned here into the arguments of
enqueue_runs.lua (creation controls) and the run hash's `flow` field (lease controls)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from server.keys import ShardKeys
from server.types import FunctionId, SingletonMode

IDEMPOTENCY_TTL_MS = 24 * 3600 * 1000
# Flow control's shared Lua helpers (concurrency slots, GCRA, `why`): the prelude of every
# script that leases, creates runs or takes jobs out of the leased set.
FLOW_PRELUDE = "server.queue:_flow"
# The reasons of `why`, as labels of the plait_runs_waiting gauge.
REASONS = ("concurrency", "throttle", "debounce", "batch")


@dataclass(frozen=True, slots=True)
class ConcurrencySlot:
    """At most `limit` leased jobs among runs with this key; `why` names the key's value."""

    key_id: str
    limit: int
    why: str


@dataclass(frozen=True, slots=True)
class ThrottleSlot:
    key_id: str
    limit: int
    period_ms: int
    burst: int


@dataclass(frozen=True, slots=True)
class RateLimitSlot:
    key_id: str
    limit: int
    period_ms: int
    why: str


@dataclass(frozen=True, slots=True)
class DebounceSlot:
    key_id: str
    period_ms: int
    timeout_ms: int


# A batch's events are closed into a run before they pass this many bytes (the next event opens
# a new batch), so a batch of any size always fits a worker's message and an SDK request: a
# batch is not refused for its maxSize.
MAX_BATCH_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class BatchSlot:
    """`key_id` "" with `max_size` 1: an event the batch's `if` refused, a batch of its own."""

    key_id: str
    max_size: int
    timeout_ms: int


@dataclass(frozen=True, slots=True)
class SingletonSlot:
    key_id: str
    mode: SingletonMode


@dataclass(frozen=True, slots=True)
class RunFlow:
    concurrency: tuple[ConcurrencySlot, ...] = ()
    throttle: ThrottleSlot | None = None
    rate_limit: RateLimitSlot | None = None
    idempotency: str = ""  # key id; "" when the function has none
    debounce: DebounceSlot | None = None
    batch: BatchSlot | None = None
    singleton: SingletonSlot | None = None
    priority_ms: int = 0  # ahead of others (+) or behind (-), within ±600 s

    def create_arg(self, sk: ShardKeys, function_id: FunctionId | str) -> str:
        """enqueue_runs.lua's `create` JSON ('' when no creation control applies)."""
        spec: dict[str, list[object]] = {}
        if self.idempotency:
            spec["i"] = [sk.idempotency(self.idempotency), IDEMPOTENCY_TTL_MS]
        if self.rate_limit is not None:
            r = self.rate_limit
            spec["r"] = [sk.rate_limit(r.key_id), r.limit, r.period_ms, r.why]
        if self.singleton is not None:
            spec["s"] = [sk.singleton(self.singleton.key_id), self.singleton.mode.value]
        if self.debounce is not None:
            d = self.debounce
            spec["d"] = [sk.debounce(d.key_id), d.period_ms, d.timeout_ms,
                         sk.waiting(function_id, "debounce")]
        elif self.batch is not None:
            b = self.batch
            spec["b"] = [sk.batch(b.key_id) if b.key_id else "", b.max_size, b.timeout_ms,
                         sk.waiting(function_id, "batch"), MAX_BATCH_BYTES]
        return json.dumps(spec, separators=(",", ":")) if spec else ""

    def run_arg(self, sk: ShardKeys, function_id: FunctionId | str) -> str:
        """The run hash's `flow` JSON read by lease.lua ('' when nothing applies at lease:
        such runs cost the lease script one field read)."""
        spec: dict[str, object] = {}
        if self.concurrency:
            spec["c"] = [[sk.concurrency_held(c.key_id), sk.concurrency_waiting(c.key_id),
                          c.limit, c.why] for c in self.concurrency]
            spec["wc"] = sk.waiting(function_id, "concurrency")
        if self.throttle is not None:
            t = self.throttle
            spec["t"] = [sk.throttle(t.key_id), t.limit, t.period_ms, t.burst]
            spec["wt"] = sk.waiting(function_id, "throttle")
        if spec or self.debounce is not None or self.batch is not None:
            # Debounced and batched runs too: their lease clears `why` and reads `events`.
            return json.dumps(spec, separators=(",", ":"))
        return ""


NO_FLOW = RunFlow()


def batch_events(raw: object) -> tuple[bytes, ...]:
    """A batched run's `events` (a JSON array of event objects) as one JSON text per event;
    () for '' (every other run)."""
    if not raw:
        return ()
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    return tuple(json.dumps(e, separators=(",", ":")).encode() for e in json.loads(text))

__all__ = ["FLOW_PRELUDE", "NO_FLOW", "REASONS", "BatchSlot", "ConcurrencySlot",
           "DebounceSlot", "RateLimitSlot", "RunFlow", "SingletonSlot", "ThrottleSlot",
           "batch_events"]
