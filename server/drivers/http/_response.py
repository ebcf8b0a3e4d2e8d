"""An Inngest SDK app's answer to one request, as one opcode of the shared model.

200 is the function's return value, 206 a list of ops (a step ran, failed, was planned, a
sleep…), 201 a keepalive stream wrapping one of those, anything else an error whose
`X-Inngest-No-Retry` and `Retry-After` headers decide the retry.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from server import canonjson
from server.canonjson import NOT_JSON, canonical
from server.durations import duration_ms
from server.errors import InvalidArgument
from server.types import (
    ErrorInfo,
    InvokeFunction,
    Job,
    Opcode,
    RunCompleted,
    RunFailed,
    Sleep,
    StepCompleted,
    StepFailed,
    StepId,
    StepsPlanned,
    WaitForEvent,
)

MAX_STEP_ID_BYTES = 512
MAX_SLEEP_MS = 366 * 24 * 3600 * 1000
MAX_RETRY_AFTER_MS = 24 * 3600 * 1000


class _Unsupported(Exception):
    """The SDK sent something Plait does not run (yet); the run fails saying what."""


def _now_ms() -> int:
    return int(time.time() * 1000)


def _text(body: bytes, limit: int = 300) -> str:
    text = body.decode(errors="replace").strip()
    return text if len(text) <= limit else text[:limit] + "…"


def _time_ms(text: str) -> int | None:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        try:
            moment = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def retry_after_ms(value: str | None, now_ms: int) -> int:
    """`Retry-After` as the SDKs send it: seconds (js) or an ISO / HTTP date (py)."""
    if not value:
        return 0
    value = value.strip()
    if len(value) <= 7 and value.isdigit():
        delay = int(value) * 1000
    else:
        at = _time_ms(value)
        delay = 0 if at is None else at - now_ms
    return max(0, min(delay, MAX_RETRY_AFTER_MS))


def sleep_until_ms(op: dict[str, Any], now_ms: int) -> int:
    """A Sleep op's wake-up time: `name` (or `opts.duration`) is an ISO time or a duration."""
    opts = op.get("opts") if isinstance(op.get("opts"), dict) else {}
    raw = op.get("name") if isinstance(op.get("name"), str) and op.get("name") else None
    if raw is None and isinstance(opts, dict):
        raw = opts.get("duration")
    if not isinstance(raw, str) or not raw:
        raise _Unsupported("a Sleep op without a time or duration in `name`")
    if len(raw) >= 10:
        at = _time_ms(raw)
        if at is not None:
            return min(at, now_ms + MAX_SLEEP_MS)
    delay = duration_ms(raw)
    if delay is None:
        raise _Unsupported(f"a Sleep op whose `name` {raw!r} is neither a time nor a duration")
    return now_ms + min(delay, MAX_SLEEP_MS)


def _error(raw: Any, fallback: str) -> ErrorInfo:
    if isinstance(raw, dict):
        message = raw.get("message")
        if not isinstance(message, str):
            error = raw.get("error")
            message = error if isinstance(error, str) else fallback
        name = raw.get("name")
        stack = raw.get("stack")
        return ErrorInfo(name if isinstance(name, str) and name else "Error", message,
                         stack if isinstance(stack, str) else "")
    if isinstance(raw, str) and raw:
        return ErrorInfo("Error", raw)
    return ErrorInfo("Error", fallback)


def _step_id(op: dict[str, Any], at: str) -> StepId:
    step_id = op.get("id")
    if not isinstance(step_id, str) or not 0 < len(step_id.encode()) <= MAX_STEP_ID_BYTES:
        raise _Unsupported(f"{at}.id must be a string of 1..{MAX_STEP_ID_BYTES} bytes")
    return StepId(step_id)


def _name(op: dict[str, Any], step_id: str) -> str:
    for key in ("displayName", "name"):
        value = op.get(key)
        if isinstance(value, str) and value:
            return value
    return step_id


def _json(value: Any) -> bytes:
    # NaN stays NaN here (from a float the SDK sent): the executor's check refuses it by name.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _loads(body: bytes, field: str, extra_depth: int = 0) -> Any:
    """An SDK's JSON under canonjson's rules; `extra_depth` for the ops list and op object
    (or the 201 wrapper) around an output that may itself nest MAX_DEPTH deep. Integers past
    2**53 pass here (the js SDK's op metadata has nanosecond times): the executor holds the
    op's data to the rule, naming it."""
    return canonjson.loads(body, field, max_depth=canonjson.MAX_DEPTH + extra_depth,
                           big_ints=True)


