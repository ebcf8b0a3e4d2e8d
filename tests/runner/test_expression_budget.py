"""CEL cost budget (issue 11, item 10): nested comprehensions beyond two levels, too many
comprehensions and literals too large to loop over are refused where an expression enters;
data that would take an accepted expression past the budget is not evaluated (pure logic)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from plait_proto.v1 import queue_pb2

from server.drivers.grpc._convert import opcode_from_pb
from server.errors import InvalidArgument
from server.runner.expressions import (
    COST_BUDGET,
    MAX_COMPREHENSION_DEPTH,
    MAX_COMPREHENSIONS,
    MAX_EXPRESSION_BYTES,
    compile_expression,
    matches,
    measure,
)
from server.runner.index import FunctionIndex
from server.runner.registry import validate_registration
from server.types import AppId, AppRegistration, CancelOn, EventTrigger, FunctionConfig, FunctionId

MACROS = ("all", "exists", "exists_one", "existsOne", "map", "filter")
FORTY = "[" + ",".join(str(i) for i in range(40)) + "]"
# The shape of the issue's 488-byte expression: four levels of 40 items froze the loop for
# over a second per event; six would take about half an hour.
ISSUE_EXPRESSION = (f"{FORTY}.all(a, {FORTY}.all(b, {FORTY}.all(c, {FORTY}.all(d, "
                    "a + b + c + d >= 0))))")

# What users write (and what the other tests register): all stay accepted.
EVERYDAY = [
    "event.data.id == async.data.id",
    "async.data.correlation_id == \"abc\"",
    "event.data.total > 100 && event.data.sku.startsWith('A')",
    "async.data.items.exists(i, i.id == event.data.id)",
    "event.data.tags.all(t, t != 'spam')",
    "event.data.orders.exists(o, o.lines.exists(l, l.sku == async.data.sku))",
    "event.data.items.map(i, i.price).filter(p, p > 10).size() > 2",
    "has(event.data.user) && event.data.user.plan in ['pro', 'team']",
    "event.x == async.x",
]


def _nested(macros: list[str], receivers: list[str], body: str) -> str:
    source = body
    for depth in reversed(range(len(macros))):
        var = f"v{depth}"
        source = f"{receivers[depth]}.{macros[depth]}({var}, {source} || {var} == {var})"
    return source


def _literal(size: int) -> str:
    return "[" + ",".join(str(i) for i in range(size)) + "]"


receivers = st.sampled_from(["event.data.items", "async.data.list", "[1, 2, 3]", "event.data.m"])


@pytest.mark.parametrize("source", EVERYDAY)
def test_everyday_expressions_stay_accepted(source: str) -> None:
    compile_expression("if", source)


def test_the_issue_expression_is_refused_at_registration_naming_the_field() -> None:
    with pytest.raises(InvalidArgument) as caught:
        compile_expression("functions[0].triggers[0].expression", ISSUE_EXPRESSION)
    assert caught.value.field == "functions[0].triggers[0].expression"
    assert "4 deep" in caught.value.reason


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_comprehensions_nested_beyond_the_bound_are_refused(data: st.DataObject) -> None:
    depth = data.draw(st.integers(MAX_COMPREHENSION_DEPTH + 1, 8))
    macros = data.draw(st.lists(st.sampled_from(MACROS), min_size=depth, max_size=depth))
    where = data.draw(st.lists(receivers, min_size=depth, max_size=depth))
    with pytest.raises(InvalidArgument) as caught:
        compile_expression("step.if", _nested(macros, where, "true"))
    assert caught.value.field == "step.if"
    assert f"{depth} deep" in caught.value.reason


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_accepted_nested_literals_fit_the_budget(data: st.DataObject) -> None:
    """Whatever the literal sizes, an accepted expression's real loop count (the product of
    its nested lists' sizes) times its tokens stays within the budget."""
    depth = data.draw(st.integers(1, MAX_COMPREHENSION_DEPTH))
    sizes = data.draw(st.lists(st.integers(0, 600), min_size=depth, max_size=depth))
    macros = data.draw(st.lists(st.sampled_from(MACROS), min_size=depth, max_size=depth))
    source = _nested(macros, [_literal(n) for n in sizes], "true")
    if len(source.encode()) > MAX_EXPRESSION_BYTES:
        return
    iterations = 1
    for n in sizes:
        iterations *= max(n, 1)
    try:
        expression = compile_expression("if", source)
    except InvalidArgument as e:
        assert "too costly" in e.reason
        assert measure(source).tokens * max(max(sizes), 1) ** depth > COST_BUDGET
        return
    assert expression.cost.depth == depth
    assert iterations * expression.cost.tokens <= COST_BUDGET


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_macro_names_inside_string_literals_are_not_comprehensions(text: str) -> None:
    literal = json.dumps(f".all(x, .exists(y, .map(z, ({text}", ensure_ascii=False)
    source = f"event.name == {literal}"
    try:
        expression = compile_expression("if", source)
    except InvalidArgument as e:
        assert "invalid CEL" in e.reason  # an escape CEL reads differently from JSON
        return
    assert expression.cost.comprehensions == 0 and expression.cost.depth == 0


def test_too_many_comprehensions_are_refused() -> None:
    def chain(n: int) -> str:
        return " && ".join(f"event.data.l{i}.exists(x, x == 1)" for i in range(n))

    with pytest.raises(InvalidArgument, match="comprehensions"):
        compile_expression("if", chain(MAX_COMPREHENSIONS + 1))
    compile_expression("if", chain(MAX_COMPREHENSIONS))


