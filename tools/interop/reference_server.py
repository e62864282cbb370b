#!/usr/bin/env python3
"""A reference implementation of flowd's test-only Control service (and Health) on grpcio.

It is not flowd: it is the stock gRPC server doing what proto/flowd/testing/v1/control.proto
says, so that the interop suite itself can be checked against a known-good server:

    python3 tools/interop/reference_server.py --port 0 &      # prints "listening on 127.0.0.1:PORT"
    python3 tools/interop/grpc_interop.py --target 127.0.0.1:PORT

`make interop-selftest` does both. Every check of grpc_interop.py must pass here; a check that
fails against flowd but passes here points at flowd's transport, not at the suite.
"""

from __future__ import annotations

import argparse
import base64
import os
import signal
import sys
import threading
import time
from concurrent import futures

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import flowd_stubs  # noqa: E402


class Probes:
    """probe_key -> whether the handler saw its call end before it finished."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.cancelled: dict[str, bool] = {}

    def start(self, key: str) -> None:
        if key:
            with self.cond:
                self.cancelled[key] = False
                self.cond.notify_all()

    def mark(self, key: str) -> None:
        if key:
            with self.cond:
                self.cancelled[key] = True
                self.cond.notify_all()

    def wait(self, key: str, timeout_s: float) -> bool:
        with self.cond:
            self.cond.wait_for(lambda: self.cancelled.get(key, False), timeout=timeout_s)
            return self.cancelled.get(key, False)


def build(stubs):
    import grpc
    from google.protobuf import any_pb2, duration_pb2  # noqa: F401  (runtime's well-known types)
    from grpc_status import rpc_status

    cp, cg = stubs.control_pb2, stubs.control_pb2_grpc
    hp, hg = stubs.health_pb2, stubs.health_pb2_grpc
    ed, st = stubs.error_details_pb2, stubs.status_pb2
    probes = Probes()

    class Cancelled(Exception):
        pass

    def pause(context, key: str, seconds: float) -> None:
        end = time.monotonic() + seconds
        while True:
            if not context.is_active():
                probes.mark(key)
                raise Cancelled()
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.01))

    def echo_metadata(request, context) -> dict[str, str]:
        seen, initial, trailing = {}, [], []
        for key, value in context.invocation_metadata():
            seen[key] = value if isinstance(value, str) else base64.b64encode(value).decode()
            if key.startswith("x-echo-trailing-"):
                trailing.append((key, value))
            elif key.startswith("x-echo-"):
                initial.append((key, value))
        if initial:
            context.send_initial_metadata(initial)
        if trailing:
            context.set_trailing_metadata(trailing)
        return seen

    def maybe_fail(request, context) -> None:
        if not request.fail_code:
            return
        code = next(c for c in grpc.StatusCode if c.value[0] == request.fail_code)
        if not request.fail_with_details:
            context.abort(code, request.fail_message)
        details = [
            ed.ErrorInfo(reason="CONTROL_REQUESTED_FAILURE", domain="flowd",
                         metadata={"fail_code": str(request.fail_code)}),
            ed.RetryInfo(retry_delay={"seconds": 1, "nanos": 500_000_000}),
            ed.QuotaFailure(violations=[ed.QuotaFailure.Violation(
                subject="tenant:test", description="control quota")]),
            ed.BadRequest(field_violations=[ed.BadRequest.FieldViolation(
                field="fail_code", description="asked to fail")]),
        ]
        status = st.Status(code=request.fail_code, message=request.fail_message)
        for d in details:
            status.details.add().Pack(d)
        context.abort_with_status(rpc_status.to_status(status))

    def response(request, index: int, seen) -> object:
        payload = request.payload if request.echo_payload else b"\x00" * request.response_size
        return cp.ControlResponse(index=index, payload=payload, request_metadata=seen)

    class Control(cg.ControlServicer):
        def Unary(self, request, context):
            probes.start(request.probe_key)
            seen = echo_metadata(request, context) if request.echo_metadata else {}
            try:
                if request.sleep_ms:
                    pause(context, request.probe_key, request.sleep_ms / 1000)
            except Cancelled:
                return cp.ControlResponse()
            maybe_fail(request, context)
            return response(request, 0, seen)

        def ServerStream(self, request, context):
            probes.start(request.probe_key)
            seen = echo_metadata(request, context) if request.echo_metadata else {}
            try:
                if request.sleep_ms:
                    pause(context, request.probe_key, request.sleep_ms / 1000)
                for i in range(request.response_count):
                    if i and request.interval_ms:
                        pause(context, request.probe_key, request.interval_ms / 1000)
                    if not context.is_active():
                        probes.mark(request.probe_key)
                        return
                    yield response(request, i, seen)
            except Cancelled:
                return
            except GeneratorExit:
                # grpcio abandons the generator, without resuming it, when the call ends while
                # a message is being sent (a cancel right after the first message): the handler
                # saw its call end all the same.
                probes.mark(request.probe_key)
                raise
            maybe_fail(request, context)

        def AwaitCancellation(self, request, context):
            return cp.ProbeResponse(cancelled=probes.wait(request.probe_key, request.timeout_ms / 1000))

    known = {"": hp.HealthCheckResponse.SERVING,
             "grpc.health.v1.Health": hp.HealthCheckResponse.SERVING,
             "flowd.testing.v1.Control": hp.HealthCheckResponse.SERVING}

    class Health(hg.HealthServicer):
        def Check(self, request, context):
            if request.service not in known:
                context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service}")
            return hp.HealthCheckResponse(status=known[request.service])

        def Watch(self, request, context):
            yield hp.HealthCheckResponse(
                status=known.get(request.service, hp.HealthCheckResponse.SERVICE_UNKNOWN))
            while context.is_active():
                time.sleep(0.05)

    return Control(), Health()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)

    stubs = flowd_stubs.load()
    import grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=256),
                         options=[("grpc.so_reuseport", 0)])
    control, health = build(stubs)
    stubs.control_pb2_grpc.add_ControlServicer_to_server(control, server)
    stubs.health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_insecure_port(f"{args.host}:{args.port}")
    server.start()
    print(f"reference_server: listening on {args.host}:{port}", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    server.stop(grace=1).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
