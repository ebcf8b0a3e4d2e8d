"""Flow control at an Inngest SDK app's sync (issue 12): the bodies the official SDKs send are
read into FunctionConfig.flow, checked (400 naming the field in the SDK's words), stored and
shown; SKIPPED and the waiting reason in the APIs."""

from __future__ import annotations

import datetime
import json
from typing import Any

import inngest
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from inngest._internal import transforms
from inngest._internal.comm_lib.handler import get_function_configs
from plait_proto.v1 import function_pb2, run_pb2

from server.api import _convert
from server.api.inngest.register import parse_registration
from server.api.inngest.rest import run_json
from server.errors import InvalidArgument
from server.history.store import (
    FunctionRecord,
    RunRecord,
    function_config_from_json,
    function_config_to_json,
)
from server.runner.registry import validate_registration
from server.types import (
    AppId,
    BatchConfig,
    ConcurrencyLimit,
    ConcurrencyScope,
    DebounceConfig,
    EventId,
    EventTrigger,
    FlowControl,
    FunctionConfig,
    FunctionId,
    RateLimitConfig,
    RunId,
    RunStatus,
    SingletonConfig,
    SingletonMode,
    ThrottleConfig,
)

URL = "http://127.0.0.1:9/api/inngest"


def _py_sdk_functions() -> list[dict[str, Any]]:
    """The `functions` the installed inngest py SDK sends at sync for three functions that
    use every flow control."""
    client = inngest.Inngest(app_id="shop", is_production=False)

    @client.create_function(
        fn_id="pay", trigger=inngest.TriggerEvent(event="shop/pay"),
        concurrency=[inngest.Concurrency(limit=2, key="event.data.user"),
                     inngest.Concurrency(limit=5, key="event.data.org", scope="env")],
        throttle=inngest.Throttle(limit=1, period=datetime.timedelta(seconds=3)),
        rate_limit=inngest.RateLimit(limit=3, period=datetime.timedelta(minutes=1),
                                     key="event.data.user"),
        priority=inngest.Priority(run="event.data.vip ? 120 : 0"),
        singleton=inngest.Singleton(mode="skip", key="event.data.user"))
    def pay(ctx: Any, step: Any) -> None:
        return None

    @client.create_function(
        fn_id="sum", trigger=inngest.TriggerEvent(event="shop/item"),
        batch_events=inngest.Batch(max_size=3, timeout=datetime.timedelta(seconds=5),
                                   key="event.data.cart"))
    def total(ctx: Any, step: Any) -> None:
        return None

    @client.create_function(
        fn_id="quiet", trigger=inngest.TriggerEvent(event="shop/typed"),
        debounce=inngest.Debounce(period=datetime.timedelta(seconds=2), key="event.data.doc",
                                  timeout=datetime.timedelta(minutes=1)),
        idempotency="event.data.id")
    def quiet(ctx: Any, step: Any) -> None:
        return None

    configs = get_function_configs(URL, {"a": pay, "b": total, "c": quiet})
    assert not isinstance(configs, Exception)
    out = []
    for c in configs:
        raw = c.to_dict()
        assert not isinstance(raw, Exception)
        out.append(transforms.deep_strip_none(raw))
    return out


def _body(functions: list[dict[str, Any]], app: str = "shop") -> dict[str, Any]:
    return {"appName": app, "url": URL, "functions": functions, "sdk": "py:v0.5.19"}


def _fn(slug: str = "f", **flow: Any) -> dict[str, Any]:
    fn_url = f"{URL}?fnId=shop-{slug}&stepId=step"
    return {"id": f"shop-{slug}", "name": slug, "triggers": [{"event": "shop/e"}],
            "steps": {"step": {"id": "step", "name": "step",
                               "runtime": {"type": "http", "url": fn_url}}},
            **flow}


PAY = FlowControl(
    concurrency=(ConcurrencyLimit(2, "event.data.user"),
                 ConcurrencyLimit(5, "event.data.org", ConcurrencyScope.ENV)),
    throttle=ThrottleConfig(1, 3000, 1),
    rate_limit=RateLimitConfig(3, 60_000, "event.data.user"),
    priority_run="event.data.vip ? 120 : 0",
    singleton=SingletonConfig(SingletonMode.SKIP, "event.data.user"),
)
SUM = FlowControl(batch=BatchConfig(3, 5000, "event.data.cart"))
QUIET = FlowControl(debounce=DebounceConfig(2000, "event.data.doc", 60_000),
                    idempotency="event.data.id")


