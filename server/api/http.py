"""The HTTP face on one port: event API, health, and the Inngest SDK gateway
(server/api/inngest); served by uvicorn inside our own loop."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Generator, Sequence

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from server.config import Settings
from server.events.http import EventRoutes
from server.events.ingest import EventIngest
from server.telemetry import METRICS_CONTENT_TYPE, Telemetry


async def _health(_: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


def _metrics_route(telemetry: Telemetry) -> Route:
    async def metrics(_: Request) -> Response:
        return Response(await telemetry.render_metrics(), media_type=METRICS_CONTENT_TYPE)

    return Route("/metrics", metrics, methods=["GET"])


def build_app(ingest: EventIngest, settings: Settings,
              extra_routes: Sequence[BaseRoute] = (),
              telemetry: Telemetry | None = None) -> Starlette:
    events = EventRoutes(ingest, settings)
    return Starlette(routes=[
        Route("/e/{event_key}", events.post_events, methods=["POST"]),
        Route("/health", _health, methods=["GET"]),
        _metrics_route(telemetry or Telemetry()),
        *extra_routes,
    ])


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


def http_server(app: Starlette) -> HttpServer:
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off",
                            timeout_graceful_shutdown=5)
    return HttpServer(config)
