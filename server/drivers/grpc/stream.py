"""The gRPC worker stream: one bidirectional QueueService.Connect per worker connection.

The stream itself is the liveness signal: jobs are pushed only within the credit the worker
granted, results come back batched, heartbeats extend the held leases, and the moment a
stream ends its jobs go back to the queue for another worker.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import grpc
import structlog
from plait_proto.v1 import queue_pb2, queue_pb2_grpc
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from ulid import ULID

from server.config import Settings
from server.drivers.grpc._convert import (
    EventCache,
    job_to_pb,
    registration_from_pb,
    result_from_pb,
)
from server.drivers.grpc._fit import (
    DEFAULT_WORKER_LIMIT,
    MIN_WORKER_LIMIT,
    Undeliverable,
    fit_steps,
    pack,
)
from server.errors import InvalidArgument, PlaitError, grpc_status
from server.executor.executor import Executor
from server.runner.guard import refuse_wipe
from server.runner.registry import Registry
from server.state import Outcome
from server.telemetry.telemetry import Telemetry, outcome_of
from server.types import ConnectionId, ErrorInfo, FunctionId, Job, JobId, Opcode, RunFailed, RunId

log = structlog.get_logger(__name__)

REGISTER_TIMEOUT_S = 10.0
# The server's own gRPC send limit (server/app.py GRPC_MAX_MESSAGE_BYTES): a worker announcing
# more still gets messages under this.
MAX_PUSH_BYTES = 16 * 1024 * 1024


@dataclass(eq=False)
class _Connection:
    id: ConnectionId
    app_id: str
    slugs: dict[FunctionId, str]  # global id -> id within the app
    max_jobs: int
    # Every message pushed stays under this (the worker's max_receive_message_bytes); a
    # worker that announced none gets 8 MiB and cannot fetch memos left out of a job.
    max_message_bytes: int = DEFAULT_WORKER_LIMIT
    can_fetch: bool = False
    outbox: asyncio.Queue[queue_pb2.ConnectResponse | None] = field(default_factory=asyncio.Queue)
    held: dict[JobId, Job] = field(default_factory=dict)
    draining: bool = False

    @property
    def free(self) -> int:
        return 0 if self.draining else self.max_jobs - len(self.held)


class GrpcDriver(queue_pb2_grpc.QueueServiceServicer):
    """The QueueService servicer, and the executor's driver for gRPC workers."""

    def __init__(self, executor: Executor, registry: Registry, settings: Settings,
                 telemetry: Telemetry | None = None) -> None:
        self._executor = executor
        self._registry = registry
        self._settings = settings
        self._telemetry = telemetry or Telemetry()
        self._connections: dict[ConnectionId, _Connection] = {}
        self._events = EventCache()
        self._round_robin = itertools.count()

    # Driver protocol

    def capacity(self) -> dict[FunctionId, int]:
        caps: dict[FunctionId, int] = {}
        for conn in self._connections.values():
            free = conn.free
            if free > 0:
                for fn in conn.slugs:
                    caps[fn] = caps.get(fn, 0) + free
        return caps

    def total_capacity(self) -> int:
        return sum(max(0, c.free) for c in self._connections.values())

    async def dispatch(self, jobs: Sequence[Job]) -> list[Job]:
        batches: dict[ConnectionId, list[queue_pb2.Job]] = {}
        unplaced: list[Job] = []
        undeliverable: list[tuple[Job, RunFailed]] = []
        conns = list(self._connections.values())
        for job in jobs:
            conn = self._pick(conns, job.function_id)
            if conn is None:
                unplaced.append(job)
                continue
            try:
                pb = self._job_pb(conn, job)
            except Undeliverable as e:
                undeliverable.append((job, _too_large(e)))
                continue
            except Exception as e:  # one job's fault stays with it (the Driver contract)
                await self._executor.dispatch_failed(job, e)
                continue
            conn.held[job.job_id] = job
            if self._telemetry.tracing:
                self._telemetry.dispatch_started(job, "grpc", conn.id)
            batches.setdefault(conn.id, []).append(pb)
        for conn_id, batch in batches.items():
            self._push(self._connections[conn_id], batch)
        if undeliverable:
            await self._fail_undeliverable(undeliverable)
        return unplaced

    def _push(self, conn: _Connection, jobs: list[queue_pb2.Job]) -> None:
        for batch in pack(jobs, conn.max_message_bytes):
            conn.outbox.put_nowait(queue_pb2.ConnectResponse(jobs=queue_pb2.Jobs(jobs=batch)))

    async def _fail_undeliverable(self, items: list[tuple[Job, RunFailed]]) -> None:
        """Fails the runs of jobs no message to the worker can hold: redelivering them would
        fail the same way."""
        for job, op in items:
            log.warning("job.too_large", run_id=job.run_id, job_id=job.job_id,
                        reason=op.error.message)
        try:
            await self._executor.commit(items, relock=False)
        except Exception:  # storage refused: the leases expire and the redelivery cap ends them
            log.warning("job.too_large_unrecorded", exc_info=True)

    async def cancel(self, run_id: RunId) -> bool:
        for conn in self._connections.values():
            for job_id, job in list(conn.held.items()):
                if job.run_id == run_id:
                    del conn.held[job_id]
                    self._telemetry.dispatch_ended(job, "cancelled")
                    conn.outbox.put_nowait(queue_pb2.ConnectResponse(
                        cancel=queue_pb2.Cancel(job_ids=[job_id])))
                    self._executor.capacity_changed()
                    return True
        return False

    def _pick(self, conns: list[_Connection], fn: FunctionId) -> _Connection | None:
        if not conns:
            return None
        start = next(self._round_robin) % len(conns)
        for conn in conns[start:] + conns[:start]:
            if fn in conn.slugs and conn.free > 0:
                return conn
        return None

    def _job_pb(self, conn: _Connection, job: Job) -> queue_pb2.Job:
        """The job's message within the worker's limit (see _fit.py); raises Undeliverable."""
        event = self._events.get(job.run_id, job.event_json)
        pb = job_to_pb(job, conn.slugs.get(job.function_id, ""), event)
        return fit_steps(pb, job.steps, conn.max_message_bytes, conn.can_fetch)

    # QueueService

    async def Connect(
        self,
        request_iterator: AsyncIterator[queue_pb2.ConnectRequest],
        context: grpc.aio.ServicerContext[queue_pb2.ConnectRequest, queue_pb2.ConnectResponse],
    ) -> AsyncIterator[queue_pb2.ConnectResponse]:
        try:
            conn = await self._register(request_iterator)
        except PlaitError as e:
            await context.abort(grpc_status(e), e.message)
        except (RedisError, SQLAlchemyError, OSError) as e:
            await context.abort(grpc.StatusCode.UNAVAILABLE, _storage_away(e))
        except (TimeoutError, StopAsyncIteration):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "register: the first message must be register")
        self._connections[conn.id] = conn
        self._executor.capacity_changed()
        self._telemetry.worker_connected(conn.app_id, 1)
        log.info("worker.connected", connection_id=conn.id, app_id=conn.app_id,
                 max_jobs=conn.max_jobs)
        # The reader is owned by this handler: it ends the outbox when the worker's side
        # closes, and it is cancelled when the handler ends for any other reason.
        reader = asyncio.create_task(self._read(conn, request_iterator))
        try:
            while (msg := await conn.outbox.get()) is not None:
                yield msg
            await reader
        except PlaitError as e:
            await context.abort(grpc_status(e), e.message)
        except (RedisError, OSError) as e:
            # The worker reconnects with backoff; its held jobs come back by lease expiry.
            await context.abort(grpc.StatusCode.UNAVAILABLE, _storage_away(e))
        finally:
            reader.cancel()
            del self._connections[conn.id]
            held = list(conn.held.values())
            conn.held.clear()
            self._telemetry.worker_connected(conn.app_id, -1)
            for job in held:
                self._telemetry.dispatch_ended(job, "released", error="the worker disconnected")
            try:
                await asyncio.shield(self._executor.release(held))
            except (RedisError, OSError, PlaitError) as e:  # their leases expire instead
                log.warning("worker.release_failed", connection_id=conn.id, error=repr(e))
            log.info("worker.disconnected", connection_id=conn.id, released=len(held))

    async def _register(
        self, requests: AsyncIterator[queue_pb2.ConnectRequest]
    ) -> _Connection:
        async with asyncio.timeout(REGISTER_TIMEOUT_S):
            first = await anext(requests)
        if first.WhichOneof("message") != "register":
            raise InvalidArgument("register", "the first message must be register")
        reg = registration_from_pb(first.register, self._settings.default_retries)
        max_bytes = first.register.max_receive_message_bytes
        if max_bytes and max_bytes < MIN_WORKER_LIMIT:
            raise InvalidArgument("register.max_receive_message_bytes",
                                  f"{max_bytes} is under the least of {MIN_WORKER_LIMIT} (or 0)")
        await refuse_wipe(self._registry, reg, "register.functions")
        await self._registry.register(reg, int(time.time() * 1000))
        conn = _Connection(
            id=ConnectionId(str(ULID())), app_id=reg.app_id,
            slugs={fn.id: fn.slug for fn in reg.functions},
            max_jobs=first.register.max_concurrent_jobs,
            max_message_bytes=min(max_bytes or DEFAULT_WORKER_LIMIT, MAX_PUSH_BYTES),
            can_fetch=max_bytes > 0,
        )
        conn.outbox.put_nowait(queue_pb2.ConnectResponse(registered=queue_pb2.Registered(
            connection_id=conn.id, lease_ms=self._settings.lease_ms,
            heartbeat_interval_ms=self._settings.heartbeat_interval_ms,
            function_ids=list(conn.slugs),
        )))
        return conn

    async def _read(
        self, conn: _Connection, requests: AsyncIterator[queue_pb2.ConnectRequest]
    ) -> None:
        try:
            await self._read_all(conn, requests)
        finally:
            conn.outbox.put_nowait(None)

    async def _read_all(
        self, conn: _Connection, requests: AsyncIterator[queue_pb2.ConnectRequest]
    ) -> None:
        async for msg in requests:
            kind = msg.WhichOneof("message")
            if kind == "results":
                await self._on_results(conn, msg.results)
            elif kind == "heartbeat":
                await self._executor.extend(list(conn.held.values()))
            elif kind == "drain":
                conn.draining = True
            elif kind == "register":
                raise InvalidArgument("register", "a stream registers once")
            else:
                raise InvalidArgument("message", "must set one of results, heartbeat, drain")

    async def _on_results(self, conn: _Connection, results: queue_pb2.JobResults) -> None:
        items: list[tuple[Job, Opcode]] = []
        for i, msg in enumerate(results.results):
            result = result_from_pb(msg, f"results[{i}]")
            job = conn.held.get(result.job_id)
            if job is None or job.lease_id != result.lease_id:
                log.info("result.stale", connection_id=conn.id, job_id=result.job_id)
                continue
            items.append((job, result.opcodes[0]))
            if self._telemetry.tracing:
                self._telemetry.dispatch_ended(job, outcome_of(result.opcodes[0]))
        if not items:
            return
        # The slots stay taken until the results are committed: the worker's credit bounds
        # the jobs whose outcome is not yet durable, so a crash repeats at most that many.
        applied = await self._executor.commit(items, relock=not conn.draining)
        follow_ups = []
        undeliverable: list[tuple[Job, RunFailed]] = []
        for (job, _), outcome in zip(items, applied, strict=True):
            conn.held.pop(job.job_id, None)
            if outcome.outcome is Outcome.CONTINUED and outcome.next_job is not None:
                try:
                    pb = self._job_pb(conn, outcome.next_job)
                except Undeliverable as e:
                    undeliverable.append((outcome.next_job, _too_large(e)))
                    continue
                except Exception as e:
                    await self._executor.dispatch_failed(outcome.next_job, e)
                    continue
                conn.held[outcome.next_job.job_id] = outcome.next_job
                if self._telemetry.tracing:
                    self._telemetry.dispatch_started(outcome.next_job, "grpc", conn.id)
                follow_ups.append(pb)
        if follow_ups:
            self._push(conn, follow_ups)
        if undeliverable:
            await self._fail_undeliverable(undeliverable)
        if len(follow_ups) < len(items):
            self._executor.capacity_changed()

    async def drain(self) -> None:
        """Tells every worker the server is going away."""
        for conn in self._connections.values():
            conn.draining = True
            conn.outbox.put_nowait(queue_pb2.ConnectResponse(drain=queue_pb2.Drain()))


def _too_large(e: Undeliverable) -> RunFailed:
    return RunFailed(ErrorInfo("JobTooLargeError", str(e)), non_retriable=True)


def _storage_away(error: Exception) -> str:
    return f"storage is unavailable, reconnect later: {type(error).__name__}: {error}"[:500]
