#!/usr/bin/env bash
# Execution alone: how fast one flowd drains a backlog of queued `hello` runs, and its CPU per run.
#
#   FLOWD_BIN=path/to/flowd tools/bench/drain.sh          N=30000 WORKERS=64
#
# It builds the release flowd (--scratch-path .build-release; FLOWD_BIN skips it) and loadgen,
# fills a fresh data directory with N async `hello` runs through a server with one worker
# (4 connections x 16 streams, each with its own idempotency key), stops it (SIGTERM; its
# scheduled runs stay scheduled), then starts `flowd serve --workers WORKERS` on the same
# directory and waits until no run is scheduled or running (at most DRAIN_TIMEOUT s, 300). It
# prints the drain's wall time, runs/s and the server's CPU time per queued run (utime + stime from
# /proc), and the group-commit figures from /metrics (transactions, time inside them, writes per
# transaction). Every run must have succeeded. Compare two binaries by running it for each,
# alternating: the figures move by 10-20 % on a shared machine.
#
# CALLGRIND=DIR runs the draining server under valgrind's callgrind instead (a count, not a
# time: the same for every run of one binary): the counters are zeroed once it listens, dumped
# into DIR once the backlog is drained, and the instructions per run drained meanwhile printed with the
# TOP (30) functions by self cost (tools/bench/callgrind/summary.py). Use a smaller N (3000):
# callgrind runs 50 times slower. The wall time and CPU figures are then callgrind's, not flowd's.
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${N:-30000}
WORKERS=${WORKERS:-64}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-300}
START_TIMEOUT=${START_TIMEOUT:-60}
PYTHON=${PYTHON:-python3}

say() { echo "bench-drain: $*"; }
die() { echo "bench-drain: FAIL: $*" >&2; exit 1; }
# shellcheck source=tools/bench/lib.sh
. tools/bench/lib.sh

