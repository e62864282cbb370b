#!/usr/bin/env python3
"""Frame-level HTTP/2 checks of flowd's gRPC transport with the `h2` library (an independent
HTTP/2 implementation): what stock gRPC clients hide, such as the exact frames of a
Trailers-Only response, the RST_STREAM(NO_ERROR) after an early response, oversized header
lists, lying length prefixes, floods and graceful shutdown.

  h2_checks.py --target 127.0.0.1:PORT            run every check; prints PASS/FAIL lines and
                                                  'N passed, M failed'; exit 0 when all pass
  h2_checks.py --target 127.0.0.1:PORT --timeouts a server with short handshake/idle timeouts
                                                  closes silent and idle connections
  h2_checks.py --target 127.0.0.1:PORT --refused-key KEY
                                                  a well-formed but refused API key on gRPC and on
                                                  REST over h2c, each with a 4 MiB body: answered
                                                  UNAUTHENTICATED / 401 while the server gave the
                                                  stream no credit beyond its initial window; on
                                                  HTTP/1.1, answered 401 before the body ends
  h2_checks.py --target 127.0.0.1:PORT --drain    the graceful-shutdown client: starts a slow
                                                  server stream, prints READY after its first
                                                  message, then expects GOAWAY, the rest of the
                                                  stream with grpc-status 0, and the close

The Control requests are hand-encoded (a few varint fields), so nothing is generated.
"""
from __future__ import annotations

import argparse
import json
import socket
import struct
import sys
import time

import h2.config
import h2.connection
import h2.events
import h2.errors
import h2.settings

# A bound for a check that hangs, not a speed requirement: generous, so that a busy machine
# (a build on the same cores) does not fail a check that would pass.
DEADLINE_S = 30.0


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def control_request(response_count=0, response_size=0, fail_code=0, sleep_ms=0, interval_ms=0) -> bytes:
    """flowd.testing.v1.ControlRequest with the given varint fields (see control.proto)."""
    body = b""
    for number, value in ((1, response_count), (2, response_size), (5, fail_code), (8, sleep_ms), (9, interval_ms)):
        if value:
            body += varint(number << 3) + varint(value)
    return body


def frame(message: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(message)) + message


class Client:
    """One HTTP/2 connection; collects every event per stream."""

    def __init__(self, host: str, port: int, tolerate_goaway: bool = False):
        # h2 moves the whole connection to CLOSED on any GOAWAY and then rejects the frames of
        # streams still in flight, which a graceful GOAWAY(NO_ERROR) explicitly allows. With
        # tolerate_goaway, frames are fed one at a time and the connection is reopened after
        # such a GOAWAY, so the drain can be observed.
        self.tolerate_goaway = tolerate_goaway
        self.pending = b""
        self.sock = socket.create_connection((host, port), timeout=DEADLINE_S)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.flush()
        self.events: list = []
        self.closed = False

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, path: str, body: bytes | None, extra_headers=(), content_type="application/grpc",
                end_stream=True) -> int:
        stream_id = self.conn.get_next_available_stream_id()
        headers = [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "flowd.test"),
                   ("te", "trailers")]
        if content_type:
            headers.append(("content-type", content_type))
        headers.extend(extra_headers)
        self.conn.send_headers(stream_id, headers, end_stream=body is None and end_stream)
        if body is not None:
            self.conn.send_data(stream_id, body, end_stream=end_stream)
        self.flush()
        return stream_id

    def pump(self, until, timeout=DEADLINE_S):
        """Reads until `until(self)` is true, the connection closes, or the timeout."""
        deadline = time.monotonic() + timeout
        while not until(self):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.closed:
                return False
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except (socket.timeout, ConnectionResetError):
                return False
            if not data:
                self.closed = True
                return until(self)
            for event in self.receive(data):
                self.events.append(event)
                if isinstance(event, h2.events.DataReceived):
                    self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            self.flush()
        return True

    def receive(self, data: bytes) -> list:
        if not self.tolerate_goaway:
            return self.conn.receive_data(data)
        self.pending += data
        events = []
        while len(self.pending) >= 9:
            size = 9 + int.from_bytes(self.pending[:3], "big")
            if len(self.pending) < size:
                break
            frame_bytes, self.pending = self.pending[:size], self.pending[size:]
            batch = self.conn.receive_data(frame_bytes)
            events += batch
            if any(isinstance(e, h2.events.ConnectionTerminated) and e.error_code == 0 for e in batch):
                self.conn.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN
        return events

    def stream_events(self, stream_id):
        return [e for e in self.events if getattr(e, "stream_id", None) == stream_id]

    def stream_done(self, stream_id):
        return any(isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset)) for e in self.stream_events(stream_id))

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def headers_of(event) -> dict:
    return {k: v for k, v in event.headers}


