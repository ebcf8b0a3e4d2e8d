"""The worker stream (QueueService.Connect) never ends in UNKNOWN / INTERNAL and never stops
the server: neither for generated message sequences (register first or not) nor for generated
answers (any opcode, any field) to real leased jobs. Surface: "grpc-queue"."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import grpc
from hypothesis import given
from hypothesis import strategies as st
from plait_proto.v1 import event_pb2, event_pb2_grpc, queue_pb2, queue_pb2_grpc

from tests.fuzz.conftest import CALL_TIMEOUT_S, REGISTER, SERVER_FAULTS, Target, fuzz_settings
from tests.fuzz.strategies import KNOWN_IDS, messages

SURFACE = "grpc-queue"
TESTS = 2
# How long a case waits for a job to answer before it closes its stream without one.
JOB_WAIT_S = 5.0
ANSWERED: dict[str, int] = {}  # backend -> cases that answered a real job

connect_requests = messages(queue_pb2.ConnectRequest.DESCRIPTOR)
registers = messages(queue_pb2.Register.DESCRIPTOR).map(
    lambda r: queue_pb2.ConnectRequest(register=r))
opcodes = messages(queue_pb2.Opcode.DESCRIPTOR)
results = messages(queue_pb2.JobResult.DESCRIPTOR)


def _fault_of(target: Target, what: str, error: grpc.RpcError) -> None:
    code = error.code()
    if code in SERVER_FAULTS:
        target.fault(SURFACE, f"{what} ended {code.name}: {error.details()}")


@fuzz_settings(TESTS)
@given(first=st.one_of(registers, connect_requests), rest=st.lists(connect_requests, max_size=4))
def test_generated_worker_streams_never_end_in_a_server_error(
    target: Target, first: queue_pb2.ConnectRequest, rest: list[queue_pb2.ConnectRequest]
) -> None:
    target.case(SURFACE)
    stub = queue_pb2_grpc.QueueServiceStub(target.channel)
    try:
        for _ in stub.Connect(iter([first, *rest]), timeout=CALL_TIMEOUT_S):
            pass
    except grpc.RpcError as e:
        _fault_of(target, f"Connect({[first, *rest]!r:.2000})", e)


@fuzz_settings(TESTS)
@given(ops=st.lists(opcodes, min_size=0, max_size=3), extra=st.lists(results, max_size=2),
       heartbeat=st.booleans())
def test_generated_answers_to_real_jobs_never_end_in_a_server_error(
    target: Target, ops: list[queue_pb2.Opcode], extra: list[queue_pb2.JobResult],
    heartbeat: bool,
) -> None:
    """Registers an app, sends it an event and answers the first job it leases with generated
    opcodes (plus generated answers to jobs that do not exist)."""
    target.case(SURFACE)
    outbox: queue.Queue[queue_pb2.ConnectRequest | None] = queue.Queue()

    def requests() -> Iterator[queue_pb2.ConnectRequest]:
        while (item := outbox.get()) is not None:
            yield item

    outbox.put(REGISTER)
    timer = threading.Timer(JOB_WAIT_S, lambda: outbox.put(None))
    timer.start()
    answered = False
    try:
        stub = queue_pb2_grpc.QueueServiceStub(target.channel)
        for reply in stub.Connect(requests(), timeout=CALL_TIMEOUT_S + JOB_WAIT_S):
            kind = reply.WhichOneof("message")
            if kind == "registered":
                sent = event_pb2_grpc.EventServiceStub(target.channel).SendEvents(
                    event_pb2.SendEventsRequest(events=[event_pb2.EventInput(
                        name="fuzzq/go", data_json=b'{"n": 1}')]), timeout=CALL_TIMEOUT_S)
                KNOWN_IDS.extend(sent.ids)
            elif kind == "jobs" and not answered:
                job = reply.jobs.jobs[0]
                KNOWN_IDS.append(job.run_id)
                answered = True
                ANSWERED[target.backend] = ANSWERED.get(target.backend, 0) + 1
                if heartbeat:
                    outbox.put(queue_pb2.ConnectRequest(heartbeat=queue_pb2.Heartbeat()))
                answer = queue_pb2.JobResult(job_id=job.job_id, lease_id=job.lease_id,
                                             opcodes=ops)
                outbox.put(queue_pb2.ConnectRequest(
                    results=queue_pb2.JobResults(results=[answer, *extra])))
                outbox.put(None)
    except grpc.RpcError as e:
        _fault_of(target, f"answer {ops!r:.2000} + {extra!r:.1000}", e)
    finally:
        timer.cancel()
        outbox.put(None)


def test_the_server_is_alive_and_healthy_after_the_worker_stream_fuzzing(target: Target) -> None:
    target.assert_healthy()
    assert ANSWERED.get(target.backend, 0) > 0, "no case got a job to answer"
