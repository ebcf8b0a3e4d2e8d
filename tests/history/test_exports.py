"""The public surface of server.history, pinned so it grows only on purpose."""

from __future__ import annotations

import server.history


def test_the_history_package_exports_exactly_its_public_names() -> None:
    assert sorted(server.history.__all__) == [
        "AppRecord",
        "EventRecord",
        "FunctionRecord",
        "HistoryWriter",
        "RunRecord",
        "StepAttemptRecord",
        "migrate",
        "open_database",
    ]
    for name in server.history.__all__:
        assert getattr(server.history, name) is not None