class Checks:
    def __init__(self, host, port):
        self.host, self.port = host, port
        self.passed = self.failed = 0

    def record(self, ok, name, detail):
        print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)
        if ok:
            self.passed += 1
        else:
            self.failed += 1

    def run(self, name, fn):
        try:
            ok, detail = fn()
        except Exception as error:  # a check that crashes is a failed check
            ok, detail = False, f"{type(error).__name__}: {error}"
        self.record(ok, name, detail)

    def client(self):
        return Client(self.host, self.port)

    def trailers_only_layout(self):
        c = self.client()
        sid = c.request("/no.such.Service/Method", frame(b""))
        c.pump(lambda c: c.stream_done(sid))
        events = c.stream_events(sid)
        heads = [e for e in events if isinstance(e, h2.events.ResponseReceived)]
        data = [e for e in events if isinstance(e, h2.events.DataReceived)]
        ended = [e for e in events if isinstance(e, h2.events.StreamEnded)]
        c.close()
        if len(heads) != 1 or data or not ended or heads[0].stream_ended is None:
            return False, f"expected one HEADERS with END_STREAM, got {events}"
        h = headers_of(heads[0])
        ok = (h.get(":status") == "200" and h.get("content-type") == "application/grpc"
              and h.get("grpc-status") == "12" and "grpc-message" in h)
        return ok, f"one HEADERS+END_STREAM frame: {h}"

    def unsupported_media_type(self):
        c = self.client()
        sid = c.request("/grpc.health.v1.Health/Check", frame(b""), content_type="application/json")
        c.pump(lambda c: c.stream_done(sid))
        heads = [e for e in c.stream_events(sid) if isinstance(e, h2.events.ResponseReceived)]
        c.close()
        h = headers_of(heads[0]) if heads else {}
        return h.get(":status") == "415" and "grpc-status" in h, f"{h}"

    def header_list_too_large(self):
        c = self.client()
        big = [(f"x-big-{i}", "v" * 4000) for i in range(5)]  # about 20 KB > 16 KiB
        sid = c.request("/grpc.health.v1.Health/Check", frame(b""), extra_headers=big)
        c.pump(lambda c: c.stream_done(sid))
        heads = [e for e in c.stream_events(sid) if isinstance(e, h2.events.ResponseReceived)]
        h = headers_of(heads[0]) if heads else {}
        # The connection stays usable.
        sid2 = c.request("/grpc.health.v1.Health/Check", frame(b""))
        c.pump(lambda c: c.stream_done(sid2))
        after = [e for e in c.stream_events(sid2) if isinstance(e, (h2.events.TrailersReceived, h2.events.ResponseReceived))]
        status2 = [headers_of(e).get("grpc-status") for e in after if "grpc-status" in headers_of(e)]
        c.close()
        return h.get("grpc-status") == "8" and status2 == ["0"], f"oversized: {h.get('grpc-status')} {h.get('grpc-message')}; next call: {status2}"

    def lying_length_prefix(self):
        c = self.client()
        # Announces 100 MiB, sends 10 bytes, keeps the request open: the server must answer at once.
        sid = c.request("/flowd.testing.v1.Control/Unary", b"\x00" + struct.pack(">I", 100 << 20) + b"x" * 10,
                        end_stream=False)
        c.pump(lambda c: c.stream_done(sid), timeout=5)
        events = c.stream_events(sid)
        heads = [e for e in events if isinstance(e, h2.events.ResponseReceived)]
        resets = [e for e in events if isinstance(e, h2.events.StreamReset)]
        c.pump(lambda c: any(isinstance(e, h2.events.StreamReset) for e in c.stream_events(sid)), timeout=2)
        resets = [e for e in c.stream_events(sid) if isinstance(e, h2.events.StreamReset)]
        c.close()
        h = headers_of(heads[0]) if heads else {}
        rst = [r.error_code for r in resets]
        ok = h.get("grpc-status") == "8" and rst == [h2.errors.ErrorCodes.NO_ERROR]
        return ok, f"grpc-status {h.get('grpc-status')} ({h.get('grpc-message')}), then RST_STREAM {rst}"

    def bad_preface(self):
        s = socket.create_connection((self.host, self.port), timeout=DEADLINE_S)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"\x00" * 64)
        start = time.monotonic()
        data = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except (socket.timeout, ConnectionResetError):
            pass
        s.close()
        elapsed = time.monotonic() - start
        return elapsed < 5, f"connection closed after {elapsed:.2f}s ({len(data)} bytes sent back)"

    def reset_streams_then_call(self):
        c = self.client()
        for _ in range(50):
            sid = c.request("/flowd.testing.v1.Control/ServerStream", frame(control_request(response_count=1000, interval_ms=20)))
            c.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
        c.flush()
        sid = c.request("/grpc.health.v1.Health/Check", frame(b""))
        c.pump(lambda c: c.stream_done(sid))
        trailers = [headers_of(e) for e in c.stream_events(sid) if isinstance(e, h2.events.TrailersReceived)]
        c.close()
        return trailers and trailers[0].get("grpc-status") == "0", f"after 50 resets: {trailers}"

    def ping_flood(self):
        c = self.client()
        for i in range(1000):
            c.conn.ping(struct.pack(">Q", i))
        c.flush()
        c.pump(lambda c: any(isinstance(e, h2.events.ConnectionTerminated) for e in c.events), timeout=5)
        goaways = [e for e in c.events if isinstance(e, h2.events.ConnectionTerminated)]
        c.close()
        ok = bool(goaways) and goaways[0].error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
        return ok, f"{len(goaways)} GOAWAY: {[(g.error_code, g.additional_data) for g in goaways[:1]]}"

    def small_window_slow_reader(self):
        """A 32 KiB stream window, credit given back only in 64 KiB batches after a pause: h2
        raises FlowControlError if the server ever sends past the window."""
        c = self.client()
        c.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 32768})
        c.flush()
        count, size = 300, 4000
        sid = c.request("/flowd.testing.v1.Control/ServerStream", frame(control_request(response_count=count, response_size=size)))
        received = 0
        unacked = 0
        deadline = time.monotonic() + DEADLINE_S
        ended = False
        while not ended and time.monotonic() < deadline:
            c.sock.settimeout(deadline - time.monotonic())
            data = c.sock.recv(65536)
            if not data:
                break
            for event in c.conn.receive_data(data):  # raises on a flow-control violation
                c.events.append(event)
                if isinstance(event, h2.events.DataReceived):
                    received += len(event.data)
                    unacked += event.flow_controlled_length
                    c.conn.increment_flow_control_window(event.flow_controlled_length)  # connection credit at once
                if isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                    ended = True
            if unacked >= 16384 and not ended:
                time.sleep(0.02)  # a slow reader: credit comes back late, in batches
                c.conn.increment_flow_control_window(unacked, stream_id=sid)
                unacked = 0
            c.flush()
        trailers = [headers_of(e) for e in c.stream_events(sid) if isinstance(e, h2.events.TrailersReceived)]
        c.close()
        status = trailers[0].get("grpc-status") if trailers else None
        return status == "0" and received >= count * size, \
            f"{received} bytes ({count} messages) within a 32 KiB window, grpc-status {status}"

    def all(self):
        for name in ("small_window_slow_reader", "trailers_only_layout", "unsupported_media_type", "header_list_too_large",
                     "lying_length_prefix", "bad_preface", "reset_streams_then_call", "ping_flood"):
            self.run(name, getattr(self, name))
        print(f"{self.passed} passed, {self.failed} failed", flush=True)
        return 0 if self.failed == 0 else 1


