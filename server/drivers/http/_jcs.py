"""JSON Canonicalization Scheme (RFC 8785): the bytes the Inngest SDKs sign and verify.

Both SDKs re-serialise a request body in this form before checking its signature, so the
server signs exactly these bytes: keys sorted by UTF-16 code units, no whitespace, numbers
as ECMAScript prints them, strings escaped as JSON.stringify does.
"""

from __future__ import annotations

import json
import math
from typing import Any

_escape = json.JSONEncoder(ensure_ascii=False).encode


def _number(value: float) -> str:
    """ECMAScript's Number::toString, from Python's shortest round-trip digits."""
    if not math.isfinite(value):
        raise ValueError(f"{value!r} has no JSON form")
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    mantissa, _, exp_text = repr(abs(value)).partition("e")
    exponent = int(exp_text or 0)
    whole, _, frac = mantissa.partition(".")
    if whole == "0":  # 0.000123: the digits start after the zeros
        point = exponent - (len(frac) - len(frac.lstrip("0")))
    else:
        point = len(whole) + exponent
    digits = (whole + frac).lstrip("0").rstrip("0")
    k = len(digits)
    if k <= point <= 21:
        return sign + digits + "0" * (point - k)
    if 0 < point <= 21:
        return sign + digits[:point] + "." + digits[point:]
    if -6 < point <= 0:
        return sign + "0." + "0" * -point + digits
    exp = point - 1
    head = digits[0] + ("." + digits[1:] if k > 1 else "")
    return f"{sign}{head}e{'+' if exp > 0 else '-'}{abs(exp)}"


def _write(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(str(value) if abs(value) < 2**53 else _number(float(value)))
    elif isinstance(value, float):
        out.append(_number(value))
    elif isinstance(value, str):
        out.append(_escape(value))
    elif isinstance(value, dict):
        out.append("{")
        for i, key in enumerate(sorted(value, key=lambda k: str(k).encode("utf-16-be"))):
            if i:
                out.append(",")
            out.append(_escape(str(key)))
            out.append(":")
            _write(value[key], out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out)
        out.append("]")
    else:
        raise TypeError(f"{type(value).__name__} has no JSON form")


def canonical(value: Any) -> bytes:
    """The RFC 8785 form of a JSON value (as json.loads returns it)."""
    out: list[str] = []
    _write(value, out)
    return "".join(out).encode()
