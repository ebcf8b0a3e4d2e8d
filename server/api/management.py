"""The gRPC ManagementService: apps, functions, events and runs read from history; cancel,
bulk cancel, pause / resume, replay.

Requests are validated here, at the edge; the history store does the reading, the injected
`cancel_run` the cancelling and `RunControl` the rest.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, NoReturn, Protocol, TypeVar

import grpc
import structlog
from plait_proto.v1 import management_pb2 as pb
from plait_proto.v1 import management_pb2_grpc, run_pb2
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from server.api import _convert
from server.api.run_control import RunControl
from server.api.waiting import WaitingReasons
from server.errors import FailedPrecondition, InvalidArgument, PlaitError, Unavailable, grpc_status
from server.history import store
from server.history.spans import list_spans
from server.types import RunId, RunStatus

CancelRun = Callable[[RunId], Awaitable[RunStatus]]

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
_MAX_ID_LEN = 512
_RPC_TIMEOUT_S = 30.0
# Crockford base32, and at most 48 bits of milliseconds in the first character.
_ULID = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}", re.IGNORECASE)
# Failures of what lies behind the API, not of the request: the client may retry.
_UNREACHABLE = (
    OperationalError,
    InterfaceError,
    OSError,
    TimeoutError,
    RedisConnectionError,
    RedisTimeoutError,
)

RPC_UNAVAILABLE = "api.management.unavailable"

_log = structlog.get_logger(__name__)

_S = TypeVar("_S")
_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")


async def _abort(context: grpc.aio.ServicerContext, error: PlaitError) -> NoReturn:
    await context.abort(grpc_status(error), error.message)
    raise AssertionError("context.abort returns only by raising")


def _rpc(
    handler: Callable[[_S, _Req], Awaitable[_Resp]],
) -> Callable[[_S, _Req, grpc.aio.ServicerContext], Coroutine[Any, Any, _Resp]]:
    """Makes `handler` an RPC whose PlaitErrors become their status codes, once for all."""

    @functools.wraps(handler)
    async def rpc(self: _S, request: _Req, context: grpc.aio.ServicerContext) -> _Resp:
        try:
            async with asyncio.timeout(_RPC_TIMEOUT_S):
                return await handler(self, request)
        except PlaitError as e:
            error: PlaitError = e
        except _UNREACHABLE as e:
            _log.warning(RPC_UNAVAILABLE, rpc=handler.__name__, error=repr(e))
            error = Unavailable(f"{handler.__name__}: history or run state unreachable, retry")
        # Outside the except clause, so the abort does not chain the cause into its traceback.
        await _abort(context, error)

    return rpc


def _ulid(field: str, value: str) -> str:
    if not _ULID.fullmatch(value):
        raise InvalidArgument(field, f"must be a ULID, not {value[:64]!r}")
    return value.upper()


def _id(field: str, value: str) -> str:
    if not value:
        raise InvalidArgument(field, "must not be empty")
    if len(value) > _MAX_ID_LEN:
        raise InvalidArgument(field, f"must be at most {_MAX_ID_LEN} characters")
    return value


def _page_size(value: int) -> int:
    if value == 0:
        return DEFAULT_PAGE_SIZE
    if not 1 <= value <= MAX_PAGE_SIZE:
        raise InvalidArgument("page_size", f"must be 0..{MAX_PAGE_SIZE}, not {value}")
    return value


def _before(token: str) -> str | None:
    """Page tokens are the last id of the previous page."""
    if not token:
        return None
    if not _ULID.fullmatch(token):
        raise InvalidArgument("page_token", f"{token[:64]!r} is not a token of a previous page")
    return token.upper()


class _HasId(Protocol):
    @property
    def id(self) -> str: ...


_R = TypeVar("_R", bound=_HasId)


def _page(rows: Sequence[_R], size: int) -> tuple[Sequence[_R], str]:
    """Trims a page fetched with one row too many; the extra row says there is a next page."""
    if len(rows) <= size:
        return rows, ""
    return rows[:size], rows[size - 1].id


class ManagementServicer(management_pb2_grpc.ManagementServiceServicer):
    def __init__(
        self, engine: AsyncEngine, cancel_run: CancelRun, control: RunControl | None = None,
        waiting: WaitingReasons | None = None,
    ) -> None:
        self._engine = engine
        self._cancel_run = cancel_run
        self._control = control
        self._waiting = waiting

    async def _runs_to_pb(self, runs: Sequence[store.RunRecord]) -> list[run_pb2.Run]:
        """Runs as messages, each queued one with what holds it (flow control)."""
        reasons = (await self._waiting.of(runs) if self._waiting is not None
                   else [""] * len(runs))
        return [_convert.run_to_pb(r, why) for r, why in zip(runs, reasons, strict=True)]

    def _controls(self) -> RunControl:
        if self._control is None:
            raise FailedPrecondition("run control is not available in this process")
        return self._control

    async def _paused(self) -> set[str]:
        return await self._control.paused_ids() if self._control is not None else set()

    async def _disabled(self, function_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        """Per function, its triggers the scheduler disabled -> why (server/runner/cron.py)."""
        if self._control is None or not function_ids:
            return {}
        return await self._control.disabled_triggers(function_ids)

    @_rpc
    async def ListApps(self, request: pb.ListAppsRequest) -> pb.ListAppsResponse:
        apps = await store.list_apps(self._engine)
        return pb.ListAppsResponse(apps=[_convert.app_to_pb(a) for a in apps])

    @_rpc
    async def GetApp(self, request: pb.GetAppRequest) -> pb.GetAppResponse:
        app_id = _id("app_id", request.app_id)
        app = await store.get_app(self._engine, app_id)
        functions = await store.list_functions(self._engine, app_id)
        paused = await self._paused()
        disabled = await self._disabled([f.config.id for f in functions])
        return pb.GetAppResponse(
            app=_convert.app_to_pb(app),
            functions=[_convert.function_to_pb(f, paused, disabled) for f in functions],
        )

    @_rpc
    async def ListFunctions(self, request: pb.ListFunctionsRequest) -> pb.ListFunctionsResponse:
        app_id = _id("app_id", request.app_id) if request.app_id else None
        functions = await store.list_functions(self._engine, app_id)
        paused = await self._paused()
        disabled = await self._disabled([f.config.id for f in functions])
        return pb.ListFunctionsResponse(
            functions=[_convert.function_to_pb(f, paused, disabled) for f in functions])

    @_rpc
    async def GetFunction(self, request: pb.GetFunctionRequest) -> pb.GetFunctionResponse:
        function = await store.get_function(self._engine, _id("function_id", request.function_id))
        return pb.GetFunctionResponse(function=_convert.function_to_pb(
            function, await self._paused(), await self._disabled([function.config.id])))

    @_rpc
    async def ListEvents(self, request: pb.ListEventsRequest) -> pb.ListEventsResponse:
        size = _page_size(request.page_size)
        events = await store.list_events(
            self._engine, request.name or None, size + 1, _before(request.page_token)
        )
        page, token = _page(events, size)
        return pb.ListEventsResponse(
            events=[_convert.event_to_pb(e) for e in page], next_page_token=token
        )

    @_rpc
    async def GetEvent(self, request: pb.GetEventRequest) -> pb.GetEventResponse:
        event_id = _ulid("event_id", request.event_id)
        event = await store.get_event(self._engine, event_id)
        runs = await store.runs_for_event(self._engine, event_id)
        return pb.GetEventResponse(
            event=_convert.event_to_pb(event), runs=await self._runs_to_pb(runs)
        )

    @_rpc
    async def ListRuns(self, request: pb.ListRunsRequest) -> pb.ListRunsResponse:
        size = _page_size(request.page_size)
        function_id = _id("function_id", request.function_id) if request.function_id else None
        status = _convert.run_status_from_pb("status", request.status)
        runs = await store.list_runs(
            self._engine, function_id, status, size + 1, _before(request.page_token)
        )
        page, token = _page(runs, size)
        return pb.ListRunsResponse(
            runs=await self._runs_to_pb(page), next_page_token=token
        )

    @_rpc
    async def GetRun(self, request: pb.GetRunRequest) -> pb.GetRunResponse:
        run_id = _ulid("run_id", request.run_id)
        run = await store.get_run(self._engine, run_id)
        spans = await list_spans(self._engine, run_id)
        original = await store.replay_original(self._engine, run_id)
        (found,) = await self._runs_to_pb([run])
        return pb.GetRunResponse(run=found,
                                 spans=[_convert.span_to_pb(s) for s in spans],
                                 original_run_id=original or "")

    @_rpc
    async def CancelRun(self, request: pb.CancelRunRequest) -> pb.CancelRunResponse:
        status = await self._cancel_run(RunId(_ulid("run_id", request.run_id)))
        return pb.CancelRunResponse(status=_convert.run_status_to_pb(status))

    @_rpc
    async def CancelRuns(self, request: pb.CancelRunsRequest) -> pb.CancelRunsResponse:
        function_id = _id("function_id", request.function_id)
        if request.created_after_ms < 0:
            raise InvalidArgument(
                "created_after_ms", f"must be >= 0, not {request.created_after_ms}")
        if request.created_before_ms <= request.created_after_ms:
            raise InvalidArgument(
                "created_before_ms",
                f"must be after created_after_ms ({request.created_after_ms}), "
                f"not {request.created_before_ms}")
        count = await self._controls().cancel_runs(
            function_id, request.created_after_ms, request.created_before_ms)
        return pb.CancelRunsResponse(cancelled_count=count)

    @_rpc
    async def PauseFunction(self, request: pb.PauseFunctionRequest) -> pb.PauseFunctionResponse:
        await self._controls().set_paused(_id("function_id", request.function_id), True)
        return pb.PauseFunctionResponse()

    @_rpc
    async def ResumeFunction(
        self, request: pb.ResumeFunctionRequest
    ) -> pb.ResumeFunctionResponse:
        await self._controls().set_paused(_id("function_id", request.function_id), False)
        return pb.ResumeFunctionResponse()

    @_rpc
    async def ReplayRun(self, request: pb.ReplayRunRequest) -> pb.ReplayRunResponse:
        original = RunId(_ulid("run_id", request.run_id))
        run_id = await self._controls().replay(original)
        return pb.ReplayRunResponse(run_id=run_id, original_run_id=original)
