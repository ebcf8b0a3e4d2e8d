"""Reads and writes of history in SQL: apps, functions, events and runs as frozen records.

Each call is one short transaction on the shared AsyncEngine; nothing here knows protobuf.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from sqlalchemy import Row, delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from server.errors import AlreadyExists, InvalidArgument, NotFound
from server.history.db import insert
from server.history.flow_json import flow_from_dict, flow_to_dict
from server.history.models import APPS, EVENTS, FUNCTIONS, REPLAYS, RUNS, STEP_ATTEMPTS
from server.types import (
    AppId,
    AppRegistration,
    CancelOn,
    CronTrigger,
    ErrorInfo,
    Event,
    EventId,
    EventTrigger,
    FunctionConfig,
    FunctionId,
    RunId,
    RunStatus,
    StepId,
    StepStatus,
    Trigger,
)

if TYPE_CHECKING:
    _Row: TypeAlias = Row[*tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class AppRecord:
    id: AppId
    language: str
    sdk_name: str
    sdk_version: str
    created_at_ms: int
    updated_at_ms: int
    function_count: int


@dataclass(frozen=True, slots=True)
class FunctionRecord:
    config: FunctionConfig
    updated_at_ms: int

    @property
    def id(self) -> FunctionId:
        return self.config.id


@dataclass(frozen=True, slots=True)
class EventRecord:
    id: EventId
    name: str
    data_json: bytes
    ts_ms: int
    idempotency_key: str
    received_at_ms: int


@dataclass(frozen=True, slots=True)
class StepAttemptRecord:
    id: str  # "{shard}-{stream entry id}"
    run_id: RunId
    step_id: StepId
    name: str
    attempt: int
    status: StepStatus
    output_json: bytes | None
    error: ErrorInfo | None
    ended_at_ms: int


@dataclass(frozen=True, slots=True)
class RunRecord:
    id: RunId
    function_id: FunctionId
    app_id: AppId
    event_id: EventId
    status: RunStatus
    created_at_ms: int
    started_at_ms: int | None
    ended_at_ms: int | None
    output_json: bytes | None
    error: ErrorInfo | None
    steps: tuple[StepAttemptRecord, ...] = ()


# -- function configs as JSON ------------------------------------------------------------


def _trigger_to_dict(trigger: Trigger) -> dict[str, str]:
    if isinstance(trigger, EventTrigger):
        return {"event": trigger.event, "expression": trigger.expression}
    return {"cron": trigger.cron}


def _trigger_from_dict(raw: dict[str, Any]) -> Trigger:
    if "cron" in raw:
        return CronTrigger(cron=str(raw["cron"]))
    return EventTrigger(event=str(raw["event"]), expression=str(raw.get("expression", "")))


def function_config_to_json(config: FunctionConfig) -> str:
    # `flow` only when configured: a function without flow control keeps its stored form.
    flow = {"flow": flow_to_dict(config.flow)} if config.flow.configured else {}
    return json.dumps(
        {
            "id": config.id,
            "app_id": config.app_id,
            "slug": config.slug,
            "name": config.name,
            "triggers": [_trigger_to_dict(t) for t in config.triggers],
            "retries": config.retries,
            "url": config.url,
            "start_timeout_ms": config.start_timeout_ms,
            "finish_timeout_ms": config.finish_timeout_ms,
            "cancel_on": [{"event": c.event, "if": c.if_expression, "timeout_ms": c.timeout_ms}
                          for c in config.cancel_on],
            **flow,
        },
        separators=(",", ":"),
    )


def function_config_from_json(text: str) -> FunctionConfig:
    raw = json.loads(text)
    return FunctionConfig(
        id=FunctionId(raw["id"]),
        app_id=AppId(raw["app_id"]),
        slug=str(raw["slug"]),
        name=str(raw["name"]),
        triggers=tuple(_trigger_from_dict(t) for t in raw["triggers"]),
        retries=int(raw["retries"]),
        url=str(raw.get("url", "")),
        start_timeout_ms=int(raw.get("start_timeout_ms", 0)),
        finish_timeout_ms=int(raw.get("finish_timeout_ms", 0)),
        cancel_on=tuple(CancelOn(str(c["event"]), str(c.get("if") or ""),
                                 int(c.get("timeout_ms") or 0))
                        for c in raw.get("cancel_on", ())),
        flow=flow_from_dict(raw.get("flow")),
    )


def error_from_json(text: str | None) -> ErrorInfo | None:
    """Decodes a stored `{"name","message","stack"}`; text that is not such JSON is kept."""
    if not text:
        return None
    try:
        raw = json.loads(text)
    except ValueError:
        return ErrorInfo(name="Error", message=text)
    if not isinstance(raw, dict):
        return ErrorInfo(name="Error", message=text)
    return ErrorInfo(
        name=str(raw.get("name", "")),
        message=str(raw.get("message", "")),
        stack=str(raw.get("stack", "") or ""),
    )


def _bytes(text: str | None) -> bytes | None:
    return None if text is None else text.encode()


# -- writes ------------------------------------------------------------------------------


async def insert_events(engine: AsyncEngine, events: Sequence[Event], received_at_ms: int) -> None:
    """Stores accepted events; an id already stored is left as it is."""
    if not events:
        return
    rows = []
    for i, e in enumerate(events):
        try:
            data = e.data_json.decode()
        except UnicodeDecodeError:
            raise InvalidArgument(f"events[{i}].data_json", "must be UTF-8 JSON") from None
        rows.append(
            {
                "id": e.id,
                "name": e.name,
                "data_json": data,
                "ts_ms": e.ts_ms,
                "idempotency_key": e.idempotency_key,
                "received_at_ms": received_at_ms,
                "traceparent": e.traceparent,
            }
        )
    stmt = insert(engine, EVENTS).on_conflict_do_nothing(index_elements=["id"])
    # In primary-key order: two requests storing the same ids (a client's retry, the
    # reconciler) take their row locks in one order, so they never deadlock.
    rows.sort(key=lambda row: str(row["id"]))
    async with engine.begin() as conn:
        await conn.execute(stmt, rows)


async def upsert_app(engine: AsyncEngine, reg: AppRegistration, now_ms: int) -> None:
    """Records a registration: the app, its functions, and drops functions it no longer has."""
    ids = [f.id for f in reg.functions]
    app = insert(engine, APPS).values(
        id=reg.app_id,
        language=reg.language,
        sdk_name=reg.sdk_name,
        sdk_version=reg.sdk_version,
        created_at_ms=now_ms,
        updated_at_ms=now_ms,
    )
    app = app.on_conflict_do_update(
        index_elements=["id"],
        set_={
            "language": app.excluded.language,
            "sdk_name": app.excluded.sdk_name,
            "sdk_version": app.excluded.sdk_version,
            "updated_at_ms": app.excluded.updated_at_ms,
        },
    )
    fns = insert(engine, FUNCTIONS)
    fns = fns.on_conflict_do_update(
        index_elements=["id"],
        set_={
            "slug": fns.excluded.slug,
            "name": fns.excluded.name,
            "config_json": fns.excluded.config_json,
            "updated_at_ms": fns.excluded.updated_at_ms,
        },
    )
    rows = [
        {
            "id": f.id,
            "app_id": reg.app_id,
            "slug": f.slug,
            "name": f.name,
            "config_json": function_config_to_json(f),
            "updated_at_ms": now_ms,
        }
        for f in reg.functions
    ]
    async with engine.begin() as conn:
        if ids:
            # Global ids are "{app}-{slug}", so "a-b"+"c" and "a"+"b-c" collide; refuse
            # rather than move a function between apps.
            taken = await conn.execute(
                select(FUNCTIONS.c.id, FUNCTIONS.c.app_id).where(
                    FUNCTIONS.c.id.in_(ids), FUNCTIONS.c.app_id != reg.app_id
                )
            )
            for fid, owner in taken:
                raise AlreadyExists(f"function id {fid!r} is already registered by app {owner!r}")
        await conn.execute(app)
        if rows:
            await conn.execute(fns, rows)
        await conn.execute(
            delete(FUNCTIONS).where(FUNCTIONS.c.app_id == reg.app_id, FUNCTIONS.c.id.not_in(ids))
        )


# -- reads -------------------------------------------------------------------------------


def _app(row: _Row) -> AppRecord:
    return AppRecord(
        id=AppId(row.id),
        language=row.language,
        sdk_name=row.sdk_name,
        sdk_version=row.sdk_version,
        created_at_ms=row.created_at_ms,
        updated_at_ms=row.updated_at_ms,
        function_count=row.function_count,
    )


def _apps_query() -> Any:
    counts = (
        select(FUNCTIONS.c.app_id, func.count().label("n")).group_by(FUNCTIONS.c.app_id).subquery()
    )
    return select(*APPS.c, func.coalesce(counts.c.n, 0).label("function_count")).outerjoin(
        counts, counts.c.app_id == APPS.c.id
    )


async def list_apps(engine: AsyncEngine) -> list[AppRecord]:
    async with engine.connect() as conn:
        result = await conn.execute(_apps_query().order_by(APPS.c.id))
        return [_app(r) for r in result]


async def get_app(engine: AsyncEngine, app_id: str) -> AppRecord:
    async with engine.connect() as conn:
        row = (await conn.execute(_apps_query().where(APPS.c.id == app_id))).first()
    if row is None:
        raise NotFound(f"app {app_id!r} not found")
    return _app(row)


def _function(row: _Row) -> FunctionRecord:
    return FunctionRecord(function_config_from_json(row.config_json), row.updated_at_ms)


async def load_functions(engine: AsyncEngine) -> list[FunctionConfig]:
    """Every registered function's config, for the runner's trigger index."""
    return [f.config for f in await list_functions(engine, None)]


async def list_functions(engine: AsyncEngine, app_id: str | None) -> list[FunctionRecord]:
    query = select(FUNCTIONS.c.config_json, FUNCTIONS.c.updated_at_ms).order_by(FUNCTIONS.c.id)
    if app_id is not None:
        query = query.where(FUNCTIONS.c.app_id == app_id)
    async with engine.connect() as conn:
        return [_function(r) for r in await conn.execute(query)]


async def get_function(engine: AsyncEngine, function_id: str) -> FunctionRecord:
    query = select(FUNCTIONS.c.config_json, FUNCTIONS.c.updated_at_ms).where(
        FUNCTIONS.c.id == function_id
    )
    async with engine.connect() as conn:
        row = (await conn.execute(query)).first()
    if row is None:
        raise NotFound(f"function {function_id!r} not found")
    return _function(row)


def _event(row: _Row) -> EventRecord:
    return EventRecord(
        id=EventId(row.id),
        name=row.name,
        data_json=row.data_json.encode(),
        ts_ms=row.ts_ms,
        idempotency_key=row.idempotency_key,
        received_at_ms=row.received_at_ms,
    )


async def list_events(
    engine: AsyncEngine, name: str | None, limit: int, before_id: str | None
) -> list[EventRecord]:
    """Events newest first (ids are ULIDs), `limit` of them older than `before_id`."""
    query = select(EVENTS).order_by(EVENTS.c.id.desc()).limit(limit)
    if name is not None:
        query = query.where(EVENTS.c.name == name)
    if before_id is not None:
        query = query.where(EVENTS.c.id < before_id)
    async with engine.connect() as conn:
        return [_event(r) for r in await conn.execute(query)]


async def get_event(engine: AsyncEngine, event_id: str) -> EventRecord:
    async with engine.connect() as conn:
        row = (await conn.execute(select(EVENTS).where(EVENTS.c.id == event_id))).first()
    if row is None:
        raise NotFound(f"event {event_id!r} not found")
    return _event(row)


def _run(row: _Row, steps: tuple[StepAttemptRecord, ...] = ()) -> RunRecord:
    return RunRecord(
        id=RunId(row.id),
        function_id=FunctionId(row.function_id),
        app_id=AppId(row.app_id),
        event_id=EventId(row.event_id),
        status=RunStatus(row.status),
        created_at_ms=row.created_at_ms,
        started_at_ms=row.started_at_ms,
        ended_at_ms=row.ended_at_ms,
        output_json=_bytes(row.output_json),
        error=error_from_json(row.error_json),
        steps=steps,
    )


def _step(row: _Row) -> StepAttemptRecord:
    return StepAttemptRecord(
        id=row.id,
        run_id=RunId(row.run_id),
        step_id=StepId(row.step_id),
        name=row.name,
        attempt=row.attempt,
        status=StepStatus(row.status),
        output_json=_bytes(row.output_json),
        error=error_from_json(row.error_json),
        ended_at_ms=row.ended_at_ms,
    )


async def list_runs(
    engine: AsyncEngine,
    function_id: str | None,
    status: RunStatus | None,
    limit: int,
    before_id: str | None,
) -> list[RunRecord]:
    """Runs newest first (ids are ULIDs), without steps, `limit` of them older than `before_id`."""
    conditions = []
    if function_id is not None:
        conditions.append(RUNS.c.function_id == function_id)
    if status is not None:
        conditions.append(RUNS.c.status == status.value)
    if before_id is not None:
        conditions.append(RUNS.c.id < before_id)
    query = select(RUNS).where(*conditions).order_by(RUNS.c.id.desc()).limit(limit)
    async with engine.connect() as conn:
        return [_run(r) for r in await conn.execute(query)]


async def get_run(engine: AsyncEngine, run_id: str) -> RunRecord:
    """A run with its step attempts in the order they ended."""
    steps_query = (
        select(STEP_ATTEMPTS)
        .where(STEP_ATTEMPTS.c.run_id == run_id)
        .order_by(STEP_ATTEMPTS.c.ended_at_ms, STEP_ATTEMPTS.c.id)
    )
    async with engine.connect() as conn:
        row = (await conn.execute(select(RUNS).where(RUNS.c.id == run_id))).first()
        if row is None:
            raise NotFound(f"run {run_id!r} not found")
        steps = tuple(_step(s) for s in await conn.execute(steps_query))
    return _run(row, steps)


async def runs_for_event(engine: AsyncEngine, event_id: str) -> list[RunRecord]:
    """The runs an event started, oldest first, without steps."""
    query = select(RUNS).where(RUNS.c.event_id == event_id).order_by(RUNS.c.id)
    async with engine.connect() as conn:
        return [_run(r) for r in await conn.execute(query)]


async def insert_replay(
    engine: AsyncEngine, run_id: str, original_run_id: str, now_ms: int
) -> None:
    """Links a replay's run to the run it replays (idempotent)."""
    statement = insert(engine, REPLAYS).on_conflict_do_nothing(index_elements=["run_id"])
    async with engine.begin() as conn:
        await conn.execute(statement, [{"run_id": run_id, "original_run_id": original_run_id,
                                        "created_at_ms": now_ms}])


async def replay_original(engine: AsyncEngine, run_id: str) -> str | None:
    """The run a replay replays, None when `run_id` is not a replay."""
    query = select(REPLAYS.c.original_run_id).where(REPLAYS.c.run_id == run_id)
    async with engine.connect() as conn:
        row = (await conn.execute(query)).first()
    return None if row is None else str(row.original_run_id)
