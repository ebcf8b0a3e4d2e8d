"""The REST API the Inngest SDKs' users call: runs of an event, one run, cancelling a run; and
the run state endpoints an SDK reads when a request tells it to (`use_api`).

Shapes follow the Inngest server: `{"data": …, "metadata": {"fetched_at": …}}`, run statuses
`Scheduled`, `Running`, `Completed`, `Failed`, `Cancelled`; errors `{"error", "status"}`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from server.errors import InvalidArgument, NotFound
from server.history import store
from server.history.store import RunRecord
from server.state import StateStore
from server.types import RunId, RunStatus

CancelRun = Callable[[RunId], Awaitable[RunStatus]]

# Crockford base32, and at most 48 bits of milliseconds in the first character.
_ULID = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$", re.IGNORECASE)
_STATUS = {
    RunStatus.QUEUED: "Scheduled",
    RunStatus.RUNNING: "Running",
    RunStatus.COMPLETED: "Completed",
    RunStatus.FAILED: "Failed",
    RunStatus.CANCELLED: "Cancelled",
}
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


def _output(run: RunRecord) -> Any:
    if run.status is RunStatus.FAILED and run.error is not None:
        return {"name": run.error.name, "message": run.error.message, "stack": run.error.stack}
    if run.output_json is None:
        return None
    try:
        return json.loads(run.output_json)
    except ValueError:
        return None


def run_json(run: RunRecord) -> dict[str, Any]:
    """A run as the Inngest REST API's FunctionRun."""
    return {
        "run_id": run.id,
        "run_started_at": rfc3339(run.started_at_ms or run.created_at_ms or None),
        "function_id": run.function_id,
        "function_version": 1,
        "environment_id": ENVIRONMENT_ID,
        "event_id": run.event_id or None,
        "batch_id": None,
        "original_run_id": None,
        "cron": None,
        "status": _STATUS.get(run.status, "Unknown"),
        "ended_at": rfc3339(run.ended_at_ms),
        "output": _output(run),
    }


def envelope(data: Any) -> JSONResponse:
    now = int(datetime.now(UTC).timestamp() * 1000)
    return JSONResponse({"data": data, "metadata": {"fetched_at": rfc3339(now),
                                                   "cached_until": None}})


class RestRoutes:
    def __init__(self, engine: AsyncEngine, state: StateStore, cancel_run: CancelRun) -> None:
        self._engine = engine
        self._state = state
        self._cancel_run = cancel_run

    async def event_runs(self, request: Request) -> Response:
        event_id = ulid("event_id", request.path_params["event_id"])
        runs = await store.runs_for_event(self._engine, event_id)
        return envelope([run_json(r) for r in runs])

    async def get_run(self, request: Request) -> Response:
        run_id = ulid("run_id", request.path_params["run_id"])
        return envelope(run_json(await store.get_run(self._engine, run_id)))

    async def cancel_run(self, request: Request) -> Response:
        run_id = ulid("run_id", request.path_params["run_id"])
        status = await self._cancel_run(RunId(run_id))
        if status is not RunStatus.CANCELLED:
            raise InvalidArgument("run_id", f"run {run_id} has already {status.value}")
        return Response(status_code=200)

    async def run_batch(self, request: Request) -> Response:
        """GET /v0/runs/{id}/batch: the run's events, for an SDK told to fetch them."""
        run = await self._run_state(request)
        event = json.loads(run.event_json)
        event.setdefault("user", {})
        return JSONResponse([event])

    async def run_actions(self, request: Request) -> Response:
        """GET /v0/runs/{id}/actions: the run's memoised steps, by step id."""
        run = await self._run_state(request)
        return JSONResponse({k: json.loads(v) for k, v in run.steps.items()})

    async def _run_state(self, request: Request) -> Any:
        run_id = ulid("run_id", request.path_params["run_id"])
        run = await self._state.get_run(RunId(run_id))
        if run is None:
            raise NotFound(f"run {run_id!r} has no state (unknown, or finished long ago)")
        return run
