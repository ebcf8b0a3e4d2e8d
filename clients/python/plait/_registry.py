"""Which global function ids the decorated callables have, for `step.invoke(function=fn)`."""

from __future__ import annotations

# Global ids ("{app_id}-{function id}") of the decorated callables, for `step.invoke`. Keyed by
# id(); the callable is kept so that its id is never reused by another object.
_GLOBAL_IDS: dict[int, tuple[object, list[str]]] = {}


def remember(fn: object, global_id: str) -> None:
    _, ids = _GLOBAL_IDS.setdefault(id(fn), (fn, []))
    if global_id not in ids:
        ids.append(global_id)


def global_function_id(function: object, field: str) -> str:
    """The global id `step.invoke` calls: a string as given, or a decorated function's id."""
    if isinstance(function, str):
        if not function:
            raise ValueError(
                f"{field} has value ''. Give a global function id (\"<app id>-<function id>\") "
                "or a function declared with @app.function."
            )
        return function
    entry = _GLOBAL_IDS.get(id(function))
    if entry is None or not callable(function):
        raise TypeError(
            f"{field} has value {function!r}. Expected a global function id "
            '("<app id>-<function id>") or a function declared with @app.function.'
        )
    ids = entry[1]
    if len(ids) > 1:
        raise ValueError(
            f"{field} {function!r} is declared as several functions ({', '.join(ids)}); "
            "pass the global id of the one to invoke."
        )
    return ids[0]