work=$(mktemp -d)
server_pid=""
cleanup() {
  bench_stop_server "$server_pid"
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bench_build_flowd .build-release
bench_build_loadgen
printf 'workflow: "hello"\ninputs_json: "{\\"name\\":\\"Ada\\"}"\nresponse_mode: RESPONSE_MODE_ASYNC\n' \
  | protoc --encode=flowd.v1.RunWorkflowRequest -I proto proto/flowd/v1/workflows.proto | frame "$work/run.bin"
data="$work/data"
key=$("$FLOWD_BIN" keys create --tenant drain --workflow hello --data-dir "$data" | tail -1)
[ -n "$key" ] || die "flowd keys create printed no key"
ticks() { awk '{print $14 + $15}' "/proc/$server_pid/stat"; }
unfinished() {
  "$PYTHON" -c 'import sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True, timeout=30)
print(db.execute("SELECT count(*) FROM runs WHERE state IN (\"scheduled\", \"running\")").fetchone()[0])' "$data/flowd.sqlite"
}

bench_start_flowd "$work/fill.log" --host 127.0.0.1 --port 0 --data-dir "$data" --workflows examples/workflows \
  --max-concurrent 100000000 --workers 1
"$work/loadgen" grpc -c 4 -m 16 -n "$N" -d "$work/run.bin" -H "authorization: Bearer $key" \
  --unique-header idempotency-key:drain 127.0.0.1 "$port" /flowd.v1.Workflows/RunWorkflow >"$work/fill.json" \
  || die "filling the backlog failed: $(cat "$work/fill.json")"
"$PYTHON" -c 'import json, sys; d = json.load(open(sys.argv[1])); sys.exit(0 if d["ok"] == int(sys.argv[2]) else 1)' \
  "$work/fill.json" "$N" || die "not every submission succeeded: $(cat "$work/fill.json")"
bench_stop_server "$server_pid"
server_pid=""
queued=$(unfinished)
say "$queued of $N runs queued (the one worker ran the others); draining with --workers $WORKERS"

if [ -n "${CALLGRIND:-}" ]; then
  for tool in valgrind callgrind_control objcopy cc; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found (Debian valgrind, binutils, gcc)"
  done
  case "$CALLGRIND" in /*) ;; *) CALLGRIND="$PWD/$CALLGRIND" ;; esac
  mkdir -p "$CALLGRIND"
  rm -f "$CALLGRIND"/callgrind.out.*
  # As in callgrind-health.sh: valgrind 3.19 cannot read Swift's DWARF 5, and the preload keeps
  # the parked main thread from hanging callgrind_control.
  objcopy --strip-debug "$FLOWD_BIN" "$work/flowd-nodebug"
  cc -shared -fPIC -O2 -o "$work/nosigsuspend.so" tools/bench/callgrind/nosigsuspend.c
  START_TIMEOUT=120 FLOWD_BIN="$work/flowd-nodebug" GLIBC_TUNABLES="$bench_flowd_tunables" LD_PRELOAD="$work/nosigsuspend.so" \
    bench_start_flowd_under valgrind --tool=callgrind --callgrind-out-file="$CALLGRIND/callgrind.out" -- \
    "$work/drain.log" --host 127.0.0.1 --port 0 --data-dir "$data" --workflows examples/workflows \
    --max-concurrent 100000000 --workers "$WORKERS"
  callgrind_control -z "$server_pid" >/dev/null
  # Runs drain while valgrind starts: the count is of those still unfinished once zeroed.
  counted=$(unfinished)
else
  bench_start_flowd "$work/drain.log" --host 127.0.0.1 --port 0 --data-dir "$data" --workflows examples/workflows \
    --max-concurrent 100000000 --workers "$WORKERS"
fi
cpu0=$(ticks)
start=$(date +%s.%N)
deadline=$((SECONDS + DRAIN_TIMEOUT))
while [ "$(unfinished)" != 0 ]; do
  [ $SECONDS -lt $deadline ] || die "runs still unfinished after $DRAIN_TIMEOUT s"
  sleep 0.1
done
end=$(date +%s.%N)
cpu1=$(ticks)
if [ -n "${CALLGRIND:-}" ]; then
  profile=$(bench_callgrind_dump "$server_pid" "$CALLGRIND")
  say "$counted runs drained under callgrind after its counters were zeroed, profile $profile"
  "$PYTHON" tools/bench/callgrind/summary.py "$profile" "$counted" "${TOP:-30}" | sed 's/per call/per run/; s/\/call/\/run/'
  # The parked main thread (see nosigsuspend.c) keeps a stopping process alive.
  kill -KILL "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
  exit 0
fi
curl -s "http://127.0.0.1:$port/metrics" >"$work/metrics.txt" || die "could not read /metrics"
"$PYTHON" - "$data/flowd.sqlite" "$work/metrics.txt" "$N" "$queued" "$start" "$end" "$cpu0" "$cpu1" "$(getconf CLK_TCK)" <<'PY'
import sqlite3, sys
path, metrics, n, queued, start, end, cpu0, cpu1, hz = sys.argv[1:10]
n, queued, wall, cpu = int(n), int(queued), float(end) - float(start), (int(cpu1) - int(cpu0)) / int(hz)
db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
states = dict(db.execute("SELECT state, count(*) FROM runs GROUP BY state"))
if states.get("succeeded") != n:
    sys.exit(f"bench-drain: FAIL: runs by state {states}, want {n} succeeded")
figures = {}
for line in open(metrics):
    for name in ("flowd_store_transaction_duration_seconds_sum", "flowd_store_transaction_duration_seconds_count",
                 "flowd_store_group_commit_batch_size_sum"):
        if line.startswith(name + "{"):
            figures[name] = float(line.split()[-1])
txns = figures.get("flowd_store_transaction_duration_seconds_count", 0)
print(f"bench-drain: {queued} runs drained in {wall:.2f} s = {queued / wall:,.0f} runs/s; server CPU {cpu:.2f} s = "
      f"{cpu * 1e6 / queued:.0f} us per run")
if txns:
    print(f"bench-drain: {txns:.0f} transactions, {figures['flowd_store_transaction_duration_seconds_sum']:.2f} s inside "
          f"them, {figures['flowd_store_group_commit_batch_size_sum'] / txns:.1f} writes per transaction")
PY
