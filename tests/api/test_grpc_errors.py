"""The one gRPC error edge (server/api/grpc_errors.py): which request fields a NUL is refused
in (pure logic; tests/e2e/test_grpc_errors.py runs it against servers)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from plait_proto.v1 import event_pb2, management_pb2

from server.api.grpc_errors import nul_field


@given(st.text(), st.text())
def test_a_nul_anywhere_in_a_top_level_string_names_that_field(before: str, after: str) -> None:
    assert nul_field(management_pb2.GetAppRequest(app_id=before + "\x00" + after)) == "app_id"
    clean = before.replace("\x00", "")
    assert nul_field(management_pb2.GetAppRequest(app_id=clean)) == ""


def test_nested_messages_are_not_walked() -> None:
    """Only the ids of a request are checked at the edge: nested event names go through the
    ingest's own rules, and walking 5,000 events per request would cost the hot ingest path."""
    request = event_pb2.SendEventsRequest(events=[event_pb2.EventInput(name="a\x00")])
    assert nul_field(request) == ""
