"""The REST API the Inngest SDKs' users call: runs of an event, one run, cancelling a run or
in bulk (`POST /v1/cancellations`); and
the run state endpoints an SDK reads when a request tells it to (`use_api`).

Shapes follow the Inngest server: `{"data": …, "metadata": {"fetched_at": …}}`, run statuses
`Scheduled`, `Running`, `Completed`, `Failed`, `Cancelled`, `Skipped`; errors
`{"error", "status"}`. Beside Inngest's fields a run has `waiting_reason`: what holds it while
queued behind flow control (null otherwise).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from ulid import ULID

from server import canonjson
from server.api.run_control import RunControl
from server.api.waiting import WaitingReasons
from server.errors import FailedPrecondition, InvalidArgument, NotFound
from server.history import store
from server.history.store import EventRecord, RunRecord
from server.runner.cron import CRON_EVENT
from server.runner.expressions import compile_expression
from server.state import StateStore
from server.types import RunId, RunStatus

CancelRun = Callable[[RunId], Awaitable[RunStatus]]

# Crockford base32, and at most 48 bits of milliseconds in the first character.
_ULID = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Z]{25}\Z", re.IGNORECASE)  # \Z, not "$": no "\n"
_STATUS = {
    RunStatus.QUEUED: "Scheduled",
    RunStatus.RUNNING: "Running",
    RunStatus.COMPLETED: "Completed",
    RunStatus.FAILED: "Failed",
    RunStatus.CANCELLED: "Cancelled",
    RunStatus.SKIPPED: "Skipped",
}
_MAX_BODY_BYTES = 64 * 1024
# Stored data holds canonjson's rules; events and memos nest it a few levels down.
_STORED_MAX_DEPTH = canonjson.MAX_DEPTH + 16
# The Inngest server scopes runs by environment; Plait has one.
ENVIRONMENT_ID = "00000000-0000-0000-0000-000000000000"


def rfc3339(ms: int | None) -> str | None:
    if ms is None:
        return None
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ulid(field: str, value: str) -> str:
    if not _ULID.match(value):
        raise InvalidArgument(field, f"{value[:64]!r} is not a ULID")
    return value.upper()


def stored_json(raw: bytes, default: Any = None) -> Any:
    """Stored JSON as a value every response can encode; `default` for data stored damaged
    or before the rules of server/canonjson.py (a NaN, 1e999, 1,000 levels), which would
    otherwise make the answer a 500."""
    try:
        value = canonjson.loads(raw, "stored", max_depth=_STORED_MAX_DEPTH, big_ints=True)
        canonjson.dumps(value, "stored")  # a 1e999 stored before the rules is infinity
    except InvalidArgument:
        return default
    return value


def _output(run: RunRecord) -> Any:
    if run.status is RunStatus.FAILED and run.error is not None:
        return {"name": run.error.name, "message": run.error.message, "stack": run.error.stack}
    if run.output_json is None:
        return None
    return stored_json(run.output_json)


def cron_of(event: EventRecord | None) -> str | None:
    """The cron expression of a run started by a cron tick (its `inngest/scheduled.timer`)."""
    if event is None or event.name != CRON_EVENT:
        return None
    data = stored_json(event.data_json)
    cron = data.get("cron") if isinstance(data, dict) else None
    return cron if isinstance(cron, str) else None


def run_json(run: RunRecord, original_run_id: str | None = None,
             cron: str | None = None, waiting_reason: str = "") -> dict[str, Any]:
    """A run as the Inngest REST API's FunctionRun; `original_run_id` for a replay, `cron`
    for a run of a cron tick, `waiting_reason` for a run flow control holds."""
    return {
        "run_id": run.id,
        "run_started_at": rfc3339(run.started_at_ms or run.created_at_ms or None),
        "function_id": run.function_id,
        "function_version": 1,
        "environment_id": ENVIRONMENT_ID,
        "event_id": run.event_id or None,
        "batch_id": None,
        "original_run_id": original_run_id,
        "cron": cron,
        "status": _STATUS.get(run.status, "Unknown"),
        "ended_at": rfc3339(run.ended_at_ms),
        "output": _output(run),
        "waiting_reason": waiting_reason or None,
    }


def envelope(data: Any) -> JSONResponse:
    now = int(datetime.now(UTC).timestamp() * 1000)
    return JSONResponse({"data": data, "metadata": {"fetched_at": rfc3339(now),
                                                   "cached_until": None}})


class RestRoutes:
    def __init__(self, engine: AsyncEngine, state: StateStore, cancel_run: CancelRun,
                 control: RunControl | None = None,
                 waiting: WaitingReasons | None = None) -> None:
        self._engine = engine
        self._state = state
        self._cancel_run = cancel_run
        self._control = control
        self._waiting = waiting

    async def _reasons(self, runs: list[RunRecord]) -> list[str]:
        if self._waiting is None:
            return [""] * len(runs)
        return await self._waiting.of(runs)

    async def event_runs(self, request: Request) -> Response:
        event_id = ulid("event_id", request.path_params["event_id"])
        runs = await store.runs_for_event(self._engine, event_id)
        cron = cron_of(await self._event(event_id)) if runs else None
        reasons = await self._reasons(list(runs))
        return envelope([run_json(r, cron=cron, waiting_reason=why)
                         for r, why in zip(runs, reasons, strict=True)])

    async def get_run(self, request: Request) -> Response:
        run_id = ulid("run_id", request.path_params["run_id"])
        run = await store.get_run(self._engine, run_id)
        cron = cron_of(await self._event(run.event_id)) if run.event_id else None
        (why,) = await self._reasons([run])
        return envelope(run_json(run, await store.replay_original(self._engine, run_id), cron,
                                 why))

    async def _event(self, event_id: str) -> EventRecord | None:
        try:
            return await store.get_event(self._engine, event_id)
        except NotFound:
            return None

    async def cancel_run(self, request: Request) -> Response:
        run_id = ulid("run_id", request.path_params["run_id"])
        status = await self._cancel_run(RunId(run_id))
        if status is not RunStatus.CANCELLED:
            raise InvalidArgument("run_id", f"run {run_id} has already {status.value}")
        return Response(status_code=200)

    async def cancel_runs(self, request: Request) -> Response:
        """POST /v1/cancellations: cancel a function's runs created in a time range at once.

        Plait cancels the runs that exist now and keeps no cancellation object: the answer is
        the request's cancellation with an id and `cancelled_count`."""
        if self._control is None:
            raise FailedPrecondition("bulk cancel is not available in this process")
        body = await _json_object(request)
        app_id = _string(body, "app_id", required=True)
        slug = _string(body, "function_id", required=True)
        # The Inngest SDKs' users pass the full id (`<app>-<fn>`); a bare slug is accepted too.
        function_id = slug if slug.startswith(f"{app_id}-") else f"{app_id}-{slug}"
        before_ms = _time_ms(body, "started_before", required=True)
        after_ms = _time_ms(body, "started_after", required=False)
        if before_ms <= after_ms:
            raise InvalidArgument("started_before", "must be after started_after")
        expression = _string(body, "if", required=False)
        program = compile_expression("if", expression) if expression else None
        count = await self._control.cancel_runs(function_id, after_ms, before_ms, program)
        return envelope({
            "id": str(ULID()), "environment_id": ENVIRONMENT_ID, "app_id": app_id,
            "function_id": function_id, "started_after": rfc3339(after_ms or None),
            "started_before": rfc3339(before_ms), "if": expression or None,
            "cancelled_count": count,
        })

    async def run_batch(self, request: Request) -> Response:
        """GET /v0/runs/{id}/batch: the run's events, for an SDK told to fetch them."""
        run = await self._run_state(request)
        event = stored_json(run.event_json, {})
        if not isinstance(event, dict):
            event = {}
        event.setdefault("user", {})
        return JSONResponse([event])

    async def run_actions(self, request: Request) -> Response:
        """GET /v0/runs/{id}/actions: the run's memoised steps, by step id."""
        run = await self._run_state(request)
        return JSONResponse({k: stored_json(v) for k, v in run.steps.items()})

    async def _run_state(self, request: Request) -> Any:
        run_id = ulid("run_id", request.path_params["run_id"])
        run = await self._state.get_run(RunId(run_id))
        if run is None:
            raise NotFound(f"run {run_id!r} has no state (unknown, or finished long ago)")
        return run


