"""Generated HTTP requests never get a 5xx and never stop the server.

Surfaces: "http-events" (POST /e/{key} with generated bodies, headers and content types) and
"http-api" (/fn/register, /v1/apps/sync, /v1/cancellations and the run and event GETs with
generated JSON and ids). Every URL a request names is a closed loopback port: nothing leaves
the machine.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.conftest import EVENT_KEY, Target, fuzz_settings
from tests.fuzz.strategies import (
    KNOWN_NAMES,
    cels,
    crons,
    durations,
    header_text,
    hostile_bytes,
    ids,
    json_bytes_of,
    json_values,
)

# A discard port: connections to it are refused, so a sync or a call of a generated app fails
# on this machine.
LOOPBACK = "http://127.0.0.1:9"
API_TESTS = 5  # the tests of the "http-api" surface

names = st.one_of(st.sampled_from(KNOWN_NAMES), st.text(max_size=30), json_values)
events = st.fixed_dictionaries(
    {"name": names},
    optional={"data": st.one_of(st.dictionaries(st.text(max_size=8), json_values, max_size=4),
                                json_values),
              "id": st.one_of(ids, json_values), "ts": st.one_of(
                  st.integers(min_value=-(2**70), max_value=2**70), json_values),
              "user": json_values, "v": st.text(max_size=8)})
event_bodies = st.one_of(json_bytes_of(st.one_of(events, st.lists(events, max_size=4))),
                         hostile_bytes)
content_types = st.one_of(
    st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain",
                     "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                     "application/json; charset=latin-1", ""]), header_text)
header_names = st.sampled_from(["origin", "authorization", "content-encoding", "x-inngest-env",
                                "x-inngest-signature", "x-inngest-sdk", "x-inngest-server-kind",
                                "x-inngest-expected-server-kind", "referer", "accept",
                                "x-forwarded-for", "sec-fetch-site"])
headers = st.dictionaries(header_names, header_text, max_size=4)
keys = st.one_of(st.just(EVENT_KEY), st.sampled_from(["", "dev", "key", "a" * 300, "%2F"]),
                 st.text(max_size=20))


def _loopback_urls(value: Any) -> Any:
    """The value with every "url" (any case, any depth) replaced by a closed loopback URL."""
    if isinstance(value, dict):
        return {k: (LOOPBACK + "/api" if isinstance(k, str) and "url" in k.lower()
                    else _loopback_urls(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_loopback_urls(v) for v in value]
    return value


triggers = st.one_of(
    st.fixed_dictionaries({"event": names}, optional={"expression": cels}),
    st.fixed_dictionaries({"cron": crons}), json_values)
steps = st.fixed_dictionaries({"step": st.fixed_dictionaries(
    {"id": st.just("step"), "name": st.just("step"),
     "runtime": st.fixed_dictionaries({"type": st.sampled_from(["http", "ws", ""]),
                                       "url": st.just(LOOPBACK)})},
    optional={"retries": st.one_of(st.fixed_dictionaries(
        {"attempts": st.one_of(st.integers(-5, 10_000), json_values)}), json_values)})})
functions = st.fixed_dictionaries(
    {"id": st.one_of(st.text(max_size=20), st.just("fn")), "name": st.text(max_size=20),
     "triggers": st.lists(triggers, max_size=3), "steps": st.one_of(steps, json_values)},
    optional={
        "cancel": st.lists(st.fixed_dictionaries(
            {"event": names}, optional={"if": cels, "timeout": durations}), max_size=2),
        "timeouts": st.fixed_dictionaries({}, optional={"start": durations, "finish": durations}),
        "concurrency": json_values, "rateLimit": json_values, "debounce": json_values,
        "batchEvents": json_values, "idempotency": st.text(max_size=20),
    })
registrations = st.fixed_dictionaries(
    {"url": st.just(LOOPBACK + "/api"), "appName": st.one_of(st.text(max_size=20), json_values),
     "functions": st.one_of(st.lists(functions, max_size=3), json_values)},
    optional={"framework": st.text(max_size=10), "sdk": st.one_of(
        st.sampled_from(["js:v3.0.0", "py:v0.4.0", "x", ""]), json_values),
        "v": st.text(max_size=5), "deployType": st.text(max_size=10)})


@fuzz_settings(1)
@given(key=keys, body=event_bodies, content_type=content_types, extra=headers)
def test_posted_events_never_get_a_server_error(
    target: Target, key: str, body: bytes, content_type: str, extra: dict[str, str]
) -> None:
    target.request("http-events", "POST", f"/e/{quote(key, safe='')}", content=body,
                   headers={**extra, "content-type": content_type})


@fuzz_settings(API_TESTS)
@given(body=st.one_of(json_bytes_of(registrations.map(_loopback_urls)), hostile_bytes),
       content_type=content_types, extra=headers)
def test_registrations_never_get_a_server_error(
    target: Target, body: bytes, content_type: str, extra: dict[str, str]
) -> None:
    target.request("http-api", "POST", "/fn/register", content=body,
                   headers={**extra, "content-type": content_type})


@fuzz_settings(API_TESTS)
@given(url=st.one_of(st.just(LOOPBACK), st.text(max_size=20).map(lambda p: f"{LOOPBACK}/{p}"),
                     st.sampled_from(["", "http://[::1", "ftp://127.0.0.1/", "http://127.0.0.1:"
                                      "99999/", "127.0.0.1:9", "http://127.0.0.1:9" + "/a" * 3000
                                      ])),
       other=st.dictionaries(st.text(max_size=8), json_values, max_size=3),
       content_type=content_types)
def test_syncs_never_get_a_server_error_but_a_502_for_an_app_that_does_not_answer(
    target: Target, url: str, other: dict[str, Any], content_type: str
) -> None:
    # Only a URL of this test's making: a generated host could be looked up off the machine.
    body = json.dumps({**_loopback_urls(other), "url": url}).encode()
    target.request("http-api", "POST", "/v1/apps/sync", content=body, allowed=(502,),
                   headers={"content-type": content_type})


cancellations = st.fixed_dictionaries({}, optional={
    "app_id": st.one_of(st.text(max_size=20), json_values),
    "function_id": st.one_of(st.text(max_size=20), json_values),
    "started_after": st.one_of(st.text(max_size=30), json_values),
    "started_before": st.one_of(st.text(max_size=30), json_values),
    "if": st.one_of(cels, json_values)})


@fuzz_settings(API_TESTS)
@given(body=st.one_of(json_bytes_of(cancellations), hostile_bytes), content_type=content_types)
def test_bulk_cancellations_never_get_a_server_error(
    target: Target, body: bytes, content_type: str
) -> None:
    target.request("http-api", "POST", "/v1/cancellations", content=body,
                   headers={"content-type": content_type})


@fuzz_settings(API_TESTS)
@given(run_id=ids, path=st.sampled_from(["/v1/runs/{}", "/v1/events/{}/runs",
                                         "/v0/runs/{}/batch", "/v0/runs/{}/actions"]),
       method=st.sampled_from(["GET", "GET", "DELETE"]))
def test_run_and_event_reads_by_generated_id_never_get_a_server_error(
    target: Target, run_id: str, path: str, method: str
) -> None:
    if method == "DELETE" and not path.startswith("/v1/runs/"):
        method = "GET"
    target.request("http-api", method, path.format(quote(run_id, safe="")))


@fuzz_settings(API_TESTS)
@given(path=st.sampled_from(["/dev", "/health", "/metrics", "/e/", "/fn/register", "/v1/runs/",
                             "/v1/cancellations", "/e/" + EVENT_KEY]),
       method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"]),
       body=hostile_bytes)
def test_any_method_on_any_route_never_gets_a_server_error(
    target: Target, path: str, method: str, body: bytes
) -> None:
    target.request("http-api", method, path, content=body)


def test_the_server_is_alive_and_healthy_after_the_http_fuzzing(target: Target) -> None:
    target.assert_healthy()
