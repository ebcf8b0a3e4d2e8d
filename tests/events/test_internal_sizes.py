"""Run-end events are never too large to send: the triggering event is carried once, and what
the SDKs can do without is trimmed to the internal events' limit, never the correlation id."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from server.config import Settings
from server.events.internal import data_limit, events_for
from server.history.records import RunEnded
from server.types import FUNCTION_INVOKED, RunStatus

RUN = "01JAAAAAAAAAAAAAAAAAAAAAAA"
LIMIT = data_limit(Settings())


def _invoked(payload: str) -> dict[str, Any]:
    return {"id": "01JEEEEEEEEEEEEEEEEEEEEEEE", "name": FUNCTION_INVOKED, "ts": 5,
            "data": {"blob": payload, "_inngest": {"correlation_id": "parent.step"}}}


def _end(status: RunStatus, output: str = "", error: str = "") -> RunEnded:
    return RunEnded(RUN, status, output, error, 1_700_000_000_000, function_id="app-child")


def _data(raw: bytes) -> dict[str, Any]:
    value = json.loads(raw)
    assert isinstance(value, dict)
    return value


def test_the_triggering_event_is_carried_once() -> None:
    event = _invoked("x" * 300_000)
    (finished,) = events_for(_end(RunStatus.COMPLETED, output='{"n": 1}'), event)
    data = _data(finished.data_json)
    assert "events" not in data
    assert data["event"] == event
    assert 300_000 < len(finished.data_json) < 310_000
    assert (data["correlation_id"], data["result"]) == ("parent.step", {"n": 1})


def test_a_finished_event_with_a_large_result_keeps_the_result_whole() -> None:
    result = {"blob": "r" * 3_000_000}
    (finished,) = events_for(_end(RunStatus.COMPLETED, output=json.dumps(result)),
                             _invoked("x" * 500_000))
    data = _data(finished.data_json)
    assert data["result"] == result and data["correlation_id"] == "parent.step"
    assert len(finished.data_json) <= LIMIT


def test_over_the_limit_the_event_copy_loses_its_data_first() -> None:
    limit = 10_000
    event = _invoked("x" * 8_000)
    (finished,) = events_for(_end(RunStatus.COMPLETED, output=json.dumps("r" * 5_000)), event,
                             limit)
    data = _data(finished.data_json)
    assert len(finished.data_json) <= limit
    assert data["event"]["id"] == event["id"] and data["event"]["name"] == FUNCTION_INVOKED
    assert data["event"]["data"] == {"_truncated": {"bytes": len(
        json.dumps(event["data"], separators=(",", ":")))}}
    assert data["result"] == "r" * 5_000 and data["correlation_id"] == "parent.step"


def test_a_huge_error_is_cut_and_still_named() -> None:
    limit = 10_000
    error = json.dumps({"name": "ValueError", "message": "m" * 50_000, "stack": "s" * 50_000})
    finished, failed = events_for(_end(RunStatus.FAILED, error=error), _invoked("x"), limit)
    for item in (finished, failed):
        data = _data(item.data_json)
        assert len(item.data_json) <= limit
        assert data["error"]["name"] == "ValueError"
        assert data["error"]["message"].startswith("mmm")
        assert data["correlation_id"] == "parent.step"


def test_a_result_over_the_limit_becomes_an_error_the_invoker_still_gets() -> None:
    limit = 10_000
    (finished,) = events_for(_end(RunStatus.COMPLETED, output=json.dumps("r" * 20_000)),
                             _invoked("x"), limit)
    data = _data(finished.data_json)
    assert len(finished.data_json) <= limit
    assert "result" not in data and data["error"]["name"] == "OutputTooLargeError"
    assert data["correlation_id"] == "parent.step"


@settings(max_examples=200, deadline=None)
@given(event_bytes=st.integers(0, 30_000), result_bytes=st.integers(0, 30_000),
       error_bytes=st.integers(0, 30_000), failed=st.booleans(),
       limit=st.integers(2_000, 40_000))
def test_every_end_event_fits_its_limit_and_keeps_its_references(
    event_bytes: int, result_bytes: int, error_bytes: int, failed: bool, limit: int,
) -> None:
    end = (_end(RunStatus.FAILED, error=json.dumps(
               {"name": "E", "message": "é" * (error_bytes // 2), "stack": "s" * error_bytes}))
           if failed else _end(RunStatus.COMPLETED, output=json.dumps("r" * result_bytes)))
    for item in events_for(end, _invoked("x" * event_bytes), limit):
        data = _data(item.data_json)
        assert len(item.data_json) <= limit
        assert (data["run_id"], data["function_id"], data["correlation_id"]) == (
            RUN, "app-child", "parent.step")
        assert ("result" in data) != ("error" in data)
