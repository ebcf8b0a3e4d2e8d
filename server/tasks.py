"""Helpers for the long-running role loops."""

from __future__ import annotations

import asyncio


def raise_if_cancelling() -> None:
    """Raises CancelledError when the current task has been asked to stop.

    Client libraries can turn a cancellation into an ordinary result (redis-py returns None
    from a blocking read whose timeout raced the cancel), so every role loop checks once per
    iteration instead of trusting the cancellation to surface.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
