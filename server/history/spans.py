"""A run's spans, rebuilt from history: the run row, its step attempts and its event.

Span ids derive from the run and each attempt's lease, so the rows history writes anyway
(with each attempt's lease, ready and start times) are all a span needs; writing spans as rows
of their own would double the writer's SQL for nothing. `server.telemetry.spans` builds the
spans, here and for OTLP alike.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from server.errors import NotFound
from server.history.models import EVENTS, RUNS, STEP_ATTEMPTS
from server.telemetry.ids import SpanKind
from server.telemetry.spans import (
    FUNCTION_STEP_ID,
    Attempt,
    Run,
    SpanRow,
    attempt_spans,
    root_span,
)
from server.types import RunStatus

__all__ = ["finished_roots", "list_spans"]

# Bound parameters per IN list: SQLite allows 32,766, PostgreSQL 32,767.
_IN_CHUNK = 1000
# Times are in ms, so a queue wait and the attempt it led to can tie: the wait goes first.
_PHASE = {SpanKind.RUN: 0, SpanKind.QUEUE: 1, SpanKind.STEP: 2, SpanKind.SLEEP: 3}


def _run_query() -> Any:
    return select(
        RUNS.c.id, RUNS.c.function_id, RUNS.c.app_id, RUNS.c.event_id, RUNS.c.created_at_ms,
        RUNS.c.ended_at_ms, RUNS.c.status, RUNS.c.error_json, RUNS.c.final_lease_id,
        RUNS.c.final_attempt, RUNS.c.final_ready_at_ms, RUNS.c.final_started_at_ms,
        EVENTS.c.traceparent,
    ).outerjoin(EVENTS, EVENTS.c.id == RUNS.c.event_id)


def _run(row: Row[Any]) -> Run:
    return Run(row.id, row.function_id, row.app_id, row.event_id, row.created_at_ms,
               row.ended_at_ms, row.status, row.error_json, row.traceparent or "")


def _final_attempt(row: Row[Any]) -> list[SpanRow]:
    if (row.status != RunStatus.COMPLETED.value or not row.final_lease_id
            or row.final_started_at_ms is None or row.ended_at_ms is None):
        return []
    return attempt_spans(Attempt(
        row.id, row.function_id, row.app_id, FUNCTION_STEP_ID, "function",
        row.final_attempt or 0, RunStatus.COMPLETED.value, None, row.final_lease_id,
        row.final_ready_at_ms, row.final_started_at_ms, row.ended_at_ms))


async def list_spans(engine: AsyncEngine, run_id: str) -> list[SpanRow]:
    """A run's spans: the root first, then by start time (a waterfall)."""
    steps_query = select(STEP_ATTEMPTS).where(
        STEP_ATTEMPTS.c.run_id == run_id, STEP_ATTEMPTS.c.started_at_ms.is_not(None))
    async with engine.connect() as conn:
        row = (await conn.execute(_run_query().where(RUNS.c.id == run_id))).first()
        if row is None:
            raise NotFound(f"run {run_id!r} not found")
        steps = list(await conn.execute(steps_query))
    spans = [root_span(_run(row)), *_final_attempt(row)]
    for step in steps:
        spans += attempt_spans(Attempt(
            run_id, row.function_id, row.app_id, step.step_id, step.name, step.attempt,
            step.status, step.error_json, step.lease_id, step.ready_at_ms, step.started_at_ms,
            step.ended_at_ms, step.until_ms))
    # One span per id: an attempt recorded twice (a replayed entry) is still one attempt.
    rest = list({s.span: s for s in reversed(spans[1:])}.values())
    rest.sort(key=lambda s: (s.start_ms, _PHASE.get(s.kind, 9), s.end_ms or 0, s.span))
    return [spans[0], *rest]


async def finished_roots(conn: AsyncConnection, run_ids: Collection[str]) -> list[SpanRow]:
    """The root spans of the runs among `run_ids` whose creation and end are both written."""
    out: list[SpanRow] = []
    ordered = sorted(run_ids)
    for i in range(0, len(ordered), _IN_CHUNK):
        query = _run_query().where(
            RUNS.c.id.in_(ordered[i:i + _IN_CHUNK]), RUNS.c.created_at_ms > 0,
            RUNS.c.ended_at_ms.is_not(None))
        out.extend(root_span(_run(row)) for row in await conn.execute(query))
    return out
