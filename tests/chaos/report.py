"""What the chaos driver measures: its JSON report, the side-effect log the step bodies write, and
the step-level checks of one run (history's commits against the bodies' start times)."""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from plait_proto.v1 import run_pb2

KILL_KINDS = ("server", "worker", "redis")


@dataclass
class Report:
    backend: str
    seed: int
    runs: int = 0  # acknowledged trigger events
    child_runs: int = 0
    duplicate_children: int = 0  # invoked runs beyond one per invoking run
    duplicate_runs: int = 0  # runs beyond one per idempotency key (a retried send)
    deduplicated: int = 0  # acknowledged retries whose run an unacknowledged attempt started
    kills: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KILL_KINDS, 0))
    crashes: dict[str, int] = field(default_factory=lambda: {"server": 0, "worker": 0})
    lost_events: int = 0
    lost_runs: int = 0
    stuck: int = 0
    failed: int = 0
    rerun_after_commit: int = 0
    double_commits: int = 0
    duplicates_in_flight: int = 0
    signals: int = 0
    unknown_errors: int = 0  # UNKNOWN / INTERNAL answers to the driver's calls (reported only)
    seconds: float = 0.0
    samples: list[str] = field(default_factory=list)  # the first faults, for the finding

    @property
    def lost(self) -> int:
        return self.lost_events + self.lost_runs

    def line(self) -> str:
        data = dataclasses.asdict(self)
        data["lost"] = self.lost
        return json.dumps(data, sort_keys=True)

    def note(self, what: str) -> None:
        if len(self.samples) < 10:
            self.samples.append(what)


def side_effects(path: Path) -> dict[str, dict[str, list[int]]]:
    """run id -> step id -> start times (ms) of each execution of that step's body."""
    out: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 4:
            out[parts[0]][parts[1]].append(int(parts[3]))
    return out


def check_steps(r: Report, run: run_pb2.Run, started: dict[str, list[int]]) -> None:
    """Counts a run's double commits, reruns after commit and duplicates in flight."""
    commits: dict[str, list[int]] = defaultdict(list)
    for s in run.steps:
        if s.status == run_pb2.STEP_STATUS_COMPLETED:
            commits[s.step_id].append(s.ended_at_ms)
    for step_id, ends in commits.items():
        if len(ends) > 1:
            r.double_commits += 1
            r.note(f"run {run.id} step {step_id} completed {len(ends)} times")
    for step_id, starts in started.items():
        if step_id not in commits:
            if run.status == run_pb2.RUN_STATUS_COMPLETED:
                r.note(f"run {run.id} step {step_id} ran but history has no result")
            continue
        committed = min(commits[step_id])
        after = [t for t in starts if t > committed]
        r.rerun_after_commit += len(after)
        if after:
            r.note(f"run {run.id} step {step_id}: body started {after[0] - committed} ms "
                   "after its result was committed")
        r.duplicates_in_flight += len(starts) - len(after) - 1
