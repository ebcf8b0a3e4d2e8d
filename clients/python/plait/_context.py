"""What a function receives about its run: ids, attempt, the triggering event and a logger."""

from __future__ import annotations

import logging
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

_LOGGER = logging.getLogger("plait.run")


@dataclass(frozen=True, slots=True)
class Event:
    """The event that triggered the run."""

    id: str
    name: str
    data: dict[str, Any]
    ts_ms: int


@dataclass(frozen=True, slots=True)
class Context:
    """The run being executed. `attempt` counts from 0 for the step about to run. `events`
    holds a batched run's events (`batch_events`), in order, `event` being the first; for any
    other run it is `(event,)`."""

    run_id: str
    function_id: str
    attempt: int
    event: Event
    logger: logging.LoggerAdapter[logging.Logger]
    events: tuple[Event, ...] = ()


class _RunLogger(logging.LoggerAdapter[logging.Logger]):
    """Tags records with the run and stays silent while memoised steps are replayed.

    A function body runs again from the top for every step, so without this each log line
    before the current step would be written once per step.
    """

    def __init__(self, extra: dict[str, object], replaying: Callable[[], bool]) -> None:
        super().__init__(_LOGGER, extra)
        self._replaying = replaying

    def isEnabledFor(self, level: int) -> bool:  # logging's own name
        return not self._replaying() and self.logger.isEnabledFor(level)

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs


def run_logger(
    run_id: str, function_id: str, attempt: int, replaying: Callable[[], bool]
) -> logging.LoggerAdapter[logging.Logger]:
    """A logger bound to one job of a run."""
    extra: dict[str, object] = {"run_id": run_id, "function_id": function_id, "attempt": attempt}
    return _RunLogger(extra, replaying)
