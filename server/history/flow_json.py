"""A function's flow control as stored in its config JSON (`flow`); a config stored before
flow control has none, which reads as FlowControl()."""

from __future__ import annotations

from typing import Any

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


def flow_to_dict(flow: FlowControl) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if flow.concurrency:
        out["concurrency"] = [{"limit": c.limit, "key": c.key, "scope": c.scope.value}
                              for c in flow.concurrency]
    if (t := flow.throttle) is not None:
        out["throttle"] = {"limit": t.limit, "period_ms": t.period_ms, "burst": t.burst,
                           "key": t.key}
    if (r := flow.rate_limit) is not None:
        out["rate_limit"] = {"limit": r.limit, "period_ms": r.period_ms, "key": r.key}
    if (d := flow.debounce) is not None:
        out["debounce"] = {"period_ms": d.period_ms, "key": d.key, "timeout_ms": d.timeout_ms}
    if (b := flow.batch) is not None:
        out["batch"] = {"max_size": b.max_size, "timeout_ms": b.timeout_ms, "key": b.key,
                        "if": b.if_expression}
    if flow.priority_run:
        out["priority_run"] = flow.priority_run
    if flow.idempotency:
        out["idempotency"] = flow.idempotency
    if (s := flow.singleton) is not None:
        out["singleton"] = {"mode": s.mode.value, "key": s.key}
    return out


def flow_from_dict(raw: dict[str, Any] | None) -> FlowControl:
    if not raw:
        return FlowControl()
    t, r, d, b, s = (raw.get(k) for k in ("throttle", "rate_limit", "debounce", "batch",
                                           "singleton"))
    return FlowControl(
        concurrency=tuple(ConcurrencyLimit(int(c["limit"]), str(c.get("key", "")),
                                           ConcurrencyScope(c.get("scope", "fn")))
                          for c in raw.get("concurrency", ())),
        throttle=ThrottleConfig(int(t["limit"]), int(t["period_ms"]), int(t.get("burst", 1)),
                                str(t.get("key", ""))) if t else None,
        rate_limit=RateLimitConfig(int(r["limit"]), int(r["period_ms"]),
                                   str(r.get("key", ""))) if r else None,
        debounce=DebounceConfig(int(d["period_ms"]), str(d.get("key", "")),
                                int(d.get("timeout_ms", 0))) if d else None,
        batch=BatchConfig(int(b["max_size"]), int(b["timeout_ms"]), str(b.get("key", "")),
                          str(b.get("if", ""))) if b else None,
        priority_run=str(raw.get("priority_run", "")),
        idempotency=str(raw.get("idempotency", "")),
        singleton=SingletonConfig(SingletonMode(s["mode"]), str(s.get("key", "")))
        if s else None,
    )
