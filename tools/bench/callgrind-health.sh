#!/usr/bin/env bash
# Instructions per call: the server's instructions for N calls of one kind, counted by valgrind's
# callgrind (a count, not a time: repeatable whatever else the machine does), and the functions
# they go to.
#
#   make bench-callgrind                          (= tools/bench/callgrind-health.sh, CALL=health)
#   FLOWD_BIN=path/to/flowd N=5000 CALL=getrun tools/bench/callgrind-health.sh
#
# CALL picks the call:
#   health  unary grpc.health.v1.Health/Check (the transport alone), h2load C x M.
#   getrun  flowd.v1.Workflows/GetRun of one existing run with a valid key, tools/bench/loadgen.c
#           C x M (it checks every grpc-status).
#   submit  async RunWorkflow(hello) with a key and no idempotency key, loadgen C x M; the server
#           has --workers 1, so the counts also hold the little it executes meanwhile.
#   rest    async POST /v1/workflows/run over HTTP/1.1 keep-alive (loadgen, 64 connections, each
#           request with its own Idempotency-Key, 202 expected), --workers 1.
#
# It builds the release flowd (--scratch-path .build-release, incremental; FLOWD_BIN skips it),
# copies it without its debug info (valgrind 3.19 cannot read Swift's DWARF 5), starts
# `flowd serve --host 127.0.0.1 --port 0` under callgrind with tools/bench/callgrind/
# nosigsuspend.c preloaded (see there), warms up with WARM (2,000) calls, zeroes the counters
# (callgrind_control -z), runs N (20,000) calls (every one must succeed), dumps
# (callgrind_control -d), and prints the total instructions, instructions per call and the TOP
# (30) functions by self cost (tools/bench/callgrind/summary.py). The counters also hold what
# the server does unasked meanwhile (timers, the reaper): small against N calls. The profile is
# kept in $OUT_DIR (default: callgrind-$CALL in the current directory) for callgrind_annotate or
# kcachegrind.
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${N:-20000}
WARM=${WARM:-2000}
C=${C:-8}
M=${M:-32}
TOP=${TOP:-30}
PYTHON=${PYTHON:-python3}
CALL=${CALL:-health}
OUT_DIR=${OUT_DIR:-callgrind-$CALL}
case "$OUT_DIR" in /*) ;; *) OUT_DIR="$OLDPWD/$OUT_DIR" ;; esac

say() { echo "callgrind-$CALL: $*"; }
die() { echo "callgrind-$CALL: FAIL: $*" >&2; exit 1; }
# shellcheck source=tools/bench/lib.sh
. tools/bench/lib.sh   # frame, bench_build_loadgen
case "$CALL" in health|getrun|submit|rest) ;; *) die "CALL must be health, getrun, submit or rest" ;; esac
for tool in valgrind callgrind_control h2load objcopy cc; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found (Debian valgrind, nghttp2-client, binutils, gcc)"
done
bench_build_flowd .build-release

work=$(mktemp -d)
server_pid=""
cleanup() {
  bench_stop_valgrind_server "$server_pid"
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$OUT_DIR"
rm -f "$OUT_DIR"/callgrind.out.*
objcopy --strip-debug "$FLOWD_BIN" "$work/flowd"
cc -shared -fPIC -O2 -o "$work/nosigsuspend.so" tools/bench/callgrind/nosigsuspend.c

key=""
workers=()
if [ "$CALL" != health ]; then
  key=$("$work/flowd" keys create --tenant bench --workflow hello --data-dir "$work/data" | tail -1)
  [ -n "$key" ] || die "flowd keys create printed no key"
  workers=(--workers 1 --max-concurrent 100000000)
fi
# loadgen checks every answer's grpc-status (h2load sees HTTP statuses only).
if [ "$CALL" != health ]; then bench_build_loadgen; fi

GLIBC_TUNABLES="$bench_flowd_tunables" LD_PRELOAD="$work/nosigsuspend.so" valgrind --tool=callgrind --callgrind-out-file="$OUT_DIR/callgrind.out" \
  "$work/flowd" serve --host 127.0.0.1 --port 0 --data-dir "$work/data" --workflows examples/workflows \
  "${workers[@]}" >"$work/server.log" 2>&1 &
server_pid=$!
port=""
for _ in $(seq 1 600); do   # valgrind starts slowly: up to 60 s
  port=$(sed -n 's/^flowd: listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$work/server.log" | head -1)
  [ -n "$port" ] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; die "flowd exited before listening"; }
  sleep 0.1
done
[ -n "$port" ] || { tail -20 "$work/server.log" >&2; die "flowd did not print its listening line"; }
rest_body='{"inputs":{"name":"Ada"},"user":"u1","response_mode":"async"}'
auth=()
case "$CALL" in
  health)
    path=/grpc.health.v1.Health/Check
    printf '' | frame "$work/request.bin" ;;
  getrun)
    path=/flowd.v1.Workflows/GetRun
    auth=(-H "authorization: Bearer $key")
    run_id=$(bench_submit_run "$port" "$key" "$rest_body" 120) || die "could not create the run GetRun reads"
    printf 'run_id: "%s"\n' "$run_id" | protoc --encode=flowd.v1.GetRunRequest -I proto proto/flowd/v1/workflows.proto \
      | frame "$work/request.bin" ;;
  submit)
    path=/flowd.v1.Workflows/RunWorkflow
    auth=(-H "authorization: Bearer $key")
    printf 'workflow: "hello"\ninputs_json: "{\\"name\\":\\"Ada\\"}"\nresponse_mode: RESPONSE_MODE_ASYNC\n' \
      | protoc --encode=flowd.v1.RunWorkflowRequest -I proto proto/flowd/v1/workflows.proto | frame "$work/request.bin" ;;
  rest)
    printf '%s' "$rest_body" >"$work/request.json" ;;
esac
round=0
load() {  # load N: h2load for Health/Check, loadgen otherwise; fails unless every call succeeded
  round=$((round + 1))
  case "$CALL" in
    health)
      timeout 900 h2load -n "$1" -c "$C" -m "$M" -t 1 -d "$work/request.bin" -H 'content-type: application/grpc' \
        -H 'te: trailers' "http://127.0.0.1:$port$path" >"$work/load.txt" 2>&1 \
        || { cat "$work/load.txt" >&2; die "h2load failed"; }
      grep -Eq "requests: $1 total, $1 started, $1 done, $1 succeeded" "$work/load.txt" \
        || { cat "$work/load.txt" >&2; die "not every request succeeded"; } ;;
    rest)
      "$work/loadgen" http1 -c 64 -n "$1" -t 900 -X POST -d "$work/request.json" --expect 202 \
        -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
        --unique-header "Idempotency-Key:round$round-" 127.0.0.1 "$port" /v1/workflows/run >"$work/load.txt" 2>&1 \
        || { cat "$work/load.txt" >&2; die "loadgen failed"; } ;;
    *)
      "$work/loadgen" grpc -c "$C" -m "$M" -n "$1" -t 900 -d "$work/request.bin" "${auth[@]}" \
        127.0.0.1 "$port" "$path" >"$work/load.txt" 2>&1 || { cat "$work/load.txt" >&2; die "loadgen failed"; } ;;
  esac
}
say "flowd under callgrind on 127.0.0.1:$port; $WARM calls to warm up"
load "$WARM"
callgrind_control -z "$server_pid" >/dev/null
load "$N"
profile=$(bench_callgrind_dump "$server_pid" "$OUT_DIR")
say "$N $CALL calls, profile $profile"
"$PYTHON" tools/bench/callgrind/summary.py "$profile" "$N" "$TOP"
