"""JSON outputs and error details in the shape the wire wants, with the retry flags of an error."""

from __future__ import annotations

import json
import traceback
from typing import Any

from plait._errors import NonRetriableError, RetryAfterError, StepError
from plait._messages import ErrorInfo

# The server refuses larger outputs; failing here names the step instead.
MAX_OUTPUT_BYTES = 4 * 1024 * 1024


class OutputError(ValueError):
    """A step or function returned something that cannot be stored as JSON."""


def dumps(value: Any, what: str) -> bytes:
    """Encodes an output as compact JSON; `what` names its source in the error message."""
    try:
        # NaN and Infinity are not JSON: other SDKs could not read them back.
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise OutputError(f"{what} returned a value that is not JSON-serialisable: {exc}") from exc
    data = text.encode()
    if len(data) > MAX_OUTPUT_BYTES:
        raise OutputError(
            f"{what} returned {len(data)} bytes of JSON; the limit is {MAX_OUTPUT_BYTES} bytes"
        )
    return data


def error_info(exc: BaseException) -> ErrorInfo:
    """The wire form of an exception; a replayed StepError keeps its original name and stack."""
    if isinstance(exc, StepError):
        return ErrorInfo(name=exc.name, message=exc.message, stack=exc.stack)
    message = exc.message if isinstance(exc, NonRetriableError | RetryAfterError) else str(exc)
    stack = "".join(traceback.format_exception(exc))
    return ErrorInfo(name=type(exc).__name__, message=message, stack=stack)


def is_non_retriable(exc: BaseException) -> bool:
    """True when retrying cannot help: asked for, or a step already out of retries."""
    return isinstance(exc, NonRetriableError | StepError | OutputError)


def retry_after_ms(exc: BaseException) -> int:
    return exc.retry_after_ms if isinstance(exc, RetryAfterError) else 0
