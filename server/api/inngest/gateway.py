"""The Inngest dev-server face of the HTTP port: registration, app sync, the REST API, `/dev`.

Every route answers bad input with a 4xx naming the problem. In production, registrations
and the REST API need `Authorization: Bearer <signing key or its hash>`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from ulid import ULID

from server import __version__, canonjson
from server.api.inngest.register import http_url, parse_registration
from server.api.inngest.rest import CancelRun, RestRoutes
from server.api.inngest.sync import AppSync
from server.api.run_control import RunControl
from server.api.waiting import WaitingReasons
from server.config import Mode, Settings
from server.drivers.http import signing
from server.drivers.http._request import server_kind
from server.errors import InvalidArgument, PlaitError, Unauthenticated, http_status
from server.history import store
from server.history.store import function_config_to_json
from server.runner.guard import refuse_wipe
from server.runner.registry import Registry
from server.state import StateStore

log = structlog.get_logger(__name__)

Handler = Callable[[Request], Awaitable[Response]]


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"ok": False, "error": message, "status": status}, status)


class InngestGateway:
    def __init__(self, settings: Settings, engine: AsyncEngine, registry: Registry,
                 state: StateStore, cancel_run: CancelRun, syncer: AppSync,
                 control: RunControl | None = None,
                 waiting: WaitingReasons | None = None) -> None:
        self._settings = settings
        self._engine = engine
        self._registry = registry
        self._rest = RestRoutes(engine, state, cancel_run, control, waiting)
        self.syncer = syncer
        # Serve URL -> app id of the last registration this process took, for the sync API.
        self._registered: dict[str, str] = {}

    def routes(self) -> list[Route]:
        rest = self._rest
        return [
            Route("/fn/register", self._guard(self.register), methods=["POST"]),
            Route("/v1/apps/sync", self._guard(self.sync_app), methods=["POST"]),
            Route("/v1/events/{event_id}/runs", self._guard(rest.event_runs), methods=["GET"]),
            Route("/v1/runs/{run_id}", self._guard(rest.get_run), methods=["GET"]),
            Route("/v1/runs/{run_id}", self._guard(rest.cancel_run), methods=["DELETE"]),
            Route("/v1/cancellations", self._guard(rest.cancel_runs), methods=["POST"]),
            Route("/v0/runs/{run_id}/batch", self._guard(rest.run_batch), methods=["GET"]),
            Route("/v0/runs/{run_id}/actions", self._guard(rest.run_actions), methods=["GET"]),
            # Lists the apps' URLs: in production only for holders of the signing key.
            Route("/dev", self._guard(self.dev_info), methods=["GET"]),
        ]

    # -- auth and errors ---------------------------------------------------------------

    def _check_auth(self, request: Request) -> None:
        if self._settings.mode is not Mode.PRODUCTION:
            return
        keys = [self._settings.signing_key, self._settings.signing_key_fallback]
        if not signing.bearer_matches(request.headers.get("authorization"), keys):
            raise Unauthenticated(
                "authorization: 'Bearer <signing key or its hash>' is required and must match "
                "the server's signing key")

    def _guard(self, handler: Handler) -> Handler:
        """Checks auth and turns the error tree into `{"error", "status"}` answers."""
        async def guarded(request: Request) -> Response:
            try:
                self._check_auth(request)
                return await handler(request)
            except PlaitError as e:
                return _error(http_status(e), e.message)
        return guarded

    async def _json_body(self, request: Request) -> Any:
        body = await request.body()
        limit = self._settings.max_request_bytes
        if len(body) > limit:
            raise InvalidArgument("body", f"{len(body)} bytes is over the limit of {limit}")
        return canonjson.loads(body, "body")  # deep, NaN, BOM...: 400 naming the rule

    # -- POST /fn/register ---------------------------------------------------------------

    async def register(self, request: Request) -> Response:
        ours = server_kind(self._settings)
        expected = request.headers.get("x-inngest-expected-server-kind")
        if expected and expected != ours:
            raise InvalidArgument(
                "X-Inngest-Expected-Server-Kind",
                f"the SDK expects a {expected!r} server; this is a {ours!r} server (run the "
                f"app with {'INNGEST_DEV=1' if ours == 'dev' else 'INNGEST_DEV unset'})")
        parsed = parse_registration(await self._json_body(request),
                                    self._settings.default_retries)
        reg = parsed.registration
        before = {function_config_to_json(f.config)
                  for f in await store.list_functions(self._engine, reg.app_id)}
        await refuse_wipe(self._registry, reg, "functions")
        await self._registry.register(reg, int(time.time() * 1000))
        modified = before != {function_config_to_json(f) for f in reg.functions}
        self._registered[parsed.url] = reg.app_id
        log.info("app.registration", app_id=reg.app_id, url=parsed.url,
                 functions=len(reg.functions), modified=modified)
        return JSONResponse({"ok": True, "modified": modified, "status": 200,
                             "app_id": reg.app_id, "sync_id": str(ULID())})

    # -- POST /v1/apps/sync --------------------------------------------------------------

    async def sync_app(self, request: Request) -> Response:
        """Syncs the app at `{"url": …}` now; 502 with the app's answer when it fails."""
        body = await self._json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("url"), str):
            raise InvalidArgument("url", "must be the app's serve URL, e.g. "
                                  "http://127.0.0.1:8000/api/inngest")
        url = http_url(body["url"], "url")
        result = await self.syncer.sync(url)
        if not result.ok:
            return JSONResponse({"ok": False, "url": url, "status": 502,
                                 "error": f"sync failed: {result.error}",
                                 "app_status": result.status}, 502)
        return JSONResponse({"ok": True, "url": url, "app_id": self._registered.get(url),
                             "modified": result.body.get("modified")})

    # -- GET /dev --------------------------------------------------------------------------

    async def dev_info(self, _: Request) -> Response:
        """What the Inngest dev server's `/dev` tells its tooling."""
        s = self._settings
        functions = [{"id": f.id, "name": f.name, "slug": f.slug, "app_id": f.app_id,
                      "url": f.url} for f in self._registry.index.all() if f.url]
        return JSONResponse({
            "version": __version__,
            "authed": False,
            "startOpts": {"sdkUrls": s.sdk_url_list, "noDiscovery": not s.sdk_discovery},
            "functions": functions,
            "handlers": [],
            "isSingleNodeService": s.mode is Mode.DEV,
            "isMissingSigningKey": not s.signing_key,
            "isMissingEventKeys": not s.event_key_list,
            "features": {},
        })
