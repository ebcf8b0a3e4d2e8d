"""One canonical JSON for everything that enters: parsed once under one set of rules, stored as
its compact re-serialised form.

The rules are I-JSON's (RFC 7493) plus a depth limit: UTF-8 only and no byte order mark, no
NaN or Infinity (nor a number that overflows to one, like 1e999), integers within
±(2**53 - 1) so every SDK reads the value it was sent, and at most MAX_DEPTH nested arrays
and objects, checked by a byte scan before parsing so no input can recurse deep. A refusal is
an InvalidArgument naming the caller's field and the rule; nothing else escapes.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any

from server.errors import InvalidArgument

# Nested arrays and objects allowed (`{}` is 1 deep, `[{}]` 2). Deep enough for any real
# payload (Inngest's SDK limits are far shallower in practice), shallow enough that parsing,
# re-encoding and every later json.loads of stored data stay far from the recursion limit.
MAX_DEPTH = 64
# The integers an IEEE double holds exactly (JavaScript's Number.MAX_SAFE_INTEGER).
MAX_SAFE_INTEGER = 2**53 - 1

# How every refusal of text that does not parse begins (as opposed to a broken rule).
NOT_JSON = "is not valid JSON"
_BOM = b"\xef\xbb\xbf"
_DEEP_RUN = b"["  # times max_depth + 1: that many opened in a row is too deep at once
# Bytes a depth scan keeps: brackets, and the quotes that say which brackets are in strings.
_NOT_SCANNED = bytes(c for c in range(256) if c not in b'[]{}"')
_SQUARE = bytes.maketrans(b"{}", b"[]")
_DELTA = [0] * 256
_DELTA[ord("[")], _DELTA[ord("]")] = 1, -1
# Sixteen digits in a row: only then can an integer literal exceed MAX_SAFE_INTEGER.
_DIGITS = bytes(48 if 48 <= c <= 57 else 32 for c in range(256))
_LONG_DIGITS = b"0" * 16


def _no_json_form(value: object) -> Any:
    raise TypeError(f"{type(value).__name__} has no JSON form")


def _encoder() -> Callable[[Any], str]:
    """Compact, non-ASCII kept, finite numbers only. CPython's C encoder is built once and
    reused (json.dumps builds one per call, half its cost on small values); parsed values
    have no cycles, so it needs no cycle check."""
    if c_make_encoder is None:  # no C accelerator
        return json.JSONEncoder(ensure_ascii=False, separators=(",", ":"),
                                allow_nan=False).encode
    chunks = c_make_encoder(None, _no_json_form, encode_basestring, None, ":", ",",
                            False, False, False)
    return lambda value: "".join(chunks(value, 0))


_ENCODE = _encoder()


class _Refused(Exception):
    """A rule broken inside json.loads' callbacks; becomes an InvalidArgument."""


def _constant(name: str) -> Any:
    raise _Refused(f"{name} is not allowed (numbers must be finite)")


def _int(text: str) -> int:
    digits = len(text) - (text[0] == "-")
    if digits > 16 or abs(value := int(text)) > MAX_SAFE_INTEGER:
        shown = text if len(text) <= 24 else text[:24] + "…"
        raise _Refused(f"integer {shown} is beyond ±{MAX_SAFE_INTEGER} (2**53 - 1)")
    return value


# Built once: json.loads with any option builds a decoder per call, which costs more than
# parsing a small document.
_DECODE = json.JSONDecoder(parse_constant=_constant).decode
_DECODE_CHECKING_INTS = json.JSONDecoder(parse_constant=_constant, parse_int=_int).decode


def _brackets(data: bytes) -> bytes:
    """The brackets of JSON text outside its strings, `{}` written as `[]`. Escaped
    backslashes go first, then escaped quotes, so every quote left delimits a string."""
    s = data.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_SCANNED)
    if b'"' in s:
        # Strings without brackets are now `""`; if that was all of them, drop them at once.
        bare = s.replace(b'""', b"")
        s = bare if b'"' not in bare else b"".join(s.split(b'"')[::2])
    return s.translate(_SQUARE)


