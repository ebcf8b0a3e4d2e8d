"""The chaos suite prints one JSON line per backend at the end of the session."""

from __future__ import annotations

import pytest

from tests.chaos.summary import print_summary


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    print_summary("chaos", terminalreporter)
