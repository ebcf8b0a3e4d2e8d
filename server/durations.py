"""Duration strings as the Inngest SDKs write them in function config and step ops."""

from __future__ import annotations

import re

_UNIT_MS = {"ns": 1e-6, "us": 1e-3, "µs": 1e-3, "ms": 1, "s": 1000, "m": 60_000,
            "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|µs|ms|s|m|h|d|w)")
_DURATION = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?(?:ns|us|µs|ms|s|m|h|d|w))+")
# Longer text is no duration anyone writes ("1h30m15s" is 8); 400 digits overflow a float.
MAX_DURATION_CHARS = 64
# A thousand years: longer durations are read as this, so none overflows an int64 later.
MAX_DURATION_MS = 1000 * 366 * 86_400_000


def duration_ms(text: str) -> int | None:
    """Go-style durations with days and weeks ("2s", "1h30m", "500ms", "2d"); None if not one.
    At most MAX_DURATION_CHARS long; values are capped at MAX_DURATION_MS."""
    if len(text) > MAX_DURATION_CHARS or not _DURATION.fullmatch(text):
        return None
    total = sum(float(n) * _UNIT_MS[u] for n, u in _DURATION_PART.findall(text))
    return int(min(total, MAX_DURATION_MS))
