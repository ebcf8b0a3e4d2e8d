"""App sync targets (issue 11, item 9): in dev mode the server connects only to loopback apps
unless --allow-remote-sync; a malformed URL is a 400 naming `url`. Every refusal happens
before any connection or name lookup: spies on the HTTP client and the resolver fail the test
if one is attempted. No traffic leaves the machine."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.api.inngest.register import http_url
from server.api.inngest.sync import AppSync, sync_target
from server.config import Mode, Settings
from server.errors import InvalidArgument
from tests.e2e.conftest import Running, running_server
from tests.e2e.harness import settings_for

DEV = Settings(mode=Mode.DEV, sdk_discovery=False)
PRODUCTION = Settings(mode=Mode.PRODUCTION, redis_url="redis://127.0.0.1:6379",
                      database_url="sqlite+aiosqlite:///x.db", sdk_discovery=False)
# Names off the machine (the reserved .invalid domain, which never resolves) and forms that
# only look like loopback; some names would resolve to loopback, but only a lookup could tell,
# and a lookup's answer can change before the connection. Addresses beyond loopback are not
# written here: test_only_loopback_addresses_pass_in_dev_mode generates them, and no test
# names one it could send traffic to.
REMOTE = ["http://sdk-app.invalid/api/inngest", "http://apps.example.invalid:3000/api/inngest",
          "https://app.invalid/api/inngest",
          "http://127.0.0.1.nip.io:3000/api/inngest", "http://0x7f.1/api/inngest",
          "http://2130706433/api/inngest", "http://0.0.0.0:3000/api/inngest",
          "http://localhost.example.com/api/inngest"]
MALFORMED = ["http://[::1", "http://127.0.0.1:99999/api", "http://127.0.0.1:port/",
             "ftp://127.0.0.1/x", "http:///x", "not a url"]


class _Spy:
    """Records every outbound connection attempt the server makes off loopback."""

    def __init__(self) -> None:
        self.attempts: list[str] = []


@pytest.fixture
def no_remote_traffic(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Spy]:
    spy = _Spy()
    send = httpx.AsyncClient.send
    lookup = socket.getaddrinfo

    async def guarded_send(self: httpx.AsyncClient, request: httpx.Request,
                           **kwargs: Any) -> httpx.Response:
        if request.url.host not in ("127.0.0.1", "::1", "localhost"):
            spy.attempts.append(str(request.url))
            raise AssertionError(f"a request to {request.url} was attempted")
        return await send(self, request, **kwargs)

    def guarded_lookup(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in ("127.0.0.1", "::1", "localhost", None):
            spy.attempts.append(f"lookup {host}")
            raise AssertionError(f"a name lookup of {host} was attempted")
        return lookup(host, *args, **kwargs)

    monkeypatch.setattr(httpx.AsyncClient, "send", guarded_send)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_lookup)
    yield spy


@pytest.mark.parametrize("url", REMOTE)
async def test_dev_mode_refuses_a_remote_app_before_connecting(
    url: str, no_remote_traffic: _Spy,
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await AppSync(DEV).sync(url)
    assert caught.value.field == "url" and "loopback" in caught.value.reason
    assert no_remote_traffic.attempts == []


@given(st.ip_addresses())
def test_only_loopback_addresses_pass_in_dev_mode(ip: ipaddress.IPv4Address |
                                                  ipaddress.IPv6Address) -> None:
    host = f"[{ip}]" if ip.version == 6 else str(ip)
    url = f"http://{host}:3000/api/inngest"
    loopback = ip.is_loopback or (ip.version == 6 and ip.ipv4_mapped is not None
                                  and ip.ipv4_mapped.is_loopback)
    if loopback:
        assert sync_target(url, DEV).host == str(ip)
    else:
        with pytest.raises(InvalidArgument) as caught:
            sync_target(url, DEV)
        assert caught.value.field == "url"
    # Production syncs the apps its operator names, wherever they are.
    assert sync_target(url, PRODUCTION).host == str(ip)


@given(st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,10}){0,3}", fullmatch=True))
def test_any_name_but_localhost_is_refused_in_dev_mode(name: str) -> None:
    url = f"http://{name}:8000/api/inngest"
    if name == "localhost":
        assert sync_target(url, DEV).host == "localhost"
        return
    with pytest.raises(InvalidArgument) as caught:
        sync_target(url, DEV)
    assert caught.value.field == "url"


@pytest.mark.parametrize("url", ["http://127.0.0.1:3000/api/inngest",
                                 "http://127.8.9.10/api/inngest", "http://[::1]:3000/x",
                                 "http://localhost:3000/api/inngest",
                                 "http://LOCALHOST:3000/api/inngest",
                                 "http://[::ffff:127.0.0.1]:3000/x"])
def test_loopback_targets_are_accepted_in_dev_mode(url: str) -> None:
    sync_target(url, DEV)


@pytest.mark.parametrize("url", REMOTE)
def test_allow_remote_sync_lets_dev_mode_reach_other_hosts(url: str) -> None:
    allowed = Settings(mode=Mode.DEV, sdk_discovery=False, allow_remote_sync=True)
    sync_target(url, allowed)  # parsing only: no connection is made here


@pytest.mark.parametrize("mode", [DEV, PRODUCTION], ids=["dev", "production"])
@pytest.mark.parametrize("url", MALFORMED)
async def test_a_malformed_url_is_refused_naming_url(
    url: str, mode: Settings, no_remote_traffic: _Spy,
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await AppSync(mode).sync(url)
    assert caught.value.field == "url"
    assert no_remote_traffic.attempts == []


async def test_a_remote_sdk_url_from_the_command_line_is_never_probed(
    no_remote_traffic: _Spy,
) -> None:
    syncer = AppSync(Settings(mode=Mode.DEV, sdk_discovery=False,
                              sdk_urls="http://example.com/api/inngest"))
    await syncer.run_pass()
    assert no_remote_traffic.attempts == []


@pytest.mark.parametrize("url", MALFORMED[:3])
def test_a_registration_with_a_malformed_url_names_url(url: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        http_url(url, "url")
    assert caught.value.field == "url"


async def _sync(plait: Running, content: bytes) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(f"http://127.0.0.1:{plait.endpoints.http_port}/v1/apps/sync",
                               content=content, headers={"content-type": "application/json"})


async def test_the_dev_sync_api_refuses_remote_and_malformed_urls_with_a_400_naming_url(
    tmp_path: Path, no_remote_traffic: _Spy,
) -> None:
    async with running_server(settings_for("embedded", tmp_path)) as plait:
        for url in [*REMOTE[:3], "http://[::1"]:
            reply = await _sync(plait, b'{"url": "%s"}' % url.encode())
            assert reply.status_code == 400, (url, reply.text)
            assert reply.json()["error"].startswith("url: ")
    assert no_remote_traffic.attempts == []


async def test_an_app_answering_a_sync_with_deeply_nested_json_is_reported_not_a_crash() -> None:
    """A synced app's answer is read under the canonical JSON rules: 100,000 levels of nesting
    made json.loads raise RecursionError out of the sync (a 500)."""
    body = b"[" * 100_000 + b"]" * 100_000

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 500 Internal Server Error\r\nX-Inngest-SDK: py:v0.5.19\r\n"
                     b"Content-Type: application/json\r\nConnection: close\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        result = await AppSync(DEV).sync(f"http://127.0.0.1:{port}/api/inngest")
    finally:
        server.close()
        await server.wait_closed()
    assert not result.ok
    assert result.status == 500
    assert result.body == {}
