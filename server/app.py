"""Assembles a Plait server process: storage, the data-path roles, and the gRPC and HTTP faces.

`PlaitServer.start()` returns once both ports answer; `stop()` shuts down in order: stop
accepting, tell workers to drain, hand back held leases, stop the roles, close storage.
"""

from __future__ import annotations

import asyncio
import functools
import socket
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass

import grpc
import structlog
from plait_proto.v1 import event_pb2_grpc, management_pb2_grpc, queue_pb2_grpc, state_pb2_grpc
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from server.api.auth import TokenInterceptor
from server.api.grpc_errors import ErrorInterceptor
from server.api.http import HttpServer, bind, build_app, http_server
from server.api.inngest import AppSync, InngestGateway
from server.api.management import ManagementServicer
from server.api.run_control import RunControl
from server.api.state_service import StateServicer
from server.api.tls import grpc_server_credentials, uvicorn_tls
from server.api.waiting import WaitingReasons
from server.config import Mode, Settings, refuse_if_insecure
from server.dev.redis import EmbeddedRedis
from server.drivers.grpc.stream import GrpcDriver
from server.drivers.http import HttpDriver
from server.durability import check_postgres, check_redis
from server.events.grpc import EventServicer
from server.events.ingest import EventIngest
from server.events.internal import InternalEvents
from server.events.reconcile import Reconciler
from server.executor.executor import Executor
from server.history.db import migrate, open_database
from server.history.writer import HistoryWriter
from server.keys import Keys
from server.liveness import Liveness
from server.queue import Queue
from server.redis_client import drop_connections, open_redis
from server.runner.cron import Clock, Scheduler
from server.runner.guard import app_of_function
from server.runner.index import FunctionIndex
from server.runner.registry import Registry
from server.runner.runner import Runner
from server.state import StateStore
from server.supervise import Role, StorageHealth, StorageUnavailable, supervise
from server.telemetry import Metrics, Telemetry

log = structlog.get_logger(__name__)

GRPC_MAX_MESSAGE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Endpoints:
    http_port: int
    grpc_port: int
    redis_url: str
    database_url: str


