"""REST answers never fail on stored data (server/api/inngest/rest.py, pure logic)."""

from __future__ import annotations

import pytest
from starlette.responses import JSONResponse

from server.api.inngest.rest import stored_json, ulid
from server.errors import InvalidArgument


@pytest.mark.parametrize("raw", [
    b"NaN", b'{"x":Infinity}', b"[1e999]", b"[" * 100_000 + b"]" * 100_000, b"\xff", b"{",
])
def test_stored_data_that_no_json_answer_can_hold_reads_as_the_default(raw: bytes) -> None:
    assert stored_json(raw) is None
    assert stored_json(raw, {}) == {}


def test_stored_data_reads_as_its_value_and_encodes() -> None:
    value = stored_json(b'{"a":[1,"\xc3\xa9",%d]}' % 2**60)
    assert value == {"a": [1, "é", 2**60]}
    assert JSONResponse({"data": value}).status_code == 200


def test_a_run_id_with_a_trailing_newline_is_not_a_ulid() -> None:
    with pytest.raises(InvalidArgument):
        ulid("run_id", "01JD0000000000000000000000\n")
    assert ulid("run_id", "01jd0000000000000000000000") == "01JD0000000000000000000000"
