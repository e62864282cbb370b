#!/usr/bin/env bash
# Instructions per call: the server's instructions for N unary grpc.health.v1.Health/Check
# calls, counted by valgrind's callgrind (a count, not a time: repeatable whatever else the
# machine does), and the functions they go to.
#
#   make bench-callgrind                          (= tools/bench/callgrind-health.sh)
#   FLOWD_BIN=path/to/flowd N=5000 tools/bench/callgrind-health.sh
#
# It builds the release flowd (--scratch-path .build-release, incremental; FLOWD_BIN skips it),
# copies it without its debug info (valgrind 3.19 cannot read Swift's DWARF 5), starts
# `flowd serve --host 127.0.0.1 --port 0` under callgrind with tools/bench/callgrind/
# nosigsuspend.c preloaded (see there), warms up with WARM (2,000) calls, zeroes the counters
# (callgrind_control -z), runs N (20,000) calls with h2load (C=8 connections x M=32 streams,
# every one must succeed), dumps (callgrind_control -d), and prints the total instructions,
# instructions per call and the TOP (30) functions by self cost (tools/bench/callgrind/summary.py).
# The counters also hold what the server does unasked meanwhile (timers, the reaper): small
# against N calls. The profile is kept in $OUT_DIR (default: callgrind-health in the current
# directory) for callgrind_annotate or kcachegrind.
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${N:-20000}
WARM=${WARM:-2000}
C=${C:-8}
M=${M:-32}
TOP=${TOP:-30}
PYTHON=${PYTHON:-python3}
OUT_DIR=${OUT_DIR:-callgrind-health}
case "$OUT_DIR" in /*) ;; *) OUT_DIR="$OLDPWD/$OUT_DIR" ;; esac

say() { echo "callgrind-health: $*"; }
die() { echo "callgrind-health: FAIL: $*" >&2; exit 1; }
for tool in valgrind callgrind_control h2load objcopy cc; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found (Debian valgrind, nghttp2-client, binutils, gcc)"
done
if [ -z "${FLOWD_BIN:-}" ]; then
  say "building release (swift build -c release --product flowd --scratch-path .build-release)"
  swift build -c release --product flowd --scratch-path .build-release
  FLOWD_BIN="$(swift build -c release --scratch-path .build-release --show-bin-path)/flowd"
fi
[ -x "$FLOWD_BIN" ] || die "no flowd binary at $FLOWD_BIN"

work=$(mktemp -d)
server_pid=""
cleanup() {
  # The parked main thread (see nosigsuspend.c) keeps a stopping process alive: KILL after TERM.
  if [ -n "$server_pid" ]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    sleep 2
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$OUT_DIR"
rm -f "$OUT_DIR"/callgrind.out.*
objcopy --strip-debug "$FLOWD_BIN" "$work/flowd"
cc -shared -fPIC -O2 -o "$work/nosigsuspend.so" tools/bench/callgrind/nosigsuspend.c

LD_PRELOAD="$work/nosigsuspend.so" valgrind --tool=callgrind --callgrind-out-file="$OUT_DIR/callgrind.out" \
  "$work/flowd" serve --host 127.0.0.1 --port 0 --data-dir "$work/data" --workflows examples/workflows \
  >"$work/server.log" 2>&1 &
server_pid=$!
port=""
for _ in $(seq 1 600); do   # valgrind starts slowly: up to 60 s
  port=$(sed -n 's/^flowd: listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$work/server.log" | head -1)
  [ -n "$port" ] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; die "flowd exited before listening"; }
  sleep 0.1
done
[ -n "$port" ] || { tail -20 "$work/server.log" >&2; die "flowd did not print its listening line"; }
printf '\x00\x00\x00\x00\x00' >"$work/check.bin"
load() {  # load N: h2load, fails unless every request succeeded
  timeout 600 h2load -n "$1" -c "$C" -m "$M" -t 1 -d "$work/check.bin" -H 'content-type: application/grpc' \
    -H 'te: trailers' "http://127.0.0.1:$port/grpc.health.v1.Health/Check" >"$work/h2load.txt" 2>&1 \
    || { cat "$work/h2load.txt" >&2; die "h2load failed"; }
  grep -Eq "requests: $1 total, $1 started, $1 done, $1 succeeded" "$work/h2load.txt" \
    || { cat "$work/h2load.txt" >&2; die "not every request succeeded"; }
}
say "flowd under callgrind on 127.0.0.1:$port; $WARM calls to warm up"
load "$WARM"
callgrind_control -z "$server_pid" >/dev/null
load "$N"
callgrind_control -d "$server_pid" >/dev/null
profile=""
for _ in $(seq 1 100); do   # the server writes the dump asynchronously to callgrind_control
  profile=$(find "$OUT_DIR" -name 'callgrind.out*' -size +1k | head -1)
  [ -n "$profile" ] && break
  sleep 0.2
done
[ -n "$profile" ] || die "no profile dumped in $OUT_DIR"
sleep 1
say "$N Health/Check calls, $C connections x $M streams, profile $profile"
"$PYTHON" tools/bench/callgrind/summary.py "$profile" "$N" "$TOP"
