"""HTTP limits on a real server over raw sockets to 127.0.0.1 (issue 11, item 10): half-sent
requests are closed by the header and body timeouts, an oversize body is refused by its
Content-Length before it is sent or while it is read, connections past the cap get a 503, and
browser-style cross-site requests are refused through the whole stack."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from server.config import Settings
from tests.e2e.conftest import Running, running_server
from tests.e2e.harness import settings_for

LIMIT = 64 * 1024
# Generous next to the 1 s timeouts: the assertion is that closing happens, not when.
CLOSE_DEADLINE_S = 30


@contextlib.asynccontextmanager
async def _server(tmp_path: Path, **overrides: object) -> AsyncIterator[Running]:
    base: dict[str, object] = dict(http_header_timeout_s=1, http_body_timeout_s=1,
                                   max_request_bytes=LIMIT)
    base.update(overrides)
    settings: Settings = settings_for("embedded", tmp_path, **base)
    async with running_server(settings) as plait:
        yield plait


async def _open(plait: Running) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", plait.endpoints.http_port)


async def _closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sent until it closed the connection."""
    received = b""
    try:
        while chunk := await reader.read(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


async def _status(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1])


async def test_two_hundred_half_sent_requests_are_closed_by_the_server(tmp_path: Path) -> None:
    async with _server(tmp_path) as plait:
        connections = [await _open(plait) for _ in range(200)]
        for i, (_, writer) in enumerate(connections):
            if i % 2:  # headers never finished
                writer.write(b"POST /e/key HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: appl")
            else:  # headers done, body half sent
                writer.write(b"POST /e/key HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                             b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
                             b'{"name": ')
            await writer.drain()
        async with asyncio.timeout(CLOSE_DEADLINE_S):
            answers = await asyncio.gather(*(_closed_by_server(r) for r, _ in connections))
        # Nothing was answered: the server closed each connection it was owed a request on.
        assert answers == [b""] * 200
        for _, writer in connections:
            writer.close()
        async with httpx.AsyncClient() as http:
            health = await http.get(f"http://127.0.0.1:{plait.endpoints.http_port}/health")
        assert health.status_code == 200


async def test_a_silent_connection_is_closed_by_the_header_timeout(tmp_path: Path) -> None:
    async with _server(tmp_path) as plait:
        reader, writer = await _open(plait)
        async with asyncio.timeout(CLOSE_DEADLINE_S):
            assert await _closed_by_server(reader) == b""
        writer.close()


async def test_an_oversize_content_length_is_refused_before_the_body_is_sent(
    tmp_path: Path,
) -> None:
    async with _server(tmp_path) as plait:
        reader, writer = await _open(plait)
        writer.write(b"POST /e/key HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(CLOSE_DEADLINE_S):
            assert await _status(reader) == 413
            # ... and the connection, owed a body it will never get, ends with the body timeout.
            await _closed_by_server(reader)
        writer.close()


async def test_a_chunked_body_past_the_limit_is_refused_while_it_is_read(
    tmp_path: Path,
) -> None:
    async with _server(tmp_path, http_body_timeout_s=30) as plait:
        reader, writer = await _open(plait)
        writer.write(b"POST /e/key HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"x" * 16384
        for _ in range(LIMIT // len(chunk) + 1):
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        await writer.drain()
        # The body is not finished (no last chunk): the answer comes while it is being read.
        async with asyncio.timeout(CLOSE_DEADLINE_S):
            assert await _status(reader) == 413
        writer.close()


async def test_connections_past_the_cap_get_a_503_and_are_closed(tmp_path: Path) -> None:
    async with _server(tmp_path, http_header_timeout_s=60, http_max_connections=5) as plait:
        held = [await _open(plait) for _ in range(5)]
        reader, writer = await _open(plait)
        async with asyncio.timeout(CLOSE_DEADLINE_S):
            answer = await _closed_by_server(reader)
        assert answer.startswith(b"HTTP/1.1 503 ") and b"too many connections" in answer
        writer.close()
        for _, w in held:
            w.close()


async def test_a_cross_site_post_is_refused_through_the_whole_stack(tmp_path: Path) -> None:
    async with _server(tmp_path) as plait:
        base = f"http://127.0.0.1:{plait.endpoints.http_port}"
        async with httpx.AsyncClient(base_url=base) as http:
            forged = await http.post("/v1/apps/sync", json={"url": "http://127.0.0.1:9/x"},
                                     headers={"origin": "http://evil.example"})
            form = await http.post("/e/key", content=b'{"name": "a"}',
                                   headers={"content-type": "text/plain"})
            own = await http.post("/e/key", json={"name": "a"}, headers={"origin": base})
    assert forged.status_code == 403 and forged.json()["error"].startswith("Origin: ")
    assert form.status_code == 415 and form.json()["error"].startswith("Content-Type: ")
    assert own.status_code == 200, own.text


