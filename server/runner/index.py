"""The trigger index: event name to the functions it starts, with their compiled `if`s."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass

import structlog

from server.errors import InvalidArgument
from server.runner.expressions import Expression, compile_expression
from server.types import EventTrigger, FunctionConfig, FunctionId

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Candidate:
    function: FunctionConfig
    program: Expression | None  # compiled CEL, None when the trigger has no expression


class FunctionIndex:
    """Exact names are a dict lookup, so matching cost does not grow with functions."""

    def __init__(self) -> None:
        self._functions: dict[FunctionId, FunctionConfig] = {}
        self._exact: dict[str, list[Candidate]] = {}
        self._wildcards: list[tuple[str, Candidate]] = []
        self.paused: frozenset[str] = frozenset()
        # Moves on every replace(), so readers can cache what they derive from the index.
        self.generation = 0

    def replace(
        self, functions: Iterable[FunctionConfig], paused: Iterable[str] = ()
    ) -> None:
        """`paused` functions are known (get, all) but no event or cron tick starts them."""
        self.generation += 1
        self._functions = {f.id: f for f in functions}
        self.paused = frozenset(paused)
        exact: dict[str, list[Candidate]] = {}
        wildcards: list[tuple[str, Candidate]] = []
        for fn in self._functions.values():
            if fn.id in self.paused:
                continue
            for i, trigger in enumerate(fn.triggers):
                if not isinstance(trigger, EventTrigger):
                    continue
                try:
                    program = (compile_expression(f"triggers[{i}].expression",
                                                  trigger.expression)
                               if trigger.expression else None)
                except InvalidArgument as e:
                    # Registered before a stricter rule (the cost budget): this trigger starts
                    # nothing, and the rest of the index still loads.
                    log.warning("trigger.expression_refused", function_id=fn.id, error=e.message)
                    continue
                candidate = Candidate(fn, program)
                if "*" in trigger.event:
                    wildcards.append((trigger.event, candidate))
                else:
                    exact.setdefault(trigger.event, []).append(candidate)
        self._exact, self._wildcards = exact, wildcards

    def get(self, function_id: FunctionId) -> FunctionConfig | None:
        return self._functions.get(function_id)

    def all(self) -> list[FunctionConfig]:
        return list(self._functions.values())

    def candidates(self, event_name: str) -> list[Candidate]:
        found = list(self._exact.get(event_name, ()))
        for pattern, candidate in self._wildcards:
            if fnmatch.fnmatchcase(event_name, pattern):
                found.append(candidate)
        return found