def drain(host, port) -> int:
    """The graceful-shutdown client (see the module doc)."""
    c = Client(host, port, tolerate_goaway=True)
    count = 20
    sid = c.request("/flowd.testing.v1.Control/ServerStream", frame(control_request(response_count=count, interval_ms=50)))
    if not c.pump(lambda c: any(isinstance(e, h2.events.DataReceived) for e in c.stream_events(sid))):
        print("FAIL drain: no first message")
        return 1
    print("READY", flush=True)
    c.pump(lambda c: c.stream_done(sid) and c.closed, timeout=DEADLINE_S)
    goaways = [e for e in c.events if isinstance(e, h2.events.ConnectionTerminated)]
    data = b"".join(e.data for e in c.stream_events(sid) if isinstance(e, h2.events.DataReceived))
    messages = 0
    while len(data) >= 5:
        length = struct.unpack(">I", data[1:5])[0]
        data = data[5 + length:]
        messages += 1
    trailers = [headers_of(e) for e in c.stream_events(sid) if isinstance(e, h2.events.TrailersReceived)]
    status = trailers[0].get("grpc-status") if trailers else None
    ok = bool(goaways) and goaways[0].error_code == h2.errors.ErrorCodes.NO_ERROR and messages == count \
        and status == "0" and c.closed
    print(f"{'PASS' if ok else 'FAIL'} drain: GOAWAY {[(g.error_code, g.last_stream_id) for g in goaways]}, "
          f"{messages}/{count} messages, grpc-status {status}, connection closed: {c.closed}", flush=True)
    c.close()
    return 0 if ok else 1


