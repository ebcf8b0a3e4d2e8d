"""An Inngest SDK's `cancel: [{event, if, timeout}]` at sync (js `cancelOn`, py `cancel`)."""

from __future__ import annotations

from typing import Any

import pytest

from server.api.inngest.register import parse_registration
from server.errors import InvalidArgument
from server.runner.registry import validate_registration
from server.types import CancelOn


def _body(cancel: Any) -> dict[str, Any]:
    fn: dict[str, Any] = {
        "id": "shop-pay", "name": "pay", "triggers": [{"event": "shop/pay"}],
        "steps": {"step": {"id": "step", "runtime": {"type": "http",
                                                     "url": "http://app/api?fnId=shop-pay"}}},
        "cancel": cancel,
    }
    return {"appName": "shop", "url": "http://app/api", "functions": [fn]}


def test_cancel_rules_are_parsed_with_their_timeouts() -> None:
    reg = parse_registration(_body([
        {"event": "shop/cancel", "if": "event.data.id == async.data.id", "timeout": "1h"},
        {"event": "shop/stop"}]), 3).registration
    (fn,) = reg.functions
    assert fn.cancel_on == (
        CancelOn("shop/cancel", "event.data.id == async.data.id", 3_600_000),
        CancelOn("shop/stop", "", 0))
    validate_registration(reg)


@pytest.mark.parametrize(("cancel", "field"), [
    ("shop/cancel", "functions[0].cancel"),
    ([{"if": "true"}], "functions[0].cancel[0].event"),
    ([{"event": "a", "timeout": "soon"}], "functions[0].cancel[0].timeout"),
    ([{"event": "a", "if": 3}], "functions[0].cancel[0].if"),
])
def test_a_bad_cancel_is_refused_naming_the_field(cancel: Any, field: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        parse_registration(_body(cancel), 3)
    assert raised.value.field == field


def test_a_cancel_expression_that_does_not_compile_is_refused_at_validation() -> None:
    reg = parse_registration(_body([{"event": "a", "if": "event.data.id =="}]), 3).registration
    with pytest.raises(InvalidArgument) as raised:
        validate_registration(reg)
    assert raised.value.field == "functions[0].cancel_on[0].if_expression"