async def _json_object(request: Request) -> dict[str, Any]:
    body = await request.body()
    if len(body) > _MAX_BODY_BYTES:
        raise InvalidArgument("body", f"{len(body)} bytes is over the limit of {_MAX_BODY_BYTES}")
    parsed = canonjson.loads(body, "body")
    if not isinstance(parsed, dict):
        raise InvalidArgument("body", "must be a JSON object")
    return parsed


def _string(body: dict[str, Any], field: str, *, required: bool) -> str:
    value = body.get(field)
    if value is None or value == "":
        if required:
            raise InvalidArgument(field, "is required")
        return ""
    if not isinstance(value, str) or len(value) > 512:
        raise InvalidArgument(field, f"must be a string of at most 512 characters, "
                                     f"not {value!r:.64}")
    if "\x00" in value:  # PostgreSQL text cannot hold one: a database error otherwise (500)
        raise InvalidArgument(field, "must not contain a NUL character")
    return value


def _time_ms(body: dict[str, Any], field: str, *, required: bool) -> int:
    """An RFC 3339 time as Unix ms; 0 when absent and optional."""
    text = _string(body, field, required=required)
    if not text:
        return 0
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidArgument(field, f"{text[:64]!r} is not an RFC 3339 time") from None
    if moment.tzinfo is None:
        raise InvalidArgument(field, f"{text[:64]!r} has no time zone offset")
    return max(0, int(moment.timestamp() * 1000))
