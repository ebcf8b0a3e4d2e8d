"""server/state/waits.py: which `if` expressions are indexed, and by what (pure logic)."""

from __future__ import annotations

import pytest

from server.state.waits import IndexRule, digest, event_digest, index_rule


@pytest.mark.parametrize(("expression", "rule"), [
    ("event.data.id == async.data.id", IndexRule("data.id", "data.id")),
    ("async.data.order.id==event.data.orderId", IndexRule("data.order.id", "data.orderId")),
    ("async.data.correlation_id == 'a.b'",
     IndexRule("data.correlation_id", literal='"a.b"')),
    ('"x" == async.data.kind', IndexRule("data.kind", literal='"x"')),
    ("async.data.n == 3", IndexRule("data.n", literal="3")),
    ("async.data.n == true", IndexRule("data.n", literal="true")),
])
def test_equalities_on_one_awaited_value_are_indexed(expression: str, rule: IndexRule) -> None:
    assert index_rule(expression) == rule


@pytest.mark.parametrize("expression", [
    "event.data.id == event.data.other",
    "async.data.id == async.data.other",
    "async.data.total > 10",
    "event.data.id == async.data.id && async.data.ok",
    "async.data.id == 'it''s'",
    "size(async.data.items) == 2",
])
def test_anything_else_is_not(expression: str) -> None:
    assert index_rule(expression) is None


def test_values_digest_as_cel_compares_them() -> None:
    assert digest(1) == digest(1.0)
    assert digest("1") != digest(1)
    assert digest(True) != digest(1)
    assert event_digest({"data": {"id": 7}}, "data.id") == digest(7)
    assert event_digest({"data": {}}, "data.id") is None
    assert event_digest({"data": {"id": {"a": 1}}}, "data.id") is None
