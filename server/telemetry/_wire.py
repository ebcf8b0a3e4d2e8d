"""OTLP trace protobuf, encoded by hand: a span in a few microseconds instead of ~100.

The OpenTelemetry SDK's encoder builds Python message objects field by field, which cost
more per span than a whole step of a run; these spans have a fixed shape, so their wire
bytes are written directly (opentelemetry/proto/trace/v1/trace.proto and
collector/trace/v1/trace_service.proto; tests parse them back with opentelemetry-proto).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = ["KIND_CLIENT", "KIND_INTERNAL", "Head", "SpanEvent", "SpanLink", "encode_request",
           "encode_resource", "encode_span"]

# Span.SpanKind and Status.StatusCode values of the proto.
KIND_INTERNAL = 1
KIND_CLIENT = 3
_CODES = {"ok": 1, "error": 2}
# Span.flags: W3C trace flags (sampled) and "the parent's remoteness is known: local".
_FLAGS = struct.pack("<I", 0x101)
_LINK_FLAGS = struct.pack("<I", 0x301)  # a link to a remote span (the event's sender)
_pack_u64 = struct.Struct("<Q").pack

Value = str | int | bool


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low = n & 0x7F
        n >>= 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


_SMALL = [_varint(i) for i in range(1 << 14)]


def _v(n: int) -> bytes:
    return _SMALL[n] if 0 <= n < len(_SMALL) else _varint(n)


def _field(tag: bytes, payload: bytes) -> bytes:
    return tag + _v(len(payload)) + payload


_KEYS: dict[str, bytes] = {}


def _any_value(value: Value) -> bytes:
    if isinstance(value, bool):  # before int: bool is an int
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF)
    return _field(b"\x0a", value.encode())


# Encoded KeyValues by (tag, key, value): a run's id, its function, outcomes... repeat in
# every span. Cleared when full rather than evicted one by one.
_ENCODED: dict[tuple[bytes, str, type, Value], bytes] = {}
_ENCODED_MAX = 100_000


def _key_value(tag: bytes, key: str, value: Value) -> bytes:
    """A KeyValue, as the field `tag` of its parent message."""
    cache_key = (tag, key, type(value), value)  # the type: True == 1 as a dict key
    found = _ENCODED.get(cache_key)
    if found is not None:
        return found
    head = _KEYS.get(key)
    if head is None:
        head = _KEYS[key] = _field(b"\x0a", key.encode())
    encoded = _field(tag, head + _field(b"\x12", _any_value(value)))
    if len(_ENCODED) >= _ENCODED_MAX:
        _ENCODED.clear()
    _ENCODED[cache_key] = encoded
    return encoded


def _attributes(tag: bytes, attributes: Mapping[str, Value]) -> list[bytes]:
    return [_key_value(tag, k, v) for k, v in attributes.items()]


@dataclass(frozen=True, slots=True)
class SpanLink:
    trace_id: int
    span_id: int
    attributes: Mapping[str, Value]


@dataclass(frozen=True, slots=True)
class SpanEvent:
    name: str
    time_ns: int
    attributes: Mapping[str, Value]


def encode_span(
    trace_id: int, span_id: int, parent_id: int, name: str, kind: int, start_ns: int,
    end_ns: int, attributes: Mapping[str, Value], status: str = "", message: str = "",
    links: Sequence[SpanLink] = (), events: Sequence[SpanEvent] = (),
) -> bytes:
    """One `Span` message (parent_id 0: a root)."""
    parts = [b"\x0a\x10", trace_id.to_bytes(16, "big"), b"\x12\x08", span_id.to_bytes(8, "big")]
    if parent_id:
        parts += [b"\x22\x08", parent_id.to_bytes(8, "big")]
    parts += [_field(b"\x2a", name.encode()), b"\x30", _v(kind), b"\x39", _pack_u64(start_ns),
              b"\x41", _pack_u64(end_ns)]
    parts += _attributes(b"\x4a", attributes)
    for event in events:
        body = [b"\x09", _pack_u64(event.time_ns), _field(b"\x12", event.name.encode())]
        body += _attributes(b"\x1a", event.attributes)
        parts.append(_field(b"\x5a", b"".join(body)))
    for link in links:
        body = [b"\x0a\x10", link.trace_id.to_bytes(16, "big"), b"\x12\x08",
                link.span_id.to_bytes(8, "big")]
        body += _attributes(b"\x22", link.attributes)
        body += [b"\x35", _LINK_FLAGS]
        parts.append(_field(b"\x6a", b"".join(body)))
    code = _CODES.get(status, 0)
    if code:
        text = _field(b"\x12", message.encode()) if message and code == 2 else b""
        parts.append(_field(b"\x7a", text + b"\x18" + _v(code)))
    parts += [b"\x85\x01", _FLAGS]
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class Head:
    """What every request of one process starts with: its Resource and its scope."""

    resource: bytes  # ResourceSpans.resource, as a field
    scope: bytes  # ScopeSpans.scope, as a field


def encode_resource(resource: Mapping[str, Value], scope: str, version: str) -> Head:
    return Head(
        resource=_field(b"\x0a", b"".join(_attributes(b"\x0a", resource))),
        scope=_field(b"\x0a", _field(b"\x0a", scope.encode()) + _field(b"\x12",
                                                                       version.encode())),
    )


def encode_request(head: Head, spans: Iterable[bytes]) -> bytes:
    """An ExportTraceServiceRequest with one ResourceSpans holding `spans`."""
    scope_spans = head.scope + b"".join(_field(b"\x12", s) for s in spans)
    return _field(b"\x0a", head.resource + _field(b"\x12", scope_spans))
