"""The `plait` command: `plait dev` on a laptop, `plait start` in production.

The one place that reads os.environ; it hands flags and environment to load_settings.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import typing
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, NoReturn

import click
import structlog
import uvloop

from server import __version__
from server.config import Mode, Settings, load_settings
from server.errors import ConfigError, PlaitError
from server.logs import LEVELS, configure_logging

__all__ = ["cli", "main"]

SHUTDOWN_REQUESTED = "shutdown.requested"
SHUTDOWN_FORCED = "shutdown.forced"
SHUTDOWN_COMPLETED = "shutdown.completed"

log = structlog.get_logger(__name__)

_ENV_PREFIX = "PLAIT_"

_HELP: dict[str, str] = {
    "http_host": "Address of the HTTP API, event API and dashboard.",
    "http_port": "Port of the HTTP API, event API and dashboard.",
    "grpc_host": "Address of the gRPC API that workers and clients use.",
    "grpc_port": "Port of the gRPC API.",
    "data_dir": "Where `plait dev` keeps its private Redis and SQLite.",
    "redis_url": "Redis 6.2+ / Valkey URL; `plait start` requires it.",
    "database_url": "postgresql+asyncpg://… or sqlite+aiosqlite:///…; `plait start` requires it.",
    "queue_shards": "Queue partitions, 1..1024.",
    "lease_ms": "How long a worker holds a job before it is redelivered.",
    "heartbeat_interval_ms": "How often workers heartbeat; at most half of --lease-ms.",
    "default_retries": "Retries of a function that sets none.",
    "backoff_base_ms": "First retry delay; it doubles per attempt, with jitter.",
    "backoff_max_ms": "Longest retry delay.",
    "max_event_bytes": "Largest event payload accepted.",
    "max_events_per_request": "Most events in one request.",
    "max_request_bytes": "Largest request body accepted.",
    "max_step_output_bytes": "Largest step output stored.",
    "finished_run_ttl_s": "How long a finished run's state stays in Redis.",
    "sdk_urls": "Serve URL of an Inngest SDK app to sync at start; repeatable (-u A -u B).",
    "sdk_discovery": "Find Inngest SDK apps on the usual local ports (dev mode only).",
    "sdk_concurrency": "Most requests in flight to one Inngest SDK app.",
    "sdk_request_timeout_s": "Longest call to an Inngest SDK app.",
    "signing_key": "Inngest signing key (signkey-<env>-<hex>): signs calls to SDK apps, checks "
                   "theirs; required for SDK apps in production.",
    "signing_key_fallback": "A second signing key accepted during a rotation.",
    "event_keys": "Event key POST /e/{key} accepts in production; repeatable or comma-separated.",
    "storage_grace_s": "Seconds Redis or the database may be unreachable before the process "
                       "exits (0: never); until then roles wait and /health says degraded.",
    "max_redeliveries": "Times a job handed back without an answer is redelivered before its "
                        "run fails.",
    "redelivery_backoff_ms": "First redelivery delay; it doubles per redelivery.",
    "max_run_state_bytes": "Largest total of a run's memoised step outputs and errors.",
    "max_error_bytes": "Longest step or run error message (and stack) kept.",
    "durability": "fsync: acknowledged events and step results survive a power cut; relaxed: "
                  "up to about a second of them may not, for more throughput.",
    "insecure": "Let `plait start` run without gRPC tokens, event keys and a signing key.",
    "tls_cert": "PEM certificate chain: serve gRPC and HTTP over TLS.",
    "tls_key": "PEM private key of --tls-cert.",
    "tls_client_ca": "PEM CA bundle: require client certificates signed by it (mutual TLS).",
    "admin_tokens": "Bearer tokens for management calls (cancel, replay, pause, reading runs); "
                    "comma-separated.",
    "metrics_token": "Bearer token GET /metrics needs in production (default: an admin token).",
    "allow_remote_sync": "Dev mode: let app sync reach addresses other than loopback.",
    "http_header_timeout_s": "Seconds an HTTP client has to send its request headers.",
    "http_body_timeout_s": "Seconds an HTTP client has to send its request body.",
    "http_max_connections": "Most HTTP connections served at once.",
    "log_format": "Readable console lines, or one JSON object per line.",
    "log_level": "Lowest level logged.",
    "otel_service_name": "service.name of exported spans (plait); setting it turns tracing on. "
                         "Also OTEL_SERVICE_NAME.",
    "otel_resource_attributes": "More resource attributes, k=v,k2=v2. "
                                "Also OTEL_RESOURCE_ATTRIBUTES.",
    "otel_traces_exporter": "otlp, or none to keep tracing off. Also OTEL_TRACES_EXPORTER.",
    "otel_exporter_otlp_endpoint": "OTLP collector; setting it turns tracing on. "
                                   "Also OTEL_EXPORTER_OTLP_ENDPOINT.",
    "otel_exporter_otlp_traces_endpoint": "OTLP endpoint for spans alone, used as given. "
                                          "Also OTEL_EXPORTER_OTLP_TRACES_ENDPOINT.",
    "otel_exporter_otlp_protocol": "grpc (default) or http/protobuf. "
                                   "Also OTEL_EXPORTER_OTLP_PROTOCOL.",
    "otel_exporter_otlp_traces_protocol": "The protocol for spans alone. "
                                          "Also OTEL_EXPORTER_OTLP_TRACES_PROTOCOL.",
    "otel_exporter_otlp_headers": "Headers of export requests, k=v,k2=v2. "
                                  "Also OTEL_EXPORTER_OTLP_HEADERS.",
    "otel_exporter_otlp_traces_headers": "Headers for spans alone. "
                                         "Also OTEL_EXPORTER_OTLP_TRACES_HEADERS.",
    "otel_exporter_otlp_insecure": "true: plain-text gRPC to an endpoint without a scheme. "
                                   "Also OTEL_EXPORTER_OTLP_INSECURE.",
    "otel_exporter_otlp_compression": "gzip or none. Also OTEL_EXPORTER_OTLP_COMPRESSION.",
    "otel_exporter_otlp_timeout": "Export deadline in ms. Also OTEL_EXPORTER_OTLP_TIMEOUT.",
    "otel_traces_sampler": "always_on (default), always_off, traceidratio (by run). "
                           "Also OTEL_TRACES_SAMPLER.",
    "otel_traces_sampler_arg": "The traceidratio ratio, 0..1. Also OTEL_TRACES_SAMPLER_ARG.",
    "otel_sdk_disabled": "true keeps tracing off whatever else is set. Also OTEL_SDK_DISABLED.",
}

_CHOICES: dict[str, tuple[str, ...]] = {"log_format": ("console", "json"), "log_level": LEVELS,
                                        "durability": ("fsync", "relaxed")}

# Settings given as repeatable flags (joined with commas), with their flag names.
_REPEATABLE: dict[str, tuple[str, ...]] = {
    "sdk_urls": ("-u", "--sdk-url", "--sdk-urls"),
    "event_keys": ("--event-key", "--event-keys"),
}

_Command = typing.TypeVar("_Command", bound=Callable[..., None])


def _param_type(name: str, kind: Any) -> click.ParamType[Any, Any]:
    if name in _CHOICES:
        return click.Choice(_CHOICES[name], case_sensitive=False)
    if kind is int:
        return click.INT
    if kind is Path:
        return click.Path(file_okay=False, path_type=Path)
    if kind is bool:
        return click.BOOL
    return click.STRING


def _mode_defaults(mode: Mode) -> dict[str, Any]:
    if mode is Mode.PRODUCTION:
        # Production logs are read by machines, unless the operator asks otherwise.
        return {"log_format": "json"}
    return {}


def _settings_options(mode: Mode) -> Callable[[_Command], _Command]:
    """One option per Settings field, defaulting to None so that env and defaults apply."""
    hints = typing.get_type_hints(Settings)
    defaults = dataclasses.replace(Settings(), **_mode_defaults(mode))

    def decorate(command: _Command) -> _Command:
        for f in reversed(dataclasses.fields(Settings)):
            if f.name == "mode":
                continue
            default = getattr(defaults, f.name)
            shown = f"; default: {default}" if default != "" else ""
            help_text = f"{_HELP.get(f.name, '')} [env: {_ENV_PREFIX}{f.name.upper()}{shown}]"
            names = _REPEATABLE.get(f.name, (f"--{f.name.replace('_', '-')}",))
            if hints[f.name] is bool and default is False:
                # An off-by-default switch is a plain flag: `--insecure`, not `--insecure true`.
                command = click.option(*names, f.name, is_flag=True, default=None,
                                       help=help_text.strip())(command)
                continue
            command = click.option(
                *names,
                f.name,
                type=_param_type(f.name, hints[f.name]),
                default=None,
                multiple=f.name in _REPEATABLE,
                help=help_text.strip(),
            )(command)
        return command

    return decorate


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="plait", message="%(prog)s %(version)s")
def cli() -> None:
    """Plait: a self-hostable durable-execution server."""


@cli.command()
@_settings_options(Mode.DEV)
def dev(**flags: Any) -> None:
    """Run Plait locally, with a private Redis and SQLite.

    Both live under --data-dir, so a restart loses nothing. No auth: for a laptop.
    """
    _serve(Mode.DEV, flags)


@cli.command()
@_settings_options(Mode.PRODUCTION)
def start(**flags: Any) -> None:
    """Run Plait in production, on your Redis and PostgreSQL.

    --redis-url and --database-url (or PLAIT_REDIS_URL and PLAIT_DATABASE_URL) are required.
    """
    _serve(Mode.PRODUCTION, flags)


def main() -> None:
    """Entry point of the `plait` script."""
    cli(prog_name="plait")


def _serve(mode: Mode, flags: dict[str, Any]) -> None:
    env = os.environ
    flags = {name: (",".join(value) or None) if name in _REPEATABLE else value
             for name, value in flags.items()}
    for name, value in _mode_defaults(mode).items():
        # Below flags and env, like any default, but above the one in Settings.
        if flags.get(name) is None and not env.get(f"{_ENV_PREFIX}{name.upper()}"):
            flags = {**flags, name: value}
    try:
        settings = load_settings({**flags, "mode": mode}, env)
        configure_logging(settings.log_format, settings.log_level)
    except ConfigError as e:
        _fail(e.message, code=2)
    try:
        uvloop.run(_run(settings))
    except PlaitError as e:
        _fail(e.message, code=1)
    except KeyboardInterrupt:
        # Ctrl-C before the signal handlers were installed: nothing was started yet.
        raise SystemExit(130) from None


def _fail(message: str, *, code: int) -> NoReturn:
    click.echo(f"plait: {message}", err=True)
    raise SystemExit(code)


async def _run(settings: Settings) -> None:
    """Serves until SIGINT or SIGTERM, lets serve() clean up on cancellation, then returns."""
    serve = _load_serve()
    loop = asyncio.get_running_loop()
    # Owned by this coroutine, which awaits it below; a cancel of _run reaches it too.
    serving = asyncio.create_task(serve(settings), name="plait.serve")
    requested: list[signal.Signals] = []

    def on_signal(sig: signal.Signals) -> None:
        if requested:
            # A second Ctrl-C means now; the dev Redis still flushes (it dies with us).
            log.warning(SHUTDOWN_FORCED, signal=sig.name)
            os._exit(128 + sig)
        requested.append(sig)
        log.info(SHUTDOWN_REQUESTED, signal=sig.name)
        serving.cancel()

    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await serving
    except asyncio.CancelledError:
        current = asyncio.current_task()
        # Only the cancellation a signal asked for is a clean exit; any other propagates.
        if not requested or (current is not None and current.cancelling()):
            raise
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
    log.info(SHUTDOWN_COMPLETED)


def _load_serve() -> Callable[[Settings], Coroutine[Any, Any, None]]:
    # Imported late so that `plait --help` and config errors do not load the whole server.
    from server.app import serve

    return serve


if __name__ == "__main__":
    main()
