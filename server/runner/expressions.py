"""CEL expressions of triggers, compiled once at registration and evaluated per event."""

from __future__ import annotations

from typing import Any

import cel
from croniter import croniter

from server.errors import InvalidArgument

MAX_EXPRESSION_BYTES = 4096


def compile_expression(field: str, source: str) -> Any:
    """Compiles a CEL expression; a syntax error is an InvalidArgument naming the field."""
    if len(source.encode()) > MAX_EXPRESSION_BYTES:
        raise InvalidArgument(field, f"longer than {MAX_EXPRESSION_BYTES} bytes")
    try:
        return cel.compile(source)
    except ValueError as e:
        first = str(e).splitlines()[0] if str(e) else "syntax error"
        raise InvalidArgument(field, f"invalid CEL expression: {first}") from None


def matches(program: Any, variables: dict[str, Any]) -> bool:
    """True when the expression holds; an evaluation error (missing field) is a non-match."""
    try:
        return program.execute(variables) is True
    except Exception:
        return False


def validate_cron(field: str, spec: str) -> None:
    """Accepts five-field cron, descriptors (@hourly …) and an optional TZ=/CRON_TZ= prefix."""
    expr = spec.strip()
    if expr.startswith(("TZ=", "CRON_TZ=")):
        tz, _, expr = expr.partition(" ")
        zone = tz.split("=", 1)[1]
        try:
            from zoneinfo import ZoneInfo

            ZoneInfo(zone)
        except Exception:
            raise InvalidArgument(field, f"unknown time zone {zone!r}") from None
    fields = expr.split()
    if not expr.startswith("@") and len(fields) != 5:
        raise InvalidArgument(field, f"cron {spec!r} must have 5 fields")
    if not croniter.is_valid(expr):
        raise InvalidArgument(field, f"invalid cron expression {spec!r}")
