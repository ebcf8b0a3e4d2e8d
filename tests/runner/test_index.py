"""The trigger index: paused functions are known but matched by no event."""

from __future__ import annotations

from server.runner.index import FunctionIndex
from server.types import AppId, EventTrigger, FunctionConfig, FunctionId


def _fn(slug: str, event: str) -> FunctionConfig:
    return FunctionConfig(id=FunctionId(f"app-{slug}"), app_id=AppId("app"), slug=slug,
                          name=slug, triggers=(EventTrigger(event),))


def test_a_paused_function_is_known_but_no_event_matches_it() -> None:
    index = FunctionIndex()
    functions = [_fn("exact", "a/b"), _fn("wild", "a/*"), _fn("live", "a/b")]
    index.replace(functions, paused=["app-exact", "app-wild"])
    assert [c.function.id for c in index.candidates("a/b")] == ["app-live"]
    assert index.get(FunctionId("app-exact")) is not None
    assert index.paused == {"app-exact", "app-wild"}

    index.replace(functions)
    assert sorted(c.function.id for c in index.candidates("a/b")) == [
        "app-exact", "app-live", "app-wild"]
