"""The request for one job (server/drivers/http/_request.py): a job whose stored data cannot
be sent raises JobDataError, a ValueError the driver treats as the job's own fault."""

from __future__ import annotations

import json

import pytest

from server.config import Settings
from server.drivers import DATA_ERRORS
from server.drivers.http._request import JobDataError, build_call
from server.types import FunctionId, Job, JobId, LeaseId, RunId

URL = "http://127.0.0.1:1/api/inngest?fnId=f"


def _job(event_json: bytes, **steps: bytes) -> Job:
    return Job(JobId("r"), LeaseId("1"), RunId("r"), FunctionId("a-f"), 0, 3, event_json,
               steps=steps)


def test_a_job_of_canonical_data_is_sent_with_its_event_and_steps() -> None:
    call = build_call(_job(b'{"id":"e","name":"a/b","data":{"n":1},"ts":5}', h=b'{"data":2}'),
                      URL, ["h"], Settings())
    body = json.loads(call.body)
    assert body["event"]["data"] == {"n": 1} and body["steps"] == {"h": {"data": 2}}


@pytest.mark.parametrize("event_json", [
    b'{"name":"a","data":{"x":Infinity}}',
    b'{"name":"a","data":' + b"[" * 1000 + b"]" * 1000 + b"}",
    b'\xef\xbb\xbf{"name":"a","data":{}}',
    b'{"name":"a","data":{"s":"\\ud800"}}',
    b'["not an object"]',
    b"{",
])
def test_a_job_whose_stored_event_cannot_be_sent_raises_job_data_error(
    event_json: bytes
) -> None:
    with pytest.raises(JobDataError) as caught:
        build_call(_job(event_json), URL, [], Settings())
    assert isinstance(caught.value, DATA_ERRORS)


def test_a_job_whose_stored_step_cannot_be_sent_raises_job_data_error() -> None:
    with pytest.raises(JobDataError, match="step 'h'"):
        build_call(_job(b'{"name":"a","data":{}}', h=b"[NaN]"), URL, ["h"], Settings())


def test_integers_stored_before_the_rules_are_still_sent_as_javascript_reads_them() -> None:
    call = build_call(_job(b'{"name":"a","data":{"n":%d}}' % 2**60), URL, [], Settings())
    assert b'"data":{"n":1152921504606847000}' in call.body