def timeouts(host, port) -> int:
    """Against a server with short handshake and idle timeouts (about 0.3 s): a connection that
    sends nothing is closed, and an idle HTTP/2 connection receives GOAWAY(NO_ERROR) then EOF."""
    silent = socket.create_connection((host, port), timeout=DEADLINE_S)
    start = time.monotonic()
    closed = False
    try:
        while silent.recv(65536):  # the server's SETTINGS, then EOF
            pass
        closed = True
    except ConnectionResetError:
        closed = True
    except socket.timeout:
        pass
    silent_after = time.monotonic() - start
    silent.close()

    c = Client(host, port)
    start = time.monotonic()
    c.pump(lambda c: c.closed, timeout=DEADLINE_S)
    idle_after = time.monotonic() - start
    goaways = [e for e in c.events if isinstance(e, h2.events.ConnectionTerminated)]
    c.close()
    # With 0.3 s timeouts and a 2 s grace period: both close well before the grace deadline.
    ok = closed and silent_after < 1.5 and c.closed and bool(goaways) and goaways[0].error_code == 0 \
        and goaways[0].last_stream_id == 0 and idle_after < 1.5
    print(f"{'PASS' if ok else 'FAIL'} timeouts: silent connection closed after {silent_after:.2f}s; "
          f"idle connection got {[(g.error_code, g.last_stream_id) for g in goaways]} and closed after {idle_after:.2f}s",
          flush=True)
    return 0 if ok else 1


