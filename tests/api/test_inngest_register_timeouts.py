"""An Inngest SDK's `timeouts: {start, finish}` at sync: durations parsed, bad ones refused."""

from __future__ import annotations

from typing import Any

import pytest

from server.api.inngest.register import parse_registration
from server.errors import InvalidArgument


def _body(timeouts: Any) -> dict[str, Any]:
    fn: dict[str, Any] = {
        "id": "shop-pay", "name": "pay", "triggers": [{"event": "shop/pay"}],
        "steps": {"step": {"id": "step", "runtime": {"type": "http",
                                                     "url": "http://app/api?fnId=shop-pay"}}},
    }
    if timeouts is not None:
        fn["timeouts"] = timeouts
    return {"appName": "shop", "url": "http://app/api", "functions": [fn]}


def test_start_and_finish_timeouts_are_parsed_as_durations() -> None:
    reg = parse_registration(_body({"start": "10s", "finish": "1h30m"}), 3)
    (fn,) = reg.registration.functions
    assert fn.start_timeout_ms == 10_000
    assert fn.finish_timeout_ms == 5_400_000


def test_a_function_without_timeouts_has_none() -> None:
    (fn,) = parse_registration(_body(None), 3).registration.functions
    assert (fn.start_timeout_ms, fn.finish_timeout_ms) == (0, 0)
    (fn,) = parse_registration(_body({"finish": "2m"}), 3).registration.functions
    assert (fn.start_timeout_ms, fn.finish_timeout_ms) == (0, 120_000)


@pytest.mark.parametrize("timeouts", [{"start": "soon"}, {"finish": 5}, "10s"])
def test_a_bad_timeout_is_refused_naming_the_field(timeouts: Any) -> None:
    with pytest.raises(InvalidArgument) as raised:
        parse_registration(_body(timeouts), 3)
    assert "functions[0].timeouts" in str(raised.value.field if hasattr(raised.value, "field")
                                          else raised.value)


@pytest.mark.parametrize("value", ["9" * 400 + "s", "10s\n", "1e999s"])
def test_a_duration_of_400_digits_or_a_trailing_newline_is_a_bad_timeout(value: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        parse_registration(_body({"finish": value}), 3)
    assert raised.value.field == "functions[0].timeouts.finish"


def test_an_sdk_string_with_a_trailing_newline_is_not_read_as_a_version() -> None:
    reg = parse_registration({**_body(None), "sdk": "py:v0.5.19\n"}, 3).registration
    assert (reg.language, reg.sdk_version) == ("", "")
