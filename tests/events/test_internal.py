"""Internal events of run ends: their fields, stable ids, and no events about handler runs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, cast

from redis.asyncio import Redis

from server.events.ingest import EventIngest, EventInput
from server.events.internal import (
    FUNCTION_CANCELLED,
    FUNCTION_FAILED,
    FUNCTION_FINISHED,
    InternalEvents,
    events_for,
)
from server.history.records import RunEnded
from server.keys import Keys
from server.types import RunStatus

RUN = "01JAAAAAAAAAAAAAAAAAAAAAAA"
EVENT = {"id": "01JEEEEEEEEEEEEEEEEEEEEEEE", "name": "shop/order", "data": {"n": 1}, "ts": 5}
ERROR = '{"name": "ValueError", "message": "boom", "stack": "at line 1"}'
KEYS = Keys()


def _end(status: RunStatus, output: str = "", error: str = "") -> RunEnded:
    return RunEnded(RUN, status, output, error, 1_700_000_000_000, function_id="shop-charge")


def _data(item: EventInput) -> dict[str, Any]:
    return cast(dict[str, Any], json.loads(item.data_json))


def test_a_failed_run_emits_finished_and_failed_with_the_event_and_error() -> None:
    finished, failed = events_for(_end(RunStatus.FAILED, error=ERROR), EVENT)
    assert (finished.name, failed.name) == (FUNCTION_FINISHED, FUNCTION_FAILED)
    assert _data(failed) == {
        "function_id": "shop-charge", "run_id": RUN, "event": EVENT,
        "error": {"name": "ValueError", "message": "boom", "stack": "at line 1"}}
    assert _data(finished)["error"]["message"] == "boom"
    assert failed.ts_ms == 1_700_000_000_000


def test_a_completed_run_emits_finished_with_its_result() -> None:
    (finished,) = events_for(_end(RunStatus.COMPLETED, output='{"ok": true}'), EVENT)
    assert _data(finished)["result"] == {"ok": True} and "error" not in _data(finished)


def test_a_cancelled_run_emits_cancelled() -> None:
    names = [e.name for e in events_for(_end(RunStatus.CANCELLED), EVENT)]
    assert names == [FUNCTION_FINISHED, FUNCTION_CANCELLED]


def test_the_ids_are_the_same_each_time_an_end_is_read() -> None:
    first = events_for(_end(RunStatus.FAILED, error=ERROR), EVENT)
    again = events_for(_end(RunStatus.FAILED, error=ERROR), EVENT)
    assert [e.id for e in first] == [e.id for e in again]
    assert len({e.id for e in first}) == 2


class _Ingest:
    def __init__(self) -> None:
        self.accepted: list[EventInput] = []

    async def accept(self, inputs: Sequence[EventInput], traceparent: str = "", *,
                     received: bool = True) -> list[str]:
        assert not received
        self.accepted += inputs
        return [i.id for i in inputs]


async def test_runs_started_by_an_internal_event_emit_none(redis: Redis) -> None:
    ingest = _Ingest()
    internal = InternalEvents(redis, KEYS, cast(EventIngest, ingest))
    handler_event = {**EVENT, "name": FUNCTION_FAILED}
    await redis.hset(KEYS.for_run(RUN).run(RUN), "event", json.dumps(handler_event))
    await internal.emit([_end(RunStatus.FAILED, error=ERROR)])
    assert ingest.accepted == []
    await redis.hset(KEYS.for_run(RUN).run(RUN), "event", json.dumps(EVENT))
    await internal.emit([_end(RunStatus.FAILED, error=ERROR)])
    assert [e.name for e in ingest.accepted] == [FUNCTION_FINISHED, FUNCTION_FAILED]


async def test_a_run_flow_control_skipped_emits_nothing(redis: Redis) -> None:
    """A skipped run never ran: no function.finished (an invoke would take it for a result)
    and no function.cancelled."""
    ingest = _Ingest()
    internal = InternalEvents(redis, KEYS, cast(EventIngest, ingest))
    await redis.hset(KEYS.for_run(RUN).run(RUN), "event", json.dumps(EVENT))
    skipped = json.dumps({"name": "FlowControlSkipped", "message": "rate limited",
                          "stack": ""})
    await internal.emit([_end(RunStatus.SKIPPED, error=skipped)])
    assert ingest.accepted == []
    await internal.emit([_end(RunStatus.CANCELLED)])
    assert [e.name for e in ingest.accepted] == [FUNCTION_FINISHED, FUNCTION_CANCELLED]
