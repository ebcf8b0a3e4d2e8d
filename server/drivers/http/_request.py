"""The request an Inngest SDK app expects for one job: its URL, headers and body.

Events and memoised steps always travel inline (`use_api: false`), and `fn_id` / `qi_id` stay
out of `ctx`, which keeps the js SDK in its plain async mode (no checkpoint calls back).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from server import __version__, canonjson
from server.config import Mode, Settings
from server.drivers.http import signing
from server.drivers.http._jcs import canonical
from server.errors import InvalidArgument
from server.types import Job

# "Run from the top" in the SDKs' protocol; any other value is the step to run on its own.
DISCOVERY_STEP_ID = "step"
EXECUTION_VERSION = 2
# What Plait stores holds canonjson's rules; events and memos nest them a few levels down
# (an internal event's run event, an invoke's {"data": output}). Deeper is damaged data.
STORED_MAX_DEPTH = canonjson.MAX_DEPTH + 16


@dataclass(frozen=True, slots=True)
class SdkCall:
    url: str
    headers: dict[str, str]
    body: bytes


def step_url(function_url: str, step_id: str) -> str:
    """The function's URL with `stepId` set, every other query parameter kept."""
    parts = urlsplit(function_url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "stepId"]
    query.append(("stepId", step_id))
    return urlunsplit(parts._replace(query=urlencode(query)))


class JobDataError(ValueError):
    """The job's stored data cannot be sent (JSON stored before the rules of
    server/canonjson.py, or damaged): a fault of the job, not of the app, so sending it
    again cannot help. A ValueError, one of the drivers' DATA_ERRORS."""


def _stored(raw: bytes, field: str) -> Any:
    try:
        # Integers past 2**53 stored before the rules are sent as JSON.stringify would.
        return canonjson.loads(raw, field, max_depth=STORED_MAX_DEPTH, big_ints=True)
    except InvalidArgument as e:
        raise JobDataError(f"the job's {e.message}") from None


def _event(event_json: bytes) -> dict[str, Any]:
    event = _stored(event_json, "event")
    if not isinstance(event, dict):
        raise JobDataError("the job's event is not a JSON object")
    event.setdefault("data", {})
    event.setdefault("user", {})
    return event


def ordered_stack(stack: Sequence[str], steps: dict[str, bytes]) -> list[str]:
    """Memoised step ids in the order they were memoised; ids the stack misses go last."""
    ordered = [s for s in dict.fromkeys(stack) if s in steps]
    seen = set(ordered)
    return ordered + [s for s in steps if s not in seen]


def build_call(job: Job, function_url: str, stack: Sequence[str], settings: Settings) -> SdkCall:
    """The request for `job`; JobDataError (a ValueError) when its data cannot be sent."""
    step_id = job.target_step or DISCOVERY_STEP_ID
    event = _event(job.event_json)
    # A batched run's events (flow control's batchEvents) are the SDKs' `events`; `event` is
    # the first of them. Every other run has its one event.
    events = [_event(e) for e in job.events] if job.events else [event]
    order = ordered_stack(stack, job.steps)
    body = _body({
        "event": event,
        "events": events,
        "steps": {s: _stored(job.steps[s], f"step {s[:64]!r}") for s in order},
        "ctx": {
            "run_id": job.run_id,
            "attempt": job.attempt,
            "max_attempts": job.max_attempts,
            "disable_immediate_execution": False,
            "use_api": False,
            "stack": {"stack": order, "current": len(order)},
        },
        "version": EXECUTION_VERSION,
        "use_api": False,
    })
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"plait/{__version__}",
        "X-Inngest-Server-Kind": server_kind(settings),
        "X-Inngest-Req-Version": str(EXECUTION_VERSION),
        "X-Run-ID": job.run_id,
        "X-Request-ID": f"{job.job_id}/{job.lease_id}",
        "X-Inngest-Job-ID": job.job_id,
        "X-Inngest-Step-ID": step_id,
    }
    if job.traceparent:
        headers["traceparent"] = job.traceparent
        if job.tracestate:
            headers["tracestate"] = job.tracestate
    if settings.signing_key:
        headers["X-Inngest-Signature"] = signing.sign(body, settings.signing_key)
    return SdkCall(step_url(function_url, step_id), headers, body)


def _body(value: dict[str, Any]) -> bytes:
    try:
        return canonical(value)
    except (ValueError, TypeError, RecursionError) as e:  # a NaN or a lone surrogate stored
        raise JobDataError(f"the job's data has no JSON form: {type(e).__name__}: {e}") from None


def server_kind(settings: Settings) -> str:
    """What the SDKs call this server: "dev" for `plait dev`, "cloud" for `plait start`."""
    return "cloud" if settings.mode is Mode.PRODUCTION else "dev"
