"""The `plait` command: options, config errors, signals, and the logging it sets up."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from click.testing import CliRunner

from server import __version__
from server.cli import cli
from server.config import Settings
from server.errors import ConfigError, Unavailable
from server.logs import configure_logging

# Runs the real CLI with a stand-in server.app whose serve() waits to be cancelled.
_FAKE_APP = """
import asyncio, os, sys, types
from server.cli import main

async def serve(settings):
    print("serving", settings.mode.value, flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        print("cleaned up", flush=True)
        if os.environ.get("FAKE_CLEANUP_HANGS"):
            await asyncio.shield(asyncio.Event().wait())

app = types.ModuleType("server.app")
app.serve = serve
sys.modules["server.app"] = app
main()
"""

PRODUCTION_URLS = [
    "--redis-url",
    "redis://127.0.0.1:6379/0",
    "--database-url",
    "postgresql+asyncpg://postgres@127.0.0.1/test",
]
PRODUCTION_FLAGS = [*PRODUCTION_URLS, "--grpc-tokens", "w1", "--event-key", "k1",
                    "--signing-key", "signkey-prod-abcd"]


@pytest.fixture(autouse=True)
def no_plait_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("PLAIT_"):
            monkeypatch.delenv(name)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    config = structlog.get_config()
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.configure(**config)


def plait_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PLAIT_")}


def test_version_prints_the_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"plait {__version__}"


@pytest.mark.parametrize("command", ["dev", "start"])
def test_help_lists_an_option_for_every_setting(command: str) -> None:
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0
    for f in dataclasses.fields(Settings):
        if f.name != "mode":
            assert f"--{f.name.replace('_', '-')}" in result.output
            assert f"PLAIT_{f.name.upper()}" in result.output


def test_start_without_a_redis_url_exits_2_and_says_so() -> None:
    result = CliRunner().invoke(cli, ["start"])
    assert result.exit_code == 2
    assert result.stderr.startswith("plait: --redis-url (PLAIT_REDIS_URL) is required")


def test_start_reads_the_redis_url_from_the_environment() -> None:
    result = CliRunner().invoke(cli, ["start"], env={"PLAIT_REDIS_URL": "redis://x"})
    assert result.exit_code == 2
    assert "plait: --database-url (PLAIT_DATABASE_URL) is required" in result.stderr


def test_a_bad_port_is_rejected_naming_the_option() -> None:
    result = CliRunner().invoke(cli, ["dev", "--http-port", "abc"])
    assert result.exit_code == 2
    assert "'--http-port'" in result.stderr


def test_a_bad_variable_is_rejected_naming_the_variable() -> None:
    result = CliRunner().invoke(cli, ["dev"], env={"PLAIT_LEASE_MS": "soon"})
    assert result.exit_code == 2
    assert "plait: PLAIT_LEASE_MS has value 'soon'" in result.stderr


def test_an_invalid_combination_is_rejected_naming_the_flags() -> None:
    result = CliRunner().invoke(
        cli, ["dev", "--lease-ms", "1000", "--heartbeat-interval-ms", "900"]
    )
    assert result.exit_code == 2
    assert "plait: --heartbeat-interval-ms" in result.stderr


@pytest.mark.usefixtures("restore_logging")
def test_a_server_that_cannot_start_exits_1_with_its_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def serve(settings: Settings) -> None:
        raise Unavailable("redis-server did not answer")

    monkeypatch.setitem(sys.modules, "server.app", types.SimpleNamespace(serve=serve))
    result = CliRunner().invoke(cli, ["dev", "--log-level", "error"])
    assert result.exit_code == 1
    assert "plait: redis-server did not answer" in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("command", ["dev", "start"])
async def test_a_signal_cancels_serve_and_plait_exits_0(
    command: str, sig: signal.Signals, tmp_path: Path
) -> None:
    extra = PRODUCTION_FLAGS if command == "start" else []
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _FAKE_APP,
        command,
        "--data-dir",
        str(tmp_path),
        *extra,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=plait_env(),
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(15):
            assert await proc.stdout.readline() == f"serving {command_mode(command)}\n".encode()
            proc.send_signal(sig)
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    assert out == b"cleaned up\n"
    if command == "start":
        # Production logs JSON unless told otherwise.
        events = [json.loads(line)["event"] for line in err.decode().splitlines()]
        assert {"shutdown.requested", "shutdown.completed"} <= set(events)


async def test_a_second_signal_ends_a_hung_shutdown_at_once(tmp_path: Path) -> None:
    env = {**plait_env(), "FAKE_CLEANUP_HANGS": "1"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _FAKE_APP, "dev", "--data-dir", str(tmp_path),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(15):
            assert await proc.stdout.readline() == b"serving dev\n"
            proc.send_signal(signal.SIGINT)
            assert await proc.stdout.readline() == b"cleaned up\n"
            proc.send_signal(signal.SIGINT)
            _, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 128 + signal.SIGINT
    assert b"shutdown.forced" in err


def command_mode(command: str) -> str:
    return {"dev": "dev", "start": "production"}[command]


@pytest.mark.usefixtures("restore_logging")
def test_json_logs_carry_bound_context_and_stdlib_records(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("json", "info")
    log = structlog.get_logger("plait.test")
    with structlog.contextvars.bound_contextvars(run_id="run-1", trace_id="trace-1"):
        log.info("step.completed", step_id="s1")
        logging.getLogger("somelib").warning(
            "disk %s", "slow", extra={"free_mb": 3, "color_message": "\x1b[31mdisk %s"}
        )
    log.debug("hidden.below.level")

    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [line["event"] for line in lines] == ["step.completed", "disk slow"]
    ours, theirs = lines
    assert ours["run_id"] == "run-1" and ours["trace_id"] == "trace-1"
    assert ours["step_id"] == "s1" and ours["level"] == "info" and "timestamp" in ours
    assert theirs["logger"] == "somelib" and theirs["free_mb"] == 3
    assert theirs["run_id"] == "run-1"
    assert "color_message" not in theirs


@pytest.mark.usefixtures("restore_logging")
def test_console_logs_are_readable_lines(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("console", "debug")
    structlog.get_logger("plait.test").debug("lease.expired", job_id="j1")
    err = capsys.readouterr().err
    assert "lease.expired" in err and "job_id=j1" in err
    assert not err.lstrip().startswith("{")


def test_an_unknown_log_level_is_named_in_the_error() -> None:
    with pytest.raises(ConfigError, match="--log-level has value 'loud'"):
        configure_logging("console", "loud")


@pytest.mark.usefixtures("restore_logging")
def test_sdk_urls_and_event_keys_are_repeatable_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Settings] = []

    async def serve(settings: Settings) -> None:
        seen.append(settings)

    monkeypatch.setitem(sys.modules, "server.app", types.SimpleNamespace(serve=serve))
    result = CliRunner().invoke(cli, [
        "dev", "--log-level", "error", "-u", "http://a/api/inngest",
        "--sdk-url", "http://b/api/inngest", "--event-key", "k1", "--event-key", "k2,k3",
        "--sdk-discovery", "false", "--signing-key", "signkey-test-abcd"])
    assert result.exit_code == 0, result.stderr
    (settings,) = seen
    assert settings.sdk_url_list == ["http://a/api/inngest", "http://b/api/inngest"]
    assert settings.event_key_list == ["k1", "k2", "k3"]
    assert settings.sdk_discovery is False and settings.signing_key == "signkey-test-abcd"


def test_a_signing_key_that_is_not_one_is_rejected_naming_the_flag() -> None:
    result = CliRunner().invoke(cli, ["dev", "--signing-key", "hunter2"])
    assert result.exit_code == 2
    assert "plait: --signing-key has a value that is not a signing key" in result.stderr


def test_start_without_tokens_and_keys_exits_2_naming_the_flags_and_insecure() -> None:
    result = CliRunner().invoke(cli, ["start", *PRODUCTION_URLS])
    assert result.exit_code == 2
    assert result.stderr.startswith("plait: `plait start` refuses to run unauthenticated")
    for flag in ("--grpc-tokens", "--event-key", "--signing-key", "--insecure"):
        assert flag in result.stderr


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize(("args", "env"), [
    (["--insecure"], {}),
    ([], {"PLAIT_INSECURE": "1"}),
    (["--grpc-tokens", "w1", "--event-key", "k1", "--signing-key", "signkey-prod-abcd"], {}),
])
def test_start_runs_with_insecure_as_a_plain_flag_its_variable_or_the_secrets(
    monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict[str, str],
) -> None:
    seen: list[Settings] = []

    async def serve(settings: Settings) -> None:
        seen.append(settings)

    monkeypatch.setitem(sys.modules, "server.app", types.SimpleNamespace(serve=serve))
    result = CliRunner().invoke(cli, ["start", "--log-level", "error", *PRODUCTION_URLS, *args],
                                env=env)
    assert result.exit_code == 0, result.stderr
    (settings,) = seen
    assert settings.insecure is bool(env or "--insecure" in args)


def test_an_off_by_default_switch_takes_no_value() -> None:
    result = CliRunner().invoke(cli, ["dev", "--insecure", "true"])
    assert result.exit_code == 2
    assert "Got unexpected extra argument (true)" in result.stderr