def _one_op(op: dict[str, Any], job: Job, headers: Mapping[str, str], now_ms: int) -> Opcode:
    kind = op.get("op")
    if kind in ("StepRun", "Step"):
        step_id = _step_id(op, "ops[0]")
        return StepCompleted(step_id, _name(op, step_id), _json(op.get("data")))
    if kind in ("StepError", "StepFailed"):
        step_id = _step_id(op, "ops[0]")
        final = kind == "StepFailed" or _no_retry(headers)
        return StepFailed(step_id, _name(op, step_id),
                          _error(op.get("error"), f"step {_name(op, step_id)} failed"),
                          non_retriable=final,
                          retry_after_ms=retry_after_ms(headers.get("retry-after"), now_ms))
    if kind == "Sleep":
        step_id = _step_id(op, "ops[0]")
        return Sleep(step_id, _name(op, step_id), sleep_until_ms(op, now_ms))
    if kind == "WaitForEvent":
        return _wait_for_event(op, now_ms)
    if kind == "InvokeFunction":
        return _invoke(op, now_ms)
    if kind == "RunComplete":
        return RunCompleted(_json(op.get("data")))
    raise _Unsupported(f"the {kind!r} op")


def _wait_for_event(op: dict[str, Any], now_ms: int, at: str = "ops[0]") -> WaitForEvent:
    """`name` (or `opts.event`) is the awaited event, `opts.timeout` a duration or a time,
    `opts.if` CEL over `event` and `async`; an empty timeout expires at once (as Inngest)."""
    step_id = _step_id(op, at)
    opts = op.get("opts") if isinstance(op.get("opts"), dict) else {}
    assert isinstance(opts, dict)
    event = opts.get("event") or op.get("name")
    if not isinstance(event, str) or not event:
        raise _Unsupported("a WaitForEvent op without an event name")
    until_ms = _timeout_until(opts.get("timeout"), "WaitForEvent", now_ms) or now_ms
    expression = opts.get("if")
    display = op.get("displayName")
    name = display if isinstance(display, str) and display else step_id
    return WaitForEvent(step_id, name, event,
                        expression if isinstance(expression, str) else "", until_ms)


def _timeout_until(raw: Any, kind: str, now_ms: int) -> int:
    """An op's `opts.timeout` (a duration or a time) as Unix ms; 0 when there is none."""
    if not isinstance(raw, str) or not raw:
        return 0
    at = _time_ms(raw) if len(raw) >= 10 else None
    delay = duration_ms(raw)
    if at is None and delay is None:
        raise _Unsupported(f"a {kind} timeout {raw!r}")
    if at is not None:
        return min(at, now_ms + MAX_SLEEP_MS)
    return now_ms + min(delay or 0, MAX_SLEEP_MS)


def _invoke(op: dict[str, Any], now_ms: int, at: str = "ops[0]") -> InvokeFunction:
    """`opts.function_id` is the fully qualified id, `opts.payload.data` the child's data,
    `opts.timeout` optional."""
    step_id = _step_id(op, at)
    opts = op.get("opts") if isinstance(op.get("opts"), dict) else {}
    assert isinstance(opts, dict)
    function_id = opts.get("function_id")
    if not isinstance(function_id, str) or not function_id:
        raise _Unsupported("an InvokeFunction op without opts.function_id")
    payload = opts.get("payload") if isinstance(opts.get("payload"), dict) else {}
    assert isinstance(payload, dict)
    data = payload.get("data")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise _Unsupported("an InvokeFunction op whose opts.payload.data is not an object")
    return InvokeFunction(step_id, _name(op, step_id), function_id, _json(data),
                          _timeout_until(opts.get("timeout"), "InvokeFunction", now_ms))


def _ops(parsed: Any, job: Job, headers: Mapping[str, str], now_ms: int) -> Opcode:
    ops = [parsed] if isinstance(parsed, dict) else parsed
    if not isinstance(ops, list) or not all(isinstance(o, dict) for o in ops):
        raise _Unsupported("a 206 body that is not a list of op objects")
    if not ops:
        return RunFailed(ErrorInfo("EmptyResponse", "the SDK answered 206 with no ops"))
    if len(ops) > 1 or ops[0].get("op") == "StepPlanned":
        return _group(ops, now_ms)
    return _one_op(ops[0], job, headers, now_ms)