def _max_depth(brackets: bytes) -> int:
    # Removing every `[]` takes off exactly one level; while that shrinks the text fast
    # (arrays of objects) it beats counting, and counting finishes what is left.
    levels = 0
    while brackets:
        shorter = brackets.replace(b"[]", b"")
        if len(shorter) * 2 > len(brackets):
            break
        brackets, levels = shorter, levels + 1
    return levels + max(itertools.accumulate(map(_DELTA.__getitem__, brackets), initial=0))


def depth(data: bytes) -> int:
    """How deeply arrays and objects nest in JSON text (0 for a scalar), without recursion;
    brackets inside strings do not count. For invalid text, an upper bound of how deep a
    parser would go before it finds the error."""
    return _max_depth(_brackets(data))


def _too_deep(data: bytes, max_depth: int) -> bool:
    if data.count(b"[") + data.count(b"{") <= max_depth:
        return False  # too few brackets to nest past the limit: no scan
    brackets = _brackets(data)
    return _DEEP_RUN * (max_depth + 1) in brackets or _max_depth(brackets) > max_depth


def _text(data: bytes | str, field: str, max_depth: int) -> tuple[str, bytes]:
    if isinstance(data, str):
        raw = data.encode("utf-8", "surrogatepass")
        text = data
    else:
        raw = bytes(data)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InvalidArgument(field, f"is not UTF-8 (byte {e.start})") from None
    if raw.startswith(_BOM):
        raise InvalidArgument(field, "starts with a byte order mark (send UTF-8 without one)")
    if _too_deep(raw, max_depth):
        raise InvalidArgument(field, f"nests deeper than {max_depth} arrays and objects")
    return text, raw


def _parse(data: bytes | str, field: str, max_depth: int, big_ints: bool) -> tuple[Any, bytes]:
    text, raw = _text(data, field, max_depth)
    try:
        if big_ints or _LONG_DIGITS not in raw.translate(_DIGITS):
            value = _DECODE(text)
        else:
            value = _DECODE_CHECKING_INTS(text)
    except _Refused as e:
        raise InvalidArgument(field, str(e)) from None
    except json.JSONDecodeError as e:
        raise InvalidArgument(field, f"{NOT_JSON}: {e}") from None
    except (ValueError, RecursionError) as e:  # an int past Python's digit limit; paranoia
        raise InvalidArgument(field, f"{NOT_JSON} ({type(e).__name__})") from None
    return value, raw


def loads(data: bytes | str, field: str, *, max_depth: int = MAX_DEPTH,
          big_ints: bool = False) -> Any:
    """The value of JSON text under the rules; `big_ints` lets integers past 2**53 through
    (for a request body whose fields are checked one by one, so each refusal names its field).
    A number that overflows to infinity is caught by `dumps` (`canonical`), not here."""
    value, raw = _parse(data, field, max_depth, big_ints)
    if b"\\ud" in raw or b"\\uD" in raw:
        dumps(value, field)  # a surrogate escape: refuse a lone one, which UTF-8 cannot hold
    return value


def dumps(value: Any, field: str) -> bytes:
    """The canonical bytes of a parsed value: compact, UTF-8, non-ASCII kept as is, object
    keys in their order (a repeated key keeps its last value, as json.loads does)."""
    try:
        return _ENCODE(value).encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(
            field, "holds a lone UTF-16 surrogate escape (\\ud800 and the like)") from None
    except ValueError:  # a float that overflowed to infinity (1e999), or NaN from a caller
        raise InvalidArgument(
            field, "holds a number out of range (numbers must be finite, 1e999 is not)") from None
    except (TypeError, RecursionError) as e:
        raise InvalidArgument(field, f"has no JSON form ({type(e).__name__})") from None


def canonical(data: bytes | str, field: str, *, max_depth: int = MAX_DEPTH) -> bytes:
    """JSON text checked under the rules and re-serialised: the only form Plait stores."""
    return dumps(_parse(data, field, max_depth, False)[0], field)


def canonical_object(data: bytes | str, field: str, *, max_depth: int = MAX_DEPTH) -> bytes:
    """`canonical`, for text that must be a JSON object (event data, invoke payloads)."""
    out = canonical(data, field, max_depth=max_depth)
    if not out.startswith(b"{"):
        raise InvalidArgument(field, "must be a JSON object")
    return out
