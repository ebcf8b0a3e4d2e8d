"""Reconnect delays: exponential from 100 ms to a 5 s cap, jittered so workers do not stampede."""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, initial_s: float = 0.1, max_s: float = 5.0) -> None:
        self._initial_s = initial_s
        self._max_s = max_s
        self._failures = 0

    def next_s(self) -> float:
        """The delay before the next attempt: uniform in [cap/2, cap] of a doubling cap.

        Half the cap is kept as a floor so a failing server is never retried in a tight loop.
        """
        cap = min(self._max_s, self._initial_s * 2 ** min(self._failures, 32))
        self._failures += 1
        return random.uniform(cap / 2, cap)

    def reset(self) -> None:
        self._failures = 0
