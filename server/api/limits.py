"""Connection-level limits of the HTTP port, in uvicorn's h11 protocol: a client has
--http-header-timeout-s to send a request's headers and --http-body-timeout-s to send its body,
or its connection is closed; past --http-max-connections a new connection gets a 503 and is
closed at once. uvicorn alone has only an idle keep-alive timeout: half-sent requests were held
forever."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from server.config import Settings

_HEADERS = "headers"
_BODY = "body"


def _busy_response() -> bytes:
    body = json.dumps({"ok": False, "error": "too many connections", "status": 503}).encode()
    return (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
            b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n"
            + body)


class LimitedH11Protocol(H11Protocol):
    """One timer per connection, armed for the phase the client owes us: the headers of a
    request (from the connection or its first byte after an idle keep-alive), then its body."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_connections: int = 1024

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._deadline: asyncio.TimerHandle | None = None
        self._phase = ""
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            transport.write(_busy_response())
            transport.close()
            return
        self._watch()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _watch(self) -> None:
        """Arms the timer of the phase the connection is in; an idle keep-alive connection is
        left to uvicorn's keep-alive timeout."""
        phase = ""
        if not self.transport.is_closing():
            state = self.conn.their_state
            if state is h11.IDLE and self.timeout_keep_alive_task is None:
                phase = _HEADERS
            elif state is h11.SEND_BODY:
                phase = _BODY
        if phase == self._phase:
            return
        self._disarm()
        if phase:
            timeout = self.header_timeout_s if phase == _HEADERS else self.body_timeout_s
            self._deadline = self.loop.call_later(timeout, self._expire)
            self._phase = phase

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline, self._phase = None, ""

    def _expire(self) -> None:
        self._deadline, self._phase = None, ""
        if not self.transport.is_closing():
            self.transport.close()


def protocol_for(settings: Settings) -> type[LimitedH11Protocol]:
    """The protocol class uvicorn instantiates per connection, with this server's limits."""
    return type("LimitedH11Protocol", (LimitedH11Protocol,), {
        "header_timeout_s": float(settings.http_header_timeout_s),
        "body_timeout_s": float(settings.http_body_timeout_s),
        "max_connections": settings.http_max_connections,
    })


def uvicorn_limits(settings: Settings) -> dict[str, Any]:
    """uvicorn.Config arguments: the protocol, and a cap on handler tasks (a handler may
    outlive its connection), which uvicorn answers with 503. uvicorn also counts connections
    against it: twice the connection cap keeps a burst of refused connections, counted until
    they are closed, from turning requests on accepted ones into 503s."""
    return {"http": protocol_for(settings), "ws": "none",
            "limit_concurrency": 2 * settings.http_max_connections}


__all__ = ["LimitedH11Protocol", "protocol_for", "uvicorn_limits"]
