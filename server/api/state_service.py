"""gRPC StateService: a run's live state and memoised steps, read from Redis."""

from __future__ import annotations

import json

import grpc
from plait_proto.v1 import event_pb2, state_pb2, state_pb2_grpc
from ulid import ULID

from server.api._convert import run_status_to_pb
from server.state import StateStore
from server.types import RunId

MAX_STEP_IDS = 1000
# A GetSteps response: what the caller accepts (8 MiB when it says nothing, the Python SDK's
# limit), never more than the server's own gRPC send limit (server/app.py).
DEFAULT_RESPONSE_BYTES = 8 * 1024 * 1024
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
# More than one map entry's framing (tags and length varints) costs.
_ENTRY_OVERHEAD = 24


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
            run_id=run.run_id, function_id=run.function_id, status=run_status_to_pb(run.status),
            event=event, steps=run.steps, output_json=run.output_json,
            error_json=run.error_json,
        )

    async def GetSteps(
        self, request: state_pb2.GetStepsRequest,
        context: grpc.aio.ServicerContext[state_pb2.GetStepsRequest,
                                          state_pb2.GetStepsResponse],
    ) -> state_pb2.GetStepsResponse:
        """Memos a job left out (`Job.fetch_steps`), for the worker holding its lease."""
        ids = list(request.step_ids)
        if not 1 <= len(ids) <= MAX_STEP_IDS or not all(ids):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"step_ids: {len(ids)} ids, must be 1..{MAX_STEP_IDS} non-empty")
        if request.max_response_bytes < 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "max_response_bytes: must not be negative (0: 8 MiB)")
        run_id = RunId(request.run_id)
        held = await self._state.held_memo_sizes(run_id, request.job_id, request.lease_id, ids)
        if held is None:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"job {request.job_id!r} of run {request.run_id!r} is not leased under "
                f"{request.lease_id!r}: its lease expired, or the run ended")
            raise AssertionError("abort raises")
        function_id, sizes = held
        budget = min(request.max_response_bytes or DEFAULT_RESPONSE_BYTES, MAX_RESPONSE_BYTES)
        # The ids not returned are named in the response: their room is kept from the start.
        taken, used = 0, sum(len(i.encode()) + 4 for i in ids)
        for step_id, size in zip(ids, sizes, strict=True):
            if size == 0:
                await context.abort(grpc.StatusCode.NOT_FOUND,
                                    f"step_ids: step {step_id!r} is not memoised")
            cost = len(step_id.encode()) + size + _ENTRY_OVERHEAD
            if taken and used + cost > budget:
                break
            taken, used = taken + 1, used + cost
        steps = await self._state.memos(run_id, ids[:taken])
        return state_pb2.GetStepsResponse(steps=steps, remaining_step_ids=ids[taken:],
                                          function_id=function_id)
