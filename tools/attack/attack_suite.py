#!/usr/bin/env python3
"""The hostile-client suite (issue 11): each case attacks a real `flowd serve` on 127.0.0.1 the
way a peer that wants to exhaust it would, then checks the server's answer (GOAWAY code,
RST_STREAM code, grpc-status), that a normal client is served meanwhile, and the server's
resident memory (VmRSS of the flowd process, before / peak / after).

  attack_suite.py --flowd .build/debug/flowd            every case; one line per case, then a
                                                        table of RSS figures; exit 0 when all pass
  attack_suite.py --flowd ... --only memory_one_connection   one case (repeatable)

Loopback only; every loop is bounded in count and in time (DEADLINE_S per wait). Each case
starts its own server with the flags it tests (short timeouts), in a temporary data directory.
Needs the PyPI packages h2 and hyperframe (tools/install-deps.sh).
"""
from __future__ import annotations

import argparse
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hpack
import hyperframe.frame

# A bound for a wait that hangs, not a speed requirement.
DEADLINE_S = 60.0
MIB = 1 << 20
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
HEALTH_WATCH = "/grpc.health.v1.Health/Watch"
RUN_WORKFLOW = "/flowd.v1.Workflows/RunWorkflow"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | 0x80 if value else byte)
        if not value:
            return bytes(out)


def health_request(service: str = "") -> bytes:
    raw = service.encode()
    return (b"\x0a" + varint(len(raw)) + raw) if raw else b""


def frame(message: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(message)) + message


# ---------------------------------------------------------------------------------------------
# The server under attack


