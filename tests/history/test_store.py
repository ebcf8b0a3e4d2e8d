"""Store reads and writes over SQL, on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import json

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from server.errors import AlreadyExists, InvalidArgument, NotFound
from server.history import store
from server.history.models import RUNS, STEP_ATTEMPTS
from server.types import (
    AppId,
    AppRegistration,
    CronTrigger,
    ErrorInfo,
    Event,
    EventId,
    EventTrigger,
    FunctionConfig,
    FunctionId,
    RunStatus,
    StepStatus,
)


def fn(
    app: str, slug: str, *triggers: EventTrigger | CronTrigger, retries: int = 3
) -> FunctionConfig:
    return FunctionConfig(
        id=FunctionId(f"{app}-{slug}"),
        app_id=AppId(app),
        slug=slug,
        name=slug.title(),
        triggers=triggers or (EventTrigger("app/user.created"),),
        retries=retries,
    )


def ulid(n: int) -> str:
    """A valid ULID that sorts by n."""
    return f"01J{n:023d}"


def event(n: int, name: str = "app/user.created") -> Event:
    return Event(EventId(ulid(n)), name, b'{"n": %d}' % n, 1_700_000_000_000 + n, f"key-{n}")


def test_function_configs_round_trip_through_json() -> None:
    config = fn(
        "shop",
        "charge",
        EventTrigger("shop/order", "event.data.total > 10"),
        CronTrigger("TZ=Europe/Paris 0 * * * *"),
        retries=7,
    )
    assert store.function_config_from_json(store.function_config_to_json(config)) == config


def test_function_timeouts_round_trip_and_old_rows_have_none() -> None:
    config = dataclasses.replace(fn("shop", "charge"), start_timeout_ms=10_000,
                                 finish_timeout_ms=3_600_000)
    assert store.function_config_from_json(store.function_config_to_json(config)) == config
    old = json.loads(store.function_config_to_json(fn("shop", "charge")))
    del old["start_timeout_ms"], old["finish_timeout_ms"]
    loaded = store.function_config_from_json(json.dumps(old))
    assert (loaded.start_timeout_ms, loaded.finish_timeout_ms) == (0, 0)


async def test_an_app_and_its_functions_are_upserted(engine: AsyncEngine) -> None:
    reg = AppRegistration(
        AppId("shop"), (fn("shop", "charge"), fn("shop", "ship")), "python", "plait-python", "0.1.0"
    )
    await store.upsert_app(engine, reg, now_ms=1_000)
    await store.upsert_app(
        engine,
        AppRegistration(
            AppId("shop"),
            (fn("shop", "charge", retries=9),),
            "python",
            "plait-python",
            "0.2.0",
        ),
        now_ms=2_000,
    )

    app = await store.get_app(engine, "shop")
    assert app == store.AppRecord(
        AppId("shop"),
        "python",
        "plait-python",
        "0.2.0",
        created_at_ms=1_000,
        updated_at_ms=2_000,
        function_count=1,
    )
    functions = await store.list_functions(engine, "shop")
    assert [f.config for f in functions] == [fn("shop", "charge", retries=9)]
    assert functions[0].updated_at_ms == 2_000
    assert await store.load_functions(engine) == [fn("shop", "charge", retries=9)]


async def test_apps_are_listed_with_their_function_counts(engine: AsyncEngine) -> None:
    await store.upsert_app(engine, AppRegistration(AppId("b"), (fn("b", "x"), fn("b", "y"))), 1)
    await store.upsert_app(engine, AppRegistration(AppId("a"), ()), 1)
    apps = await store.list_apps(engine)
    assert [(a.id, a.function_count) for a in apps] == [("a", 0), ("b", 2)]
    assert [f.id for f in await store.list_functions(engine, None)] == ["b-x", "b-y"]
    assert await store.list_functions(engine, "a") == []


async def test_a_function_id_of_another_app_is_refused(engine: AsyncEngine) -> None:
    await store.upsert_app(engine, AppRegistration(AppId("a-b"), (fn("a-b", "c"),)), 1)
    clash = FunctionConfig(FunctionId("a-b-c"), AppId("a"), "b-c", "B", (EventTrigger("e"),))
    with pytest.raises(AlreadyExists, match="a-b-c"):
        await store.upsert_app(engine, AppRegistration(AppId("a"), (clash,)), 2)
    assert (await store.get_function(engine, "a-b-c")).config.app_id == "a-b"


async def test_unknown_ids_are_not_found(engine: AsyncEngine) -> None:
    for call, missing in [
        (store.get_app, "nope"),
        (store.get_function, "nope-fn"),
        (store.get_event, ulid(1)),
        (store.get_run, ulid(2)),
    ]:
        with pytest.raises(NotFound, match=missing):
            await call(engine, missing)


async def test_events_are_stored_once_and_listed_newest_first(engine: AsyncEngine) -> None:
    await store.insert_events(engine, [event(1), event(2, "other"), event(3)], 5_000)
    await store.insert_events(engine, [event(3), event(4)], 6_000)

    assert await store.get_event(engine, ulid(3)) == store.EventRecord(
        EventId(ulid(3)), "app/user.created", b'{"n": 3}', 1_700_000_000_003, "key-3", 5_000
    )
    newest = await store.list_events(engine, None, limit=2, before_id=None)
    assert [e.id for e in newest] == [ulid(4), ulid(3)]
    older = await store.list_events(engine, None, limit=10, before_id=ulid(3))
    assert [e.id for e in older] == [ulid(2), ulid(1)]
    named = await store.list_events(engine, "app/user.created", limit=10, before_id=None)
    assert [e.id for e in named] == [ulid(4), ulid(3), ulid(1)]


async def test_event_data_that_is_not_utf8_is_invalid(engine: AsyncEngine) -> None:
    bad = Event(EventId(ulid(1)), "e", b"\xff", 1)
    with pytest.raises(InvalidArgument, match=r"events\[1\].data_json"):
        await store.insert_events(engine, [event(2), bad], 1)


async def add_run(
    engine: AsyncEngine,
    n: int,
    status: RunStatus,
    fn_id: str = "shop-charge",
    event_n: int = 1,
    **extra: object,
) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            RUNS.insert().values(
                id=ulid(n),
                function_id=fn_id,
                app_id="shop",
                event_id=ulid(event_n),
                status=status.value,
                created_at_ms=n,
                **extra,
            )
        )


async def test_runs_are_listed_newest_first_with_filters(engine: AsyncEngine) -> None:
    await add_run(engine, 1, RunStatus.COMPLETED)
    await add_run(engine, 2, RunStatus.RUNNING, fn_id="shop-ship")
    await add_run(engine, 3, RunStatus.COMPLETED)
    await add_run(engine, 4, RunStatus.QUEUED)

    async def ids(**kw: object) -> list[str]:
        args = {"function_id": None, "status": None, "limit": 10, "before_id": None} | kw
        return [r.id for r in await store.list_runs(engine, **args)]  # type: ignore[arg-type]

    assert await ids() == [ulid(4), ulid(3), ulid(2), ulid(1)]
    assert await ids(limit=2, before_id=ulid(4)) == [ulid(3), ulid(2)]
    assert await ids(function_id="shop-ship") == [ulid(2)]
    assert await ids(status=RunStatus.COMPLETED) == [ulid(3), ulid(1)]
    assert await ids(function_id="shop-charge", status=RunStatus.QUEUED) == [ulid(4)]


async def test_a_run_comes_with_its_steps_in_the_order_they_ended(engine: AsyncEngine) -> None:
    await add_run(
        engine,
        1,
        RunStatus.FAILED,
        started_at_ms=10,
        ended_at_ms=30,
        error_json='{"name": "ValueError", "message": "boom", "stack": "at x"}',
    )
    async with engine.begin() as conn:
        await conn.execute(
            STEP_ATTEMPTS.insert(),
            [
                {
                    "id": "0-5-1",
                    "run_id": ulid(1),
                    "step_id": "b",
                    "name": "B",
                    "attempt": 0,
                    "status": "failed",
                    "output_json": None,
                    "error_json": '{"name": "E", "message": "m"}',
                    "ended_at_ms": 25,
                },
                {
                    "id": "0-5-0",
                    "run_id": ulid(1),
                    "step_id": "a",
                    "name": "A",
                    "attempt": 0,
                    "status": "completed",
                    "output_json": '{"ok": true}',
                    "error_json": None,
                    "ended_at_ms": 20,
                },
            ],
        )
    run = await store.get_run(engine, ulid(1))
    assert run.status is RunStatus.FAILED
    assert (run.started_at_ms, run.ended_at_ms, run.output_json) == (10, 30, None)
    assert run.error == ErrorInfo("ValueError", "boom", "at x")
    assert [(s.step_id, s.status, s.output_json, s.error) for s in run.steps] == [
        ("a", StepStatus.COMPLETED, b'{"ok": true}', None),
        ("b", StepStatus.FAILED, None, ErrorInfo("E", "m")),
    ]


async def test_the_runs_of_an_event_are_found(engine: AsyncEngine) -> None:
    await add_run(engine, 2, RunStatus.QUEUED, event_n=7)
    await add_run(engine, 1, RunStatus.QUEUED, event_n=7)
    await add_run(engine, 3, RunStatus.QUEUED, event_n=8)
    assert [r.id for r in await store.runs_for_event(engine, ulid(7))] == [ulid(1), ulid(2)]


def test_an_error_that_is_not_json_is_kept_as_its_message() -> None:
    assert store.error_from_json("plain") == ErrorInfo("Error", "plain")
    assert store.error_from_json(None) is None
