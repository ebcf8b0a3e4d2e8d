"""Turns worker step timings and client send times into the benchmark's latency figures."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

_NS_PER_MS = 1_000_000


@dataclass(slots=True)
class RunTimes:
    """When each step body of one run started, and when the body returned (time_ns)."""

    index: int
    marks: dict[str, int] = field(default_factory=dict)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) by linear interpolation between closest ranks."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summary_ms(values: Sequence[float]) -> dict[str, float | int] | None:
    """p50 / p99 / max in milliseconds, rounded, with the sample count; None with no samples."""
    if not values:
        return None
    return {
        "p50": round(percentile(values, 0.50), 3),
        "p99": round(percentile(values, 0.99), 3),
        "max": round(max(values), 3),
        "n": len(values),
    }


def load_runs(paths: Iterable[Path]) -> dict[str, RunTimes]:
    """Merges the timings files of every worker into one entry per run id."""
    runs: dict[str, RunTimes] = {}
    for path in paths:
        if not path.exists():
            continue
        for run_id, index, mark, t_ns in json.loads(path.read_text())["records"]:
            run = runs.setdefault(run_id, RunTimes(index))
            # A retried body would record twice; the first start is the one that counts.
            run.marks.setdefault(mark, t_ns)
    return runs


def runs_in(runs: Mapping[str, RunTimes], indexes: range) -> list[RunTimes]:
    return [r for r in runs.values() if r.index in indexes]


def event_to_first_step_ms(runs: Iterable[RunTimes], sent_ns: Mapping[int, int]) -> list[float]:
    return [
        (r.marks["a"] - sent_ns[r.index]) / _NS_PER_MS
        for r in runs
        if "a" in r.marks and r.index in sent_ns
    ]


def step_to_step_ms(runs: Iterable[RunTimes]) -> list[float]:
    """b - a and c - b of every run, pooled."""
    gaps: list[float] = []
    for r in runs:
        m = r.marks
        if "a" in m and "b" in m:
            gaps.append((m["b"] - m["a"]) / _NS_PER_MS)
        if "b" in m and "c" in m:
            gaps.append((m["c"] - m["b"]) / _NS_PER_MS)
    return gaps


def last_step_to_end_ms(runs: Iterable[RunTimes]) -> list[float]:
    """end - c: the extra job that replays a, b, c and returns the function's value."""
    return [
        (r.marks["end"] - r.marks["c"]) / _NS_PER_MS
        for r in runs
        if "c" in r.marks and "end" in r.marks
    ]


def last_end_ns(runs: Iterable[RunTimes]) -> int | None:
    ends = [r.marks["end"] for r in runs if "end" in r.marks]
    return max(ends) if ends else None
