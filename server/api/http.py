"""The HTTP face on one port: event API, health, and the Inngest SDK gateway
(server/api/inngest); served by uvicorn inside our own loop."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from typing import Any

import uvicorn
from redis.exceptions import RedisError
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from server.api.auth import bearer_token_matches
from server.api.guard import Guard
from server.api.limits import uvicorn_limits
from server.config import Mode, Settings
from server.events.http import EventRoutes
from server.events.ingest import EventIngest
from server.supervise import StorageHealth
from server.telemetry import METRICS_CONTENT_TYPE, Telemetry


def _health(health: StorageHealth | None) -> Callable[[Request], Awaitable[JSONResponse]]:
    async def endpoint(_: Request) -> JSONResponse:
        """200 {"status": "ok"} while storage answers; 503 "degraded" naming each store."""
        if health is None or health.ok:
            return JSONResponse({"status": "ok"})
        return JSONResponse(health.status(), status_code=503)

    return endpoint


def metrics_tokens(settings: Settings) -> list[str] | None:
    """The bearer tokens GET /metrics accepts, or None when it is open (dev; production with
    --insecure and no token set). Production without any token refuses every scrape."""
    if settings.mode is not Mode.PRODUCTION:
        return None
    tokens = [t for t in [settings.metrics_token, *settings.admin_token_list] if t]
    if not tokens and settings.insecure:
        return None
    return tokens


def _metrics_route(telemetry: Telemetry, settings: Settings) -> Route:
    tokens = metrics_tokens(settings)

    async def metrics(request: Request) -> Response:
        if tokens is not None and not bearer_token_matches(
                request.headers.get("authorization"), tokens):
            return JSONResponse(
                {"error": "authorization: 'Bearer <metrics token or admin token>' is required",
                 "status": 401}, 401, headers={"WWW-Authenticate": "Bearer"})
        return Response(await telemetry.render_metrics(), media_type=METRICS_CONTENT_TYPE)

    return Route("/metrics", metrics, methods=["GET"])


async def _storage_away(_: Request, error: Exception) -> JSONResponse:
    """503 (retry later), not 500, for any request that met storage away (Redis, the database);
    the Inngest SDKs retry a 5xx send, and the shape is the event API's error body."""
    return JSONResponse({"error": f"storage is unavailable, retry later: {type(error).__name__}",
                         "status": 503}, status_code=503, headers={"Retry-After": "1"})


# Starlette matches these along each exception's MRO.
STORAGE_ERRORS: Mapping[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
    RedisError: _storage_away, OperationalError: _storage_away, InterfaceError: _storage_away,
    ConnectionError: _storage_away, TimeoutError: _storage_away,
}


def build_app(ingest: EventIngest, settings: Settings,
              extra_routes: Sequence[BaseRoute] = (),
              telemetry: Telemetry | None = None,
              health: StorageHealth | None = None) -> Starlette:
    events = EventRoutes(ingest, settings)
    app = Starlette(routes=[
        Route("/e/{event_key}", events.post_events, methods=["POST"]),
        Route("/health", _health(health), methods=["GET"]),
        _metrics_route(telemetry or Telemetry(), settings),
        *extra_routes,
    ], middleware=[Middleware(Guard, settings=settings)], exception_handlers=STORAGE_ERRORS)
    # http_server() reads the connection limits from here.
    app.state.settings = settings
    return app


class HttpServer(uvicorn.Server):
    """Leaves signal handling to the CLI, which owns the process."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def http_server(app: Starlette, tls: Mapping[str, Any] | None = None) -> HttpServer:
    """`tls`: uvicorn's ssl_* arguments (server/api/tls.py), empty for plain HTTP."""
    settings = getattr(app.state, "settings", None)
    limits = uvicorn_limits(settings) if isinstance(settings, Settings) else {}
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off",
                            timeout_graceful_shutdown=5, **limits, **(tls or {}))
    return HttpServer(config)
