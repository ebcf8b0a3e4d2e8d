"""gRPC StateService: a run's live state and memoised steps, read from Redis."""

from __future__ import annotations

import json

import grpc
from plait_proto.v1 import event_pb2, run_pb2, state_pb2, state_pb2_grpc
from ulid import ULID

from server.state import StateStore
from server.types import RunId, RunStatus

_STATUS = {
    RunStatus.QUEUED: run_pb2.RUN_STATUS_QUEUED,
    RunStatus.RUNNING: run_pb2.RUN_STATUS_RUNNING,
    RunStatus.COMPLETED: run_pb2.RUN_STATUS_COMPLETED,
    RunStatus.FAILED: run_pb2.RUN_STATUS_FAILED,
    RunStatus.CANCELLED: run_pb2.RUN_STATUS_CANCELLED,
}


class StateServicer(state_pb2_grpc.StateServiceServicer):
    def __init__(self, state: StateStore) -> None:
        self._state = state

    async def GetRunState(
        self, request: state_pb2.GetRunStateRequest,
        context: grpc.aio.ServicerContext[state_pb2.GetRunStateRequest,
                                          state_pb2.GetRunStateResponse],
    ) -> state_pb2.GetRunStateResponse:
        try:
            ULID.from_str(request.run_id)
        except ValueError:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "run_id: must be a ULID")
        run = await self._state.get_run(RunId(request.run_id))
        if run is None:
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"run {request.run_id!r} has no live state")
            raise AssertionError("abort raises")
        raw = json.loads(run.event_json)
        event = event_pb2.Event(
            id=str(raw.get("id", "")), name=str(raw.get("name", "")),
            data_json=json.dumps(raw.get("data", {})).encode(), ts_ms=int(raw.get("ts", 0)))
        return state_pb2.GetRunStateResponse(
            run_id=run.run_id, function_id=run.function_id, status=_STATUS[run.status],
            event=event, steps=run.steps, output_json=run.output_json,
            error_json=run.error_json,
        )
