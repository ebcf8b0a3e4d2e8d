"""The request an Inngest SDK app expects for one job: its URL, headers and body.

Events and memoised steps always travel inline (`use_api: false`), and `fn_id` / `qi_id` stay
out of `ctx`, which keeps the js SDK in its plain async mode (no checkpoint calls back).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from server import __version__
from server.config import Mode, Settings
from server.drivers.http import signing
from server.drivers.http._jcs import canonical
from server.types import Job

# "Run from the top" in the SDKs' protocol; any other value is the step to run on its own.
DISCOVERY_STEP_ID = "step"
EXECUTION_VERSION = 2


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


def _event(event_json: bytes) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(event_json)
    event.setdefault("data", {})
    event.setdefault("user", {})
    return event


def ordered_stack(stack: Sequence[str], steps: dict[str, bytes]) -> list[str]:
    """Memoised step ids in the order they were memoised; ids the stack misses go last."""
    ordered = [s for s in dict.fromkeys(stack) if s in steps]
    seen = set(ordered)
    return ordered + [s for s in steps if s not in seen]


def build_call(job: Job, function_url: str, stack: Sequence[str], settings: Settings) -> SdkCall:
    step_id = job.target_step or DISCOVERY_STEP_ID
    event = _event(job.event_json)
    order = ordered_stack(stack, job.steps)
    body = canonical({
        "event": event,
        "events": [event],
        "steps": {s: json.loads(job.steps[s]) for s in order},
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


def server_kind(settings: Settings) -> str:
    """What the SDKs call this server: "dev" for `plait dev`, "cloud" for `plait start`."""
    return "cloud" if settings.mode is Mode.PRODUCTION else "dev"