def test_the_py_sdks_flow_control_is_read_from_its_sync_body() -> None:
    reg = parse_registration(_body(_py_sdk_functions()), 3).registration
    validate_registration(reg)
    assert [f.flow for f in reg.functions] == [PAY, SUM, QUIET]


def test_the_js_sdks_shapes_are_read_a_number_an_object_and_burst_left_out() -> None:
    # As js 4.x sends them (zod schema in tests/compat/ts/node_modules/inngest/types.d.ts).
    reg = parse_registration(_body([
        _fn("a", concurrency=3, throttle={"limit": 2, "period": "1m30s", "key": "event.data.u"}),
        _fn("b", concurrency={"limit": 4, "key": "event.data.k", "scope": "account"},
            batchEvents={"maxSize": 10, "timeout": "2s", "if": "event.data.n > 1"},
            priority={}),
        _fn("c", singleton={"mode": "cancel"}, rateLimit={"limit": 1, "period": "24h"}),
    ]), 3).registration
    validate_registration(reg)
    a, b, c = (f.flow for f in reg.functions)
    assert a == FlowControl(concurrency=(ConcurrencyLimit(3),),
                            throttle=ThrottleConfig(2, 90_000, 1, "event.data.u"))
    assert b == FlowControl(
        concurrency=(ConcurrencyLimit(4, "event.data.k", ConcurrencyScope.ACCOUNT),),
        batch=BatchConfig(10, 2000, "", "event.data.n > 1"))
    assert c == FlowControl(rate_limit=RateLimitConfig(1, 86_400_000),
                            singleton=SingletonConfig(SingletonMode.CANCEL))


def test_a_function_without_flow_control_has_none_and_py_sends_an_empty_list() -> None:
    reg = parse_registration(_body([_fn("a"), _fn("b", concurrency=[])]), 3).registration
    assert [f.flow.configured for f in reg.functions] == [False, False]


def test_an_idempotency_key_replaces_the_rate_limit_as_on_inngest() -> None:
    reg = parse_registration(_body([_fn(
        "a", idempotency="event.data.id", rateLimit={"limit": 5, "period": "1m"})]), 3)
    (fn,) = reg.registration.functions
    assert fn.flow == FlowControl(idempotency="event.data.id")


