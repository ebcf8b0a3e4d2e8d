"""server/canonjson.py: every JSON that enters is checked under one set of rules and stored in
one canonical form; a refusal is an InvalidArgument naming the field, never another error."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server import canonjson
from server.canonjson import MAX_DEPTH, MAX_SAFE_INTEGER, canonical, canonical_object, depth
from server.errors import InvalidArgument

_scalars = (st.none() | st.booleans()
            | st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)
            | st.floats(allow_nan=False, allow_infinity=False)
            | st.text(max_size=20))
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=30)
# Text a parser might trip on: brackets, quotes and escapes in every order.
_shards = st.text(alphabet='[]{}"\\,:01e.-+ tnaufl\ufeff\ud800', max_size=200)


def _refused(data: bytes | str, field: str = "x.data") -> InvalidArgument:
    with pytest.raises(InvalidArgument) as caught:
        canonical(data, field)
    assert caught.value.field == field
    return caught.value


def _nested(levels: int) -> bytes:
    return b'{"a":' * levels + b"1" + b"}" * levels


def _true_depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((_true_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_true_depth(v) for v in value.values()), default=0)
    return 0


@given(_values, st.sampled_from([None, 0, 2]), st.booleans())
def test_valid_json_is_accepted_and_comes_back_equal_in_compact_form(
    value: Any, indent: int | None, ascii_only: bool
) -> None:
    sent = json.dumps(value, indent=indent, ensure_ascii=ascii_only).encode()
    out = canonical(sent, "x")
    assert json.loads(out) == value
    assert out == json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    assert canonical(out, "x") == out


@given(_values)
def test_the_depth_scan_agrees_with_the_parsed_value(value: Any) -> None:
    assert depth(json.dumps(value).encode()) == _true_depth(value)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300) | _shards.map(lambda s: s.encode("utf-8", "surrogatepass")))
def test_any_bytes_are_accepted_or_refused_with_invalid_argument_only(data: bytes) -> None:
    try:
        out = canonical(data, "x")
    except InvalidArgument as e:
        assert e.field == "x"
        return
    assert json.loads(out) == json.loads(data)


@given(st.integers(MAX_DEPTH + 1, 3000), st.sampled_from(["[", '{"k":']), _shards)
def test_nesting_past_the_limit_is_refused_at_any_depth(levels: int, opener: str,
                                                         tail: str) -> None:
    closer = "]" if opener == "[" else "}"
    e = _refused(opener * levels + "1" + closer * levels + tail)
    assert "nests deeper than" in e.reason or "not valid JSON" in e.reason


@given(_values, st.integers(MAX_DEPTH + 1, 200))
def test_deep_nesting_hidden_beside_strings_with_brackets_is_found(value: Any,
                                                                    levels: int) -> None:
    deep = "[" * levels + "]" * levels
    text = json.dumps({"s": '"]]]}}\\', "v": value, "deep": "@"}).replace('"@"', deep)
    assert "nests deeper" in _refused(text).reason


def test_nesting_exactly_at_the_limit_is_accepted() -> None:
    assert canonical(_nested(MAX_DEPTH), "x") == _nested(MAX_DEPTH)
    assert "nests deeper than 64" in _refused(_nested(MAX_DEPTH + 1)).reason
    assert canonical(_nested(MAX_DEPTH + 2), "x", max_depth=MAX_DEPTH + 2)


def test_a_thousand_levels_or_a_million_are_refused_without_recursion() -> None:
    for levels in (1000, 1_000_000):
        assert "nests deeper" in _refused(b"[" * levels + b"]" * levels).reason
        assert "nests deeper" in _refused(b"[" * levels).reason


def test_brackets_inside_strings_do_not_count_towards_depth() -> None:
    text = json.dumps({"s": "[" * 500, "t": "\\\"{" * 200, "u": "\\"})
    assert canonical(text.encode(), "x") == json.dumps(
        json.loads(text), separators=(",", ":")).encode()


def test_a_byte_order_mark_is_refused() -> None:
    assert "byte order mark" in _refused(b"\xef\xbb\xbf{}").reason
    assert "byte order mark" in _refused("\ufeff{}").reason


def test_only_utf8_is_accepted() -> None:
    assert "not UTF-8" in _refused("{}".encode("utf-16")).reason
    assert "not UTF-8" in _refused(b'{"a":"\xff"}').reason
    assert canonical('{"é":"\\u00fc"}'.encode(), "x") == '{"é":"ü"}'.encode()


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_literals_are_refused(literal: str) -> None:
    assert "finite" in _refused(f'{{"a":[1,{literal}]}}').reason


@pytest.mark.parametrize("number", ["1e999", "-1e999", "1E400", "9" * 400 + ".0"])
def test_a_float_that_overflows_to_infinity_is_refused(number: str) -> None:
    assert "finite" in _refused(f'{{"a":{number}}}').reason


@given(st.integers(MAX_SAFE_INTEGER + 1, 10**40) | st.integers(-(10**40), -MAX_SAFE_INTEGER - 1))
def test_integers_beyond_the_safe_range_are_refused(n: int) -> None:
    assert "beyond" in _refused(json.dumps({"n": [n]})).reason


def test_the_safe_integer_bounds_are_accepted_and_huge_ones_refused_cheaply() -> None:
    assert canonical(f"[{MAX_SAFE_INTEGER},{-MAX_SAFE_INTEGER}]", "x") == (
        f"[{MAX_SAFE_INTEGER},{-MAX_SAFE_INTEGER}]".encode())
    assert "beyond" in _refused("1" * 100_000).reason
    # Long digit runs inside strings or floats are not integers.
    assert canonical('{"s":"12345678901234567890","f":1.2345678901234567}', "x")


def test_a_lone_surrogate_escape_is_refused() -> None:
    assert "surrogate" in _refused(b'{"s":"\\ud800"}').reason
    assert canonical(b'{"s":"\\ud83d\\ude00"}', "x") == '{"s":"😀"}'.encode()


def test_invalid_json_is_refused_saying_where() -> None:
    assert "not valid JSON" in _refused(b'{"a":').reason
    assert "not valid JSON" in _refused(b"").reason


def test_a_repeated_key_keeps_its_last_value() -> None:
    assert canonical(b'{"a":1,"a":2}', "x") == b'{"a":2}'


def test_canonical_object_refuses_anything_but_an_object() -> None:
    assert canonical_object(b' { } ', "x") == b"{}"
    for text in (b"[]", b"1", b'"{}"', b"null"):
        with pytest.raises(InvalidArgument) as caught:
            canonical_object(text, "events[3].data")
        assert caught.value.field == "events[3].data" and "object" in caught.value.reason


def test_dumps_refuses_values_a_caller_built_with_no_json_form() -> None:
    for value in (math.nan, [math.inf], {"s": "\ud800"}, {1j: 1}):
        with pytest.raises(InvalidArgument):
            canonjson.dumps(value, "x")


def test_a_request_body_may_carry_big_integers_for_its_fields_to_name() -> None:
    assert canonjson.loads(b'{"ts":1000000000000000000000000000000}', "body",
                           big_ints=True) == {"ts": 10**30}


def test_loads_refuses_a_lone_surrogate_that_no_utf8_field_could_store() -> None:
    with pytest.raises(InvalidArgument) as caught:
        canonjson.loads(b'{"name":"\\udc00x"}', "body")
    assert caught.value.field == "body" and "surrogate" in caught.value.reason
    assert canonjson.loads(b'{"name":"\\uD83D\\uDE00","lit":"\\\\ud800"}', "body") == {
        "name": "😀", "lit": "\\ud800"}
