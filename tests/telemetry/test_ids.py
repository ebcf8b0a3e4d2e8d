"""Trace and span ids derived from run ids, and W3C traceparent values."""

from __future__ import annotations

import pytest

from server.telemetry import SpanKind, parse_traceparent, span_id_hex, trace_id_hex
from server.telemetry.ids import format_traceparent, span_id, trace_id

RUN = "01JAAAAAAAAAAAAAAAAAAAAAAA"


def test_a_runs_ids_are_the_same_in_every_process() -> None:
    assert trace_id_hex(RUN) == trace_id_hex(str(RUN))
    assert len(trace_id_hex(RUN)) == 32 and len(span_id_hex(RUN, SpanKind.RUN)) == 16
    assert trace_id(RUN) != trace_id("01JBBBBBBBBBBBBBBBBBBBBBBB")


def test_each_lease_and_kind_has_its_own_span_id() -> None:
    ids = {span_id(RUN, kind, lease) for kind in (SpanKind.STEP, SpanKind.QUEUE,
                                                  SpanKind.DISPATCH, SpanKind.SLEEP)
           for lease in ("1", "2", "3")}
    assert len(ids | {span_id(RUN, SpanKind.RUN)}) == 13


def test_a_traceparent_round_trips() -> None:
    value = format_traceparent(trace_id(RUN), span_id(RUN, SpanKind.STEP, "7"), True)
    parsed = parse_traceparent(value)
    assert parsed is not None
    assert (parsed.trace_id, parsed.span_id, parsed.sampled) == (
        trace_id(RUN), span_id(RUN, SpanKind.STEP, "7"), True)
    assert str(parsed) == value
    unsampled = parse_traceparent(format_traceparent(1, 2, False))
    assert unsampled is not None and not unsampled.sampled


def test_a_later_version_may_carry_more_fields() -> None:
    parsed = parse_traceparent("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-xyz")
    assert parsed is not None and parsed.span_id == 0xB7AD6B7169203331


@pytest.mark.parametrize("value", [
    "",
    "garbage",
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
    "00-00000000000000000000000000000000-b7ad6b7169203331-01",
    "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
    "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
    "00-0af7651916cd43dd8448eb211c80319-b7ad6b7169203331-01",
])
def test_an_invalid_traceparent_is_none(value: str) -> None:
    assert parse_traceparent(value) is None
