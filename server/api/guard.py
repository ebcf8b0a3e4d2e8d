"""The HTTP port's gate (ASGI middleware): browser-safe state changes and bounded bodies.

A request that changes state (any method but GET, HEAD, OPTIONS) is refused when a browser
sent it from another site: an `Origin` that is not this server's own (403), `Sec-Fetch-Site:
cross-site` (403), or a `Content-Type` other than `application/json` (415: an HTML form or a
`text/plain` fetch can be sent cross-site without a preflight; JSON cannot). The SDKs, curl and
the tests send no `Origin` and pass. In dev mode a same-origin request must also name a
loopback host (or --http-host): a page on a name that resolves to 127.0.0.1 is no ally (DNS
rebinding). A body is refused with 413 by its `Content-Length`, before it is read, or as soon
as what was read passes --max-request-bytes; header and body read timeouts and the connection
cap live in the protocol (server/api/limits.py).
"""

from __future__ import annotations

import ipaddress
import json
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.config import Mode, Settings

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def is_loopback_host(host: str) -> bool:
    """Literal loopback addresses and `localhost` only: any other name would need a lookup,
    and what it resolves to can change between a check and a connection."""
    if host.lower() == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def is_json_media_type(content_type: str) -> bool:
    """`application/json`, with or without parameters (`; charset=utf-8`)."""
    return content_type.split(";", 1)[0].strip().lower() == "application/json"


def _host_port(scheme: str, netloc: str) -> tuple[str, int] | None:
    try:
        parts = urlsplit(f"//{netloc}")
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return parts.hostname, port or (443 if scheme == "https" else 80)


class Guard:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self._app = app
        self._settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        limit = self._settings.max_request_bytes
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _refuse(send, 413, "body",
                          f"{length} bytes (Content-Length) is over the limit of {limit}")
            return
        if scope["method"] in SAFE_METHODS:
            await self._app(scope, receive, send)
            return
        refusal = self._cross_site(scope, headers)
        if refusal is not None:
            await _refuse(send, *refusal)
            return
        content_type = headers.get("content-type")
        if content_type is not None and not is_json_media_type(content_type):
            await _refuse(send, 415, "Content-Type",
                          f"{content_type!r} is not accepted: send application/json")
            return
        body = await _read_body(receive, limit)
        if body is None:  # the client went away (or its body timed out): nobody to answer
            return
        if len(body) > limit:
            await _refuse(send, 413, "body", f"more than {limit} bytes is over the limit")
            return
        await self._app(scope, _replay(body, receive), send)

    def _cross_site(self, scope: Scope, headers: Headers) -> tuple[int, str, str] | None:
        if headers.get("sec-fetch-site", "").lower() == "cross-site":
            return 403, "Sec-Fetch-Site", "cross-site requests may not change state"
        origin = headers.get("origin")
        if origin is not None and not self._own_origin(scope, origin, headers.get("host", "")):
            return 403, "Origin", (f"{origin!r} is not this server's origin: other sites' "
                                   "pages may not change state")
        return None

    def _own_origin(self, scope: Scope, origin: str, host: str) -> bool:
        try:
            parts = urlsplit(origin)
        except ValueError:
            return False
        scheme = str(scope.get("scheme", "http"))
        if parts.scheme != scheme or parts.path or parts.query:
            return False
        theirs, ours = _host_port(parts.scheme, parts.netloc), _host_port(scheme, host)
        if theirs is None or theirs != ours:
            return False
        if self._settings.mode is Mode.DEV:
            name = theirs[0]
            return is_loopback_host(name) or name == self._settings.http_host.lower()
        return True


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or as soon as it passes `limit`, what was read so far (one byte over
    is enough to refuse it); None when the client disconnected."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        chunks.append(chunk)
        if size > limit or not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """Hands the app the body already read, then the connection's own messages (disconnect)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


async def _refuse(send: Send, status: int, field: str, reason: str) -> None:
    """A JSON refusal naming the header or field. The connection stays open: the rest of a
    body the client is still sending is discarded unread (a close now would reset the
    connection before most clients read the answer), and the protocol's body timeout ends a
    client that never finishes."""
    body = json.dumps({"ok": False, "error": f"{field}: {reason}", "status": status}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


__all__ = ["SAFE_METHODS", "Guard", "is_json_media_type", "is_loopback_host"]
