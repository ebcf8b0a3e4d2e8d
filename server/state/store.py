"""The state store: applies opcodes to run state atomically with the queue move they imply.

Each opcode is one Lua script that checks the lease (fencing stale results), memoises the
step's result, schedules the run's next job and appends the history record, all at once, so
a step's result is stored before the next step can be scheduled. Many results are applied in
one pipelined round trip.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from redis.asyncio import Redis
from redis.typing import EncodableT
from ulid import ULID

from server.config import Settings
from server.keys import Keys, ShardKeys
from server.luascript import (
    ScriptCall,
    call_pipelined,
    check,
    hash_from_flat,
    load_script,
    storage_error,
)
from server.queue.flow import FLOW_PRELUDE, batch_events
from server.state.waits import INVOKE, WAIT, NewWait, WaitEntry, new_wait, step_field
from server.types import (
    FUNCTION_FINISHED,
    FUNCTION_INVOKED,
    ErrorInfo,
    InvokeFunction,
    Job,
    JobId,
    LeaseId,
    Opcode,
    RunCompleted,
    RunFailed,
    RunId,
    RunStatus,
    SendEvents,
    Sleep,
    StepCompleted,
    StepFailed,
    StepsPlanned,
    WaitForEvent,
)

_PKG = "server.state"
# Deadline of one batched Redis call on the step path.
REDIS_CALL_S = 10.0
FUNCTION_STEP_ID = "$function"
# What a sleep, wait or a planned job's invoke is memoised as while it waits (_prelude.lua).
_NULL_MEMO = '{"data":null}'
# An invoke without a timeout still has a parked job: due in a year, like Inngest's cap.
INVOKE_WITHOUT_TIMEOUT_MS = 366 * 24 * 3600 * 1000
INVOKE_TIMEOUT_ERROR = {"name": "InvokeTimeoutError",
                        "message": "Timed out waiting for invoked function to complete",
                        "stack": ""}


class Outcome(StrEnum):
    SCHEDULED = "scheduled"  # the run's next job is queued (now, at a retry time or a wake-up)
    CONTINUED = "continued"  # the next job is leased to the same caller: see Applied.next_job
    FINISHED = "finished"  # the run completed or failed
    STALE = "stale"  # the lease was no longer current: nothing applied
    NOT_RUNNING = "not_running"  # the run was cancelled meanwhile: nothing applied
    # Redis answered the script with an error (OOM, ...): not applied, and not to be dropped
    # either; the executor tries again, then raises StorageError (server/errors.py).
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True, slots=True)
class Applied:
    outcome: Outcome
    next_job: Job | None = None
    retrying: bool = False  # a failed step or function attempt will be retried
    error: str = ""  # why a result could not be applied


@dataclass(frozen=True, slots=True)
class UnfinishedRun:
    run_id: RunId
    created_ms: int
    event_json: bytes


@dataclass(frozen=True, slots=True)
class RunState:
    run_id: RunId
    function_id: str
    status: RunStatus
    event_json: bytes
    steps: dict[str, bytes]
    output_json: bytes
    error_json: bytes


def error_json(error: ErrorInfo) -> str:
    return json.dumps({"name": error.name, "message": error.message, "stack": error.stack})


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class StateStore:
    def __init__(self, redis: Redis, keys: Keys, settings: Settings) -> None:
        self._redis = redis
        self._keys = keys
        self._settings = settings
        self._scripts = {
            name: load_script(redis, _PKG, name, prelude=("_waits", FLOW_PRELUDE, "_prelude"))
            for name in ("step_completed", "step_failed", "sleep", "run_completed", "run_failed",
                         "steps_planned", "wait_for_event", "invoke", "send_events")
        }
        # Both take jobs out of the leased set: flow control's slots are freed there.
        self._cancel = load_script(redis, _PKG, "cancel_run", prelude=("_waits", FLOW_PRELUDE))
        self._time_out = load_script(redis, _PKG, "time_out_runs",
                                     prelude=("_waits", FLOW_PRELUDE, "_end_run"))
        self._resume_wait = load_script(redis, _PKG, "resume_wait", prelude="_waits")

    def backoff_ms(self, attempt: int) -> int:
        """Exponential backoff with jitter for the retry after attempt `attempt` (from 0)."""
        s = self._settings
        ceiling = min(s.backoff_max_ms, s.backoff_base_ms * (2 ** min(attempt, 30)))
        return int(ceiling * (0.5 + random.random() / 2))

    async def apply(
        self, results: Sequence[tuple[Job, Opcode]], now_ms: int, relock: bool
    ) -> list[Applied]:
        """Applies one opcode per held job, pipelined; `relock` lets a run continue in place."""
        if not results:
            return []
        relock_expires = now_ms + self._settings.lease_ms if relock else 0
        calls: list[ScriptCall] = []
        for job, op in results:
            name, args = self._script_args(job, op, now_ms)
            sk = self._keys.for_run(job.run_id)
            calls.append((
                self._scripts[name],
                [sk.run(job.run_id), sk.steps(job.run_id), sk.job(job.job_id), sk.leased,
                 sk.ready(job.function_id), sk.history, sk.lease_seq, sk.stack(job.run_id),
                 sk.planned(job.run_id)],
                [job.job_id, job.lease_id, now_ms, relock_expires,
                 self._settings.finished_run_ttl_s, sk.job_prefix,
                 self._settings.max_run_state_bytes, *args],
            ))
        async with asyncio.timeout(REDIS_CALL_S):
            replies = await call_pipelined(self._redis, calls)
        return [
            self._applied(job, op, reply, relock_expires)
            for (job, op), reply in zip(results, replies, strict=True)
        ]

    def _script_args(self, job: Job, op: Opcode, now_ms: int) -> tuple[str, list[EncodableT]]:
        if isinstance(op, StepCompleted):
            return "step_completed", [op.step_id, op.name, op.output_json]
        if isinstance(op, StepFailed):
            retry_at = now_ms + max(op.retry_after_ms, self.backoff_ms(job.attempt))
            return "step_failed", [op.step_id, op.name, error_json(op.error),
                                   int(op.non_retriable), retry_at]
        if isinstance(op, Sleep):
            return "sleep", [op.step_id, op.name, op.until_ms]
        if isinstance(op, RunCompleted):
            return "run_completed", [op.output_json]
        if isinstance(op, StepsPlanned):
            parked = [self._parked(job, p, now_ms) for p in op.parked]
            return "steps_planned", [int(op.race), json.dumps(parked), *op.step_ids]
        if isinstance(op, WaitForEvent):
            wait = self._wait(job, op, job.job_id)
            return "wait_for_event", [op.step_id, op.name, op.timeout_until_ms,
                                      *wait.lua_args()]
        if isinstance(op, InvokeFunction):
            return "invoke", self._invoke_args(job, op, now_ms)
        if isinstance(op, SendEvents):
            ids = [str(ULID()) for _ in op.events]
            events = [{"id": i, "name": e.name, "data": json.loads(e.data_json), "ts": now_ms}
                      for i, e in zip(ids, op.events, strict=True)]
            return "send_events", [op.step_id, op.name, json.dumps({"ids": ids}),
                                   json.dumps(events)]
        retry_at = now_ms + max(op.retry_after_ms, self.backoff_ms(job.attempt))
        return "run_failed", [error_json(op.error), int(op.non_retriable), FUNCTION_STEP_ID,
                              retry_at]

    def _wait(self, job: Job, op: WaitForEvent, job_id: str) -> NewWait:
        return new_wait(
            self._keys.for_run(job.run_id), kind=WAIT, event_name=op.event,
            run_id=job.run_id, field=step_field(job.run_id, op.step_id),
            step_id=op.step_id, function_id=job.function_id,
            if_expression=op.if_expression, until_ms=op.timeout_until_ms,
            run_event=json.loads(job.event_json), step_name=op.name, job_id=job_id)

    def _parked(self, job: Job, op: Sleep | WaitForEvent | InvokeFunction,
                now_ms: int) -> dict[str, Any]:
        """A sleep, wait or invoke of a parallel group, as steps_planned.lua parks it in a
        job of its own (`<run>:<step>`)."""
        job_id = f"{job.run_id}:{op.step_id}"
        if isinstance(op, Sleep):
            return {"step": op.step_id, "name": op.name, "until": op.until_ms,
                    "memo": _NULL_MEMO, "wait": None, "events": None}
        if isinstance(op, WaitForEvent):
            return {"step": op.step_id, "name": op.name, "until": op.timeout_until_ms,
                    "memo": _NULL_MEMO, "events": None,
                    "wait": self._wait(job, op, job_id).lua_args()}
        _, _, until, memo, events, *wait = self._invoke_args(job, op, now_ms, job_id)
        return {"step": op.step_id, "name": op.name, "until": until, "memo": memo,
                "events": events, "wait": wait}

    def _invoke_args(self, job: Job, op: InvokeFunction, now_ms: int,
                     job_id: str = "") -> list[EncodableT]:
        """The invoked event, and the wait for the child's `finished` event, which carries
        the correlation id (server/events/internal.py)."""
        correlation_id = f"{job.run_id}.{op.step_id}"
        until = op.timeout_until_ms or now_ms + INVOKE_WITHOUT_TIMEOUT_MS
        data = json.loads(op.data_json or b"{}")
        data["_inngest"] = {
            "fn_id": op.function_id, "correlation_id": correlation_id,
            "source_fn_id": job.function_id, "source_run_id": job.run_id, "expire": until,
        }
        event = {"id": str(ULID()), "name": FUNCTION_INVOKED, "data": data, "ts": now_ms}
        wait = new_wait(
            self._keys.for_run(job.run_id), kind=INVOKE, event_name=FUNCTION_FINISHED,
            run_id=job.run_id, field=step_field(job.run_id, op.step_id), step_id=op.step_id,
            function_id=job.function_id,
            if_expression=f"async.data.correlation_id == {json.dumps(correlation_id)}",
            until_ms=until, run_event=None, step_name=op.name, job_id=job_id or job.job_id)
        return [op.step_id, op.name, until, json.dumps({"error": INVOKE_TIMEOUT_ERROR}),
                json.dumps([event]), *wait.lua_args()]

    def _applied(self, job: Job, op: Opcode, reply: Any, relock_expires: int) -> Applied:
        if storage_error(reply, "apply") is not None:
            return Applied(Outcome.UNAVAILABLE, error=str(reply))
        if reply == -2:
            return Applied(Outcome.STALE, error="lease no longer current")
        if reply == -3:
            return Applied(Outcome.NOT_RUNNING, error="run no longer running")
        if reply == -4:
            return Applied(Outcome.STALE, error="a planned step's job cannot plan steps")
        check(reply, "apply")
        # 3: the run failed (a final RunFailed, or a memo over max_run_state_bytes).
        if isinstance(op, RunCompleted) or reply == 3:
            return Applied(Outcome.FINISHED)
        failed = isinstance(op, StepFailed | RunFailed)
        if isinstance(reply, list):
            lease, attempt, max_attempts, event, flat, next_id, target, *rest = reply
            steps = hash_from_flat(flat)
            # The next job may be another one of the run: the last planned step to end
            # continues with the run's main job.
            next_job = Job(
                job_id=JobId(_s(next_id)), lease_id=LeaseId(_s(lease)), run_id=job.run_id,
                function_id=job.function_id, attempt=int(attempt),
                max_attempts=int(max_attempts), event_json=event, steps=steps,
                lease_expires_at_ms=relock_expires, traceparent=job.traceparent,
                tracestate=job.tracestate, target_step=_s(target),
                events=batch_events(rest[0] if rest else b""),
            )
            # A retry keeps counting attempts; a memoised error starts the next step at 0.
            return Applied(Outcome.CONTINUED, next_job=next_job,
                           retrying=failed and next_job.attempt > 0)
        return Applied(Outcome.SCHEDULED, retrying=failed and reply == 1)

    async def cancel_run(self, run_id: RunId, now_ms: int) -> tuple[RunStatus, bool]:
        """Cancels a run; returns its status after the call and whether a worker held it."""
        sk = self._keys.for_run(run_id)
        reply = check(
            await self._cancel(
                keys=[sk.run(run_id), sk.steps(run_id), sk.leased, sk.history, sk.stack(run_id),
                      sk.planned(run_id)],
                args=[run_id, now_ms, sk.tag, self._settings.finished_run_ttl_s, run_id],
            ),
            f"run {run_id}",
        )
        return RunStatus(_s(reply[0])), bool(int(reply[1]))

    async def resume_wait(self, entry: WaitEntry, memo: bytes, now_ms: int) -> bool:
        """Memoises a waiting run's step (`{"data": …}` or `{"error": …}`) and makes its job
        due now; False when the wait is already over (timed out, resumed by another event,
        run ended) or the memo would take the run's state over max_run_state_bytes (the run
        failed). The entry is removed either way."""
        run_id = entry.run_id
        job_id = entry.job_id or run_id
        sk = self._keys.for_run(run_id)
        parsed = json.loads(memo) if memo != b"null" else {}
        if isinstance(parsed, dict) and "error" in parsed:
            status, output, error = "failed", "", json.dumps(parsed["error"])
        else:
            data = parsed.get("data") if isinstance(parsed, dict) else None
            status, output, error = "completed", json.dumps(data), ""
        async with asyncio.timeout(REDIS_CALL_S):
            reply = await self._resume_wait(
                keys=[sk.waits(entry.event), entry.set_key or sk.wait_scan(entry.event),
                      sk.run(run_id), sk.steps(run_id), sk.job(job_id),
                      sk.ready(entry.function_id), sk.wait_refs(run_id), sk.history,
                      sk.stack(run_id), sk.planned(run_id), sk.leased],
                args=[entry.field, run_id, entry.step_id, memo, entry.until_ms, now_ms,
                      entry.step_name or entry.step_id, status, output, error,
                      self._settings.max_run_state_bytes, self._settings.finished_run_ttl_s,
                      job_id, sk.job_prefix],
            )
        return int(check(reply, f"run {run_id}")) == 1

    async def drop_wait(self, entry: WaitEntry) -> None:
        """Removes a wait entry that can no longer match (expired, or its run moved on)."""
        sk = self._keys.for_run(entry.run_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hdel(sk.waits(entry.event), entry.field)
            pipe.srem(entry.set_key or sk.wait_scan(entry.event), entry.field)
            pipe.hdel(sk.wait_refs(entry.run_id), entry.field)
            await pipe.execute()

    async def time_out_runs(self, shard: ShardKeys, now_ms: int,
                            limit: int = 100) -> list[tuple[RunId, bool]]:
        """Fails the shard's runs past their finish timeout; returns each one's id and whether
        a worker held one of its jobs (to be told, as for a cancel)."""
        async with asyncio.timeout(REDIS_CALL_S):
            reply = await self._time_out(
                keys=[shard.deadlines, shard.leased, shard.history],
                args=[now_ms, shard.tag, self._settings.finished_run_ttl_s, limit],
            )
        return [(RunId(_s(run_id)), bool(int(held))) for run_id, held in reply]

    async def unfinished_runs(self, function_id: str) -> list[UnfinishedRun]:
        """The function's queued and running runs, exactly as Redis has them now: every
        such run has a job in the function's ready set (queued, retrying, asleep, waiting)
        or leased, its own or a planned step's (`<run>:<step>`)."""
        out: list[UnfinishedRun] = []
        for sk in self._keys.all_shards():
            async with asyncio.timeout(REDIS_CALL_S):
                ready = await self._redis.zrange(sk.ready(function_id), 0, -1)
                leased = [_s(j) for j in await self._redis.zrange(sk.leased, 0, -1)]
                async with self._redis.pipeline(transaction=False) as pipe:
                    for job_id in leased:
                        pipe.hget(sk.job(job_id), "fn")
                    owners = await pipe.execute()
            run_ids = dict.fromkeys(_s(j).split(":", 1)[0] for j in ready)
            for job_id, fn in zip(leased, owners, strict=True):
                if fn is not None and _s(fn) == function_id:
                    run_ids[job_id.split(":", 1)[0]] = None
            async with asyncio.timeout(REDIS_CALL_S), \
                    self._redis.pipeline(transaction=False) as pipe:
                for run_id in run_ids:
                    pipe.hmget(sk.run(run_id), "status", "created", "event")
                metas = await pipe.execute()
            for run_id, (status, created, event) in zip(run_ids, metas, strict=True):
                if status is not None and _s(status) in ("queued", "running"):
                    out.append(UnfinishedRun(RunId(run_id), int(_s(created or b"0")),
                                             bytes(event or b"{}")))
        return out

    async def stack(self, run_id: RunId) -> list[str]:
        """The run's step ids in the order they were memoised."""
        async with asyncio.timeout(REDIS_CALL_S):
            raw = await self._redis.lrange(self._keys.for_run(run_id).stack(run_id), 0, -1)
        return [_s(v) for v in raw]

    async def get_run(self, run_id: RunId) -> RunState | None:
        sk = self._keys.for_run(run_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(sk.run(run_id))
            pipe.hgetall(sk.steps(run_id))
            meta, steps = await pipe.execute()
        if not meta:
            return None
        return RunState(
            run_id=run_id,
            function_id=_s(meta.get(b"fn", b"")),
            status=RunStatus(_s(meta[b"status"])),
            event_json=meta.get(b"event", b"{}"),
            steps={_s(k): v for k, v in steps.items()},
            output_json=meta.get(b"output", b""),
            error_json=meta.get(b"error", b""),
        )

    async def held_memo_sizes(self, run_id: RunId, job_id: str, lease_id: str,
                              step_ids: Sequence[str]) -> tuple[str, list[int]] | None:
        """The run's function id and the lengths of its memos of `step_ids` (0: not
        memoised) while `job_id` is leased under `lease_id`; None when it is not (a stale
        lease, an ended run)."""
        sk = self._keys.for_run(run_id)
        async with asyncio.timeout(REDIS_CALL_S), \
                self._redis.pipeline(transaction=False) as pipe:
            pipe.hmget(sk.job(job_id), "lease", "run", "fn")
            for step_id in step_ids:
                pipe.hstrlen(sk.steps(run_id), step_id)
            held, *sizes = await pipe.execute()
        if not lease_id or held[0] is None or _s(held[0]) != lease_id \
                or _s(held[1] or b"") != run_id:
            return None
        return _s(held[2] or b""), [int(n) for n in sizes]

    async def memos(self, run_id: RunId, step_ids: Sequence[str]) -> dict[str, bytes]:
        """The run's memos of `step_ids` (those memoised)."""
        async with asyncio.timeout(REDIS_CALL_S):
            values = await self._redis.hmget(self._keys.for_run(run_id).steps(run_id), step_ids)
        return {k: v if isinstance(v, bytes) else str(v).encode()
                for k, v in zip(step_ids, values, strict=True) if v is not None}


__all__ = ["Applied", "Outcome", "RunState", "StateStore", "UnfinishedRun"]