class PlaitServer:
    def __init__(self, settings: Settings, *, cron_clock: Clock | None = None) -> None:
        self.settings = settings
        self._cron_clock = cron_clock  # tests run cron ticks on a fake clock
        self._embedded: EmbeddedRedis | None = None
        self._redis: Redis | None = None
        self._engine: AsyncEngine | None = None
        self._grpc: grpc.aio.Server | None = None
        self._driver: GrpcDriver | None = None
        self._tasks: asyncio.Task[None] | None = None
        self._http_socket: socket.socket | None = None
        self._http: HttpServer | None = None
        self._telemetry: Telemetry | None = None
        self._liveness: Liveness | None = None
        self.endpoints: Endpoints | None = None

    async def start(self) -> Endpoints:
        s = self.settings
        # Before anything connects: production is never open by accident.
        refuse_if_insecure(s)
        redis_url = s.redis_url
        if not redis_url:
            if s.mode is Mode.PRODUCTION:
                raise RuntimeError("production mode needs a Redis URL")
            self._embedded = EmbeddedRedis(s.data_dir, durability=s.durability)
            redis_url = await self._embedded.start()
        if s.mode is Mode.DEV:
            s.data_dir.mkdir(parents=True, exist_ok=True)
        # Retries and dead-peer detection, but no per-reply socket timeout (a cost on every
        # reply of a pipeline): the hot-path calls carry one deadline per batch (REDIS_CALL_S).
        self._redis = open_redis(redis_url)
        self._engine = await open_database(s.effective_database_url, s.durability)
        await migrate(self._engine)
        if self._embedded is None:  # the embedded Redis is configured by Plait itself
            await check_redis(self._redis, s.durability)
        await check_postgres(self._engine, s.durability)

        keys = Keys(s.queue_shards)
        consumer = s.instance_id or socket.gethostname()
        # Heartbeat first: the others take over what this process holds once it is gone.
        liveness = self._liveness = Liveness(self._redis, keys, consumer)
        await liveness.join()
        queue = Queue(self._redis, keys, s.lease_ms, s.finished_run_ttl_s,
                      holder=liveness.holder)
        state = StateStore(self._redis, keys, s)
        index = FunctionIndex()
        registry = Registry(self._engine, self._redis, keys, index)
        await registry.reload()
        # Spans go to OTLP when the otel_* settings ask for it; metrics are always kept.
        telemetry = self._telemetry = Telemetry(s)
        telemetry.watch_queues(self._redis, keys, lambda: [f.id for f in index.all()])
        executor = Executor(queue, state, s, telemetry, redis=self._redis, liveness=liveness)
        driver = GrpcDriver(executor, registry, s, telemetry)
        executor.add_driver(driver)
        self._driver = driver
        sdk_driver = HttpDriver(executor, state, index, s, telemetry)
        executor.add_driver(sdk_driver)
        ingest = EventIngest(self._engine, self._redis, keys, s, telemetry)
        runner = Runner(self._redis, keys, queue, registry, consumer, executor.wake, state,
                        executor.cancel_run, metrics=telemetry.metrics, liveness=liveness)
        control = RunControl(self._engine, queue, state, registry, executor.cancel_run,
                             executor.wake)
        internal = InternalEvents(self._redis, keys, ingest, s)
        history = HistoryWriter(self._redis, self._engine, keys, consumer, telemetry,
                                on_committed=internal.emit, liveness=liveness)

        options = [("grpc.max_receive_message_length", GRPC_MAX_MESSAGE_BYTES),
                   ("grpc.max_send_message_length", GRPC_MAX_MESSAGE_BYTES)]
        # Any token configured turns authentication on; none (dev, or --insecure) leaves it off.
        interceptors = ([TokenInterceptor(s.grpc_token_list, s.admin_token_list,
                                          functools.partial(app_of_function, registry))]
                        if s.grpc_token_list or s.admin_token_list else [])
        if s.mode is Mode.PRODUCTION and not interceptors:
            log.warning("grpc.unauthenticated",
                        hint="set --grpc-tokens (PLAIT_GRPC_TOKENS) so gRPC calls need a token")
        elif interceptors and not s.admin_token_list:
            log.warning("grpc.no_admin_tokens",
                        hint="ManagementService calls (cancel, replay, pause, reading runs) are "
                             "refused until --admin-tokens (PLAIT_ADMIN_TOKENS) is set")
        # Authentication first; then the one error edge (no handler error becomes UNKNOWN).
        self._grpc = grpc.aio.server(options=options,
                                     interceptors=[*interceptors, ErrorInterceptor()])
        wanted = s.role_set
        if "api" in wanted:
            event_pb2_grpc.add_EventServiceServicer_to_server(EventServicer(ingest), self._grpc)
            state_pb2_grpc.add_StateServiceServicer_to_server(StateServicer(state), self._grpc)
            management_pb2_grpc.add_ManagementServiceServicer_to_server(
                ManagementServicer(self._engine, executor.cancel_run, control,
                                   WaitingReasons(self._redis, keys)), self._grpc)
        if "executor" in wanted:
            queue_pb2_grpc.add_QueueServiceServicer_to_server(driver, self._grpc)
        grpc_port = 0
        if wanted & {"api", "executor"}:
            address = f"{s.grpc_host}:{s.grpc_port}"
            credentials = grpc_server_credentials(s)
            grpc_port = (self._grpc.add_secure_port(address, credentials) if credentials
                         else self._grpc.add_insecure_port(address))
            if grpc_port == 0:
                raise OSError(f"cannot bind gRPC to {s.grpc_host}:{s.grpc_port}")
            await self._grpc.start()

        # Roles are (name, loop): each runs under supervise(), which restarts it when it
        # fails. Every role makes spans or metrics; the export task sends spans (when tracing).
        health = StorageHealth.of(self._redis, redis_url, self._engine, s.storage_grace_s)
        roles: list[tuple[str, Role]] = [("telemetry", telemetry.run),
                                         ("liveness", liveness.run)]
        if self._embedded is not None:  # restarts the private Redis if it dies alone
            roles.append(("embedded-redis", self._embedded.watch))
        http_port = 0
        if "api" in wanted:
            self._http_socket = bind(s.http_host, s.http_port)
            http_port = self._http_socket.getsockname()[1]
            syncer = AppSync(s, own_port=http_port)
            gateway = InngestGateway(s, self._engine, registry, state, executor.cancel_run, syncer,
                                     control, WaitingReasons(self._redis, keys))
            self._http = http_server(build_app(ingest, s, gateway.routes(), telemetry,
                                               health=health), uvicorn_tls(s))
            http, http_socket = self._http, self._http_socket
            roles += [("http", lambda: http.serve(sockets=[http_socket])),
                      ("app-sync", syncer.run)]
            _warn_if_open(s)
        if "runner" in wanted:
            roles += [("runner", runner.run), ("registry-watch", registry.watch),
                      ("reconciler", Reconciler(self._engine, self._redis, keys).run)]
        if "executor" in wanted:
            roles += [("executor", executor.run), ("sdk-driver", sdk_driver.run)]
        if "history" in wanted:
            roles.append(("history", history.run))
        if "scheduler" in wanted:
            roles.append(("scheduler", Scheduler(self._engine, self._redis, keys, queue, registry,
                                                 executor.wake, self._cron_clock,
                                                 cancel_run=executor.cancel_run).run))
        self._tasks = asyncio.create_task(self._run_roles(roles, health, telemetry.metrics),
                                          name="plait-roles")
        self.endpoints = Endpoints(
            http_port=http_port, grpc_port=grpc_port,
            redis_url=redis_url, database_url=s.effective_database_url)
        log.info("server.started", mode=s.mode.value, http_port=http_port, grpc_port=grpc_port,
                 roles=sorted(wanted))
        return self.endpoints

    async def _run_roles(self, roles: Sequence[tuple[str, Role]], health: StorageHealth,
                         metrics: Metrics) -> None:
        """Runs every role under supervision, beside the storage health probe: the one task
        whose failure (storage away past the grace) ends them all."""
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(health.run(), name="plait-storage-health")
                for name, role in roles:
                    tg.create_task(supervise(name, role, on_restart=metrics.role_restarted,
                                             on_storage_error=health.report), name=name)
        except* StorageUnavailable as group:
            raise group.exceptions[0] from None

    async def wait(self) -> None:
        """Returns only when the roles were stopped; raises StorageUnavailable when storage
        stayed away past --storage-grace-s. Cancelling this wait leaves the roles to stop()."""
        if self._tasks is not None:
            await asyncio.wait({self._tasks})
            self._tasks.result()

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stops in order; each phase has a deadline so a stuck part cannot hang shutdown."""
        if self._driver is not None:
            await self._driver.drain()
        if self._grpc is not None:
            await self._phase("grpc", self._grpc.stop(grace_s), grace_s + 2)
        if self._tasks is not None:
            if self._http is not None:
                self._http.should_exit = True
            self._tasks.cancel()
            await asyncio.wait({self._tasks}, timeout=1)
            if not self._tasks.done() and self._redis is not None:
                # A role blocked in a Redis read can miss its cancellation (seen with
                # redis-py's blocking XREADGROUP); closing the sockets ends the read.
                await drop_connections(self._redis)
            await self._phase("roles", asyncio.wait({self._tasks}), 10)
        if self._liveness is not None:
            # Best effort: with storage away the heartbeat simply expires within seconds.
            await self._phase("liveness", _quietly(self._liveness.leave()), 2)
        if self._telemetry is not None:
            # Exports the spans still queued; the history writer made its last ones above.
            await self._phase("telemetry", self._telemetry.shutdown(), 12)
        if self._redis is not None:
            await self._phase("redis", self._redis.aclose(), 5)
        if self._engine is not None:
            await self._phase("database", self._engine.dispose(), 5)
        if self._embedded is not None:
            await self._phase("embedded-redis", self._embedded.stop(), 15)
        log.info("server.stopped")

    @staticmethod
    async def _phase(name: str, step: Awaitable[object], timeout_s: float) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                await step
        except TimeoutError:
            stuck = [_awaiting(t) for t in asyncio.all_tasks() if not t.done()]
            log.error("server.stop_timeout", phase=name, timeout_s=timeout_s, tasks=stuck)


async def _quietly(step: Awaitable[object]) -> None:
    """A stop step that may fail (storage away): its heartbeat then simply expires."""
    try:
        await step
    except Exception as e:
        log.warning("server.stop_step_failed", error=repr(e))


def _warn_if_open(s: Settings) -> None:
    if s.mode is not Mode.PRODUCTION:
        return
    if not s.signing_key:
        log.warning("inngest.no_signing_key",
                    hint="set --signing-key (PLAIT_SIGNING_KEY): without it Inngest SDK apps "
                         "cannot register and their calls are refused")
    if not s.event_key_list:
        log.warning("inngest.no_event_keys",
                    hint="set --event-key (PLAIT_EVENT_KEYS): without one POST /e/{key} "
                         "refuses every event")


def _awaiting(task: asyncio.Task[object]) -> str:
    """The chain of awaits a task is stuck in, for the stop-timeout log."""
    chain: list[str] = [f"{task.get_name()}(cancelling={task.cancelling()})"]
    current: object = task.get_coro()
    for _ in range(30):
        frame = getattr(current, "cr_frame", None) or getattr(current, "ag_frame", None)
        name = getattr(getattr(current, "cr_code", None), "co_name", type(current).__name__)
        chain.append(f"{name}:{frame.f_lineno if frame else '?'}")
        nxt = getattr(current, "cr_await", None) or getattr(current, "ag_await", None)
        if nxt is None:
            break
        current = nxt
    return " -> ".join(chain)


async def serve(settings: Settings) -> None:
    """Runs a server until cancelled (Ctrl-C), then stops it in order."""
    server = PlaitServer(settings)
    try:
        await server.start()
        await server.wait()
    finally:
        await asyncio.shield(server.stop())