def _group(ops: list[dict[str, Any]], now_ms: int) -> StepsPlanned:
    """A parallel group (`Promise.all`, `group.parallel`): steps to run (`StepPlanned`) and
    sleeps, waits and invokes, which the server starts at once (StepsPlanned.parked). Any op
    with `opts.parallelMode: "race"` makes the group a race. A planned job answering a plan
    is refused by the executor's check (server/executor/opcodes.py), as on gRPC."""
    ids: list[StepId] = []
    parked: dict[StepId, Sleep | WaitForEvent | InvokeFunction] = {}
    race = False
    for i, op in enumerate(ops):
        kind = op.get("op")
        opts = op.get("opts")
        race = race or (isinstance(opts, dict) and opts.get("parallelMode") == "race")
        if kind == "StepPlanned":
            ids.append(_step_id(op, f"ops[{i}]"))
        elif kind == "Sleep":
            step_id = _step_id(op, f"ops[{i}]")
            parked[step_id] = Sleep(step_id, _name(op, step_id), sleep_until_ms(op, now_ms))
        elif kind == "WaitForEvent":
            wait = _wait_for_event(op, now_ms, f"ops[{i}]")
            parked[wait.step_id] = wait
        elif kind == "InvokeFunction":
            invoke = _invoke(op, now_ms, f"ops[{i}]")
            parked[invoke.step_id] = invoke
        else:
            raise _Unsupported(f"the {kind!r} op in a parallel group")
    return StepsPlanned(tuple(i for i in dict.fromkeys(ids) if i not in parked),
                        tuple(parked.values()), race)


def _no_retry(headers: Mapping[str, str]) -> bool:
    return headers.get("x-inngest-no-retry", "").strip().lower() == "true"


def _failure(status: int, headers: Mapping[str, str], body: bytes, now_ms: int) -> RunFailed:
    try:
        parsed: Any = _loads(body, "error body") if body.strip() else None
    except InvalidArgument:
        parsed = _text(body)
    error = _error(parsed, f"the SDK answered HTTP {status}")
    return RunFailed(error, non_retriable=_no_retry(headers),
                     retry_after_ms=retry_after_ms(headers.get("retry-after"), now_ms))


def _unwrap_stream(body: bytes) -> tuple[int, dict[str, str], bytes]:
    """A 201 answer is keepalive spaces, then {"status", "headers", "body"} of the real one."""
    wrapped = _loads(body.strip(), "201 body", extra_depth=2)
    if not isinstance(wrapped, dict) or not isinstance(wrapped.get("status"), int):
        raise ValueError("not a wrapped response")
    inner = wrapped.get("body", "")
    raw = inner.encode() if isinstance(inner, str) else _json(inner)
    headers = wrapped.get("headers")
    if not isinstance(headers, dict):
        headers = {}
    return wrapped["status"], {str(k).lower(): str(v) for k, v in headers.items()}, raw


def opcode_from_response(
    status: int, headers: Mapping[str, str], body: bytes, job: Job, now_ms: int | None = None,
) -> Opcode:
    """Maps one SDK response onto an opcode; `headers` must have lower-case names."""
    now_ms = _now_ms() if now_ms is None else now_ms
    if "x-inngest-sdk" not in headers:
        return RunFailed(ErrorInfo(
            "NotAnSdkResponse",
            f"HTTP {status} without an X-Inngest-SDK header: {_text(body) or '(empty body)'}"))
    try:
        if status == 201:
            try:
                status, inner, body = _unwrap_stream(body)
            except (ValueError, InvalidArgument):
                return RunFailed(ErrorInfo("BadStream", "a 201 stream without a final response"))
            headers = {**headers, **inner}
        if status == 200:
            try:
                return RunCompleted(canonical(body.strip() or b"null", "the function's output"))
            except InvalidArgument as e:
                return RunFailed(ErrorInfo("OutputError", e.message), non_retriable=True)
        if status == 206:
            try:
                parsed = _loads(body, "the 206 body", extra_depth=2)
            except InvalidArgument as e:
                if e.reason.startswith(NOT_JSON):  # cut short in transit: worth a retry
                    return RunFailed(ErrorInfo("BadResponse", "a 206 body that is not JSON"))
                return RunFailed(ErrorInfo("OutputError", e.message), non_retriable=True)
            return _ops(parsed, job, headers, now_ms)
    except _Unsupported as e:
        return RunFailed(ErrorInfo("Unsupported", f"Plait does not support {e} yet"),
                         non_retriable=True)
    return _failure(status, headers, body, now_ms)