class Server:
    """`flowd serve` on 127.0.0.1:0 with `flags`, in a temporary data directory."""

    def __init__(self, flowd: str, flags: list[str], with_key: bool = False):
        self.dir = tempfile.mkdtemp(prefix="flowd-attack-")
        # A valid API key (workflow hello), for cases whose requests must pass the key check.
        self.key = None
        if with_key:
            self.key = subprocess.run([flowd, "keys", "create", "--tenant", "attack", "--workflow", "hello",
                                       "--data-dir", self.dir], capture_output=True, text=True, check=True,
                                      timeout=DEADLINE_S).stdout.strip()
        args = [flowd, "serve", "--host", "127.0.0.1", "--port", "0", "--data-dir", self.dir,
                "--workflows", os.path.join(REPO, "examples", "workflows"), "--log-level", "error", *flags]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + DEADLINE_S
        self.port = None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if line.startswith("flowd: listening on "):
                self.port = int(line.strip().rsplit(":", 1)[1])
                break
        if self.port is None:
            self.stop()
            raise RuntimeError("flowd did not start: " + " ".join(args))
        # Drain the rest of the output so the server never blocks on a full pipe.
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()

    def rss_mib(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=DEADLINE_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class RSSSampler:
    """Samples the server's RSS every 50 ms in a thread; `peak` is the largest sample."""

    def __init__(self, server: Server):
        self.server = server
        self.peak = server.rss_mib()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stopped.wait(0.05):
            try:
                self.peak = max(self.peak, self.server.rss_mib())
            except OSError:
                return

    def stop(self) -> float:
        self.stopped.set()
        self.thread.join()
        return self.peak


# ---------------------------------------------------------------------------------------------
# A frame-level client


class Client:
    """One HTTP/2 connection driven by the `h2` state machine; events are kept per stream."""

    def __init__(self, port: int, settings: dict | None = None, read_timeout: float = DEADLINE_S):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=read_timeout)
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config)
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        self.flush()
        self.events: list = []
        self.closed = False
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.resets: dict[int, int] = {}
        self.headers: dict[int, list[dict]] = {}
        self.ended: set[int] = set()
        self.protocol_errors: list = []

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def ready(self):
        """Waits for the server's SETTINGS (its windows and limits)."""
        self.pump(lambda c: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in c.events), timeout=10)

    def open(self, path: str, end_stream: bool = False, extra=(), body: bytes | None = None, flush: bool = True) -> int:
        stream_id = self.conn.get_next_available_stream_id()
        headers = [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "flowd.test"),
                   ("te", "trailers"), ("content-type", "application/grpc"), *extra]
        self.conn.send_headers(stream_id, headers, end_stream=end_stream and body is None)
        if body is not None:
            size = self.conn.max_outbound_frame_size
            chunks = [body[i:i + size] for i in range(0, len(body), size)] or [b""]
            for index, chunk in enumerate(chunks):
                self.conn.send_data(stream_id, chunk, end_stream=end_stream and index == len(chunks) - 1)
        if flush:
            self.flush()
        return stream_id

    def status(self, stream_id: int) -> str | None:
        for block in self.headers.get(stream_id, []):
            if "grpc-status" in block:
                return block["grpc-status"]
        return None

    def message(self, stream_id: int) -> str:
        for block in self.headers.get(stream_id, []):
            if "grpc-message" in block:
                return block["grpc-message"]
        return ""

    def done(self, stream_id: int) -> bool:
        return stream_id in self.ended or stream_id in self.resets

    def receive_once(self, timeout: float) -> bool:
        """Reads what arrives within `timeout`; False once the connection is closed."""
        if self.closed:
            return False
        ready, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        if not ready:
            return True
        try:
            data = self.sock.recv(1 << 20)
        except (ConnectionResetError, socket.timeout, OSError):
            self.closed = True
            return False
        if not data:
            self.closed = True
            return False
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as error:
            # h2 refuses what it did not expect (frames for streams it never saw, after raw
            # frames were sent); the frames are still there: look for a GOAWAY among them.
            events = []
            self.protocol_errors.append(error)
            self.scan_goaway(data)
        for event in events:
            self.events.append(event)
            if isinstance(event, h2.events.ResponseReceived) or isinstance(event, h2.events.TrailersReceived):
                self.headers.setdefault(event.stream_id, []).append(dict(event.headers))
            elif isinstance(event, h2.events.StreamEnded):
                self.ended.add(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                self.resets[event.stream_id] = int(event.error_code)
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.goaway = event
            elif isinstance(event, h2.events.DataReceived):
                try:
                    self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                    pass
        try:
            self.flush()
        except OSError:
            self.closed = True
        return True

    def scan_goaway(self, data: bytes):
        """Finds a GOAWAY frame in raw bytes (after h2 gave up on the connection)."""
        offset = 0
        while offset + 9 <= len(data):
            length = int.from_bytes(data[offset:offset + 3], "big")
            kind = data[offset + 3]
            if kind == 0x7 and offset + 9 + length <= len(data):
                payload = data[offset + 9:offset + 9 + length]
                self.goaway = h2.events.ConnectionTerminated()
                self.goaway.last_stream_id = int.from_bytes(payload[0:4], "big") & 0x7FFFFFFF
                self.goaway.error_code = int.from_bytes(payload[4:8], "big")
                self.goaway.additional_data = payload[8:]
                return
            offset += 9 + length

    def pump(self, until, timeout: float = DEADLINE_S) -> bool:
        deadline = time.monotonic() + timeout
        while not until(self):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if not self.receive_once(min(remaining, 0.2)) and not until(self):
                return False
        return True

    def send_raw(self, data: bytes):
        self.sock.sendall(data)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def normal_call(port: int) -> str | None:
    """A well-behaved Health/Check on a fresh connection; its grpc-status."""
    try:
        client = Client(port, read_timeout=DEADLINE_S)
        stream = client.open(HEALTH_CHECK, end_stream=True, body=frame(health_request()))
        client.pump(lambda c: c.done(stream))
        status = client.status(stream)
        client.close()
        return status
    except OSError as error:
        return f"error {error}"


def metric(port: int, series: str) -> float | None:
    """One series of GET /metrics (HTTP/1.1), or None."""
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=DEADLINE_S) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(series + " "):
                return float(line.split()[-1])
    return None


