"""Flow control over gRPC (issue 12): the Python SDK's decorator arguments travel in
FunctionDefinition, are read into FunctionConfig.flow and checked (INVALID_ARGUMENT naming the
field), and come back unchanged from GetFunction; a batched run's events reach the worker
(Job.events) and the SDK app (the request's `events`)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from plait import App, Batch, Concurrency, Debounce, RateLimit, Singleton, Throttle
from plait._convert import function_to_pb, job_from_pb
from plait_proto.v1 import event_pb2, function_pb2, queue_pb2

from server.api._convert import definition_to_pb
from server.config import Settings
from server.drivers.grpc._convert import job_to_pb, registration_from_pb
from server.drivers.http._request import build_call
from server.errors import InvalidArgument
from server.runner.registry import validate_registration
from server.types import (
    BatchConfig,
    ConcurrencyLimit,
    ConcurrencyScope,
    DebounceConfig,
    FlowControl,
    FunctionId,
    Job,
    JobId,
    LeaseId,
    RateLimitConfig,
    RunId,
    SingletonConfig,
    SingletonMode,
    ThrottleConfig,
)


def _register(*definitions: function_pb2.FunctionDefinition) -> queue_pb2.Register:
    return queue_pb2.Register(app_id="shop", max_concurrent_jobs=5, functions=list(definitions))


def _sdk_app() -> App:
    app = App("shop")

    @app.function("pay", trigger=_event(),
                  concurrency=[Concurrency(2, key="event.data.user"),
                               Concurrency(5, key="event.data.org", scope="account")],
                  throttle=Throttle(1, timedelta(seconds=3), burst=2, key="event.data.user"),
                  rate_limit=RateLimit(3, 60, key="event.data.user"),
                  priority="event.data.vip ? 120 : 0",
                  singleton=Singleton("cancel", key="event.data.user"))
    async def pay(ctx: Any, step: Any) -> None:
        return None

    @app.function("sum", trigger=_event(), concurrency=4,
                  batch_events=Batch(10, 5, key="event.data.cart", if_exp="event.data.n > 0"))
    async def total(ctx: Any, step: Any) -> None:
        return None

    @app.function("quiet", trigger=_event(), idempotency="event.data.id",
                  debounce=Debounce(2.5, key="event.data.doc", timeout=timedelta(minutes=1)))
    async def quiet(ctx: Any, step: Any) -> None:
        return None

    @app.function("plain", trigger=_event())
    async def plain(ctx: Any, step: Any) -> None:
        return None

    return app


def _event() -> Any:
    from plait import TriggerEvent
    return TriggerEvent("shop/e")


EXPECTED = [
    FlowControl(
        concurrency=(ConcurrencyLimit(2, "event.data.user"),
                     ConcurrencyLimit(5, "event.data.org", ConcurrencyScope.ACCOUNT)),
        throttle=ThrottleConfig(1, 3000, 2, "event.data.user"),
        rate_limit=RateLimitConfig(3, 60_000, "event.data.user"),
        priority_run="event.data.vip ? 120 : 0",
        singleton=SingletonConfig(SingletonMode.CANCEL, "event.data.user")),
    FlowControl(concurrency=(ConcurrencyLimit(4),),
                batch=BatchConfig(10, 5000, "event.data.cart", "event.data.n > 0")),
    FlowControl(debounce=DebounceConfig(2500, "event.data.doc", 60_000),
                idempotency="event.data.id"),
    FlowControl(),
]


def test_the_python_sdks_flow_control_arrives_in_function_config() -> None:
    definitions = [function_to_pb(spec) for spec in _sdk_app()._specs()]
    reg = registration_from_pb(_register(*definitions), 3)
    validate_registration(reg)
    assert [f.flow for f in reg.functions] == EXPECTED


def test_get_function_returns_the_definition_as_registered() -> None:
    definitions = [function_to_pb(spec) for spec in _sdk_app()._specs()]
    reg = registration_from_pb(_register(*definitions), 3)
    shown = [definition_to_pb(f) for f in reg.functions]
    again = registration_from_pb(_register(*shown), 3)
    assert [f.flow for f in again.functions] == EXPECTED
    # Unset controls stay unset (no empty Throttle reads as "throttle of 0").
    assert not shown[3].HasField("throttle") and not shown[3].HasField("singleton")


C = function_pb2.ConcurrencyLimit
BAD = [
    ({"concurrency": [C(limit=0)]}, "functions[0].concurrency[0].limit"),
    ({"concurrency": [C(limit=1)] * 3}, "functions[0].concurrency"),
    ({"concurrency": [C(limit=1, scope=9)]}, "functions[0].concurrency[0].scope"),
    ({"concurrency": [C(limit=1, scope=function_pb2.CONCURRENCY_SCOPE_ENV)]},
     "functions[0].concurrency[0].key"),
    ({"throttle": function_pb2.Throttle(limit=1, period_ms=999)},
     "functions[0].throttle.period_ms"),
    ({"throttle": function_pb2.Throttle(limit=1, period_ms=1000, burst=-2)},
     "functions[0].throttle.burst"),
    ({"rate_limit": function_pb2.RateLimit(limit=1, period_ms=-5)},
     "functions[0].rate_limit.period_ms"),
    ({"debounce": function_pb2.Debounce(period_ms=5000, timeout_ms=4000)},
     "functions[0].debounce.timeout_ms"),
    ({"batch_events": function_pb2.BatchEvents(max_size=2, timeout_ms=3_600_001)},
     "functions[0].batch_events.timeout_ms"),
    ({"batch_events": function_pb2.BatchEvents(max_size=2, timeout_ms=1000),
      "priority_run": "1"}, "functions[0].batch_events"),
    ({"batch_events": function_pb2.BatchEvents(max_size=2, timeout_ms=1000, key="a b")},
     "functions[0].batch_events.key"),
    ({"singleton": function_pb2.Singleton()}, "functions[0].singleton.mode"),
    ({"singleton": function_pb2.Singleton(mode=7)}, "functions[0].singleton.mode"),
    ({"idempotency": "event.data.id +"}, "functions[0].idempotency"),
]


@pytest.mark.parametrize(("flow", "field"), BAD, ids=[f"{f}-{i}" for i, (_, f) in enumerate(BAD)])
def test_bad_flow_control_over_grpc_is_refused_naming_the_field(
    flow: dict[str, Any], field: str,
) -> None:
    trigger = function_pb2.Trigger(event=function_pb2.EventTrigger(event="shop/e"))
    definition = function_pb2.FunctionDefinition(id="f", triggers=[trigger], **flow)
    with pytest.raises(InvalidArgument) as raised:
        validate_registration(registration_from_pb(_register(definition), 3))
    assert raised.value.field == field, raised.value.message


_i32 = st.integers(-(2**31), 2**31 - 1)
_i64 = st.one_of(st.integers(-(2**63), 2**63 - 1), st.sampled_from(
    [0, 1, 999, 1000, 3_600_000, 86_400_000, 86_400_001, 7 * 86_400_000]))
_cel = st.one_of(st.sampled_from(["", "event.data.k", "((", "event.data.k +", "a b",
                                  "[1,2,3].map(x, [1,2,3].map(y, [1].map(z, z)))"]),
                 st.text(max_size=8))
_flow = st.fixed_dictionaries({}, optional={
    "concurrency": st.lists(st.builds(C, limit=_i32, key=_cel,
                                      scope=st.integers(0, 5)), max_size=3),
    "throttle": st.builds(function_pb2.Throttle, limit=_i32, period_ms=_i64, burst=_i32,
                          key=_cel),
    "rate_limit": st.builds(function_pb2.RateLimit, limit=_i32, period_ms=_i64, key=_cel),
    "debounce": st.builds(function_pb2.Debounce, period_ms=_i64, key=_cel, timeout_ms=_i64),
    "batch_events": st.builds(function_pb2.BatchEvents, max_size=_i32, timeout_ms=_i64,
                              key=_cel, if_expression=_cel),
    "priority_run": _cel,
    "idempotency": _cel,
    "singleton": st.builds(function_pb2.Singleton, mode=st.integers(0, 4), key=_cel),
})
_FLOW_FIELDS = ("concurrency", "throttle", "rate_limit", "debounce", "batch_events",
                "priority_run", "idempotency", "singleton")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_flow)
def test_any_flow_control_a_worker_sends_is_taken_or_refused_naming_a_flow_field(
    flow: dict[str, Any],
) -> None:
    trigger = function_pb2.Trigger(event=function_pb2.EventTrigger(event="shop/e"))
    definition = function_pb2.FunctionDefinition(id="f", triggers=[trigger], **flow)
    try:
        reg = registration_from_pb(_register(definition), 3)
        validate_registration(reg)
    except InvalidArgument as e:
        named = e.field.removeprefix("functions[0].").split(".")[0].split("[")[0]
        assert named in _FLOW_FIELDS, e.field
        return
    (fn,) = reg.functions
    again = registration_from_pb(_register(definition_to_pb(fn)), 3)
    assert again.functions[0].flow == fn.flow


EVENTS = tuple(json.dumps({"id": f"e{n}", "name": "shop/e", "data": {"n": n}, "ts": n})
               .encode() for n in (1, 2, 3))


def _job(events: tuple[bytes, ...] = ()) -> Job:
    return Job(JobId("j"), LeaseId("1"), RunId("r"), FunctionId("shop-sum"), 0, 3,
               EVENTS[0], events=events)


def test_a_batched_runs_events_reach_the_worker_in_order() -> None:
    event = event_pb2.Event(id="e1", name="shop/e", data_json=b'{"n":1}', ts_ms=1)
    msg = job_to_pb(_job(EVENTS), "sum", event)
    assert [(e.id, json.loads(e.data_json), e.ts_ms) for e in msg.events] == [
        ("e1", {"n": 1}, 1), ("e2", {"n": 2}, 2), ("e3", {"n": 3}, 3)]
    job = job_from_pb(queue_pb2.Job.FromString(msg.SerializeToString()))
    assert [e.id for e in job.events] == ["e1", "e2", "e3"]
    assert not job_to_pb(_job(), "sum", event).events  # a run of one event: just `event`


def test_a_batched_runs_events_are_the_sdk_requests_events() -> None:
    batched = json.loads(build_call(_job(EVENTS), "http://127.0.0.1:1/api", [],
                                    Settings()).body)
    assert [e["data"]["n"] for e in batched["events"]] == [1, 2, 3]
    assert batched["event"]["id"] == "e1"
    single = json.loads(build_call(_job(), "http://127.0.0.1:1/api", [], Settings()).body)
    assert single["events"] == [single["event"]]


def test_a_batched_event_stored_damaged_is_a_data_error() -> None:
    event = event_pb2.Event(id="e1", name="shop/e", data_json=b"{}", ts_ms=1)
    with pytest.raises(ValueError, match="event"):
        job_to_pb(_job((EVENTS[0], b'{"name":"x","data":NaN}')), "sum", event)
