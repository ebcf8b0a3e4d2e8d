"""SDK responses as opcodes: the statuses, ops and headers the Inngest SDKs send (pure logic)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.drivers.http._response import opcode_from_response, retry_after_ms
from server.durations import MAX_DURATION_MS, duration_ms
from server.types import (
    FunctionId,
    InvokeFunction,
    Job,
    JobId,
    LeaseId,
    RunCompleted,
    RunFailed,
    RunId,
    Sleep,
    StepCompleted,
    StepFailed,
    StepId,
    StepsPlanned,
    WaitForEvent,
)

NOW = 1_764_000_000_000
SDK = {"x-inngest-sdk": "inngest-py:v0.5.19"}
JOB = Job(JobId("r"), LeaseId("1"), RunId("r"), FunctionId("a-f"), 0, 3, b"{}")
PLANNED_JOB = Job(JobId("r:h"), LeaseId("1"), RunId("r"), FunctionId("a-f"), 0, 3, b"{}",
                  target_step="h")


def _answer(status: int, body: Any, headers: dict[str, str] | None = None,
            job: Job = JOB) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return opcode_from_response(status, {**SDK, **(headers or {})}, raw, job, NOW)


def test_a_200_completes_the_run_with_the_body_as_output() -> None:
    assert _answer(200, {"done": True}) == RunCompleted(b'{"done":true}')
    assert _answer(200, b"") == RunCompleted(b"null")


def test_a_step_run_op_is_a_completed_step_under_its_hashed_id() -> None:
    op = {"op": "StepRun", "id": "86f7e437", "displayName": "a", "name": "a", "data": {"x": 1}}
    assert _answer(206, [op]) == StepCompleted("86f7e437", "a", b'{"x":1}')
    assert _answer(206, {**op, "data": None}) == StepCompleted("86f7e437", "a", b"null")


def test_step_errors_retry_unless_final_or_marked_no_retry() -> None:
    op = {"op": "StepError", "id": "h", "displayName": "s",
          "error": {"name": "ValueError", "message": "boom", "stack": "tb"}}
    retried = _answer(206, [op])
    assert isinstance(retried, StepFailed) and not retried.non_retriable
    assert retried.error.name == "ValueError" and retried.error.stack == "tb"
    assert isinstance(final := _answer(206, [{**op, "op": "StepFailed"}]), StepFailed)
    assert final.non_retriable
    marked = _answer(206, [op], {"x-inngest-no-retry": "true"})
    assert isinstance(marked, StepFailed) and marked.non_retriable
    later = _answer(206, [op], {"retry-after": "30"})
    assert isinstance(later, StepFailed) and later.retry_after_ms == 30_000


def test_planned_steps_are_planned_once_each() -> None:
    ops = [{"op": "StepPlanned", "id": i, "displayName": i} for i in ("p", "q", "p")]
    assert _answer(206, ops) == StepsPlanned(("p", "q"))
    # A planned job's plan is refused by the executor's check (one for both transports).
    assert _answer(206, ops, job=PLANNED_JOB) == StepsPlanned(("p", "q"))


def test_a_group_parks_its_sleeps_waits_and_invokes_and_says_when_it_races() -> None:
    ops = [{"op": "StepPlanned", "id": "p", "displayName": "p"},
           {"op": "Sleep", "id": "z", "displayName": "nap", "name": "1s"},
           {"op": "WaitForEvent", "id": "w", "name": "a/b", "opts": {"timeout": "5s"}},
           {"op": "InvokeFunction", "id": "i", "opts": {"function_id": "app-c"}}]
    assert _answer(206, ops) == StepsPlanned(
        ("p",), (Sleep("z", "nap", NOW + 1000), WaitForEvent("w", "w", "a/b", "", NOW + 5000),
                 InvokeFunction("i", "i", "app-c", b"{}", 0)), race=False)
    raced = [{**op, "opts": {**op.get("opts", {}), "parallelMode": "race"}} for op in ops[1:3]]
    assert _answer(206, raced) == StepsPlanned(
        (), (Sleep("z", "nap", NOW + 1000), WaitForEvent("w", "w", "a/b", "", NOW + 5000)),
        race=True)


def test_sleeps_take_an_iso_time_or_a_duration() -> None:
    py = {"op": "Sleep", "id": "z", "displayName": "nap", "name": "2025-11-24T16:00:02.000Z"}
    assert _answer(206, [py]) == Sleep("z", "nap", 1_764_000_002_000)
    js = {"op": "Sleep", "id": "z", "displayName": "nap", "name": "1m30s"}
    assert _answer(206, [js]) == Sleep("z", "nap", NOW + 90_000)
    # A planned step's job sleeps for its own step (the executor checks which).
    assert _answer(206, [js], job=PLANNED_JOB) == Sleep("z", "nap", NOW + 90_000)


@pytest.mark.parametrize(("status", "body", "headers", "non_retriable", "retry_ms"), [
    (500, {"code": "unknown", "message": "boom", "name": "ValueError", "stack": "tb"}, {},
     False, 0),
    (500, {"code": "non_retriable_error", "message": "no", "name": "NonRetriableError"},
     {"x-inngest-no-retry": "true"}, True, 0),
    (400, {"name": "NonRetriableError", "message": "no", "__serialized": True},
     {"x-inngest-no-retry": "true"}, True, 0),
    (500, {"name": "RetryAfterError", "message": "later"},
     {"x-inngest-no-retry": "false", "retry-after": "2025-11-24T16:00:10.000Z"}, False, 10_000),
    (401, {"message": "Unauthorized"}, {}, False, 0),
])
def test_other_statuses_are_function_errors_that_the_headers_qualify(
    status: int, body: Any, headers: dict[str, str], non_retriable: bool, retry_ms: int,
) -> None:
    failed = _answer(status, body, headers)
    assert isinstance(failed, RunFailed)
    assert failed.non_retriable is non_retriable and failed.retry_after_ms == retry_ms
    assert failed.error.message == body["message"]


def test_an_answer_without_the_sdk_header_is_a_retriable_transport_failure() -> None:
    failed = opcode_from_response(200, {}, b"<html>proxy</html>", JOB, NOW)
    assert isinstance(failed, RunFailed) and not failed.non_retriable
    assert "X-Inngest-SDK" in failed.error.message and "proxy" in failed.error.message


def test_a_201_stream_is_unwrapped() -> None:
    inner = {"status": 206, "headers": {"X-Inngest-No-Retry": "true"},
             "body": json.dumps([{"op": "StepError", "id": "h", "error": {"message": "x"}}])}
    answer = b"   " + json.dumps(inner).encode()
    failed = _answer(201, answer)
    assert isinstance(failed, StepFailed) and failed.non_retriable


def test_an_invoke_op_names_the_function_its_data_and_timeout() -> None:
    op = {"op": "InvokeFunction", "id": "h", "displayName": "call",
          "opts": {"function_id": "app-child", "payload": {"data": {"n": 1}, "v": None},
                   "timeout": "30s"}}
    assert _answer(206, [op]) == InvokeFunction(
        StepId("h"), "call", "app-child", b'{"n":1}', NOW + 30_000)
    no_timeout = {"op": "InvokeFunction", "id": "h", "opts": {"function_id": "app-child"}}
    assert _answer(206, [no_timeout]) == InvokeFunction(StepId("h"), "h", "app-child", b"{}", 0)


@pytest.mark.parametrize("body", [
    [{"op": "InvokeFunction", "id": "i"}],
    [{"op": "InvokeFunction", "id": "i", "opts": {"function_id": "f", "timeout": "never"}}],
    [{"op": "InvokeFunction", "id": "i",
      "opts": {"function_id": "f", "payload": {"data": [1]}}}],
    [{"op": "StepRun", "id": ""}],
    [{"op": "Sleep", "id": "z", "name": "soon"}],
    [{"op": "StepRun", "id": "a"}, {"op": "Sleep", "id": "b", "name": "1s"}],
    [{"op": "StepPlanned", "id": "a"}, {"op": "AIGateway", "id": "b"}],
    {"not": "a list"},
])
def test_what_plait_cannot_run_fails_the_run_saying_what(body: Any) -> None:
    failed = _answer(206, body)
    assert isinstance(failed, RunFailed) and failed.non_retriable
    assert failed.error.name == "Unsupported"


def test_durations_and_retry_after() -> None:
    assert duration_ms("2s") == 2000 and duration_ms("1h30m") == 5_400_000
    assert duration_ms("500ms") == 500 and duration_ms("2d") == 172_800_000
    assert duration_ms("soon") is None and duration_ms("") is None
    assert retry_after_ms("7", NOW) == 7000
    assert retry_after_ms("Mon, 24 Nov 2025 16:00:05 GMT", NOW) == 5000
    assert retry_after_ms("2020-01-01T00:00:00Z", NOW) == 0
    assert retry_after_ms("99999", NOW) == 86_400_000


DEEP = "[" * 1000 + "]" * 1000


@pytest.mark.parametrize(("body", "rule"), [
    (b'{"x": NaN}', "finite"), (b"1e999", "finite"), (DEEP.encode(), "nests deeper"),
    (b"\xef\xbb\xbf{}", "byte order mark"), (b"[%d]" % 2**60, "beyond"),
])
def test_a_200_output_breaking_a_json_rule_fails_the_run_for_good(body: bytes, rule: str) -> None:
    failed = _answer(200, body)
    assert isinstance(failed, RunFailed) and failed.non_retriable
    assert failed.error.name == "OutputError" and rule in failed.error.message


def test_a_200_output_is_kept_in_canonical_form() -> None:
    assert _answer(200, b' { "a" : "\\u00e9" } ') == RunCompleted('{"a":"é"}'.encode())


def test_a_206_op_with_deep_or_nan_data_fails_the_run_instead_of_raising() -> None:
    deep = ('[{"op":"StepRun","id":"h","data":' + DEEP + "}]").encode()
    failed = _answer(206, deep)
    assert isinstance(failed, RunFailed) and failed.non_retriable
    assert "nests deeper" in failed.error.message
    nan = _answer(206, b'[{"op":"StepRun","id":"h","data":NaN}]')
    assert isinstance(nan, RunFailed) and nan.non_retriable and "NaN" in nan.error.message
    cut = _answer(206, b'[{"op":"StepRun","id":"h","da')
    assert isinstance(cut, RunFailed) and not cut.non_retriable
    assert cut.error.name == "BadResponse"


def test_a_step_output_64_levels_deep_travels_in_a_206() -> None:
    output = '{"a":' * 64 + "1" + "}" * 64
    op = _answer(206, f'[{{"op":"StepRun","id":"h","data":{output}}}]'.encode())
    assert op == StepCompleted(StepId("h"), "h", output.encode())


def test_deep_error_and_stream_bodies_are_answers_not_exceptions() -> None:
    failed = _answer(500, DEEP.encode())
    assert isinstance(failed, RunFailed) and "HTTP 500" not in failed.error.message
    stream = _answer(201, b"  " + DEEP.encode())
    assert isinstance(stream, RunFailed) and stream.error.name == "BadStream"


def test_a_sleep_of_400_digits_fails_the_run_saying_so() -> None:
    failed = _answer(206, [{"op": "Sleep", "id": "z", "name": "9" * 400 + "s"}])
    assert isinstance(failed, RunFailed) and failed.error.name == "Unsupported"


def test_durations_are_short_and_whole_and_capped() -> None:
    assert duration_ms("9" * 400 + "s") is None
    assert duration_ms("2s\n") is None and duration_ms("\u0663s") is None
    assert duration_ms("99999999999999999999w") == MAX_DURATION_MS


@given(st.sampled_from([200, 201, 206, 400, 500]),
       st.binary(max_size=300) | st.text(alphabet='[]{}"\\,:1eN.-op', max_size=300).map(
           str.encode))
def test_any_sdk_answer_becomes_an_opcode_never_an_exception(status: int, body: bytes) -> None:
    _answer(status, body)


def test_big_integers_in_an_ops_metadata_pass_and_its_data_is_left_to_the_executor() -> None:
    body = b'[{"op":"StepRun","id":"h","data":{"n":1},"timing":{"start":1796157912639000000}}]'
    assert _answer(206, body) == StepCompleted(StepId("h"), "h", b'{"n":1}')
    big = _answer(206, b'[{"op":"StepRun","id":"h","data":%d}]' % 2**60)
    assert big == StepCompleted(StepId("h"), "h", b"%d" % 2**60)  # checked() refuses it
