"""Hypothesis strategies of the fuzz suite: JSON (well formed and hostile), ids, and any protobuf
message built from its descriptor, so that every field of every request is generated."""

from __future__ import annotations

import json
import string
from functools import cache
from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

# Ids the suite has seen the server hand out (event, run ids); strategies mix them in so that
# calls reach past "not found".
KNOWN_IDS: list[str] = []
KNOWN_NAMES = ["fuzz/go", "fuzzq/go", "inngest/function.finished", "inngest/function.invoked",
               "inngest/function.failed", "inngest/scheduled.timer", "", " ", "a" * 300]
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

ulids = st.text(alphabet=CROCKFORD, min_size=26, max_size=26)
known_ids = st.integers(0, 1000).map(lambda i: KNOWN_IDS[i % len(KNOWN_IDS)] if KNOWN_IDS else "")
ids = st.one_of(
    ulids, known_ids, ulids.map(lambda u: u + "\n"), ulids.map(str.lower),
    st.sampled_from(["", "0" * 26, "Z" * 26, "7" * 26, "../../etc/passwd", "%00", "\x00",
                     "01ARZ3NDEKTSV4RRFFQ69G5FAV\n", " " * 26]),
    st.text(max_size=40),
)

json_scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=12,
)


def _deep(depth: int, opener: str = "[", closer: str = "]") -> bytes:
    return (opener * depth + closer * depth).encode()


# Texts json.loads may accept but a careful server must refuse (or store safely), and texts
# that are no JSON at all.
HOSTILE_JSON = [
    b"\xef\xbb\xbf{}", b"\xef\xbb\xbf[]", b'{"x": 1e999}', b'{"x": -1e999}', b'{"x": NaN}',
    b'{"x": Infinity}', b'{"x": 123456789012345678901234567890}', b'{"x": 9007199254740993}',
    b'{"x": "\\ud800"}', b'{"x": "\xff"}', b'{"a": 1, "a": 2}', b"", b"null", b"[]", b"{}",
    b'"str"', b"0", b"{", b"}", b"\x00", b"\xff\xfe{\x00}\x00", b'{"data": {"\\u0000": 0}}',
    _deep(100_000), _deep(1000), _deep(100), _deep(70), _deep(65), _deep(64), _deep(63),
    b'{"a":' * 500 + b"1" + b"}" * 500, b'{"a":' * 65 + b"1" + b"}" * 65,
    b"[" * 100_000, b'{"x": "' + b"a" * 600_000 + b'"}', b"1" * 1000, b"-" + b"9" * 5000,
]
hostile_bytes = st.one_of(
    st.sampled_from(HOSTILE_JSON),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=64),
)


def json_bytes_of(values: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    """Mostly `values` encoded, sometimes hostile text."""
    return st.one_of(values.map(lambda v: json.dumps(v).encode()), hostile_bytes)


header_text = st.text(alphabet=string.ascii_letters + string.digits + " -_/;=.,:*+", max_size=40)
durations = st.one_of(st.sampled_from(["1s", "5m", "2h", "1d", "0s", "-1s", "1y", "9" * 400,
                                       "1.5s", "s", "", "10", "1w"]), st.text(max_size=12))
crons = st.one_of(st.sampled_from(["* * * * *", "0 0 30 2 *", "*/0 * * * *", "61 * * * *",
                                   "TZ=Nowhere/X * * * * *", "@yearly", "", "0 0 31 4 *"]),
                  st.text(max_size=20))
cels = st.one_of(
    st.sampled_from([
        "event.data.x == async.data.x", "true", "", "event.data.x >", "1/0 == 1",
        "[1,2,3].all(x, [1,2,3].all(y, [1,2,3].all(z, [1,2,3].all(w, true))))",
        "[" + ",".join(["1"] * 50) + "].map(x, [" + ",".join(["1"] * 50) + "].map(y, "
        "[" + ",".join(["1"] * 50) + "].map(z, x)))",
        "'a' * 100000", "size(event.data) > 0",
    ]),
    st.text(max_size=40),
)

_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
MAX_DEPTH = 4


def _ints(lo: int, hi: int) -> st.SearchStrategy[int]:
    edges = [v for v in (0, 1, -1, 2, 1000, 2**31 - 1, -(2**31), 2**53 + 1, 2**63 - 1, -(2**63),
                         2**64 - 1) if lo <= v <= hi]
    return st.one_of(st.sampled_from(edges), st.integers(lo, min(hi, 100_000)),
                     st.integers(lo, hi))


def _string_for(field: FieldDescriptor) -> st.SearchStrategy[str]:
    name = field.name
    if name.endswith("_id") or name.endswith("_ids") or name in ("id", "page_token"):
        return ids
    if name in ("name", "event", "event_name") or name.endswith("_name"):
        return st.one_of(st.sampled_from(KNOWN_NAMES), st.text(max_size=30))
    if "expression" in name or name in ("if", "if_exp", "match", "cel"):
        return cels
    if "cron" in name:
        return crons
    if "timeout" in name or "duration" in name or name in ("period", "delay", "until"):
        return durations
    if "url" in name:
        return st.sampled_from(["http://127.0.0.1:9/", "", "http://[::1", "ftp://127.0.0.1/"])
    return st.one_of(st.text(max_size=30), st.sampled_from(["", "\n", "a\n", "x" * 2000]))


def _scalar(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    t = field.type
    if t == FieldDescriptor.TYPE_MESSAGE:
        return messages(field.message_type, depth + 1)
    if t == FieldDescriptor.TYPE_ENUM:
        values = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(values), st.integers(-5, 1000))
    if t == FieldDescriptor.TYPE_STRING:
        return _string_for(field)
    if t == FieldDescriptor.TYPE_BYTES:
        return hostile_bytes
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(width=64 if t == FieldDescriptor.TYPE_DOUBLE else 32)
    lo, hi = _INT_RANGES[t]
    return _ints(lo, hi)


def _is_map(field: FieldDescriptor) -> bool:
    return (field.type == FieldDescriptor.TYPE_MESSAGE
            and field.message_type.GetOptions().map_entry)


def _field(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if _is_map(field):
        entry = field.message_type
        key = _scalar(entry.fields_by_name["key"], depth)
        value = _scalar(entry.fields_by_name["value"], depth)
        return st.dictionaries(key, value, max_size=3)
    if field.is_repeated:
        return st.lists(_scalar(field, depth), max_size=3)
    return _scalar(field, depth)


def message_class(descriptor: Descriptor) -> type[Message]:
    return message_factory.GetMessageClass(descriptor)


def _build(cls: type[Message], values: dict[str, Any]) -> Message:
    msg = cls()
    for name, value in values.items():
        field = cls.DESCRIPTOR.fields_by_name[name]
        if _is_map(field):
            target = getattr(msg, name)
            for k, v in value.items():
                if isinstance(v, Message):
                    target[k].CopyFrom(v)
                else:
                    target[k] = v
        elif field.is_repeated:
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                getattr(msg, name).extend(value)
            else:
                getattr(msg, name).extend(value)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            getattr(msg, name).CopyFrom(value)
        else:
            setattr(msg, name, value)
    return msg


@cache
def messages(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Any message of this type: each field set or not, to any value its type admits."""
    cls = message_class(descriptor)
    if depth >= MAX_DEPTH:
        return st.just(cls())
    optional = {f.name: _field(f, depth) for f in descriptor.fields}
    return st.fixed_dictionaries({}, optional=optional).map(lambda v: _build(cls, v))
