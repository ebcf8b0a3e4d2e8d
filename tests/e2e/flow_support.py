"""What the flow-control tests measure: intervals the step bodies record themselves (wall-clock
start and end, run id, key), and what is computed from them (how many ran at once, per key;
the rate of starts). Nothing here times the test: every figure comes from the recordings.

A body records into a `Recorder`: in memory for an in-process worker, or appended as JSON
lines to a file a worker in another process (or an SDK app) writes and the test reads.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Interval:
    """One step body's execution, as it recorded itself."""

    run_id: str
    key: str
    start: float  # time.time() seconds when the body began
    end: float  # ... and when it returned
    data: Any = None  # what the body wants the test to see (its event, a label)


class Recorder:
    """Step bodies call `hold` (or `record`); the test reads `intervals`."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._memory: list[Interval] = []

    async def hold(self, run_id: str, key: str, seconds: float, data: Any = None) -> Interval:
        start = time.time()
        await asyncio.sleep(seconds)
        return self.record(Interval(run_id, key, start, time.time(), data))

    def record(self, interval: Interval) -> Interval:
        if self.path is None:
            self._memory.append(interval)
        else:
            append_line(self.path, interval)
        return interval

    def intervals(self) -> list[Interval]:
        if self.path is None:
            return list(self._memory)
        return read_lines(self.path)

    async def count(self) -> int:
        """For `eventually`: how many bodies have recorded so far."""
        return len(self.intervals())


def append_line(path: Path, interval: Interval) -> None:
    # One write of one short line with O_APPEND: lines from several writers never interleave.
    line = (json.dumps(asdict(interval)) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_lines(path: Path) -> list[Interval]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                out.append(Interval(**json.loads(line)))
            except (ValueError, TypeError):
                continue  # a line cut by a kill -9 of its writer
    return out


def max_overlap(intervals: Iterable[Interval]) -> int:
    """The most intervals open at one instant; one ending when another starts is not overlap."""
    edges = sorted([(i.start, 1) for i in intervals] + [(i.end, -1) for i in intervals],
                   key=lambda e: (e[0], e[1]))  # at a tie, the end (-1) comes first
    most = running = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    return most


def by_key(intervals: Iterable[Interval],
           key: Callable[[Interval], str] = lambda i: i.key) -> dict[str, list[Interval]]:
    grouped: dict[str, list[Interval]] = defaultdict(list)
    for interval in intervals:
        grouped[key(interval)].append(interval)
    return dict(grouped)


def max_overlap_by_key(intervals: Iterable[Interval]) -> dict[str, int]:
    return {k: max_overlap(v) for k, v in by_key(intervals).items()}


def steady_rate_per_s(starts: Sequence[float]) -> float:
    """Starts per second over the later half of the starts: a burst at the beginning (GCRA's
    `burst`) does not count, the steady pace does."""
    tail = sorted(starts)[len(starts) // 2:]
    if len(tail) < 2 or tail[-1] == tail[0]:
        raise AssertionError(f"too few distinct starts to measure a rate: {starts}")
    return (len(tail) - 1) / (tail[-1] - tail[0])


def after(intervals: Iterable[Interval], moment: float) -> list[Interval]:
    return [i for i in intervals if i.start >= moment]


def runs(intervals: Iterable[Interval]) -> set[str]:
    return {i.run_id for i in intervals}