def refused_key(host, port, key) -> int:
    """A refused key is answered from the headers: the body (4 MiB announced, sent as fast as
    the server's credit allows) is never read beyond the stream's initial window."""
    checks = Checks(host, port)
    c = Client(host, port)
    c.pump(lambda c: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in c.events))
    window = c.conn.remote_settings.initial_window_size
    total = 4 * 1024 * 1024

    def upload(sid, first: bytes) -> int:
        """Sends `first` then zeros up to `total` bytes, as the windows allow, until the stream ends."""
        sent = 0
        while not c.stream_done(sid) and sent < total:
            room = min(c.conn.local_flow_control_window(sid), c.conn.max_outbound_frame_size, total - sent)
            if room > 0:
                chunk = first[sent:sent + room] if sent < len(first) else b""
                chunk += bytes(room - len(chunk))
                c.conn.send_data(sid, chunk)
                c.flush()
                sent += room
                continue
            credit = len([e for e in c.events if isinstance(e, h2.events.WindowUpdated)])
            if not c.pump(lambda c: c.stream_done(sid)
                          or len([e for e in c.events if isinstance(e, h2.events.WindowUpdated)]) > credit):
                break
        c.pump(lambda c: c.stream_done(sid))
        return sent

    def stream_credit(sid) -> int:
        return sum(e.delta for e in c.stream_events(sid) if isinstance(e, h2.events.WindowUpdated))

    def run_grpc():
        sid = c.request("/flowd.v1.Workflows/RunWorkflow", None, end_stream=False,
                        extra_headers=[("authorization", f"Bearer {key}")])
        sent = upload(sid, b"\x00" + struct.pack(">I", total - 5))
        heads = [headers_of(e) for e in c.stream_events(sid)
                 if isinstance(e, (h2.events.ResponseReceived, h2.events.TrailersReceived))]
        status = next((h.get("grpc-status") for h in heads if "grpc-status" in h), None)
        credit = stream_credit(sid)
        ok = status == "16" and credit == 0 and sent <= window
        return ok, (f"grpc-status {status} (16 = UNAUTHENTICATED) after {sent} body bytes sent "
                    f"(initial window {window}); stream credit given: {credit}")

    def run_rest():
        sid = c.request("/v1/workflows/run", None, end_stream=False, content_type="application/json",
                        extra_headers=[("authorization", f"Bearer {key}"), ("content-length", str(total))])
        sent = upload(sid, b'{"inputs": {}, "user": "u", "pad": "')
        events = c.stream_events(sid)
        head = next((headers_of(e) for e in events if isinstance(e, h2.events.ResponseReceived)), {})
        body = b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
        credit = stream_credit(sid)
        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
        ok = (head.get(":status") == "401" and credit == 0 and sent <= window
              and answer == {"code": "unauthorized", "message": "Access token is invalid", "status": 401})
        return ok, (f":status {head.get(':status')} {body!r} after {sent} body bytes sent "
                    f"(initial window {window}); stream credit given: {credit}")

    def run_health():
        # The refused streams' bytes go back to the connection's window: the credit arrives (the
        # server may send it after the refused stream ended: its body came after the answer) and
        # a call fits again.
        if not c.pump(lambda c: c.conn.outbound_flow_control_window >= 5):
            return False, f"connection window still {c.conn.outbound_flow_control_window} after {DEADLINE_S} s"
        sid = c.request("/grpc.health.v1.Health/Check", frame(b""))
        c.pump(lambda c: c.stream_done(sid))
        heads = [headers_of(e) for e in c.stream_events(sid)
                 if isinstance(e, (h2.events.ResponseReceived, h2.events.TrailersReceived))]
        status = next((h.get("grpc-status") for h in heads if "grpc-status" in h), None)
        return status == "0", f"Health/Check on the same connection: grpc-status {status}"

    def run_http1():
        # 1 MiB of a 4 MiB body, then nothing: a server that read the body before the key would
        # wait for the rest (and answer 408 at its idle timeout).
        sock = socket.create_connection((host, port), timeout=DEADLINE_S)
        head = (f"POST /v1/workflows/run HTTP/1.1\r\nHost: flowd.test\r\nAuthorization: Bearer {key}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {total}\r\n\r\n").encode()
        try:
            sock.sendall(head + b'{"inputs": {}, "user": "u", "pad": "' + bytes(1024 * 1024))
        except OSError:
            pass  # the server answered and closed while this was sent: its answer is read below
        answer = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            answer += chunk
        sock.close()
        head_text, _, body = answer.partition(b"\r\n\r\n")
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        ok = (head_text.startswith(b"HTTP/1.1 401") and b"connection: close" in head_text.lower()
              and parsed == {"code": "unauthorized", "message": "Access token is invalid", "status": 401})
        return ok, f"HTTP/1.1 with 1 MiB of a 4 MiB body sent: {head_text.splitlines()[:1]} {body!r}"

    checks.run("refused_key_grpc", run_grpc)
    checks.run("refused_key_rest_h2c", run_rest)
    checks.run("refused_key_connection_credit", run_health)
    c.close()
    checks.run("refused_key_rest_http1", run_http1)
    print(f"{checks.passed} passed, {checks.failed} failed", flush=True)
    return 0 if checks.failed == 0 else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", required=True)
    ap.add_argument("--drain", action="store_true", help="run the graceful-shutdown client")
    ap.add_argument("--timeouts", action="store_true",
                    help="check the handshake and idle timeouts of a server configured with short ones")
    ap.add_argument("--refused-key", help="a well-formed API key the server refuses")
    args = ap.parse_args()
    host, port = args.target.rsplit(":", 1)
    if args.refused_key:
        return refused_key(host, int(port), args.refused_key)
    if args.drain:
        return drain(host, int(port))
    if args.timeouts:
        return timeouts(host, int(port))
    return Checks(host, int(port)).all()


if __name__ == "__main__":
    sys.exit(main())
