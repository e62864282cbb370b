#!/usr/bin/env python3
"""grpcio interop suite for flowd's gRPC transport.

Calls a running server with the stock Python client (grpcio) through stubs generated from
proto/ at run time (see flowd_stubs.py), and prints one line per check:

    PASS name: detail
    FAIL name: detail

and last a line `N passed, M failed`. Exit status 0 only when nothing failed.

The health checks work against `flowd serve`; every other check needs the test-only
`flowd.testing.v1.Control` service, which only the RPCServer test target's server registers
(the Swift test starts it on 127.0.0.1:0 and runs this script against it).

    python3 tools/interop/grpc_interop.py --target 127.0.0.1:PORT
    python3 tools/interop/grpc_interop.py --target 127.0.0.1:PORT --only health_check_serving,unary_echo_payload
    python3 tools/interop/grpc_interop.py --list
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import flowd_stubs  # noqa: E402
from checklib import CheckFailed, Report, add_suite_arguments, fail, one_line, rpc_error_text, run_suite  # noqa: E402,F401

MIB = 1 << 20
SPECIAL_MESSAGE = "\t\ntest with whitespace\r\nand Unicode BMP \u263a and non-BMP \U0001f608\t\n"


class Suite:
    def __init__(self, args, report: Report) -> None:
        self.args = args
        self.report = report
        self.stubs = None
        self.channel = None
        self.big_channel = None
        self.checks: list[tuple[list[str], object]] = []

    # -- plumbing ---------------------------------------------------------------------------

    def run_check(self, names: list[str], fn) -> None:
        """Runs fn. fn returns a detail string (one check) or a list of (name, ok, detail)."""
        import grpc

        self.report.current = names[0]
        try:
            result = fn()
        except CheckFailed as exc:
            for n in names:
                self.report.record(False, n, str(exc))
            return
        except grpc.RpcError as exc:
            for n in names:
                self.report.record(False, n, "unexpected RPC error: " + rpc_error_text(exc))
            return
        except Exception as exc:  # a bug in the check or a broken stub: still one line
            for n in names:
                self.report.record(False, n, f"{type(exc).__name__}: {exc}")
            return
        if isinstance(result, list):
            for n, ok, detail in result:
                self.report.record(ok, n, detail)
        else:
            self.report.record(True, names[0], result or "ok")

    def ctl(self, **fields):
        return self.stubs.control_pb2.ControlRequest(**fields)

    def expect_error(self, call_fn, code, what: str):
        import grpc

        try:
            result = call_fn()
        except grpc.RpcError as err:
            if err.code() != code:
                fail(f"{what}: want {code.name}, got {rpc_error_text(err)}")
            return err
        fail(f"{what}: want {code.name}, got OK ({one_line(repr(result), 120)})")

    # -- checks -----------------------------------------------------------------------------

    def c_connect(self):
        import grpc

        t0 = time.monotonic()
        try:
            grpc.channel_ready_future(self.channel).result(timeout=self.args.connect_timeout)
        except grpc.FutureTimeoutError:
            fail(f"channel to {self.args.target} not ready within {self.args.connect_timeout} s")
        return f"channel to {self.args.target} ready in {time.monotonic() - t0:.3f} s"

    def c_health_check_serving(self):
        h = self.stubs.health_pb2
        resp = self.health.Check(h.HealthCheckRequest(service=""), timeout=5)
        if resp.status != h.HealthCheckResponse.SERVING:
            fail(f"Check('') = {h.HealthCheckResponse.ServingStatus.Name(resp.status)}, want SERVING")
        return "Check('') = SERVING"

    def c_health_check_not_found(self):
        import grpc

        h = self.stubs.health_pb2
        err = self.expect_error(
            lambda: self.health.Check(h.HealthCheckRequest(service="no.such.Service"), timeout=5),
            grpc.StatusCode.NOT_FOUND, "Check('no.such.Service')")
        return f"Check('no.such.Service') -> {rpc_error_text(err)}"

    def c_health_watch_serving(self):
        import grpc

        h = self.stubs.health_pb2
        call = self.health.Watch(h.HealthCheckRequest(service=""), timeout=10)
        try:
            first = next(call)
        finally:
            call.cancel()
        if first.status != h.HealthCheckResponse.SERVING:
            fail(f"first Watch('') message = {h.HealthCheckResponse.ServingStatus.Name(first.status)}")
        code = call.code()
        if code != grpc.StatusCode.CANCELLED:
            fail(f"first message SERVING, but after cancel() the call ended {code.name}")
        return "first message SERVING; cancelled by the client"

    def c_health_watch_service_unknown(self):
        import grpc

        h = self.stubs.health_pb2
        # The server never ends this call. Proof that it stays open: a Check sent after the
        # first message is answered on the same connection while the watch still has no status
        # (frames on one connection are ordered, so trailers sent before that answer would have
        # arrived first). The deadline only bounds a hang.
        call = self.health.Watch(h.HealthCheckRequest(service="no.such.Service"), timeout=30)
        try:
            first = next(call)
            later = self.health.Check(h.HealthCheckRequest(service=""), timeout=30)
            still_open = call.is_active()
        finally:
            call.cancel()
        name = h.HealthCheckResponse.ServingStatus.Name(first.status)
        if first.status != h.HealthCheckResponse.SERVICE_UNKNOWN:
            fail(f"first message {name}, want SERVICE_UNKNOWN")
        if not still_open:
            fail(f"first message SERVICE_UNKNOWN, then the server ended the call ({call.code().name}); want it open")
        if call.code() != grpc.StatusCode.CANCELLED:
            fail(f"after cancel() the call ended {call.code().name}, want CANCELLED")
        return (f"first message SERVICE_UNKNOWN; still open after a later Check answered "
                f"{h.HealthCheckResponse.ServingStatus.Name(later.status)}; cancelled by the client")

    def c_unary_empty(self):
        resp = self.control.Unary(self.ctl(), timeout=5)
        if resp.ByteSize() != 0:
            fail(f"default request answered with a non-empty response ({resp.ByteSize()} bytes)")
        return "empty request (zero-length message) -> empty response"

    def c_unary_echo_payload(self):
        payload = os.urandom(1024) + b"\x00flowd\x00"
        resp = self.control.Unary(self.ctl(echo_payload=True, payload=payload), timeout=5)
        if resp.payload != payload:
            fail(f"payload differs: sent {len(payload)} bytes, got {len(resp.payload)}")
        return f"{len(payload)}-byte payload echoed intact"

    def c_unary_echo_metadata(self):
        names = ["unary_echo_metadata_request", "unary_echo_metadata_initial",
                 "unary_echo_metadata_trailing_bin"]
        md = (("x-echo-foo", "bar"), ("x-echo-trailing-bin", b"\xab\xab\xab"))
        resp, call = self.control.Unary.with_call(
            self.ctl(echo_metadata=True), metadata=md, timeout=5)
        results = []
        got = dict(resp.request_metadata)
        ok = got.get("x-echo-foo") == "bar"
        results.append((names[0], ok,
                        f"response.request_metadata[x-echo-foo] = {got.get('x-echo-foo')!r}"
                        + ("" if ok else f"; request_metadata = {got!r}")))
        initial = list(call.initial_metadata() or [])
        ok = ("x-echo-foo", "bar") in initial
        results.append((names[1], ok, f"initial metadata {'has' if ok else 'lacks'} x-echo-foo: bar"
                        + ("" if ok else f"; got {initial!r}")))
        trailing = list(call.trailing_metadata() or [])
        ok = ("x-echo-trailing-bin", b"\xab\xab\xab") in trailing
        results.append((names[2], ok, f"trailing metadata {'has' if ok else 'lacks'} "
                        "x-echo-trailing-bin: b'\\xab\\xab\\xab'"
                        + ("" if ok else f"; got {trailing!r}")))
        return results

    def c_server_stream_5(self):
        got = [m.index for m in self.control.ServerStream(self.ctl(response_count=5), timeout=10)]
        if got != list(range(5)):
            fail(f"indices {got}, want [0..4]")
        return "5 messages, index 0..4"

    def c_error_details(self):
        import grpc
        from google.protobuf import text_format
        from grpc_status import rpc_status

        ed = self.stubs.error_details_pb2
        names = ["error_status_message", "error_status_details"]
        err = None
        try:
            self.control.Unary(self.ctl(fail_code=8, fail_message=SPECIAL_MESSAGE,
                                        fail_with_details=True), timeout=5)
        except grpc.RpcError as e:
            err = e
        if err is None:
            return [(n, False, "call succeeded; want RESOURCE_EXHAUSTED") for n in names]
        results = []
        ok = err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and err.details() == SPECIAL_MESSAGE
        results.append((names[0], ok,
                        f"{err.code().name} with message {err.details()!r}"
                        + ("" if ok else f"; want RESOURCE_EXHAUSTED {SPECIAL_MESSAGE!r}")))
        try:
            status = rpc_status.from_call(err)
        except ValueError as exc:  # code or message in the Status differ from the call's
            results.append((names[1], False, f"grpc-status-details-bin disagrees with the call: {exc}"))
            return results
        if status is None:
            results.append((names[1], False, "no grpc-status-details-bin in the trailers"))
            return results
        wanted = [("ErrorInfo", ed.ErrorInfo), ("RetryInfo", ed.RetryInfo),
                  ("QuotaFailure", ed.QuotaFailure), ("BadRequest", ed.BadRequest)]
        found, problems = [], []
        for label, cls in wanted:
            any_msg = next((a for a in status.details if a.Is(cls.DESCRIPTOR)), None)
            if any_msg is None:
                problems.append(f"no {label}")
                continue
            msg = cls()
            if not any_msg.Unpack(msg):
                problems.append(f"{label} does not unpack")
                continue
            if label == "ErrorInfo" and not msg.domain:
                problems.append("ErrorInfo.domain is empty")
            found.append(f"{label}{{{text_format.MessageToString(msg, as_one_line=True)}}}")
        others = [a.type_url for a in status.details
                  if not any(a.Is(cls.DESCRIPTOR) for _, cls in wanted)]
        detail = f"Status(code={status.code}) details: " + " ".join(found)
        if others:
            detail += f" other: {others}"
        if problems:
            detail = "; ".join(problems) + " | " + detail
        results.append((names[1], not problems, detail))
        return results

    def c_server_stream_error(self):
        import grpc

        got = []
        call = self.control.ServerStream(
            self.ctl(response_count=3, fail_code=9, fail_message="precondition failed"), timeout=10)
        try:
            for m in call:
                got.append(m.index)
        except grpc.RpcError as err:
            if got != [0, 1, 2] or err.code() != grpc.StatusCode.FAILED_PRECONDITION:
                fail(f"indices {got} then {rpc_error_text(err)}; want [0, 1, 2] then FAILED_PRECONDITION")
            return f"3 messages then {rpc_error_text(err)}"
        fail(f"indices {got} then OK; want [0, 1, 2] then FAILED_PRECONDITION")

    def c_deadline(self):
        import grpc

        names = ["deadline_exceeded", "deadline_server_cancel"]
        key = "deadline-" + uuid.uuid4().hex
        t0 = time.monotonic()
        err = self.expect_error(
            lambda: self.control.Unary(self.ctl(sleep_ms=5000, probe_key=key), timeout=0.3),
            grpc.StatusCode.DEADLINE_EXCEEDED, "Unary(sleep_ms=5000) with a 0.3 s deadline")
        elapsed = time.monotonic() - t0
        results = [(names[0], elapsed < 3.0,
                    f"{rpc_error_text(err)} after {elapsed:.3f} s (limit 3 s)")]
        probe = self.control.AwaitCancellation(
            self.stubs.control_pb2.ProbeRequest(probe_key=key, timeout_ms=5000), timeout=10)
        results.append((names[1], probe.cancelled,
                        f"AwaitCancellation({key}) -> cancelled={probe.cancelled} "
                        "(the handler saw its grpc-timeout deadline)"))
        return results

    def c_cancel(self):
        import grpc

        names = ["cancel_local_status", "cancel_observed_by_server"]
        key = "cancel-" + uuid.uuid4().hex
        call = self.control.ServerStream(
            self.ctl(response_count=1000, interval_ms=50, probe_key=key), timeout=60)
        try:
            first = next(call)
        finally:
            call.cancel()
        code = call.code()
        results = [(names[0], code == grpc.StatusCode.CANCELLED,
                    f"first message index {first.index}, then cancel(): call ended {code.name}")]
        t0 = time.monotonic()
        probe = self.control.AwaitCancellation(
            self.stubs.control_pb2.ProbeRequest(probe_key=key, timeout_ms=5000), timeout=10)
        results.append((names[1], probe.cancelled,
                        f"AwaitCancellation -> cancelled={probe.cancelled} "
                        f"after {time.monotonic() - t0:.3f} s"))
        return results

    def c_unimplemented_method(self):
        import grpc

        rpc = self.channel.unary_unary("/flowd.testing.v1.Control/Nope")
        err = self.expect_error(lambda: rpc(b"", timeout=5), grpc.StatusCode.UNIMPLEMENTED,
                                "/flowd.testing.v1.Control/Nope")
        return f"/flowd.testing.v1.Control/Nope -> {rpc_error_text(err)}"

    def c_unimplemented_service(self):
        import grpc

        rpc = self.channel.unary_unary("/no.such.Service/Method")
        err = self.expect_error(lambda: rpc(b"", timeout=5), grpc.StatusCode.UNIMPLEMENTED,
                                "/no.such.Service/Method")
        return f"/no.such.Service/Method -> {rpc_error_text(err)}"

    def c_message_5mib(self):
        import grpc

        payload = b"\x00" * (5 * MIB)
        t0 = time.monotonic()
        err = self.expect_error(
            lambda: self.big_control.Unary(self.ctl(payload=payload), timeout=30),
            grpc.StatusCode.RESOURCE_EXHAUSTED, "Unary with a 5 MiB payload")
        return f"5 MiB request -> {rpc_error_text(err)} in {time.monotonic() - t0:.3f} s"

    def c_message_3mib(self):
        payload = os.urandom(3 * MIB)
        t0 = time.monotonic()
        resp = self.big_control.Unary(self.ctl(echo_payload=True, payload=payload), timeout=30)
        if resp.payload != payload:
            fail(f"3 MiB echo differs: got {len(resp.payload)} bytes")
        return f"3 MiB payload echoed intact in {time.monotonic() - t0:.3f} s"

    def _stream_in_order(self, count: int, size: int, pause_every: int = 0, pause_s: float = 0.0):
        t0 = time.monotonic()
        n = 0
        call = self.control.ServerStream(self.ctl(response_count=count, response_size=size), timeout=120)
        for m in call:
            if m.index != n:
                call.cancel()
                fail(f"message {n} has index {m.index}")
            if len(m.payload) != size:
                call.cancel()
                fail(f"message {n} has a {len(m.payload)}-byte payload, want {size}")
            n += 1
            if pause_every and n % pause_every == 0:
                time.sleep(pause_s)
        if n != count:
            fail(f"{n} messages, want {count}")
        elapsed = time.monotonic() - t0
        return n, elapsed

    def c_flow_control_10000(self):
        n, elapsed = self._stream_in_order(10000, 1024)
        return f"{n} x 1 KiB messages in order in {elapsed:.2f} s ({n / elapsed:.0f} msg/s)"

    def c_flow_control_slow_reader(self):
        n, elapsed = self._stream_in_order(2000, 16384, pause_every=200, pause_s=0.25)
        return (f"{n} x 16 KiB messages ({n * 16384 / MIB:.0f} MiB) in order in {elapsed:.2f} s, "
                "reader paused 0.25 s every 200 messages")

    def c_concurrent_unary_200(self):
        import grpc

        t0 = time.monotonic()
        futures = [self.control.Unary.future(self.ctl(echo_payload=True, payload=f"call-{i}".encode()),
                                             timeout=60) for i in range(200)]
        bad = []
        for i, fut in enumerate(futures):
            try:
                resp = fut.result()
                if resp.payload != f"call-{i}".encode():
                    bad.append(f"#{i}: payload {resp.payload[:20]!r}")
            except grpc.RpcError as err:
                bad.append(f"#{i}: {rpc_error_text(err)}")
        if bad:
            fail(f"{len(bad)} of 200 failed: " + "; ".join(bad[:5]))
        return f"200 concurrent Unary calls on one channel OK in {time.monotonic() - t0:.2f} s"

    # -- order ------------------------------------------------------------------------------

    def plan(self):
        c = self
        return [
            (["connect"], c.c_connect),
            (["health_check_serving"], c.c_health_check_serving),
            (["health_check_not_found"], c.c_health_check_not_found),
            (["health_watch_serving"], c.c_health_watch_serving),
            (["health_watch_service_unknown"], c.c_health_watch_service_unknown),
            (["unary_empty"], c.c_unary_empty),
            (["unary_echo_payload"], c.c_unary_echo_payload),
            (["unary_echo_metadata_request", "unary_echo_metadata_initial",
              "unary_echo_metadata_trailing_bin"], c.c_unary_echo_metadata),
            (["server_stream_5"], c.c_server_stream_5),
            (["error_status_message", "error_status_details"], c.c_error_details),
            (["server_stream_error"], c.c_server_stream_error),
            (["deadline_exceeded", "deadline_server_cancel"], c.c_deadline),
            (["cancel_local_status", "cancel_observed_by_server"], c.c_cancel),
            (["unimplemented_method"], c.c_unimplemented_method),
            (["unimplemented_service"], c.c_unimplemented_service),
            (["message_5mib_rejected"], c.c_message_5mib),
            (["message_3mib_echo"], c.c_message_3mib),
            (["flow_control_10000"], c.c_flow_control_10000),
            (["flow_control_slow_reader"], c.c_flow_control_slow_reader),
            (["concurrent_unary_200"], c.c_concurrent_unary_200),
        ]

    # Checks that fail against flowd for a reason not yet understood; skipped (and listed as
    # SKIP) unless named with --only or --include-known-issues. Each names where it is tracked.
    KNOWN_ISSUES: dict[str, str] = {
        # (none now) flow_control_slow_reader was listed here: grpcio saw "frame of size 16384
        # overflows local window". The cause was flowd's: a flush re-entered from
        # channelWritabilityChanged wrote the same output bytes twice.
    }

    def run(self) -> None:
        plan = self.plan()
        if not self.args.only and not self.args.include_known_issues:
            for names, _ in plan:
                for n in names:
                    if n in self.KNOWN_ISSUES:
                        print(f"SKIP {n}: known issue: {self.KNOWN_ISSUES[n]}", flush=True)
            plan = [(names, fn) for names, fn in plan if not set(names) & set(self.KNOWN_ISSUES)]
        if self.args.only:
            wanted = set(self.args.only.split(","))
            known = {n for names, _ in plan for n in names}
            unknown = wanted - known
            if unknown:
                self.report.record(False, "arguments", f"unknown check(s) {sorted(unknown)}; see --list")
                return
            plan = [(names, fn) for names, fn in plan if wanted & set(names)]

        self.report.current = "stubs"
        try:
            self.stubs = flowd_stubs.load(self.args.proto_dir, self.args.keep_stubs)
        except Exception as exc:
            self.report.record(False, "stubs", f"{type(exc).__name__}: {exc}")
            return
        import grpc

        methods = [m.name for m in self.stubs.workflows_pb2.DESCRIPTOR.services_by_name["Workflows"].methods]
        self.report.record(True, "stubs",
                           f"generated from proto/ with grpcio-tools (grpcio {grpc.__version__}); "
                           f"flowd.v1.Workflows has {', '.join(methods)}")

        self.channel = grpc.insecure_channel(self.args.target)
        self.big_channel = grpc.insecure_channel(self.args.target, options=[
            ("grpc.max_send_message_length", 16 * MIB),
            ("grpc.max_receive_message_length", 16 * MIB),
        ])
        self.health = self.stubs.health_pb2_grpc.HealthStub(self.channel)
        self.control = self.stubs.control_pb2_grpc.ControlStub(self.channel)
        self.big_control = self.stubs.control_pb2_grpc.ControlStub(self.big_channel)
        try:
            for names, fn in plan:
                failed_before = self.report.failed
                self.run_check(names, fn)
                if names == ["connect"] and self.report.failed > failed_before:
                    break  # nothing else can pass; the FAIL line says why
        finally:
            self.channel.close()
            self.big_channel.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", help="host:port of the server, e.g. 127.0.0.1:50051")
    ap.add_argument("--include-known-issues", action="store_true",
                    help="also run the checks listed in Suite.KNOWN_ISSUES")
    add_suite_arguments(ap)
    args = ap.parse_args(argv)
    return run_suite(ap, args, Suite)


if __name__ == "__main__":
    sys.exit(main())