BAD_SDK = [
    ({"concurrency": "5"}, "functions[0].concurrency"),
    ({"concurrency": [{"limit": 1}] * 3}, "functions[0].concurrency"),
    ({"concurrency": [{"limit": 1}, {"limit": 0}]}, "functions[0].concurrency[1].limit"),
    ({"concurrency": [{"limit": 1}, {"limit": 2, "scope": "org"}]},
     "functions[0].concurrency[1].scope"),
    ({"concurrency": [{"limit": 2, "scope": "env"}]}, "functions[0].concurrency[0].key"),
    ({"concurrency": {"limit": True}}, "functions[0].concurrency.limit"),
    ({"concurrency": [{"limit": 2, "key": "event.data.k >"}]},
     "functions[0].concurrency[0].key"),
    ({"concurrency": [{"limit": 100_001}]}, "functions[0].concurrency[0].limit"),
    ({"throttle": {"limit": 1, "period": "500ms"}}, "functions[0].throttle.period"),
    ({"throttle": {"limit": 1, "period": "8d"}}, "functions[0].throttle.period"),
    ({"throttle": {"limit": 1}}, "functions[0].throttle.period"),
    ({"throttle": {"limit": 1, "period": "1s", "burst": -1}}, "functions[0].throttle.burst"),
    ({"throttle": []}, "functions[0].throttle"),
    ({"rateLimit": {"limit": 1, "period": "25h"}}, "functions[0].rateLimit.period"),
    ({"rateLimit": {"limit": 0, "period": "1h"}}, "functions[0].rateLimit.limit"),
    ({"rateLimit": {"limit": 1, "period": "1h", "key": 7}}, "functions[0].rateLimit.key"),
    ({"debounce": {"period": "2s", "timeout": "1s"}}, "functions[0].debounce.timeout"),
    ({"debounce": {"period": "0s"}}, "functions[0].debounce.period"),
    ({"debounce": {"period": "1s", "key": "(("}}, "functions[0].debounce.key"),
    ({"batchEvents": {"maxSize": 0, "timeout": "1s"}}, "functions[0].batchEvents.maxSize"),
    ({"batchEvents": {"maxSize": 1001, "timeout": "1s"}}, "functions[0].batchEvents.maxSize"),
    ({"batchEvents": {"maxSize": 2, "timeout": "2h"}}, "functions[0].batchEvents.timeout"),
    ({"batchEvents": {"maxSize": 2}}, "functions[0].batchEvents.timeout"),
    ({"batchEvents": {"maxSize": 2, "timeout": "1s", "if": "event.x ||"}},
     "functions[0].batchEvents.if"),
    ({"batchEvents": {"maxSize": 2, "timeout": "1s"}, "debounce": {"period": "1s"}},
     "functions[0].batchEvents"),
    ({"batchEvents": {"maxSize": 2, "timeout": "1s"}, "cancel": [{"event": "x"}]},
     "functions[0].batchEvents"),
    ({"batchEvents": {"maxSize": 2, "timeout": "1s"}, "priority": {"run": "1"}},
     "functions[0].batchEvents"),
    ({"priority": {"run": "event.data.p +"}}, "functions[0].priority.run"),
    ({"priority": "high"}, "functions[0].priority"),
    ({"idempotency": "event.data.id ==="}, "functions[0].idempotency"),
    ({"idempotency": ["event.data.id"]}, "functions[0].idempotency"),
    ({"singleton": {"key": "event.data.k"}}, "functions[0].singleton.mode"),
    ({"singleton": {"mode": "queue"}}, "functions[0].singleton.mode"),
    # Over the CEL cost budget: refused at sync, not at the first event.
    ({"concurrency": [{"limit": 1, "key": "[" + ",".join(["1"] * 400) + "].map(a, [" +
                       ",".join(["1"] * 400) + "].map(b, a + b))"}]},
     "functions[0].concurrency[0].key"),
]


@pytest.mark.parametrize(("flow", "field"), BAD_SDK, ids=[f"{f}-{i}" for i, (_, f)
                                                          in enumerate(BAD_SDK)])
def test_bad_flow_control_from_an_sdk_is_refused_naming_the_field(
    flow: dict[str, Any], field: str,
) -> None:
    with pytest.raises(InvalidArgument) as raised:
        reg = parse_registration(_body([_fn(**flow)]), 3).registration
        validate_registration(reg)
    assert raised.value.field == field, raised.value.message


def test_inngests_own_batch_example_of_100_events_is_accepted() -> None:
    """A batch is closed early when its bytes would pass the cap (enqueue_runs.lua), so the
    size Inngest's docs show is not refused for what its events might weigh."""
    reg = parse_registration(_body([_fn(batchEvents={"maxSize": 100, "timeout": "5s"})]),
                             3).registration
    validate_registration(reg)
    batch = reg.functions[0].flow.batch
    assert batch is not None and batch.max_size == 100


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=12) | st.sampled_from(["1s", "1m", "25h", "0s", "8d", "500ms", "fn",
                                              "env", "account", "skip", "cancel",
                                              "event.data.k", "((", ""]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["limit", "key", "scope", "period", "burst", "timeout", "maxSize",
                         "if", "run", "mode"]), inner, max_size=5),
    max_leaves=12)
_FLOW_KEYS = ["concurrency", "throttle", "rateLimit", "debounce", "batchEvents", "priority",
              "idempotency", "singleton"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(_FLOW_KEYS), _json, min_size=1, max_size=4))
def test_any_flow_config_an_sdk_sends_is_taken_or_refused_naming_a_flow_field(
    flow: dict[str, Any],
) -> None:
    try:
        reg = parse_registration(_body([_fn(**flow)]), 3).registration
        validate_registration(reg)
    except InvalidArgument as e:
        named = e.field.removeprefix("functions[0].").split(".")[0].split("[")[0]
        assert named in (*_FLOW_KEYS, "cancel"), e.field
        return
    # Taken: it survives storage unchanged.
    (fn,) = reg.functions
    assert function_config_from_json(function_config_to_json(fn)) == fn


def _config(flow: FlowControl | None = None) -> FunctionConfig:
    return FunctionConfig(FunctionId("shop-f"), AppId("shop"), "f", "f",
                          (EventTrigger("shop/e"),), 3, url=URL, flow=flow or FlowControl())


