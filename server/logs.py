"""Logging: structlog renders every record, ours and the stdlib's, as console lines or JSON.

Event names are constants (`"lease.expired"`), data goes in fields; run_id / trace_id bound
with structlog.contextvars appear on every record logged inside that context, and a record
with a run_id gets that run's trace_id (server/telemetry/ids.py), traced or not.
"""

from __future__ import annotations

import logging
import sys

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from server.errors import ConfigError
from server.telemetry.ids import trace_id_hex

__all__ = ["LEVELS", "add_trace_id", "configure_logging"]

LEVELS = ("debug", "info", "warning", "error", "critical")

# Libraries' loggers: their INFO lines are noise (httpx logs every request, so discovery's
# probes would print lines every 3 s; alembic lists each plugin it loads). They stay at
# WARNING unless `--log-level debug` asks for everything.
_QUIET = ("alembic", "aiosqlite", "asyncio", "grpc", "h11", "h2", "hpack", "httpcore", "httpx",
          "multipart", "redis", "sqlalchemy", "urllib3", "watchfiles")


def configure_logging(fmt: str, level: str, *, cache_loggers: bool = True) -> None:
    """Routes structlog and stdlib logging to stderr, as "console" lines or "json" objects.
    `cache_loggers` False keeps loggers reconfigurable (tests: a logger cached on first use
    ignores structlog.testing.capture_logs for the rest of the process)."""
    if fmt not in ("console", "json"):
        raise ConfigError(f"--log-format has value {fmt!r}: use console or json")
    if level.lower() not in LEVELS:
        raise ConfigError(f"--log-level has value {level!r}: use one of {', '.join(LEVELS)}")
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        add_trace_id,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
        # Locals would copy event payloads and secrets into production logs.
        tracebacks = structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        shared.append(structlog.processors.ExceptionRenderer(tracebacks))
    else:
        # Plain tracebacks: rich's (the default when rich is installed) render every local of
        # every frame, which took seconds per record and froze the loop during a Redis outage,
        # when each role logs its crash.
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty(),
                                                 exception_formatter=structlog.dev.plain_traceback)
    structlog.configure(
        processors=[
            # Drops a record below the level before any other processor spends time on it.
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=cache_loggers,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            # A stdlib record's `extra={...}` becomes fields, like our own bound data.
            foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder(), add_trace_id,
                               _drop_color_message],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    for name in _QUIET:
        quiet = logging.getLogger(name)
        quiet.setLevel(logging.NOTSET if root.level <= logging.DEBUG
                       else max(logging.WARNING, root.level))


def add_trace_id(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    """A record about a run carries its trace id, the one its spans are exported under."""
    run_id = event.get("run_id")
    if run_id and "trace_id" not in event:
        event["trace_id"] = trace_id_hex(str(run_id))
    return event


def _drop_color_message(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    # uvicorn repeats each message with ANSI colours in this extra field.
    event.pop("color_message", None)
    return event
