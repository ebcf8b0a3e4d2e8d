"""Syncing Inngest SDK apps by URL, as the Inngest dev server does.

Syncing an app is a `PUT` to its serve URL; the SDK answers it by registering its functions
with `POST /fn/register` (out-of-band sync) and relays the result. Apps come from
`--sdk-url` / `-u`, from the sync API, and in dev mode from discovery: a cheap scan of the usual
local ports for an answer carrying `X-Inngest-SDK`. Every known URL is probed on each pass, and
an app that disappears and comes back (a restart with new code) is synced again. The log says
what changed, once: an app found, synced, gone, or a sync that failed (again only when its
error changes), never a line per pass.

In dev mode the server only ever connects to loopback apps (127.0.0.0/8, ::1, `localhost`)
unless `--allow-remote-sync` is given: the sync API is reachable from any local process, and
it must not become a way to make the server send requests elsewhere. The check reads the host
the HTTP client will connect to, before any connection or name lookup.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
import structlog

from server import __version__, canonjson
from server.api.guard import is_loopback_host
from server.config import Mode, Settings
from server.drivers.http import signing
from server.drivers.http._jcs import canonical
from server.drivers.http._request import server_kind
from server.errors import InvalidArgument
from server.tasks import raise_if_cancelling

log = structlog.get_logger(__name__)

# The Inngest dev server's candidates (pkg/devserver/discovery), minus the TLS port.
DISCOVERY_PORTS = (80, *range(3000, 3011), 5000, 5173, 8000, 8080, 8081, 8888,
                   *range(8910, 8916))
DISCOVERY_PATHS = ("/api/inngest", "/x/inngest", "/.netlify/functions/inngest",
                   "/.redwood/functions/inngest")
PASS_INTERVAL_S = 3.0
PORT_TIMEOUT_S = 0.5
PROBE_TIMEOUT_S = 2.0
SYNC_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class SyncResult:
    url: str
    ok: bool
    status: int  # the app's HTTP status (0: unreachable)
    error: str = ""
    body: dict[str, Any] = field(default_factory=dict)


def _message(body: dict[str, Any], fallback: str) -> str:
    for key in ("error", "message"):
        value = body.get(key)
        if isinstance(value, str) and value:
            return value
    return fallback


def sync_target(url: str, settings: Settings) -> httpx.URL:
    """The app URL to connect to, or an InvalidArgument naming `url` when it is malformed or,
    in dev mode without --allow-remote-sync, not on a loopback address."""
    try:
        parsed = httpx.URL(url)
        port = parsed.port
    except (httpx.InvalidURL, ValueError, TypeError):
        raise InvalidArgument("url", f"{url!r} is not a valid URL") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise InvalidArgument("url", f"{url!r} is not an http(s) URL")
    if port is not None and not 0 < port < 65536:
        raise InvalidArgument("url", f"{url!r} has port {port}, not in 1..65535")
    if (settings.mode is Mode.DEV and not settings.allow_remote_sync
            and not is_loopback_host(parsed.host)):
        raise InvalidArgument(
            "url", f"{parsed.host!r} is not a loopback address: in dev mode apps are synced "
            "only on 127.0.0.0/8, ::1 or localhost (--allow-remote-sync allows others)")
    return parsed


def _is_sdk(response: httpx.Response) -> bool:
    # An SDK that refused our signature strips its X-Inngest-* headers but this one.
    return "x-inngest-sdk" in response.headers or "x-inngest-sdk-handled" in response.headers


class AppSync:
    def __init__(self, settings: Settings, own_port: int = 0,
                 ports: Iterable[int] = DISCOVERY_PORTS) -> None:
        self._settings = settings
        self._own_port = own_port
        self._ports = tuple(p for p in ports if p != own_port)
        self._client: httpx.AsyncClient | None = None
        # URL -> whether it answered the last probe and has been synced since it came up.
        self._watched: dict[str, bool] = {}
        # URLs that answered their last probe, and the last sync error of each URL: the log
        # says when these change, not on every pass.
        self._up: set[str] = set()
        self._failures: dict[str, str] = {}
        for url in settings.sdk_url_list:
            try:
                sync_target(url, settings)
            except InvalidArgument as e:
                log.warning("app.sync_refused", url=url, error=e.message)
                continue
            self._watched[url] = False

    def _headers(self, body: bytes) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "User-Agent": f"plait/{__version__}",
                   "X-Inngest-Server-Kind": server_kind(self._settings)}
        if self._settings.signing_key:
            headers["X-Inngest-Signature"] = signing.sign(body, self._settings.signing_key)
        return headers

    async def sync(self, url: str) -> SyncResult:
        """Asks the app at `url` to register its functions; reports what it answered. A URL
        the server may not connect to is an InvalidArgument, raised before any connection."""
        target = sync_target(url, self._settings)
        body = canonical({"url": url})
        async with httpx.AsyncClient(timeout=SYNC_TIMEOUT_S) as client:
            try:
                response = await client.put(target, content=body, headers=self._headers(body))
            except httpx.HTTPError as e:
                return SyncResult(url, False, 0, f"{url} is unreachable: {e or type(e).__name__}")
        try:
            parsed = canonjson.loads(response.content, "answer") if response.content else {}
        except InvalidArgument:
            parsed = {}
        answer = parsed if isinstance(parsed, dict) else {}
        if not _is_sdk(response):
            return SyncResult(url, False, response.status_code,
                              f"{url} answered HTTP {response.status_code} without an "
                              "X-Inngest-SDK header: not an Inngest SDK endpoint", answer)
        # py relays a failed registration with HTTP 200 and {"ok": false, "error"}; js turns
        # it into its HTTP status.
        if response.status_code != 200 or answer.get("ok") is False:
            return SyncResult(url, False, response.status_code,
                              _message(answer, f"the app answered HTTP {response.status_code}"),
                              answer)
        self._watched[url] = True
        log.info("app.synced", url=url, modified=answer.get("modified"))
        return SyncResult(url, True, 200, body=answer)

    async def _present(self, url: str) -> bool:
        try:
            target = sync_target(url, self._settings)
        except InvalidArgument:
            return False
        if self._client is None:
            async with httpx.AsyncClient(timeout=PROBE_TIMEOUT_S) as client:
                self._client = client
                try:
                    return await self._present(url)
                finally:
                    self._client = None
        try:
            response = await self._client.get(target, headers=self._headers(b""))
        except httpx.HTTPError:
            return False
        return _is_sdk(response)

    async def _open(self, port: int) -> bool:
        try:
            async with asyncio.timeout(PORT_TIMEOUT_S):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
        except (OSError, TimeoutError):
            return False
        writer.close()
        return True

    async def discover(self) -> list[str]:
        """Serve URLs of SDK apps on the usual local ports (the open ones only)."""
        opened = await asyncio.gather(*(self._open(p) for p in self._ports))
        found = []
        for port, is_open in zip(self._ports, opened, strict=True):
            if not is_open:
                continue
            for path in DISCOVERY_PATHS:
                url = f"http://127.0.0.1:{port}{path}"
                if await self._present(url):
                    found.append(url)
                    break
        return found

    async def run_pass(self) -> None:
        """One pass: discover (dev), then sync every known app that came up since the last."""
        if self._settings.mode is Mode.DEV and self._settings.sdk_discovery:
            for url in await self.discover():
                if url not in self._watched:
                    log.info("app.found", url=url)
                    self._watched[url] = False
        for url, synced in list(self._watched.items()):
            if not await self._present(url):
                self._watched[url] = False
                if url in self._up:
                    self._up.discard(url)
                    self._failures.pop(url, None)
                    log.info("app.gone", url=url)
                continue
            self._up.add(url)
            if not synced:
                result = await self.sync(url)
                if result.ok:
                    self._failures.pop(url, None)
                elif self._failures.get(url) != result.error:
                    self._failures[url] = result.error
                    log.warning("app.sync_failed", url=url, status=result.status,
                                error=result.error)

    async def run(self) -> None:
        """The sync role: a pass now, then one every few seconds."""
        async with httpx.AsyncClient(timeout=PROBE_TIMEOUT_S) as client:
            self._client = client
            while True:
                raise_if_cancelling()
                try:
                    await self.run_pass()
                except Exception:  # one bad answer must not stop the server's roles
                    log.exception("app.sync_pass_failed")
                await asyncio.sleep(PASS_INTERVAL_S)
