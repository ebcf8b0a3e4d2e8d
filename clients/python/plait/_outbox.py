"""Batches what the worker sends: every result ready when the sender wakes goes in one message."""

from __future__ import annotations

import asyncio
from collections.abc import Collection

from plait._messages import Drain, Heartbeat, JobResult, Outgoing, Results


class Outbox:
    """Results and control messages waiting for the stream's one sender task."""

    def __init__(self) -> None:
        self._results: list[JobResult] = []
        self._control: list[Heartbeat | Drain] = []
        self._writing = False
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def put(self, item: JobResult | Heartbeat | Drain) -> None:
        if isinstance(item, JobResult):
            self._results.append(item)
        elif item not in self._control:  # one pending heartbeat says as much as ten
            self._control.append(item)
        self._idle.clear()
        self._wake.set()

    def discard(self, job_ids: Collection[str]) -> None:
        """Drops unsent results of cancelled jobs: the server wants nothing for them."""
        self._results = [r for r in self._results if r.job_id not in job_ids]
        self._settle()

    async def take(self) -> list[Outgoing]:
        """Everything pending, results in one message; waits until something is."""
        while not (self._results or self._control):
            self._wake.clear()
            await self._wake.wait()
        batch: list[Outgoing] = list(self._control)
        if self._results:
            batch.append(Results(tuple(self._results)))
        self._control = []
        self._results = []
        self._writing = True
        return batch

    def sent(self) -> None:
        self._writing = False
        self._settle()

    async def flushed(self) -> None:
        """Waits until everything put so far has been written."""
        await self._idle.wait()

    def _settle(self) -> None:
        if not (self._results or self._control or self._writing):
            self._idle.set()
