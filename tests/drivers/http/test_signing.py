"""Signatures and keys checked against the Python SDK's own functions (its source is the
judge), and the request body Plait signs is the canonical JSON the SDKs re-create."""

from __future__ import annotations

import hashlib
import hmac
import json
from urllib.parse import parse_qs

import jcs
from hypothesis import given
from hypothesis import strategies as st
from inngest._internal import net, server_lib, transforms

from server.config import Settings
from server.drivers.http import signing
from server.drivers.http._jcs import canonical
from server.drivers.http._request import build_call, step_url
from server.types import FunctionId, Job, JobId, LeaseId, RunId

KEY = "signkey-prod-" + "0a1b" * 16
OTHER = "signkey-prod-" + "ffee" * 16
CLOUD = server_lib.ServerKind.CLOUD


def _job(**steps: bytes) -> Job:
    return Job(JobId("01R"), LeaseId("7"), RunId("01R"), FunctionId("app-f"), 1, 4,
               b'{"id":"01E","name":"app/x","data":{"n":1.5e-7,"s":"\\u00e9"},"ts":1}',
               dict(steps))


def test_a_signed_request_passes_the_sdks_own_check_and_a_wrong_key_fails_it() -> None:
    call = build_call(_job(h=b'{"data":{"b":2,"a":[1,2.0]}}'), "http://app/api/inngest?fnId=f",
                      ["h"], Settings(signing_key=KEY))
    headers = net.normalize_headers(call.headers)
    assert net.validate_request_sig(body=call.body, headers=headers, mode=CLOUD,
                                    signing_key=KEY, signing_key_fallback=None) == KEY
    refused = net.validate_request_sig(body=call.body, headers=headers, mode=CLOUD,
                                       signing_key=OTHER, signing_key_fallback=None)
    assert isinstance(refused, Exception)


def test_the_request_body_is_canonical_json_with_everything_inline() -> None:
    call = build_call(_job(h=b'{"data":1}', g=b'{"error":{"name":"E","message":"m"}}'),
                      "http://app/api/inngest?fnId=f&stepId=step", ["g", "h"], Settings())
    body = json.loads(call.body)
    assert call.body == jcs.canonicalize(body)
    assert body["steps"] == {"h": {"data": 1}, "g": {"error": {"name": "E", "message": "m"}}}
    assert body["ctx"]["stack"] == {"stack": ["g", "h"], "current": 2}
    assert body["ctx"]["attempt"] == 1 and body["ctx"]["max_attempts"] == 4
    assert body["use_api"] is False and body["ctx"]["use_api"] is False
    assert "fn_id" not in body["ctx"] and "qi_id" not in body["ctx"]
    assert body["events"] == [body["event"]] and body["event"]["user"] == {}
    assert call.url == "http://app/api/inngest?fnId=f&stepId=step"
    assert "X-Inngest-Signature" not in call.headers  # no key, nothing to sign with
    assert call.headers["X-Inngest-Server-Kind"] == "dev"


def test_a_planned_step_is_targeted_by_its_id() -> None:
    assert step_url("http://app/x?fnId=f&stepId=step", "abc") == "http://app/x?fnId=f&stepId=abc"
    assert step_url("http://app/x?fnId=f", "step") == "http://app/x?fnId=f&stepId=step"


def test_response_signatures_are_verified_as_the_sdk_makes_them() -> None:
    body = b'[{"op": "StepRun", "id": "h", "data": 1}]'
    header = net.sign_response(body, KEY)
    assert isinstance(header, str)
    assert signing.verify(header, body, [KEY])
    assert signing.verify(header, body, [OTHER, KEY])  # the fallback
    assert not signing.verify(header, body + b" ", [KEY])
    assert not signing.verify(header, body, [OTHER])
    assert not signing.verify(None, body, [KEY]) and not signing.verify("t=x&s=y", body, [KEY])


def test_registration_bearer_tokens_of_both_sdks_are_accepted() -> None:
    py_token = transforms.hash_signing_key(KEY)  # the bare hash
    js_token = "signkey-prod-" + py_token  # js keeps the prefix
    for token in (py_token, js_token, KEY):
        assert signing.bearer_matches(f"Bearer {token}", [KEY])
    assert signing.bearer_matches(f"Bearer {py_token}", [OTHER, KEY])
    assert not signing.bearer_matches(f"Bearer {py_token}", [OTHER])
    assert not signing.bearer_matches(None, [KEY])
    assert not signing.bearer_matches(f"Basic {py_token}", [KEY])
    assert not signing.bearer_matches("Bearer ", [KEY])


def test_canonical_json_matches_rfc_8785() -> None:
    values = [0.1, 1e21, 1e-7, -0.0, 123456789.125, 2**60, {"é": 1, "a": {"z": None, "b": [True]}},
              "line\nbreak \u2028 \"quoted\" \x01"]
    for value in values:
        assert canonical(value) == jcs.canonicalize(value)


def test_a_captured_signed_answer_replayed_after_five_minutes_is_refused() -> None:
    body = b'[{"op": "StepRun", "id": "h", "data": 1}]'
    captured = net.sign_response(body, KEY)  # signed by the SDK, now
    assert isinstance(captured, str)
    signed_at = int(parse_qs(captured)["t"][0])
    assert signing.verify(captured, body, [KEY])
    assert signing.verify(captured, body, [KEY], now_s=signed_at + signing.WINDOW_S)
    assert not signing.verify(captured, body, [KEY], now_s=signed_at + signing.WINDOW_S + 1)


def test_a_signature_dated_more_than_five_minutes_ahead_is_refused() -> None:
    body = b'{"ok": true}'
    now = 1_800_000_000
    assert signing.verify(signing.sign(body, KEY, now + 299), body, [KEY], now_s=now)
    assert not signing.verify(signing.sign(body, KEY, now + 301), body, [KEY], now_s=now)
    assert not signing.verify(signing.sign(body, KEY, now - 301), body, [KEY], now_s=now)


@given(st.text(max_size=40))
def test_any_timestamp_text_is_refused_or_checked_without_error(ts: str) -> None:
    body = b"{}"
    mac = hmac.new(signing.strip_prefix(KEY).encode(), body + ts.encode(), hashlib.sha256)
    header = f"t={ts}&s={mac.hexdigest()}"
    verified = signing.verify(header, body, [KEY], now_s=1_800_000_000)
    assert verified == (ts.isascii() and ts.isdigit() and len(ts) <= 12
                        and abs(int(ts) - 1_800_000_000) <= 300)