def upload(client: Client, streams: list[int], per_stream: int, stop: threading.Event | None = None,
           timeout: float = DEADLINE_S) -> dict[int, int]:
    """Sends `per_stream` bytes on every stream as the windows allow, never END_STREAM, until
    each stream has sent them all or was answered; returns the bytes sent per stream."""
    sent = {s: 0 for s in streams}
    chunk = b"\x00" * 16384
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not client.closed and not (stop and stop.is_set()):
        progressed = False
        for s in streams:
            if client.done(s) or sent[s] >= per_stream:
                continue
            try:
                window = min(client.conn.local_flow_control_window(s), client.conn.max_outbound_frame_size)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError, KeyError):
                continue
            n = min(window, per_stream - sent[s])
            if n <= 0:
                continue
            try:
                client.conn.send_data(s, chunk[:n] if n <= len(chunk) else b"\x00" * n)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError, h2.exceptions.FlowControlError):
                continue
            sent[s] += n
            progressed = True
        try:
            client.flush()
        except OSError:
            client.closed = True
            break
        if all(client.done(s) or sent[s] >= per_stream for s in streams):
            break
        client.receive_once(0.0 if progressed else 0.05)
    return sent


# ---------------------------------------------------------------------------------------------
# The cases


class Suite:
    def __init__(self, flowd: str):
        self.flowd = flowd
        self.results: list[tuple[str, bool, str]] = []
        self.rss: list[tuple[str, float, float, float]] = []

    def server(self, *flags: str, with_key: bool = False) -> Server:
        return Server(self.flowd, list(flags), with_key=with_key)

    def check(self, name: str, ok: bool, detail: str):
        self.results.append((name, ok, detail))
        print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)

    def measure(self, name: str, server: Server, before: float, peak: float):
        time.sleep(1.0)  # let closes and frees land
        after = server.rss_mib()
        self.rss.append((name, before, peak, after))
        return after

    # -- memory ---------------------------------------------------------------------------------

    def memory_one_connection(self):
        """100 streams x 4 MiB messages without END_STREAM on one unauthenticated connection."""
        server = self.server()
        try:
            assert normal_call(server.port) == "0"
            before = server.rss_mib()
            sampler = RSSSampler(server)
            client = Client(server.port)
            streams = [client.open(HEALTH_CHECK, body=struct.pack(">BI", 0, 4 * MIB)) for _ in range(100)]
            sent = upload(client, streams, 4 * MIB - 5, timeout=240)
            served = normal_call(server.port)
            client.pump(lambda c: all(c.done(s) for s in streams), timeout=5)
            exhausted = sum(1 for s in streams if client.status(s) == "8")
            total = sum(sent.values())
            client.close()
            peak = sampler.stop()
            after = self.measure("100 streams x 4 MiB, one connection", server, before, peak)
            ok = peak - before < 64 and after - before < 16 and served == "0" and exhausted > 0 and server.alive()
            self.check("memory_one_connection", ok,
                       f"sent {total / MIB:.0f} MiB on 100 streams; {exhausted} streams answered grpc-status 8 "
                       f"(RESOURCE_EXHAUSTED); normal call grpc-status {served}; RSS {before:.0f} -> peak "
                       f"{peak:.0f} (+{peak - before:.0f} MiB, bound 64) -> after close {after:.0f} MiB (bound +16)")
        finally:
            server.stop()

    def memory_twenty_connections(self):
        """20 connections at once, each with 100 streams of partial messages (no END_STREAM)."""
        server = self.server()
        try:
            assert normal_call(server.port) == "0"
            before = server.rss_mib()
            sampler = RSSSampler(server)
            per_stream = 256 * 1024  # 25 MiB per connection, 500 MiB offered in total
            totals = [0] * 20
            statuses = [0] * 20
            clients: list[Client] = []

            def attack(index: int):
                client = Client(server.port)
                clients.append(client)
                streams = [client.open(HEALTH_CHECK, body=struct.pack(">BI", 0, 4 * MIB)) for _ in range(100)]
                totals[index] = sum(upload(client, streams, per_stream, timeout=180).values())
                statuses[index] = sum(1 for s in streams if client.status(s) == "8")

            threads = [threading.Thread(target=attack, args=(i,)) for i in range(20)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=240)
            served = normal_call(server.port)
            for client in clients:
                client.close()
            peak = sampler.stop()
            after = self.measure("20 connections x 100 streams (25 MiB each)", server, before, peak)
            ok = peak - before < 512 and after - before < 32 and served == "0" and server.alive() and sum(statuses) > 0
            self.check("memory_twenty_connections", ok,
                       f"sent {sum(totals) / MIB:.0f} MiB over 20 connections; {sum(statuses)} streams answered "
                       f"grpc-status 8; normal call grpc-status {served}; RSS {before:.0f} -> peak {peak:.0f} "
                       f"(+{peak - before:.0f} MiB, bound 512) -> after close {after:.0f} MiB (bound +32)")
        finally:
            server.stop()

    def unauthenticated_body(self):
        """RunWorkflow without a key: answered from the headers, before any body byte."""
        server = self.server()
        try:
            client = Client(server.port)
            stream = client.open(RUN_WORKFLOW)
            client.pump(lambda c: c.done(stream), timeout=10)
            status = client.status(stream)
            client.close()
            served = normal_call(server.port)
            self.check("unauthenticated_body", status == "16" and served == "0",
                       f"no body sent; grpc-status {status} (UNAUTHENTICATED) from the headers; normal call {served}")
        finally:
            server.stop()

    def http1_body_budget(self):
        """8 HTTP/1.1 connections each send 3 MiB of a 4 MiB REST body and never finish it, against
        a server-wide budget of 8 MiB: at most 2 bodies fit, every other connection is answered
        503 server_busy and closed (before, HTTP/1.1 bodies were outside the budget: 24 MiB held)."""
        server = self.server("--server-buffer-mib", "8", "--connection-buffer-mib", "8", with_key=True)
        try:
            before = server.rss_mib()
            sampler = RSSSampler(server)
            # A valid key: a refused one is answered from the head, before any body byte is read.
            head = (b"POST /v1/workflows/run HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + server.key.encode() + b"\r\n"
                    b"Content-Type: application/json\r\nContent-Length: " + str(4 * MIB).encode() + b"\r\n\r\n")
            sockets = []
            for _ in range(8):
                sock = socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE_S)
                sockets.append(sock)
                try:
                    sock.sendall(head + b" " * (3 * MIB))
                except OSError:
                    pass  # closed by the server while sending: read its answer below
            answers: dict[int, bytes] = {}
            deadline = time.monotonic() + DEADLINE_S
            open_socks = {i: sock for i, sock in enumerate(sockets)}
            # Wait (bounded) until at least 6 connections were answered and closed by the server.
            while len(answers) < 6 and time.monotonic() < deadline:
                readable, _, _ = select.select(list(open_socks.values()), [], [], 0.5)
                for sock in readable:
                    index = sockets.index(sock)
                    try:
                        chunk = sock.recv(65536)
                    except OSError:
                        chunk = b""
                    if chunk:
                        answers[index] = answers.get(index, b"") + chunk
                        if b"server_busy" not in answers[index]:
                            continue
                    answers.setdefault(index, b"")
                    del open_socks[index]
            busy = sum(1 for text in answers.values() if text.startswith(b"HTTP/1.1 503") and b"server_busy" in text)
            served = normal_call(server.port)
            closes = metric(server.port, 'flowd_connections_closed_total{reason="server_busy"}')
            for sock in sockets:
                sock.close()
            peak = sampler.stop()
            after = self.measure("8 HTTP/1.1 bodies x 3 MiB, 8 MiB budget", server, before, peak)
            ok = len(answers) >= 6 and busy >= 1 and served == "0" and server.alive() and peak - before < 64
            self.check("http1_body_budget", ok,
                       f"24 MiB of unfinished HTTP/1.1 bodies offered on 8 connections, server budget 8 MiB: "
                       f"{len(answers)} connections answered and closed by the server, {busy} of them read as "
                       f"503 server_busy (closes counted as server_busy: {closes}); normal call {served}; "
                       f"RSS {before:.0f} -> peak {peak:.0f} (+{peak - before:.0f} MiB, bound 64) -> {after:.0f}")
        finally:
            server.stop()

    # -- timers ---------------------------------------------------------------------------------

    def zero_window_watch(self):
        """A client with a zero window opens 10 Health/Watch streams and never reads a byte."""
        server = self.server("--write-stall-timeout", "2")
        try:
            before = server.rss_mib()
            client = Client(server.port, settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
            client.pump(lambda c: any(isinstance(e, h2.events.SettingsAcknowledged) for e in c.events), timeout=10)
            streams = [client.open(HEALTH_WATCH, end_stream=True, body=frame(health_request())) for _ in range(10)]
            started = time.monotonic()
            client.pump(lambda c: all(s in c.resets for s in streams), timeout=30)
            waited = time.monotonic() - started
            codes = sorted(set(client.resets.get(s, -1) for s in streams))
            served = normal_call(server.port)
            client.close()
            self.rss.append(("zero window, 10 Health/Watch", before, server.rss_mib(), server.rss_mib()))
            self.check("zero_window_watch", codes == [8] and served == "0",
                       f"all 10 streams reset with RST_STREAM codes {codes} (8 = CANCEL) after {waited:.1f} s "
                       f"(write-stall timeout 2 s); normal call {served}")
        finally:
            server.stop()

    def stream_idle(self):
        """A stream opened without END_STREAM that then sends nothing."""
        server = self.server("--stream-idle-timeout", "2")
        try:
            client = Client(server.port)
            stream = client.open(HEALTH_CHECK)
            started = time.monotonic()
            client.pump(lambda c: c.done(stream), timeout=30)
            waited = time.monotonic() - started
            code = client.resets.get(stream)
            served = normal_call(server.port)
            client.close()
            self.check("stream_idle", code == 8 and served == "0",
                       f"RST_STREAM code {code} (CANCEL) after {waited:.1f} s (stream idle timeout 2 s); normal call {served}")
        finally:
            server.stop()

    def max_connection_age(self):
        """A connection older than the maximum age is drained with GOAWAY(NO_ERROR)."""
        server = self.server("--max-connection-age", "2", "--grace", "1")
        try:
            client = Client(server.port)
            started = time.monotonic()
            client.pump(lambda c: c.goaway is not None or c.closed, timeout=30)
            waited = time.monotonic() - started
            code = None if client.goaway is None else int(client.goaway.error_code)
            client.close()
            served = normal_call(server.port)
            self.check("max_connection_age", code == 0 and served == "0",
                       f"GOAWAY code {code} (NO_ERROR) after {waited:.1f} s (age 2 s +-10 %); normal call {served}")
        finally:
            server.stop()

    def connection_limits(self):
        """Connections over the per-address limit (then over the total) are closed at once."""
        outcomes = []
        for flags, allowed in ((["--max-connections-per-address", "4"], 4),
                               (["--max-connections", "3", "--max-connections-per-address", "64"], 3)):
            server = self.server(*flags)
            try:
                clients = [Client(server.port) for _ in range(allowed)]
                for client in clients:
                    client.pump(lambda c: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in c.events),
                                timeout=10)
                extra = Client(server.port)
                extra.pump(lambda c: c.closed, timeout=10)
                refused = extra.closed and not any(isinstance(e, h2.events.RemoteSettingsChanged) for e in extra.events)
                extra.close()
                clients[0].close()
                time.sleep(0.3)
                served = normal_call(server.port)
                for client in clients[1:]:
                    client.close()
                outcomes.append((flags, refused, served))
            finally:
                server.stop()
        ok = all(refused and served == "0" for _, refused, served in outcomes)
        self.check("connection_limits", ok,
                   "; ".join(f"{' '.join(flags)}: connection over the limit closed without SETTINGS={refused}, "
                             f"after one closed a normal call got {served}" for flags, refused, served in outcomes))

    def grpc_timeout_cap(self):
        """grpc-timeout 99999999H is lowered to --max-grpc-timeout."""
        server = self.server("--max-grpc-timeout", "1")
        try:
            client = Client(server.port)
            stream = client.open(HEALTH_WATCH, end_stream=True, body=frame(health_request()),
                                 extra=[("grpc-timeout", "99999999H")])
            started = time.monotonic()
            client.pump(lambda c: c.done(stream), timeout=30)
            waited = time.monotonic() - started
            status = client.status(stream)
            reset = client.resets.get(stream)
            client.close()
            self.check("grpc_timeout_cap", (status == "4" or reset == 8) and server.alive(),
                       f"Health/Watch with grpc-timeout 99999999H ended after {waited:.1f} s: grpc-status {status}, "
                       f"RST_STREAM {reset} (cap 1 s)")
        finally:
            server.stop()

    def long_service_name(self):
        """A 70 KB service name echoed in the error: the trailers must still go out."""
        server = self.server()
        try:
            client = Client(server.port)
            client.ready()
            stream = client.open(HEALTH_CHECK, end_stream=True, body=frame(health_request("x" * 70_000)))
            client.pump(lambda c: c.done(stream), timeout=20)
            status = client.status(stream)
            message = client.message(stream)
            client.close()
            self.check("long_service_name", status == "5" and len(message) <= 4096,
                       f"grpc-status {status} (NOT_FOUND) with a grpc-message of {len(message)} bytes")
        finally:
            server.stop()

    # -- floods ---------------------------------------------------------------------------------

    def goaway_case(self, name: str, server: Server, attack, expect_code: int, expect_debug: bytes | None):
        before = server.rss_mib()
        client = Client(server.port)
        client.pump(lambda c: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in c.events), timeout=10)
        attack(client)
        client.pump(lambda c: c.goaway is not None or c.closed, timeout=30)
        code = None if client.goaway is None else int(client.goaway.error_code)
        debug = None if client.goaway is None else client.goaway.additional_data
        client.close()
        served = normal_call(server.port)
        after = server.rss_mib()
        self.rss.append((name, before, after, after))
        ok = code == expect_code and (expect_debug is None or debug == expect_debug) and served == "0"
        self.check(name, ok, f"GOAWAY code {code} debug {debug!r}; normal call {served}")

    def empty_frames_interleaved(self):
        """Empty DATA frames with a byte of data after every 9 (the old counter reset on it)."""
        server = self.server()
        try:
            def attack(client: Client):
                stream = client.open(HEALTH_CHECK)
                raw = b""
                for i in range(15):
                    raw += hyperframe.frame.DataFrame(stream, data=b"").serialize() * 9
                    raw += hyperframe.frame.DataFrame(stream, data=b"\x00").serialize()
                client.send_raw(raw)
            self.goaway_case("empty_frames_interleaved", server, attack, 11, b"empty_frames")
        finally:
            server.stop()

    def empty_frames_closed_stream(self):
        """Empty DATA frames on a stream that is already closed (nghttp2 drops them unseen by
        the application; the server counts them from the frame header)."""
        server = self.server()
        try:
            def attack(client: Client):
                stream = client.open(HEALTH_CHECK, end_stream=True, body=frame(health_request()))
                client.pump(lambda c: c.done(stream), timeout=10)
                client.send_raw(hyperframe.frame.DataFrame(stream, data=b"").serialize() * 120)
            self.goaway_case("empty_frames_closed_stream", server, attack, 11, b"empty_frames")
        finally:
            server.stop()

    def premature_resets(self):
        """Open 150 streams and reset each at once (Rapid Reset's pattern, under nghttp2's bucket)."""
        server = self.server()
        try:
            def attack(client: Client):
                raw = b""
                for _ in range(150):
                    stream = client.open(HEALTH_WATCH, end_stream=True, body=frame(health_request()), flush=False)
                    client.conn.reset_stream(stream, h2.errors.ErrorCodes.CANCEL)
                client.flush()
            self.goaway_case("premature_resets", server, attack, 11, b"premature_resets")
        finally:
            server.stop()

    def ping_flood(self):
        server = self.server()
        try:
            def attack(client: Client):
                client.send_raw(b"".join(hyperframe.frame.PingFrame(0, opaque_data=struct.pack(">Q", i)).serialize()
                                         for i in range(1000)))
            self.goaway_case("ping_flood", server, attack, 11, b"too_many_pings")
        finally:
            server.stop()

    def settings_flood(self):
        server = self.server()
        try:
            def attack(client: Client):
                client.send_raw(hyperframe.frame.SettingsFrame(0, settings={4: 65535}).serialize() * 100)
            self.goaway_case("settings_flood", server, attack, 11, b"too_many_settings")
        finally:
            server.stop()

    def peer_never_reads(self):
        """A client that opens its windows wide, asks for 100 x 43 KB of /metrics over h2c and
        never reads: once the socket stays unwritable the server stops reading that peer and
        closes the connection after the write-stall timeout (counted as reason write_stall)."""
        server = self.server("--write-stall-timeout", "2")
        try:
            before = server.rss_mib()
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", server.port))
            encoder = hpack.Encoder()
            raw = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
            raw += hyperframe.frame.SettingsFrame(0, settings={4: 2**31 - 1}).serialize()
            raw += hyperframe.frame.WindowUpdateFrame(0, window_increment=2**31 - 1 - 65535).serialize()
            for stream in range(1, 200, 2):
                block = encoder.encode([(":method", "GET"), (":scheme", "http"), (":path", "/metrics"), (":authority", "x")])
                raw += hyperframe.frame.HeadersFrame(stream, data=block, flags=["END_HEADERS", "END_STREAM"]).serialize()
            sock.sendall(raw)
            sock.settimeout(0.5)
            closed = False
            started = time.monotonic()
            while time.monotonic() - started < 30 and not closed:
                time.sleep(0.2)
                try:  # the only way to notice the close without reading: a write that fails
                    sock.send(hyperframe.frame.WindowUpdateFrame(0, window_increment=1).serialize())
                except socket.timeout:
                    pass
                except OSError:
                    closed = True
            waited = time.monotonic() - started
            sock.close()
            served = normal_call(server.port)
            stalls = metric(server.port, 'flowd_connections_closed_total{reason="write_stall"}')
            after = server.rss_mib()
            self.rss.append(("peer never reads", before, after, after))
            self.check("peer_never_reads", closed and stalls == 1 and served == "0" and server.alive(),
                       f"100 x /metrics asked, no byte read; the server closed the connection={closed} after "
                       f"{waited:.1f} s (write-stall timeout 2 s), closes counted as write_stall: {stalls}; "
                       f"normal call {served}")
        finally:
            server.stop()

    def advertised_settings(self):
        """What the server's SETTINGS promise: 100 streams, 16 KiB header lists, no push, no
        RFC 7540 priorities (SETTINGS_NO_RFC7540_PRIORITIES = 1)."""
        server = self.server()
        try:
            client = Client(server.port)
            client.ready()
            changed = [e for e in client.events if isinstance(e, h2.events.RemoteSettingsChanged)]
            settings = {int(k): v.new_value for e in changed for k, v in e.changed_settings.items()}
            client.close()
            expected = {0x3: 100, 0x6: 16384, 0x2: 0, 0x9: 1}
            ok = all(settings.get(k) == v for k, v in expected.items())
            self.check("advertised_settings", ok, f"SETTINGS {settings} (expected at least {expected})")
        finally:
            server.stop()

    def tls(self):
        """TLS on the same port: grpcio over TLS (ALPN h2), curl over h2 and http/1.1,
        openssl s_client -alpn h2, cleartext h2c still served, SIGHUP reload of a new
        certificate; a non-loopback --host without TLS is refused."""
        work = tempfile.mkdtemp(prefix="flowd-tls-")
        cert, key = os.path.join(work, "c.pem"), os.path.join(work, "k.pem")

        def make_cert(cn: str):
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                            "-keyout", key, "-out", cert, "-days", "2", "-subj", f"/CN={cn}",
                            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                           check=True, capture_output=True, timeout=DEADLINE_S)

        def s_client(port: int) -> str:
            done = subprocess.run(["openssl", "s_client", "-alpn", "h2", "-connect", f"127.0.0.1:{port}"],
                                  input=b"", capture_output=True, timeout=DEADLINE_S)
            return done.stdout.decode(errors="replace")

        make_cert("localhost")
        server = self.server("--tls-cert", cert, "--tls-key", key)
        try:
            import grpc
            with open(cert, "rb") as f:
                credentials = grpc.ssl_channel_credentials(f.read())
            with grpc.secure_channel(f"localhost:{server.port}", credentials) as channel:
                check = channel.unary_unary("/grpc.health.v1.Health/Check")
                answer = check(b"", timeout=DEADLINE_S)  # HealthCheckResponse{status: SERVING} = 08 01
            alpn = "ALPN protocol: h2" in s_client(server.port)
            curls = []
            for extra in ([], ["--http1.1"]):
                done = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", "--cacert", cert,
                                       *extra, f"https://localhost:{server.port}/metrics"],
                                      capture_output=True, timeout=DEADLINE_S)
                curls.append(done.stdout.decode())
            served = normal_call(server.port)
            make_cert("reloaded")
            server.proc.send_signal(signal.SIGHUP)
            time.sleep(1.0)
            reloaded = "CN = reloaded" in s_client(server.port) or "CN=reloaded" in s_client(server.port)
        finally:
            server.stop()
        refused = subprocess.run([self.flowd, "serve", "--host", "0.0.0.0", "--port", "0", "--data-dir", work,
                                  "--workflows", os.path.join(REPO, "examples", "workflows")],
                                 capture_output=True, timeout=DEADLINE_S)
        shutil.rmtree(work, ignore_errors=True)
        refusal = refused.returncode != 0 and b"--allow-plaintext" in refused.stdout + refused.stderr
        ok = answer == b"\x08\x01" and alpn and curls == ["2 200", "1.1 200"] and served == "0" and reloaded and refusal
        self.check("tls", ok, f"grpcio over TLS: {answer!r}; s_client ALPN h2: {alpn}; curl (h2, http/1.1): {curls}; "
                              f"cleartext h2c call: {served}; SIGHUP reload shows the new certificate: {reloaded}; "
                              f"--host 0.0.0.0 without TLS refused: {refusal} (exit {refused.returncode})")

    def all_cases(self):
        return [self.memory_one_connection, self.memory_twenty_connections, self.unauthenticated_body,
                self.http1_body_budget,
                self.zero_window_watch, self.stream_idle, self.max_connection_age, self.connection_limits,
                self.grpc_timeout_cap, self.long_service_name, self.empty_frames_interleaved,
                self.empty_frames_closed_stream,
                self.premature_resets, self.ping_flood, self.settings_flood, self.peer_never_reads,
                self.advertised_settings, self.tls]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flowd", required=True, help="the flowd executable")
    parser.add_argument("--only", action="append", default=[], help="run only this case (repeatable)")
    args = parser.parse_args()
    suite = Suite(args.flowd)
    for case in suite.all_cases():
        if args.only and case.__name__ not in args.only:
            continue
        try:
            case()
        except Exception as error:  # a case that crashes is a failure, not the end of the suite
            suite.check(case.__name__, False, f"raised {type(error).__name__}: {error}")
    print("\nRSS of the server (MiB): case | before | peak | after")
    for name, before, peak, after in suite.rss:
        print(f"  {name} | {before:.0f} | {peak:.0f} | {after:.0f}")
    failed = [name for name, ok, _ in suite.results if not ok]
    print(f"\n{len(suite.results) - len(failed)} passed, {len(failed)} failed" + (f": {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