def test_an_expression_over_4_kib_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="longer than"):
        compile_expression("if", "event.a == '" + "x" * MAX_EXPRESSION_BYTES + "'")


class _Spy:
    def __init__(self) -> None:
        self.calls = 0

    def execute(self, variables: Any) -> bool:
        self.calls += 1
        return True


def test_data_too_large_for_a_nested_expression_is_not_evaluated() -> None:
    compiled = compile_expression("if", "event.data.a.all(x, event.data.b.all(y, x + y >= 0))")
    spy = _Spy()
    expression = dataclasses.replace(compiled, program=spy)
    small = {"event": {"data": {"a": [1] * 10, "b": [1] * 10}}}
    assert matches(expression, small) and spy.calls == 1
    big = {"event": {"data": {"a": [1] * 10, "b": [{"c": [1] * 10_000}]}}}
    assert not matches(expression, big) and spy.calls == 1
    # The real program agrees on the small data.
    assert matches(compiled, small)


def test_a_search_inside_a_loop_counts_the_strings_it_searches() -> None:
    compiled = compile_expression("if", "event.data.a.exists(x, event.data.s.contains(x))")
    spy = _Spy()
    expression = dataclasses.replace(compiled, program=spy)
    assert matches(expression, {"event": {"data": {"a": ["q"], "s": "abc"}}})
    assert not matches(expression, {"event": {"data": {"a": ["q"], "s": "x" * 100_000}}})
    assert spy.calls == 1


def test_a_plain_expression_is_evaluated_whatever_the_data() -> None:
    compiled = compile_expression("if", "event.data.n == 1")
    assert compiled.cost.depth == 0
    assert matches(compiled, {"event": {"data": {"n": 1, "big": list(range(100_000))}}})


def _fn(expression: str = "", cancel_if: str = "") -> FunctionConfig:
    return FunctionConfig(
        id=FunctionId("app-f"), app_id=AppId("app"), slug="f", name="f",
        triggers=(EventTrigger("a/b", expression),),
        cancel_on=(CancelOn("c", cancel_if),) if cancel_if else ())


def test_registration_refuses_a_costly_trigger_and_cancel_on_naming_each_field() -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_registration(AppRegistration(AppId("app"), (_fn(ISSUE_EXPRESSION),)))
    assert caught.value.field == "functions[0].triggers[0].expression"
    with pytest.raises(InvalidArgument) as caught:
        validate_registration(AppRegistration(AppId("app"), (_fn(cancel_if=ISSUE_EXPRESSION),)))
    assert caught.value.field == "functions[0].cancel_on[0].if_expression"


def test_a_wait_for_event_opcode_with_a_costly_if_is_refused() -> None:
    op = queue_pb2.Opcode(wait_for_event=queue_pb2.WaitForEvent(
        step_id="w", event="a/b", if_expression=ISSUE_EXPRESSION, timeout_until_ms=1))
    with pytest.raises(InvalidArgument) as caught:
        opcode_from_pb(op, "op")
    assert caught.value.field == "op.wait_for_event.if_expression"


def test_a_stored_trigger_over_the_budget_starts_nothing_and_the_index_still_loads() -> None:
    index = FunctionIndex()
    index.replace([_fn(ISSUE_EXPRESSION)])
    assert index.candidates("a/b") == []
    assert index.get(FunctionId("app-f")) is not None


def test_a_wait_if_over_the_budget_never_matches_and_is_compiled_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An Inngest SDK app's waitForEvent `if` reaches the server only as a stored wait: the
    matcher compiles it under the same budget, and a refusal is kept, not recompiled per event."""
    from server.keys import Keys
    from server.runner import waits
    from server.state.waits import WaitEntry

    compiled: list[str] = []

    def counting(field: str, source: str) -> Any:
        compiled.append(source)
        return compile_expression(field, source)

    monkeypatch.setattr(waits, "compile_expression", counting)

    async def cancel(_: Any) -> None:
        return None

    matcher = waits.WaitMatcher(None, Keys(), None, cancel)  # type: ignore[arg-type]
    entry = WaitEntry("a/b", "r/s", "wait", "r", "s", "app-f", ISSUE_EXPRESSION, 0, "")
    fine = dataclasses.replace(entry, if_expression="async.data.n == 1")
    event = waits._Event(b'{"name": "a/b", "data": {"n": 1}}')
    for _ in range(3):
        assert not matcher._matches(entry, {}, event)
        assert matcher._matches(fine, {}, event)
    assert compiled == [ISSUE_EXPRESSION, "async.data.n == 1"]


def test_a_prefix_check_inside_a_loop_is_not_held_to_the_events_longest_string() -> None:
    compiled = compile_expression("if", "event.data.tags.exists(t, t.startsWith('vip'))")
    event = {"event": {"data": {"tags": ["a", "vip-1"], "note": "x" * 100_000}}}
    assert matches(compiled, event)


def test_a_nested_expression_just_within_the_budget_is_evaluated() -> None:
    compiled = compile_expression("if", "event.data.a.all(x, event.data.b.all(y, x + y >= 0))")
    n = 1
    while compiled.cost.units(n + 1, 0) <= COST_BUDGET:
        n += 1
    data = {"event": {"data": {"a": [1] * n, "b": [1] * n}}}
    assert matches(compiled, data)
    data["event"]["data"]["b"].append(1)
    assert not matches(compiled, data)
