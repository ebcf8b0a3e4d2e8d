"""The dev log a person reads: discovery polls every few seconds, but the log says only what
changed (an app found, synced, gone, synced again), and library loggers such as httpx's stay
at WARNING unless --log-level debug asks for everything."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import structlog

from server.logs import configure_logging
from tests.e2e.harness import ROOT

# Runs discovery passes against a fake SDK app on a free loopback port: three while it is up,
# three after it stopped, three once it is back; logging configured as `plait dev` does.
_SCRIPT = textwrap.dedent('''
    import asyncio

    from server.api.inngest.sync import AppSync
    from server.config import Settings
    from server.logs import configure_logging

    ANSWER = (b"HTTP/1.1 200 OK\\r\\nX-Inngest-SDK: inngest-py:v0.5.0\\r\\n"
              b"Content-Type: application/json\\r\\nContent-Length: 27\\r\\n"
              b"Connection: close\\r\\n\\r\\n" b'{"ok":true,"modified":true}')

    async def answer(reader, writer):
        try:
            head = await reader.readuntil(b"\\r\\n\\r\\n")
        except asyncio.IncompleteReadError:  # discovery's port check: connect, close
            writer.close()
            return
        for line in head.split(b"\\r\\n"):
            if line.lower().startswith(b"content-length:"):
                await reader.readexactly(int(line.split(b":")[1]))
        writer.write(ANSWER)
        await writer.drain()
        writer.close()

    async def main():
        configure_logging("console", "info")
        app = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = app.sockets[0].getsockname()[1]
        sync = AppSync(Settings(), ports=(port,))
        for _ in range(3):
            await sync.run_pass()
        app.close()
        await app.wait_closed()
        for _ in range(3):
            await sync.run_pass()
        app = await asyncio.start_server(answer, "127.0.0.1", port)
        for _ in range(3):
            await sync.run_pass()
        app.close()

    asyncio.run(main())
''')


def test_discovery_logs_each_change_once_and_no_request_lines() -> None:
    done = subprocess.run([sys.executable, "-c", _SCRIPT], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    events = [next((e for e in ("app.found", "app.synced", "app.gone") if e in line), line)
              for line in lines]
    assert events == ["app.found", "app.synced", "app.gone", "app.synced"], done.stderr
    assert "HTTP Request" not in done.stderr


def test_library_loggers_stay_at_warning_unless_debug_is_asked() -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging.getLogger("httpx").level)
    # configure_logging caches loggers on first use: left in place, every later test's
    # structlog.testing.capture_logs would see nothing from the loggers used meanwhile.
    config = structlog.get_config()
    try:
        configure_logging("console", "info")
        assert logging.getLogger("httpx").getEffectiveLevel() == logging.WARNING
        assert logging.getLogger("httpcore.connection").getEffectiveLevel() == logging.WARNING
        configure_logging("console", "debug")
        assert logging.getLogger("httpx").getEffectiveLevel() == logging.DEBUG
    finally:
        root.handlers, root.level = saved[0], saved[1]
        logging.getLogger("httpx").setLevel(saved[2])
        structlog.configure(**config)
