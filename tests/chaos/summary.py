"""JSON lines the chaos and fuzz suites print at the end of a pytest session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

LINES: dict[str, list[str]] = {"chaos": [], "fuzz": []}


def add(suite: str, line: str) -> None:
    """Keeps a line for the session summary; also appends it to $PLAIT_CHAOS_REPORT if set."""
    LINES[suite].append(line)
    target = os.environ.get("PLAIT_CHAOS_REPORT", "")
    if target:
        with Path(target).open("a") as f:
            f.write(line + "\n")


def print_summary(suite: str, terminalreporter: pytest.TerminalReporter) -> None:
    if LINES[suite]:
        terminalreporter.section(f"plait {suite}")
        for line in LINES[suite]:
            terminalreporter.write_line(line)
