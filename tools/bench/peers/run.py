#!/usr/bin/env python3
"""flowd against the gRPC servers users would pick instead: unary grpc.health.v1.Health/Check
driven by h2load on loopback, side by side, interleaved rounds, medians (make bench-peers).

    tools/bench/peers/run.py                      3 rounds, writes BENCHMARKS.md and docs/bench-peers.png
    tools/bench/peers/run.py --rounds 1 --scale 0.1 --out /tmp/b.md --png /tmp/b.png   a quick look

The servers (built by tools/bench/peers/build.sh; all on 127.0.0.1, port 0, started once and kept
for the whole run):
    flowd         .build-release/release/flowd serve --host 127.0.0.1 --port 0 --data-dir TMP --workflows examples/workflows
    grpc-go       .build-peers/bin/grpc-go-health          (grpc.NewServer() + health.NewServer())
    grpc-swift-2  .build-peers/swift/release/GRPCSwiftHealth (GRPCServer + .http2NIOPosix, generated stubs)
    C nghttp2     .build-peers/bin/h2health                (libnghttp2, fixed response, no gRPC library)

Before measuring, each server must answer one Check with grpc-status 0 and the body
00 00000002 0801 (SERVING), seen by nghttp, and SERVING through grpcio
(tools/interop/health_check.py); after, the same nghttp check again and the process alive. Then
one unmeasured warm-up per server, then ROUNDS rounds; in each round, for each concurrency, every
server once, one after the other (A, B, C, D, A, B, ...). Each h2load run is bounded (a call
count and a timeout) and must end with every request succeeded (h2load's counts and 2xx status
codes; h2load sees HTTP statuses only, hence the grpc-status checks). calls/s is h2load's req/s;
p50/p99 come from h2load's --log-file (per request: microseconds from when h2load sent it to
the close of its stream), nearest rank over every call of the run. The figures are the medians over the rounds.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
CHECK_PATH = "/grpc.health.v1.Health/Check"
SERVING_BODY = "00000000020801"
HEADERS = ["-H", "content-type: application/grpc", "-H", "te: trailers"]

# (label, connections, streams per connection, calls, h2load threads)
LOADS = [
    ("1×1", 1, 1, 20_000, 1),
    ("8×32", 8, 32, 100_000, 2),
    ("64×100", 64, 100, 200_000, 2),
]

SERVERS = [
    # name, command relative to ROOT (TMP replaced by a temporary data directory), listening regex
    ("flowd", [".build-release/release/flowd", "serve", "--host", "127.0.0.1", "--port", "0",
               "--data-dir", "TMP", "--workflows", "examples/workflows"],
     r"flowd: listening on 127\.0\.0\.1:(\d+)"),
    ("grpc-go", [".build-peers/bin/grpc-go-health"], r"^listening on 127\.0\.0\.1:(\d+)"),
    ("grpc-swift-2", [".build-peers/swift/release/GRPCSwiftHealth"], r"^listening on 127\.0\.0\.1:(\d+)"),
    ("C nghttp2", [".build-peers/bin/h2health"], r"^listening on 127\.0\.0\.1:(\d+)"),
]


def say(msg: str) -> None:
    print(f"bench-peers: {msg}", flush=True)


class Fail(Exception):
    pass


def sh(cmd: list[str], timeout: float = 30, check: bool = False, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, timeout=timeout, check=check, **kw)


def first_line(cmd: list[str]) -> str:
    try:
        p = sh(cmd)
        text = (p.stdout or p.stderr).decode(errors="replace").strip()
        return text.splitlines()[0] if text else "?"
    except (OSError, subprocess.SubprocessError):
        return "not found"


def dpkg_version(pkg: str) -> str:
    try:
        return sh(["dpkg-query", "-W", "-f=${Version}", pkg]).stdout.decode().strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


class Server:
    def __init__(self, name: str, argv: list[str], pattern: str, work: str):
        self.name = name
        self.work = work
        data = os.path.join(work, f"data-{name.replace(' ', '-')}")
        os.makedirs(data, exist_ok=True)
        self.argv = [data if a == "TMP" else a for a in argv]
        self.display = " ".join("TMP" if a == data else a for a in self.argv)
        self.pattern = re.compile(pattern, re.M)
        self.log_path = os.path.join(work, f"{name.replace(' ', '-')}.log")
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def start(self, timeout: float = 60) -> None:
        exe = os.path.join(ROOT, self.argv[0])
        if not os.access(exe, os.X_OK):
            raise Fail(f"{self.name}: no executable at {self.argv[0]} (tools/bench/peers/build.sh)")
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([exe] + self.argv[1:], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.log_path, "rb") as f:
                m = self.pattern.search(f.read().decode(errors="replace"))
            if m:
                self.port = int(m.group(1))
                say(f"{self.name} (pid {self.proc.pid}) listening on 127.0.0.1:{self.port}")
                return
            if self.proc.poll() is not None:
                raise Fail(f"{self.name} exited ({self.proc.returncode}) before listening:\n{self.tail()}")
            time.sleep(0.1)
        raise Fail(f"{self.name}: no listening line within {timeout:.0f} s:\n{self.tail()}")

    def tail(self) -> str:
        with open(self.log_path, "rb") as f:
            return "\n".join(f.read().decode(errors="replace").splitlines()[-20:])

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def peak_rss_mib(self) -> float | None:
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except (OSError, AttributeError):
            pass
        return None

    def stop(self) -> None:
        if not self.alive():
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{CHECK_PATH}"


def check_one_call(server: Server, body_file: str) -> None:
    """One Check through nghttp: grpc-status 0 in the trailers and the SERVING body."""
    v = sh(["nghttp", "-v", *HEADERS, "-d", body_file, server.url], timeout=20)
    text = v.stdout.decode(errors="replace")
    if v.returncode != 0 or not re.search(r"recv \(stream_id=\d+\) grpc-status: 0$", text, re.M):
        raise Fail(f"{server.name}: one Check did not end with grpc-status 0:\n{text[-2000:]}")
    b = sh(["nghttp", *HEADERS, "-d", body_file, server.url], timeout=20)
    if b.stdout.hex() != SERVING_BODY:
        raise Fail(f"{server.name}: Check body is {b.stdout.hex()!r}, want {SERVING_BODY} (SERVING)")


def check_grpcio(server: Server) -> str:
    p = sh([sys.executable, "tools/interop/health_check.py", "--target", f"127.0.0.1:{server.port}"],
           timeout=60, cwd=ROOT)
    out = (p.stdout + p.stderr).decode(errors="replace").strip()
    if p.returncode != 0 or "SERVING" not in out:
        raise Fail(f"{server.name}: grpcio health check failed ({p.returncode}): {out}")
    return out.splitlines()[-1]


def percentile(sorted_values: list[int], q: float) -> float:
    # nearest rank: the smallest value with at least q % of the values at or below it
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, math.ceil(q / 100 * len(sorted_values)) - 1))
    return float(sorted_values[k])


def h2load_argv(url: str, load, body_file: str, log_file: str | None, n: int) -> list[str]:
    _, c, m, _, t = load
    argv = ["h2load", "-n", str(n), "-c", str(c), "-m", str(m), "-t", str(t), *HEADERS, "-d", body_file]
    if log_file:
        argv.append(f"--log-file={log_file}")
    return argv + [url]


def run_h2load(server: Server, load, body_file: str, work: str, n: int, timeout: float) -> dict:
    log_file = os.path.join(work, "h2load-requests.tsv")
    if os.path.exists(log_file):
        os.unlink(log_file)
    argv = h2load_argv(server.url, load, body_file, log_file, n)
    try:
        p = sh(argv, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise Fail(f"{server.name} {load[0]}: h2load did not finish within {timeout:.0f} s")
    out = p.stdout.decode(errors="replace")
    if p.returncode != 0:
        raise Fail(f"{server.name} {load[0]}: h2load exited {p.returncode}:\n{out[-2000:]}")
    m = re.search(r"^finished in ([0-9.]+)(m?s), ([0-9.]+) req/s", out, re.M)
    r = re.search(r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored, (\d+) timeout", out, re.M)
    s = re.search(r"^status codes: (\d+) 2xx", out, re.M)
    if not (m and r and s):
        raise Fail(f"{server.name} {load[0]}: unexpected h2load output:\n{out[-2000:]}")
    total, _, done, ok, failed, errored, timed_out = map(int, r.groups())
    if not (ok == n and failed == 0 and errored == 0 and timed_out == 0 and int(s.group(1)) == n):
        raise Fail(f"{server.name} {load[0]}: {ok}/{n} succeeded, {failed} failed, {errored} errored, "
                   f"{timed_out} timeout, {s.group(1)} 2xx")
    lat = []
    with open(log_file) as f:
        for line in f:
            cols = line.split("\t")
            if len(cols) >= 3:
                if cols[1] != "200":
                    raise Fail(f"{server.name} {load[0]}: a request in h2load's log has status {cols[1]}")
                lat.append(int(cols[2]))
    if len(lat) != n:
        raise Fail(f"{server.name} {load[0]}: h2load's log has {len(lat)} requests, want {n}")
    lat.sort()
    secs = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
    return {"rps": float(m.group(3)), "seconds": secs, "p50_ms": percentile(lat, 50) / 1000,
            "p99_ms": percentile(lat, 99) / 1000, "calls": n}


def versions() -> dict:
    v = {}
    v["go"] = first_line(["go", "version"])
    v["golang-google-grpc-dev"] = dpkg_version("golang-google-grpc-dev")
    v["golang-go"] = dpkg_version("golang-go")
    v["libnghttp2-14"] = dpkg_version("libnghttp2-14")
    v["nghttp2-client"] = dpkg_version("nghttp2-client")
    v["h2load"] = first_line(["h2load", "--version"])
    v["swift"] = first_line(["swift", "--version"])
    v["cc"] = first_line(["cc", "--version"])
    resolved = os.path.join(ROOT, "tools/bench/peers/swift/Package.resolved")
    pins = {}
    try:
        with open(resolved) as f:
            for pin in json.load(f).get("pins", []):
                pins[pin["identity"]] = pin.get("state", {}).get("version") or "?"
    except (OSError, ValueError):
        pass
    v["swift_pins"] = pins
    try:
        v["flowd_commit"] = sh(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT).stdout.decode().strip()
        v["flowd_commit_subject"] = sh(["git", "log", "-1", "--format=%s"], cwd=ROOT).stdout.decode().strip()
        dirty = sh(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT).stdout.decode().strip()
        v["flowd_dirty"] = bool(dirty)
        v["flowd_sources_commit"] = sh(["git", "log", "-1", "--format=%h (%cs)", "--", "Sources", "Package.swift"],
                                       cwd=ROOT).stdout.decode().strip()
    except (OSError, subprocess.SubprocessError):
        v["flowd_commit"] = "?"
    return v


def machine() -> dict:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu, "memory": mem, "kernel": platform.release(),
            "os": first_line(["sh", "-c", ". /etc/os-release && echo \"$PRETTY_NAME\""])}


def fmt_int(x: float) -> str:
    return f"{x:,.0f}"


def fmt_ms(x: float) -> str:
    return f"{x:.2f}" if x < 10 else f"{x:.1f}"


def write_plot(results: dict, names: list[str], path: str, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [l[0] for l in LOADS]
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(9, 5), dpi=110)
    colors = {"flowd": "#d62728", "grpc-go": "#1f77b4", "grpc-swift-2": "#ff7f0e", "C nghttp2": "#7f7f7f"}
    for i, name in enumerate(names):
        xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(labels))]
        ys = [results[name][l]["rps"] for l in labels]
        bars = ax.bar(xs, ys, width, label=name, color=colors.get(name))
        for b, y in zip(bars, ys):
            ax.annotate(f"{y / 1000:,.1f}k", (b.get_x() + b.get_width() / 2, y), ha="center", va="bottom",
                        fontsize=7, xytext=(0, 2), textcoords="offset points")
    ax.set_yscale("log")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels([f"{l}\n(connections × streams)" for l in labels])
    ax.set_ylabel("Health/Check calls/s (median of rounds, log scale)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_markdown(path: str, png_rel: str, results: dict, rounds_data: dict, names: list[str],
                   meta: dict, commands: dict, args) -> None:
    v, mc = meta["versions"], meta["machine"]
    pins = v.get("swift_pins", {})
    L = []
    L.append("# Benchmarks: flowd against other gRPC servers")
    L.append("")
    L.append("Written by `make bench-peers` (`tools/bench/peers/run.py`); measured on "
             f"{meta['date']}, flowd at commit `{v.get('flowd_commit', '?')}`"
             f"{' (with uncommitted changes)' if v.get('flowd_dirty') else ''}. "
             "Unary `grpc.health.v1.Health/Check` calls (an empty request; the answer is SERVING), "
             "plaintext HTTP/2 on loopback, driven by h2load on the same machine, "
             f"{meta['rounds']} interleaved round{'s' if meta['rounds'] != 1 else ''}; every figure is the median over the rounds.")
    L.append("")
    L.append(f"![Health/Check calls/s per server and concurrency]({png_rel})")
    L.append("")
    L.append("## Results")
    L.append("")
    L.append("Concurrency is connections × concurrent streams per connection. calls/s is h2load's "
             "req/s (calls over the run's wall time, connection setup included); p50 and p99 are "
             "per-call latencies (ms, nearest rank over every call of the run) from h2load's "
             "`--log-file`: the time from when h2load sent the request to the close of its stream, "
             "as the client sees it, h2load's own queueing on the shared CPUs included. "
             "flowd ÷ it is flowd's calls/s over that server's.")
    L.append("")
    L.append("| concurrency | server | calls/s | p50 ms | p99 ms | flowd ÷ it |")
    L.append("| --- | --- | ---: | ---: | ---: | ---: |")
    for load in LOADS:
        lab = load[0]
        fl = results.get("flowd", {}).get(lab)
        for name in names:
            r = results[name][lab]
            ratio = "—" if name == "flowd" or not fl else f"{fl['rps'] / r['rps']:.2f}"
            L.append(f"| {lab} | {name} | {fmt_int(r['rps'])} | {fmt_ms(r['p50_ms'])} | "
                     f"{fmt_ms(r['p99_ms'])} | {ratio} |")
    L.append("")
    if "flowd" in results and "8×32" in results["flowd"]:
        goals = {"grpc-go": 1.5, "grpc-swift-2": 8, "C nghttp2": 0.6}
        L.append("Issue 13's goals at 8×32 (flowd ÷ peer):")
        L.append("")
        L.append("| peer | flowd ÷ it | goal | met |")
        L.append("| --- | ---: | ---: | --- |")
        for name, goal in goals.items():
            if name in results:
                ratio = results["flowd"]["8×32"]["rps"] / results[name]["8×32"]["rps"]
                L.append(f"| {name} | {ratio:.2f} | ≥ {goal:g} | {'yes' if ratio >= goal else 'no'} |")
        L.append("")
    if "C nghttp2" in results and "1×1" in results["C nghttp2"]:
        L.append("At 1×1 there is one call in flight: each figure is a whole round trip, h2load's own "
                 "work on the same CPUs included, so even the C floor reaches only "
                 f"{fmt_int(results['C nghttp2']['1×1']['rps'])} calls/s there; the 1×1 rows compare "
                 "per-call latency more than capacity.")
        L.append("")
    L.append("Every round (calls/s; the median above is the middle one):")
    L.append("")
    L.append("| concurrency | server | " + " | ".join(f"round {i + 1}" for i in range(meta["rounds"])) + " |")
    L.append("| --- | --- | " + " | ".join("---:" for _ in range(meta["rounds"])) + " |")
    for load in LOADS:
        for name in names:
            L.append(f"| {load[0]} | {name} | " +
                     " | ".join(fmt_int(x["rps"]) for x in rounds_data[name][load[0]]) + " |")
    L.append("")
    if meta.get("peak_rss"):
        L.append("Peak RSS of each server over the whole run (VmHWM): " +
                 ", ".join(f"{n} {x:.0f} MiB" for n, x in meta["peak_rss"].items() if x is not None) + ".")
        L.append("")
    L.append("## How it was measured")
    L.append("")
    L.append(f"- Machine: {mc['nproc']} CPUs ({mc['cpu']}), {mc['memory']}, {mc['os']}, Linux {mc['kernel']}. "
             "Servers and h2load share these CPUs; nothing is pinned. "
             f"Load average before the run: {meta['loadavg_before']}, after: {meta['loadavg_after']} "
             "(other work on the machine shows up here and in the spread between rounds).")
    L.append("- All four servers are started once, each on 127.0.0.1 with port 0, and stay up for "
             "the whole run; each gets one unmeasured warm-up "
             f"({fmt_int(meta['warmup_calls'])} calls at 8×32) first.")
    L.append("- Before measuring, each server answered one Check with `grpc-status: 0` and the body "
             f"`{SERVING_BODY}` (nghttp), and SERVING through grpcio's stock client "
             "(`tools/interop/health_check.py`); after the last round, the same nghttp check passed "
             "again and every server was still running.")
    L.append("- Each h2load run must end with every call succeeded: its counts (succeeded = calls, "
             "0 failed, 0 errored, 0 timeout), all 2xx, and every row of its `--log-file` with status "
             "200. h2load cannot see `grpc-status` (a gRPC error with `:status 200` would count as "
             "a success), hence the checks before and after.")
    L.append("- Order: in each round, for each concurrency, every server once, in the order "
             + ", ".join(names) + f". Bounds: {fmt_int(LOADS[0][3] * args.scale)} / "
             f"{fmt_int(LOADS[1][3] * args.scale)} / {fmt_int(LOADS[2][3] * args.scale)} calls at "
             f"1×1 / 8×32 / 64×100, and a {args.timeout:.0f} s timeout on every h2load run.")
    L.append("- What each server is:")
    L.append("  - **flowd**: `flowd serve`, release build, its defaults (nghttp2 + its own gRPC layer, "
             "the health service among its others).")
    L.append(f"  - **grpc-go**: grpc-go {v['golang-google-grpc-dev']} (Debian's "
             "`golang-google-grpc-dev`), `grpc.NewServer()` with default options and "
             "`health.NewServer()`, built offline with `GOPATH=/usr/share/gocode GO111MODULE=off` "
             "(`tools/bench/peers/go/main.go`); GOMAXPROCS is the default (the CPU count).")
    L.append(f"  - **grpc-swift-2**: grpc-swift-2 {pins.get('grpc-swift-2', '?')}, "
             f"grpc-swift-nio-transport {pins.get('grpc-swift-nio-transport', '?')}, grpc-swift-protobuf "
             f"{pins.get('grpc-swift-protobuf', '?')}, swift-protobuf {pins.get('swift-protobuf', '?')}: "
             "`GRPCServer` with `.http2NIOPosix(... transportSecurity: .plaintext)` (its default "
             "configuration) and a `SimpleServiceProtocol` health service on stubs generated by "
             "protoc-gen-swift and protoc-gen-grpc-swift-2 (`tools/bench/peers/swift`), release build.")
    L.append("  - **C nghttp2**: `tools/bench/peers/c/h2health.c`, libnghttp2 with no gRPC library: "
             "matches the `:path`, ignores the request body, answers with constant headers, one "
             "constant message and `grpc-status: 0` trailers; one epoll loop per CPU. It is the floor "
             "of what any gRPC server on nghttp2 can cost here, not a usable server.")
    L.append("")
    L.append("## Commands")
    L.append("")
    L.append("```sh")
    L.append("make bench-peers        # tools/bench/peers/install.sh, build.sh, then run.py")
    L.append("")
    L.append("# build (tools/bench/peers/build.sh; each under nice -n 15, only what is missing or stale)")
    for c in commands["build"]:
        L.append(c)
    L.append("")
    L.append("# servers (TMP: a temporary directory)")
    for name in names:
        L.append(f"{commands['servers'][name]}")
    L.append("")
    L.append("# checks, per server")
    L.append(f"printf '\\x00\\x00\\x00\\x00\\x00' > check.bin   # gRPC prefix + empty HealthCheckRequest")
    L.append(f"nghttp -v -H 'content-type: application/grpc' -H 'te: trailers' -d check.bin "
             f"http://127.0.0.1:PORT{CHECK_PATH}")
    L.append("python3 tools/interop/health_check.py --target 127.0.0.1:PORT")
    L.append("")
    L.append("# load, per server, concurrency and round")
    for load in LOADS:
        argv = h2load_argv(f"http://127.0.0.1:PORT{CHECK_PATH}", load, "check.bin", "requests.tsv",
                           max(1, int(load[3] * args.scale)))
        L.append(f"timeout {args.timeout:.0f} " + " ".join(shlex.quote(a) for a in argv))
    L.append("```")
    L.append("")
    L.append("## Versions")
    L.append("")
    L.append(f"- flowd: built at commit `{v.get('flowd_commit', '?')}`; its sources (`Sources/`, "
             f"`Package.swift`) last changed in `{v.get('flowd_sources_commit', '?')}`")
    L.append(f"- {v['swift']}")
    L.append(f"- {v['go']}; Debian golang-go {v['golang-go']}, golang-google-grpc-dev {v['golang-google-grpc-dev']}")
    L.append("- Swift packages (the local mirror, `tools/bench/peers/swift/Package.swift`): " +
             ", ".join(f"{k} {pins[k]}" for k in sorted(pins)) if pins else "- Swift packages: ?")
    L.append(f"- libnghttp2-14 {v['libnghttp2-14']} (flowd and the C server), nghttp2-client "
             f"{v['nghttp2-client']} ({v['h2load']})")
    L.append(f"- C compiler: {v['cc']}")
    L.append("")
    with open(path, "w") as f:
        f.write("\n".join(L))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every call count (default 1)")
    ap.add_argument("--timeout", type=float, default=180, help="seconds per h2load run (default 180)")
    ap.add_argument("--only", default="", help="comma-separated server names (default: all)")
    ap.add_argument("--out", default="BENCHMARKS.md")
    ap.add_argument("--png", default="docs/bench-peers.png")
    ap.add_argument("--json", default=".build-peers/results.json")
    args = ap.parse_args(argv)
    os.chdir(ROOT)

    chosen = [s for s in SERVERS if not args.only or s[0] in args.only.split(",")]
    names = [s[0] for s in chosen]
    meta = {"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M %Z").strip(), "rounds": args.rounds,
            "versions": versions(), "machine": machine(),
            "loadavg_before": " ".join(f"{x:.2f}" for x in os.getloadavg())}
    warmup = int(10_000 * args.scale) or 1
    meta["warmup_calls"] = warmup

    work = tempfile.mkdtemp(prefix="bench-peers-")
    body = os.path.join(work, "check.bin")
    with open(body, "wb") as f:
        f.write(b"\x00\x00\x00\x00\x00")
    servers = [Server(n, a, p, work) for n, a, p in chosen]
    stopping = []

    def on_signal(signum, frame):
        stopping.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    results: dict = {}
    rounds_data: dict = {n: {l[0]: [] for l in LOADS} for n in names}
    try:
        for s in servers:
            s.start()
            check_one_call(s, body)
            say(f"{s.name}: nghttp Check: grpc-status 0, SERVING; grpcio: {check_grpcio(s)}")
        for s in servers:
            run_h2load(s, LOADS[1], body, work, warmup, args.timeout)
        say(f"warm-up done ({warmup} calls at 8×32 each)")
        for rnd in range(args.rounds):
            for load in LOADS:
                n = max(1, int(load[3] * args.scale))
                for s in servers:
                    if not s.alive():
                        raise Fail(f"{s.name} died:\n{s.tail()}")
                    r = run_h2load(s, load, body, work, n, args.timeout)
                    rounds_data[s.name][load[0]].append(r)
                    say(f"round {rnd + 1} {load[0]:>6} {s.name:<12} {r['rps']:>10,.0f} calls/s  "
                        f"p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms")
        for s in servers:
            if not s.alive():
                raise Fail(f"{s.name} died:\n{s.tail()}")
            check_one_call(s, body)
        say("after the rounds: every server alive, one Check each: grpc-status 0, SERVING")
        meta["peak_rss"] = {s.name: s.peak_rss_mib() for s in servers}
    except Fail as e:
        say(f"FAIL: {e}")
        return 1
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(work, ignore_errors=True)
    meta["loadavg_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())

    for name in names:
        results[name] = {}
        for lab, runs in rounds_data[name].items():
            results[name][lab] = {k: statistics.median(r[k] for r in runs) for k in ("rps", "p50_ms", "p99_ms")}

    commands = {
        "build": [
            "swift build -c release --static-swift-stdlib --product flowd --scratch-path .build-release",
            "(cd tools/bench/peers/go && GOPATH=/usr/share/gocode GO111MODULE=off go build -trimpath "
            "-o ../../../../.build-peers/bin/grpc-go-health main.go)",
            "cc -O2 -Wall -Wextra -o .build-peers/bin/h2health tools/bench/peers/c/h2health.c "
            "$(pkg-config --cflags --libs libnghttp2) -lpthread",
            "swift build -c release --package-path tools/bench/peers/swift --scratch-path .build-peers/swift "
            "--product GRPCSwiftHealth",
        ],
        "servers": {s.name: s.display for s in servers},
    }

    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"meta": meta, "results": results, "rounds": rounds_data}, f, indent=1, ensure_ascii=False)
    if args.png:
        os.makedirs(os.path.dirname(os.path.abspath(args.png)), exist_ok=True)
        write_plot(results, names, args.png,
                   f"Health/Check over h2load, {meta['machine']['nproc']} CPUs shared with the client, "
                   f"median of {args.rounds} rounds ({meta['date']})")
    png_rel = os.path.relpath(os.path.abspath(args.png), os.path.dirname(os.path.abspath(args.out)))
    write_markdown(args.out, png_rel, results, rounds_data, names, meta, commands, args)

    say(f"wrote {args.out}, {args.png}, {args.json}")
    print()
    print(f"{'concurrency':<12} {'server':<13} {'calls/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'flowd ÷ it':>10}")
    for load in LOADS:
        fl = results.get("flowd", {}).get(load[0])
        for name in names:
            r = results[name][load[0]]
            ratio = "—" if name == "flowd" or not fl else f"{fl['rps'] / r['rps']:.2f}"
            print(f"{load[0]:<12} {name:<13} {r['rps']:>10,.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {ratio:>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
