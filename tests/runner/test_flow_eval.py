"""Flow control keys evaluated for a new run (server/runner/flow.py): CEL over the event,
compiled once per configuration, hashed into key ids; what a failing key means."""

from __future__ import annotations

from server.queue.flow import NO_FLOW
from server.runner.flow import compile_flow, evaluate
from server.types import (
    AppId,
    BatchConfig,
    ConcurrencyLimit,
    ConcurrencyScope,
    EventTrigger,
    FlowControl,
    FunctionConfig,
    FunctionId,
    RateLimitConfig,
    SingletonConfig,
    SingletonMode,
    ThrottleConfig,
)


def _fn(fn_id: str, flow: FlowControl) -> FunctionConfig:
    return FunctionConfig(id=FunctionId(fn_id), app_id=AppId("app"), slug=fn_id, name=fn_id,
                          triggers=(EventTrigger("e"),), flow=flow)


def _event(**data: object) -> dict[str, object]:
    return {"name": "e", "data": data}


KEYED = FlowControl(
    concurrency=(ConcurrencyLimit(2, key="event.data.user"),),
    throttle=ThrottleConfig(1, 1000, key="event.data.user"),
    rate_limit=RateLimitConfig(5, 60_000, key="event.data.user"),
    singleton=SingletonConfig(SingletonMode.SKIP, key="event.data.user"),
    idempotency="event.data.order")


def test_a_function_without_flow_control_evaluates_nothing() -> None:
    assert evaluate(_fn("f", FlowControl()), _event(user="a")) is NO_FLOW


def test_the_same_key_value_gives_the_same_key_and_another_value_another() -> None:
    fn = _fn("f", KEYED)
    a1, a2 = evaluate(fn, _event(user="a", order=1)), evaluate(fn, _event(user="a", order=2))
    b = evaluate(fn, _event(user="b", order=1))
    assert a1.concurrency == a2.concurrency != b.concurrency
    assert a1.throttle == a2.throttle != b.throttle
    assert a1.rate_limit == a2.rate_limit != b.rate_limit
    assert a1.singleton == a2.singleton != b.singleton
    assert a1.idempotency != a2.idempotency and a1.idempotency == b.idempotency
    assert a1.concurrency[0].why == 'concurrency limit on key "a"'


def test_values_of_different_types_are_different_keys() -> None:
    fn = _fn("f", KEYED)
    assert evaluate(fn, _event(user="1")).concurrency != evaluate(fn, _event(user=1)).concurrency


def test_a_key_that_fails_is_the_empty_key_and_an_idempotency_key_that_fails_applies_not(
) -> None:
    flow = evaluate(_fn("f", KEYED), _event())
    assert flow.concurrency[0].key_id.endswith(":-")
    assert flow.concurrency[0].why == 'concurrency limit on key ""'
    assert flow.idempotency == ""


def test_fn_scoped_keys_are_per_function_and_env_scoped_keys_are_shared() -> None:
    fn_scope = FlowControl(concurrency=(ConcurrencyLimit(1, key="event.data.user"),))
    env_scope = FlowControl(concurrency=(
        ConcurrencyLimit(1, key="event.data.user", scope=ConcurrencyScope.ENV),))
    event = _event(user="a")
    assert evaluate(_fn("f1", fn_scope), event).concurrency[0].key_id != \
        evaluate(_fn("f2", fn_scope), event).concurrency[0].key_id
    assert evaluate(_fn("f1", env_scope), event).concurrency[0].key_id == \
        evaluate(_fn("f2", env_scope), event).concurrency[0].key_id


def test_priority_is_seconds_clamped_to_ten_minutes() -> None:
    fn = _fn("f", FlowControl(priority_run="event.data.p"))
    assert evaluate(fn, _event(p=30)).priority_ms == 30_000
    assert evaluate(fn, _event(p=-1e9)).priority_ms == -600_000
    assert evaluate(fn, _event(p=2.5)).priority_ms == 2500
    assert evaluate(fn, _event(p="high")).priority_ms == 0
    assert evaluate(fn, _event()).priority_ms == 0


def test_an_event_the_batch_if_refuses_is_a_batch_of_its_own() -> None:
    fn = _fn("f", FlowControl(batch=BatchConfig(10, 1000, if_expression="event.data.ok")))
    batch = evaluate(fn, _event(ok=True)).batch
    alone = evaluate(fn, _event(ok=False)).batch
    assert batch is not None and batch.max_size == 10 and batch.key_id
    assert alone is not None and (alone.key_id, alone.max_size) == ("", 1)


def test_expressions_are_compiled_once_per_configuration() -> None:
    assert compile_flow(KEYED) is compile_flow(FlowControl(**{
        f: getattr(KEYED, f) for f in KEYED.__dataclass_fields__}))
