"""Errors a function raises to steer retries, and the error a failed memoised step raises."""

from __future__ import annotations

import time
from datetime import datetime, timedelta


class NonRetriableError(Exception):
    """Raised by a step or a function when no retry can help: the step or run fails at once."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RetryAfterError(Exception):
    """Raised to ask for the next attempt no earlier than `retry_after` from now.

    `retry_after` is a delay in seconds, a `timedelta`, or an absolute `datetime`
    (naive datetimes are local time, as `datetime.timestamp()` reads them).
    """

    def __init__(self, message: str, retry_after: float | timedelta | datetime) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        # Resolved now: an absolute time means "from the moment of raising", not of sending.
        self.retry_after_ms = _delay_ms(retry_after)


class StepError(Exception):
    """A step failed for good (its retries are exhausted); raised where the step is replayed.

    Catch it to run compensation; let it propagate and the run fails without retries.
    """

    def __init__(self, name: str, message: str, stack: str = "") -> None:
        super().__init__(f"{name}: {message}" if name else message)
        self.name = name
        self.message = message
        self.stack = stack


class _Interrupt(BaseException):
    """Stops the user's function once a job has its opcode.

    A BaseException so that a user's `except Exception` around a step cannot swallow it.
    """


def _delay_ms(retry_after: float | timedelta | datetime) -> int:
    if isinstance(retry_after, datetime):
        return max(0, round((retry_after.timestamp() - time.time()) * 1000))
    if isinstance(retry_after, timedelta):
        return max(0, round(retry_after.total_seconds() * 1000))
    if isinstance(retry_after, bool) or not isinstance(retry_after, int | float):
        raise TypeError(
            f"RetryAfterError retry_after has value {retry_after!r}. "
            "Expected seconds (int or float), a timedelta or a datetime."
        )
    return max(0, round(retry_after * 1000))
