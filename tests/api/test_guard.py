"""The HTTP gate (issue 11, item 9): state-changing requests need JSON and may not come from
another site's page; oversize bodies are refused by their length or while being read. The
middleware runs in front of a recording app, in process (no sockets)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from inngest._internal import net, server_lib
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from server.api.guard import Guard, is_json_media_type
from server.config import Mode, Settings

DEV = Settings(mode=Mode.DEV, max_request_bytes=1000)
PRODUCTION = Settings(mode=Mode.PRODUCTION, redis_url="redis://127.0.0.1:6379",
                      database_url="sqlite+aiosqlite:///x.db", max_request_bytes=1000)
HOST = "127.0.0.1:8288"
BASE = f"http://{HOST}"
UNSAFE = ["POST", "PUT", "PATCH", "DELETE"]


class _Recorder:
    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def handle(self, request: Request) -> JSONResponse:
        self.bodies.append(await request.body())
        return JSONResponse({"ok": True})


def _client(config: Settings = DEV) -> tuple[httpx.AsyncClient, _Recorder]:
    recorder = _Recorder()
    app = Starlette(routes=[Route("/{path:path}", recorder.handle, methods=[
        "GET", "HEAD", "OPTIONS", *UNSAFE])], middleware=[Middleware(Guard, settings=config)])
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE), recorder


def _refused(reply: httpx.Response, status: int, name: str) -> None:
    assert reply.status_code == status, reply.text
    assert reply.json()["error"].startswith(f"{name}: ")
    assert reply.json()["status"] == status and reply.json()["ok"] is False


async def test_what_the_official_sdks_send_passes() -> None:
    client, recorder = _client()
    py = net.create_headers(env=None, framework=server_lib.Framework.FAST_API,
                            server_kind=server_lib.ServerKind.DEV_SERVER)
    # inngest-js' inngestHeaders(): fetch in Node sends no Origin.
    js = {"Content-Type": "application/json", "User-Agent": "inngest-js:v3",
          "x-inngest-sdk": "inngest-js:v3", "x-inngest-sdk-handled": "true"}
    async with client:
        for headers in (py, js):
            for path in ("/e/key", "/fn/register"):
                reply = await client.post(path, content=b'{"name": "a"}', headers=headers)
                assert reply.status_code == 200, reply.text
    assert recorder.bodies == [b'{"name": "a"}'] * 4


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          "Application/JSON;charset=UTF-8", None])
async def test_json_or_no_content_type_passes(content_type: str | None) -> None:
    client, recorder = _client()
    headers = {"content-type": content_type} if content_type else {}
    async with client:
        reply = await client.post("/v1/cancellations", content=b"{}", headers=headers)
    assert reply.status_code == 200 and recorder.bodies == [b"{}"]


@pytest.mark.parametrize("content_type", [
    "text/plain;charset=UTF-8", "application/x-www-form-urlencoded", "multipart/form-data; b=x",
    "application/jsonp", "application/json-seq", "text/json", ""])
@pytest.mark.parametrize("method", UNSAFE)
async def test_a_form_or_text_body_is_refused_with_415_naming_content_type(
    method: str, content_type: str,
) -> None:
    client, recorder = _client()
    async with client:
        reply = await client.request(method, "/v1/apps/sync", content=b'{"url": "x"}',
                                     headers={"content-type": content_type})
    _refused(reply, 415, "Content-Type")
    assert recorder.bodies == []


_TOKEN = r"[a-zA-Z0-9!#$&^_.+-]{1,20}"


@settings(max_examples=300)
@given(st.from_regex(rf"{_TOKEN}/{_TOKEN}(; ?[a-z]+=[a-z0-9-]+)?", fullmatch=True)
       | st.sampled_from(["application/json", "APPLICATION/Json ; charset=utf-8"]))
def test_only_application_json_is_a_json_media_type(content_type: str) -> None:
    expected = content_type.split(";")[0].strip().lower() == "application/json"
    assert is_json_media_type(content_type) is expected


@pytest.mark.parametrize("origin", [
    "http://evil.example", "https://127.0.0.1:8288", "http://127.0.0.1:3000", "null",
    "http://localhost:8288", "http://127.0.0.1:8288/x", "http://[::1"])
@pytest.mark.parametrize("method", UNSAFE)
async def test_a_foreign_origin_is_refused_with_403_naming_origin(method: str, origin: str) -> None:
    client, recorder = _client()
    async with client:
        reply = await client.request(method, "/v1/cancellations", content=b"{}",
                                     headers={"origin": origin,
                                              "content-type": "application/json"})
    _refused(reply, 403, "Origin")
    assert recorder.bodies == []


@settings(max_examples=200)
@given(st.sampled_from(["http", "https"]),
       st.from_regex(r"[a-z][a-z0-9-]{0,15}(\.[a-z]{2,6}){0,2}", fullmatch=True),
       st.integers(1, 65535))
def test_any_other_origin_is_refused(scheme: str, host: str, port: int) -> None:
    origin = f"{scheme}://{host}:{port}"
    if origin == BASE:
        return

    async def post() -> httpx.Response:
        client, _ = _client()
        async with client:
            return await client.post("/e/key", json={"name": "a"}, headers={"origin": origin})

    _refused(asyncio.run(post()), 403, "Origin")


async def test_the_servers_own_origin_passes() -> None:
    client, recorder = _client()
    async with client:
        reply = await client.post("/e/key", json={"name": "a"}, headers={"origin": BASE})
    assert reply.status_code == 200 and len(recorder.bodies) == 1


async def test_a_rebound_name_is_refused_in_dev_mode_but_not_in_production() -> None:
    """A page on evil.example whose name now resolves to 127.0.0.1 is same-origin with the
    requests it makes; dev mode answers only loopback names."""
    headers = {"origin": "http://evil.example:8288", "host": "evil.example:8288"}
    dev, _ = _client(DEV)
    production, recorder = _client(PRODUCTION)
    async with dev, production:
        _refused(await dev.post("/e/key", json={"name": "a"}, headers=headers), 403, "Origin")
        reply = await production.post("/e/key", json={"name": "a"}, headers=headers)
    assert reply.status_code == 200 and len(recorder.bodies) == 1


@pytest.mark.parametrize("method", UNSAFE)
async def test_sec_fetch_site_cross_site_is_refused_naming_the_header(method: str) -> None:
    client, recorder = _client()
    async with client:
        reply = await client.request(method, "/fn/register", content=b"{}",
                                     headers={"sec-fetch-site": "cross-site"})
    _refused(reply, 403, "Sec-Fetch-Site")
    assert recorder.bodies == []


async def test_reads_pass_whatever_their_origin() -> None:
    client, recorder = _client()
    async with client:
        reply = await client.get("/v1/runs/x", headers={"origin": "http://evil.example",
                                                       "sec-fetch-site": "cross-site"})
    assert reply.status_code == 200 and recorder.bodies == [b""]


async def test_an_oversize_content_length_is_refused_before_the_body_is_read() -> None:
    client, recorder = _client()
    read = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal read
        for _ in range(10):
            read += 1
            yield b"x" * 500

    async with client:
        reply = await client.post("/e/key", content=b"x" * 1001,
                                  headers={"content-type": "application/json"})
        _refused(reply, 413, "body")
        chunked = await client.post("/e/key", content=body(),
                                    headers={"content-type": "application/json"})
    _refused(chunked, 413, "body")
    assert recorder.bodies == []
    # Refused at the third chunk, the first past 1,000 bytes: the rest was never pulled.
    assert read == 3


async def test_a_body_at_the_limit_passes() -> None:
    client, recorder = _client()
    async with client:
        reply = await client.post("/e/key", content=json.dumps("x" * 998).encode())
    assert reply.status_code == 200 and len(recorder.bodies[0]) == 1000


_HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=40)


@settings(max_examples=300)
@given(origin=_HEADER_TEXT, host=_HEADER_TEXT, content_type=_HEADER_TEXT)
def test_odd_origin_host_and_content_type_headers_are_answered_never_a_crash(
    origin: str, host: str, content_type: str,
) -> None:
    async def post() -> httpx.Response:
        client, _ = _client()
        async with client:
            return await client.post("/e/key", content=b"{}", headers={
                "origin": origin, "host": host, "content-type": content_type})

    assert asyncio.run(post()).status_code in (200, 403, 415)
