"""Drivers carry leased jobs to workers and bring their opcodes back to the executor."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from server.types import FunctionId, Job, RunId


class Driver(Protocol):
    def capacity(self) -> dict[FunctionId, int]:
        """Free slots per function this driver can run now."""
        ...

    def total_capacity(self) -> int:
        """Free slots overall (a slot may serve several functions)."""
        ...

    async def dispatch(self, jobs: Sequence[Job]) -> list[Job]:
        """Sends jobs to workers; returns those it could not place."""
        ...

    async def cancel(self, run_id: RunId) -> bool:
        """Tells the worker running the run's job to stop; True when one was told."""
        ...