@pytest.mark.parametrize("flow", [PAY, SUM, QUIET, FlowControl()])
def test_flow_control_is_stored_and_read_back(flow: FlowControl) -> None:
    config = _config(flow)
    assert function_config_from_json(function_config_to_json(config)) == config


def test_a_config_stored_before_flow_control_reads_as_none_and_keeps_its_stored_form() -> None:
    old = ('{"id":"shop-f","app_id":"shop","slug":"f","name":"f","triggers":[{"event":'
           '"shop/e","expression":""}],"retries":3,"url":"' + URL + '","start_timeout_ms":0,'
           '"finish_timeout_ms":0,"cancel_on":[]}')
    config = function_config_from_json(old)
    assert config.flow == FlowControl()
    assert function_config_to_json(config) == old


def test_a_change_of_flow_control_is_a_change_on_resync() -> None:
    # The gateway's `modified` compares these stored forms before and after.
    before = function_config_to_json(_config(PAY))
    after = function_config_to_json(_config(PAY.__class__(
        concurrency=PAY.concurrency[:1], throttle=PAY.throttle, rate_limit=PAY.rate_limit,
        priority_run=PAY.priority_run, singleton=PAY.singleton)))
    assert before != after
    assert before == function_config_to_json(_config(PAY))


def test_get_functions_definition_shows_the_flow_control() -> None:
    msg = _convert.function_to_pb(FunctionRecord(_config(PAY), 1), set())
    d = msg.definition
    assert [(c.limit, c.key, c.scope) for c in d.concurrency] == [
        (2, "event.data.user", function_pb2.CONCURRENCY_SCOPE_FN),
        (5, "event.data.org", function_pb2.CONCURRENCY_SCOPE_ENV)]
    assert (d.throttle.limit, d.throttle.period_ms, d.throttle.burst) == (1, 3000, 1)
    assert (d.rate_limit.limit, d.rate_limit.period_ms, d.rate_limit.key) == (
        3, 60_000, "event.data.user")
    assert d.priority_run == "event.data.vip ? 120 : 0"
    assert (d.singleton.mode, d.singleton.key) == (function_pb2.SINGLETON_MODE_SKIP,
                                                   "event.data.user")
    assert not d.HasField("debounce") and not d.HasField("batch_events")
    q = _convert.function_to_pb(FunctionRecord(_config(QUIET), 1), set()).definition
    assert (q.debounce.period_ms, q.debounce.key, q.debounce.timeout_ms) == (
        2000, "event.data.doc", 60_000)
    assert q.idempotency == "event.data.id"
    s = _convert.function_to_pb(FunctionRecord(_config(SUM), 1), set()).definition
    assert (s.batch_events.max_size, s.batch_events.timeout_ms, s.batch_events.key) == (
        3, 5000, "event.data.cart")


def _run(status: RunStatus) -> RunRecord:
    return RunRecord(RunId("01J00000000000000000000001"), FunctionId("shop-f"), AppId("shop"),
                     EventId("01J00000000000000000000002"), status, 1, None,
                     2 if status.terminal else None, None, None)


def test_a_skipped_run_is_run_status_skipped_and_rest_skipped() -> None:
    assert _convert.run_to_pb(_run(RunStatus.SKIPPED)).status == run_pb2.RUN_STATUS_SKIPPED
    assert _convert.run_status_from_pb("status", run_pb2.RUN_STATUS_SKIPPED) is RunStatus.SKIPPED
    assert run_json(_run(RunStatus.SKIPPED))["status"] == "Skipped"
    json.dumps(run_json(_run(RunStatus.SKIPPED)))


def test_every_run_status_has_a_grpc_and_a_rest_name() -> None:
    for status in RunStatus:
        assert _convert.run_to_pb(_run(status)).status != run_pb2.RUN_STATUS_UNSPECIFIED
        assert run_json(_run(status))["status"] != "Unknown"


def test_the_rest_run_says_what_holds_it() -> None:
    waiting = run_json(_run(RunStatus.QUEUED), waiting_reason='concurrency limit on key "a"')
    assert waiting["waiting_reason"] == 'concurrency limit on key "a"'
    assert run_json(_run(RunStatus.QUEUED))["waiting_reason"] is None
