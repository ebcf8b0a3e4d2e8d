"""What starts a run: a matching event or a cron schedule."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TriggerEvent:
    """Start a run per event named `event` for which the CEL `expression` (if any) is true."""

    event: str
    expression: str = ""

    def __post_init__(self) -> None:
        if not self.event:
            raise ValueError("TriggerEvent event has value ''. It must not be empty.")


@dataclass(frozen=True, slots=True)
class TriggerCron:
    """Start a run per tick of a five-field cron expression, optionally prefixed "TZ=Area/City "."""

    cron: str

    def __post_init__(self) -> None:
        if not self.cron.strip():
            raise ValueError(f"TriggerCron cron has value {self.cron!r}. It must not be empty.")
