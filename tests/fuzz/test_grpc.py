"""Generated gRPC requests never get UNKNOWN / INTERNAL and never stop the server.

Every unary call of EventService, ManagementService and StateService, and the client stream
EventService.StreamEvents, with messages built from the descriptors in gen/python/plait_proto:
each field of each request (nested ones included) is set or not, to any value of its type.
Surfaces: "grpc-events", "grpc-management", "grpc-state".
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from hypothesis import given
from hypothesis import strategies as st
from plait_proto.v1 import event_pb2, management_pb2, state_pb2

from tests.fuzz.conftest import CALL_TIMEOUT_S, SERVER_FAULTS, Target, fuzz_settings
from tests.fuzz.strategies import message_class, messages

SURFACES = {"EventService": "grpc-events", "ManagementService": "grpc-management",
            "StateService": "grpc-state"}


def _methods() -> list[tuple[ServiceDescriptor, MethodDescriptor]]:
    found: list[tuple[ServiceDescriptor, MethodDescriptor]] = []
    for module in (event_pb2, management_pb2, state_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            found.extend((service, method) for method in service.methods)
    return found


METHODS = _methods()
# A request without fields (ListApps) is one case: the surface's cases go to the others.
PER_SURFACE = {s: sum(1 for svc, m in METHODS if SURFACES[svc.name] == s and m.input_type.fields)
               for s in SURFACES.values()}


NUL_IDS = [("GetApp", "app_id"), ("ListFunctions", "app_id"), ("GetFunction", "function_id"),
           ("PauseFunction", "function_id"), ("ResumeFunction", "function_id"),
           ("GetRun", "run_id"), ("GetEvent", "event_id"), ("ListRuns", "function_id")]


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _check(target: Target, surface: str, what: str, call: Any) -> None:
    target.case(surface)
    try:
        call()
    except grpc.RpcError as e:
        code = e.code()
        if code in SERVER_FAULTS:
            target.fault(surface, f"{what} answered {code.name}: {e.details()}")


@pytest.mark.parametrize(("service", "method"), METHODS,
                         ids=[f"{s.name}.{m.name}" for s, m in METHODS])
def test_generated_requests_never_get_a_server_error(
    target: Target, service: ServiceDescriptor, method: MethodDescriptor
) -> None:
    surface = SURFACES[service.name]
    path = f"/{service.full_name}/{method.name}"
    reply_class = message_class(method.output_type)
    requests = messages(method.input_type)

    if method.client_streaming:
        stream = target.channel.stream_unary(path, request_serializer=_serialize,
                                             response_deserializer=reply_class.FromString)

        @fuzz_settings(PER_SURFACE[surface])
        @given(st.lists(requests, max_size=4))
        def streamed(batch: list[Message]) -> None:
            _check(target, surface, f"{method.name}({batch!r:.2000})",
                   lambda: stream(iter(batch), timeout=CALL_TIMEOUT_S))

        streamed()
    else:
        unary = target.channel.unary_unary(path, request_serializer=_serialize,
                                           response_deserializer=reply_class.FromString)

        @fuzz_settings(PER_SURFACE[surface])
        @given(requests)
        def called(request: Message) -> None:
            _check(target, surface, f"{method.name}({request!r:.2000})",
                   lambda: unary(request, timeout=CALL_TIMEOUT_S))

        called()


@pytest.mark.parametrize(("method", "field"), NUL_IDS, ids=[m for m, _ in NUL_IDS])
def test_a_nul_in_an_id_is_refused_not_an_unknown_error(
    target: Target, method: str, field: str
) -> None:
    # Found by the fuzzing: PostgreSQL text cannot hold NUL, and the id reached SQL unchecked.
    descriptor = management_pb2.DESCRIPTOR.services_by_name["ManagementService"]
    rpc = descriptor.methods_by_name[method]
    message = message_class(rpc.input_type)(**{field: "fn\x00"})
    call = target.channel.unary_unary(f"/{descriptor.full_name}/{method}",
                                      request_serializer=_serialize,
                                      response_deserializer=message_class(
                                          rpc.output_type).FromString)
    _check(target, "grpc-management", f"{method}({field}='fn\\x00')",
           lambda: call(message, timeout=CALL_TIMEOUT_S))


def test_the_server_is_alive_and_healthy_after_the_grpc_fuzzing(target: Target) -> None:
    target.assert_healthy()
