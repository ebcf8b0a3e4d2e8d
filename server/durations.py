"""Duration strings as the Inngest SDKs write them in function config and step ops."""

from __future__ import annotations

import re

_UNIT_MS = {"ns": 1e-6, "us": 1e-3, "µs": 1e-3, "ms": 1, "s": 1000, "m": 60_000,
            "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d|w)")
_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h|d|w))+$")


def duration_ms(text: str) -> int | None:
    """Go-style durations with days and weeks ("2s", "1h30m", "500ms", "2d"); None if not one."""
    if not _DURATION.match(text):
        return None
    return int(sum(float(n) * _UNIT_MS[u] for n, u in _DURATION_PART.findall(text)))
