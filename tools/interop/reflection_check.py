#!/usr/bin/env python3
"""gRPC server reflection against a real flowd server (issue 14), with no generated code:

- PyPI grpcio-reflection's client (`ProtoReflectionDescriptorDatabase`, v1alpha, one call per
  request) lists the services and fetches flowd.v1.Workflows' file descriptor; RunWorkflow is
  then called with message classes built only from the descriptors it obtained;
- grpc.reflection.v1 in lock step over ONE bidirectional stream (each request sent only after
  the previous answer arrived, as grpcurl does): list, a symbol's file with its dependencies,
  a dependency already sent, an unknown symbol (NOT_FOUND, the stream stays open), then a
  clean end; and a request without a oneof field (INVALID_ARGUMENT).

Prints PASS/FAIL lines and "N passed, M failed"; exits 0 only when everything passed.
"""
import argparse
import json
import queue
import sys

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from grpc_reflection.v1alpha.reflection_pb2 import ServerReflectionRequest, ServerReflectionResponse

from checklib import Report

EXPECTED_SERVICES = ["flowd.v1.Workflows", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
                     "grpc.reflection.v1alpha.ServerReflection"]


def expect(condition, message):
    if not condition:
        raise AssertionError(message)


def grpcio_reflection(channel, key):
    db = ProtoReflectionDescriptorDatabase(channel)
    services = sorted(db.get_services())
    expect(services == EXPECTED_SERVICES, services)
    file = db.FindFileContainingSymbol("flowd.v1.Workflows")
    expect(isinstance(file, descriptor_pb2.FileDescriptorProto) and file.name == "flowd/v1/workflows.proto", file.name)
    expect([m.name for m in file.service[0].method][:1] == ["RunWorkflow"], file.service)

    pool = descriptor_pool.DescriptorPool(db)
    method = pool.FindServiceByName("flowd.v1.Workflows").methods_by_name["RunWorkflow"]
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    blocking = method.input_type.fields_by_name["response_mode"].enum_type.values_by_name["RESPONSE_MODE_BLOCKING"].number
    call = channel.unary_unary("/flowd.v1.Workflows/RunWorkflow", request_serializer=request_class.SerializeToString,
                               response_deserializer=response_class.FromString)
    response = call(request_class(inputs_json=json.dumps({"steps": 2}), response_mode=blocking, user="reflection"),
                    metadata=[("authorization", f"Bearer {key}")], timeout=30)
    status = response.run.DESCRIPTOR.fields_by_name["status"].enum_type.values_by_number[response.run.status].name
    expect(status == "RUN_STATUS_SUCCEEDED" and response.created, response)
    expect(json.loads(response.run.outputs_json) == {"steps": 2}, response.run.outputs_json)
    return f"services {services}; {file.name} (deps {list(file.dependency)}); RunWorkflow -> run {response.run.id} {status}"


def v1_lock_step(channel):
    requests = queue.Queue()

    def feed():
        while True:
            item = requests.get()
            if item is None:
                return
            yield item

    call = channel.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                                 request_serializer=ServerReflectionRequest.SerializeToString,
                                 response_deserializer=ServerReflectionResponse.FromString)
    responses = call(feed(), timeout=30)
    seen = []

    def ask(**fields):
        request = ServerReflectionRequest(host="flowd", **fields)
        requests.put(request)
        response = next(responses)
        expect(response.valid_host == "flowd" and response.original_request == request, response)
        return response

    listed = ask(list_services="*").list_services_response
    expect(sorted(s.name for s in listed.service) == EXPECTED_SERVICES, listed)
    seen.append("list")
    files = ask(file_containing_symbol="flowd.v1.RunEvent").file_descriptor_response.file_descriptor_proto
    names = [descriptor_pb2.FileDescriptorProto.FromString(f).name for f in files]
    expect(names == ["flowd/v1/workflows.proto", "google/protobuf/timestamp.proto"], names)
    seen.append(f"symbol -> {names}")
    again = ask(file_by_filename="google/protobuf/timestamp.proto").file_descriptor_response.file_descriptor_proto
    expect([descriptor_pb2.FileDescriptorProto.FromString(f).name for f in again] == ["google/protobuf/timestamp.proto"], again)
    method = ask(file_containing_symbol="grpc.health.v1.Health.Watch").file_descriptor_response.file_descriptor_proto
    expect([descriptor_pb2.FileDescriptorProto.FromString(f).name for f in method] == ["grpc/health/v1/health.proto"], method)
    missing = ask(file_containing_symbol="no.such.Symbol")
    expect(missing.WhichOneof("message_response") == "error_response" and missing.error_response.error_code == 5, missing)
    seen.append("unknown symbol -> NOT_FOUND")
    extensions = ask(all_extension_numbers_of_type="flowd.v1.Run").all_extension_numbers_response
    expect(extensions.base_type_name == "flowd.v1.Run" and list(extensions.extension_number) == [], extensions)
    requests.put(None)
    rest = list(responses)
    expect(rest == [] and responses.code() == grpc.StatusCode.OK, (rest, responses.code()))
    seen.append("end OK")

    empty = call(iter([ServerReflectionRequest(host="x")]), timeout=10)
    try:
        list(empty)
        raise AssertionError("no error for a request without message_request")
    except grpc.RpcError as error:
        expect(error.code() == grpc.StatusCode.INVALID_ARGUMENT, error)
    seen.append("no oneof -> INVALID_ARGUMENT")
    return "; ".join(seen)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", required=True)
    ap.add_argument("--key", required=True)
    args = ap.parse_args()
    report = Report()
    with grpc.insecure_channel(args.target) as channel:
        for name, check in [("grpcio-reflection: list, Workflows' file, RunWorkflow through reflected descriptors only",
                             lambda: grpcio_reflection(channel, args.key)),
                            ("grpc.reflection.v1 in lock step over one bidirectional stream", lambda: v1_lock_step(channel))]:
            try:
                report.record(True, name, check())
            except Exception as error:  # noqa: BLE001 - every failure is reported
                report.record(False, name, repr(error))
    sys.exit(report.close())


if __name__ == "__main__":
    main()
