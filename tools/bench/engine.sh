#!/usr/bin/env bash
# Engine benchmark: the real flowd binary, measured over the wire by tools/bench/loadgen.c.
#
#   make bench-engine                      (= tools/bench/engine.sh, after make deps)
#   FLOWD_BIN=path/to/flowd tools/bench/engine.sh            skip the release build
#   ASYNC64_N=10000 E2E_N=5000 tools/bench/engine.sh         smaller counts
#   WORKERS=128 SERVER_FLAGS='--log-level error' tools/bench/engine.sh
#
# It builds `swift build -c release --static-swift-stdlib --product flowd --scratch-path .build-bench` (incremental;
# FLOWD_BIN skips it), builds loadgen with cc + pkg-config libnghttp2, creates two API keys
# (tenant bench and tenant bench-e2e, both bound to workflow hello) in a fresh temporary data
# directory, starts ONE `flowd serve --host 127.0.0.1 --port 0 --max-concurrent 100000000
# --workers $WORKERS $SERVER_FLAGS` and measures, in this order:
#
#   1. grpc.health.v1.Health/Check, unary gRPC: HEALTH_N calls (100,000), 8 conns x 32 streams.
#   2. flowd.v1.Workflows/GetRun of an existing run with a valid key: GETRUN_N calls (100,000),
#      8 conns x 32 streams; reported also as a ratio to Health.
#   3. durable async RunWorkflow(hello), each call with its own `idempotency-key` metadata, at
#      1 in flight (1 conn x 1 stream, ASYNC1_N = 2,000), 16 in flight (1 conn x 16 streams,
#      ASYNC16_N = 20,000) and 64 in flight (4 conns x 16 streams, ASYNC64_N = 60,000).
#   4. REST async `POST /v1/workflows/run` (response_mode async, 202 expected) over HTTP/1.1
#      keep-alive, 64 connections, one request in flight each, each with its own
#      Idempotency-Key: REST_N = 30,000.
#   5. hello end to end: waits until the backlog of 3-4 is drained (runs scheduled or running,
#      read from DATA/flowd.sqlite read-only, at most DRAIN_TIMEOUT s), then submits E2E_N
#      (20,000) async runs with the bench-e2e key at 64 in flight (4 conns x 16) and waits until
#      all are terminal; runs/s = E2E_N / (max(finished_at) - min(created_at)) of those runs.
#      Every run must succeed.
#   6. the server's peak RSS (VmHWM in /proc/PID/status).
#   7. PostgreSQL (skipped with PG=0): a throwaway cluster with PostgreSQL's durable defaults
#      (tools/pg-test-cluster.sh, FLOWD_PG_DURABLE=1), THREE `flowd serve --store URL --workers
#      $PG_WORKERS` processes (16 each), and PG_N (15,000) async hello runs with their own
#      idempotency keys at 64 in flight spread over the three (one load generator each, 1 conn
#      x 22/21/21 streams): submissions/s (all requests / the longest load generator's time),
#      then, once every run is terminal, end-to-end runs/s = runs / (last finished_at - first
#      created_at). Every run must succeed. The SQLite server is stopped first.
#
# It prints the machine (nproc, CPU model), one line per phase, and one table
# (path | figure | target | met?), and writes every figure as JSON to $OUT (default
# bench-engine.json in the current directory). A missed target is reported, not fatal; the
# bench fails (exit 1) on any connection error, on a load phase over its time limit
# (PHASE_TIMEOUT s, default 300), on any non-OK answer (grpc-status other than 0, an HTTP status
# other than the expected one, RST_STREAM), on a failed run, or when the server dies.
# Other knobs: START_TIMEOUT (60 s for the listening line), DRAIN_TIMEOUT (600 s),
# KEEP_WORK=1 keeps the temporary directory (server log, data, loadgen outputs).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-bench-engine.json}
case "$OUT" in /*) ;; *) OUT="$OLDPWD/$OUT" ;; esac   # relative to the caller's directory

WORKERS=${WORKERS:-64}
SERVER_FLAGS=${SERVER_FLAGS:-}
HEALTH_N=${HEALTH_N:-100000}
GETRUN_N=${GETRUN_N:-100000}
ASYNC1_N=${ASYNC1_N:-2000}
ASYNC16_N=${ASYNC16_N:-20000}
ASYNC64_N=${ASYNC64_N:-60000}
REST_N=${REST_N:-30000}
E2E_N=${E2E_N:-20000}
PG=${PG:-1}
PG_N=${PG_N:-15000}
PG_WORKERS=${PG_WORKERS:-16}
PHASE_TIMEOUT=${PHASE_TIMEOUT:-300}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-600}
START_TIMEOUT=${START_TIMEOUT:-60}
PYTHON=${PYTHON:-python3}

say() { echo "bench-engine: $*"; }
die() { echo "bench-engine: FAIL: $*" >&2; exit 1; }
# shellcheck source=tools/bench/lib.sh
. tools/bench/lib.sh

for tool in cc pkg-config protoc "$PYTHON"; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found (make deps)"
done

work=$(mktemp -d)
server_pid=""
pg_pids=()
pg_dir=""
cleanup() {
  for pid in "${pg_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pg_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "$pg_dir" ]; then tools/pg-test-cluster.sh stop "$pg_dir" || true; fi
  bench_stop_server "$server_pid"
  if [ "${KEEP_WORK:-0}" = 1 ]; then echo "bench-engine: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- build ------------------------------------------------------------------------------
bench_build_flowd .build-bench
bench_build_loadgen

nproc_n=$(nproc)
cpu=$(sed -n 's/^model name[[:space:]]*:[[:space:]]*//p' /proc/cpuinfo | head -1)
say "machine: $nproc_n CPUs, ${cpu:-unknown CPU}; flowd --workers $WORKERS ${SERVER_FLAGS}"

# --- request bodies: protobuf (protoc --encode) behind the 5-byte gRPC prefix ------------
encode() {  # encode TYPE FILE: protobuf text format on stdin -> framed FILE
  protoc --encode="$1" -I proto proto/flowd/v1/workflows.proto | frame "$2"
}
printf '' | frame "$work/health.bin"
printf 'workflow: "hello"\ninputs_json: "{\\"name\\":\\"Ada\\"}"\nresponse_mode: RESPONSE_MODE_ASYNC\n' \
  | encode flowd.v1.RunWorkflowRequest "$work/run.bin"
rest_body='{"inputs":{"name":"Ada"},"user":"u1","response_mode":"async"}'
printf '%s' "$rest_body" >"$work/rest.json"

# --- keys and server -------------------------------------------------------------------
data="$work/data"
mkdir -p "$data"
key=$("$FLOWD_BIN" keys create --tenant bench --workflow hello --data-dir "$data" | tail -1)
e2e_key=$("$FLOWD_BIN" keys create --tenant bench-e2e --workflow hello --data-dir "$data" | tail -1)
if [ -z "$key" ] || [ -z "$e2e_key" ]; then die "flowd keys create printed no key"; fi

# shellcheck disable=SC2086  # SERVER_FLAGS is a list of flags
bench_start_flowd "$work/server.log" --host 127.0.0.1 --port 0 --data-dir "$data" --workflows examples/workflows \
  --max-concurrent 100000000 --workers "$WORKERS" $SERVER_FLAGS
say "flowd (pid $server_pid) listening on 127.0.0.1:$port, data in a fresh temporary directory"

server_alive() {
  kill -0 "$server_pid" 2>/dev/null || { tail -30 "$work/server.log" >&2; die "flowd died"; }
}

# The run GetRun reads: one async submission through the REST shim.
run_id=$(bench_submit_run "$port" "$key" "$rest_body") || die "could not create a run through POST /v1/workflows/run"
printf 'run_id: "%s"\n' "$run_id" | encode flowd.v1.GetRunRequest "$work/getrun.bin"

# --- load phases -------------------------------------------------------------------------
field() { "$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

# phase NAME LOADGEN-ARGS...: runs loadgen, keeps its JSON line in $work/NAME.json, fails the
# bench on a loadgen error or any failed request.
phase() {
  local name=$1; shift
  local rc=0
  "$work/loadgen" "$@" -t "$PHASE_TIMEOUT" >"$work/$name.json" 2>"$work/$name.err" || rc=$?
  if [ $rc -ne 0 ]; then
    cat "$work/$name.err" "$work/$name.json" >&2
    server_alive
    die "$name: loadgen exited $rc"
  fi
  server_alive
  "$PYTHON" - "$work/$name.json" "$name" <<'EOF' || { tail -20 "$work/server.log" >&2; die "$name: requests failed"; }
import json, sys
r = json.load(open(sys.argv[1]))
print(f"bench-engine: {sys.argv[2]:<11} {r['rps']:>8.0f}/s  p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms"
      f"  max {r['max_ms']:8.2f} ms  ({r['requests']} requests in {r['seconds']:.2f} s)")
if r["failed"] or r["ok"] != r["requests"]:
    sys.exit(f"bench-engine: {sys.argv[2]}: {r['failed']} of {r['requests']} requests failed: {json.dumps(r['failures'])}")
EOF
}

auth=(-H "authorization: Bearer $key")
say "1. Health/Check: $HEALTH_N calls, 8 conns x 32 streams"
phase health grpc -c 8 -m 32 -n "$HEALTH_N" -d "$work/health.bin" \
  127.0.0.1 "$port" /grpc.health.v1.Health/Check
say "2. GetRun: $GETRUN_N calls, 8 conns x 32 streams"
phase getrun grpc -c 8 -m 32 -n "$GETRUN_N" -d "$work/getrun.bin" "${auth[@]}" \
  127.0.0.1 "$port" /flowd.v1.Workflows/GetRun
say "3. async RunWorkflow(hello), own idempotency key each: 1, 16 and 64 in flight"
phase async_1 grpc -c 1 -m 1 -n "$ASYNC1_N" -d "$work/run.bin" "${auth[@]}" \
  --unique-header idempotency-key:grpc-async1 127.0.0.1 "$port" /flowd.v1.Workflows/RunWorkflow
phase async_16 grpc -c 1 -m 16 -n "$ASYNC16_N" -d "$work/run.bin" "${auth[@]}" \
  --unique-header idempotency-key:grpc-async16 127.0.0.1 "$port" /flowd.v1.Workflows/RunWorkflow
phase async_64 grpc -c 4 -m 16 -n "$ASYNC64_N" -d "$work/run.bin" "${auth[@]}" \
  --unique-header idempotency-key:grpc-async64 127.0.0.1 "$port" /flowd.v1.Workflows/RunWorkflow
say "4. REST async POST /v1/workflows/run: $REST_N requests, 64 HTTP/1.1 connections"
phase rest_async http1 -c 64 -n "$REST_N" -X POST -d "$work/rest.json" --expect 202 \
  -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
  --unique-header Idempotency-Key:rest-async 127.0.0.1 "$port" /v1/workflows/run

# --- end to end --------------------------------------------------------------------------
# wait_runs SQL-FILTER TIMEOUT: until no run matching the filter is scheduled or running.
wait_runs() {
  "$PYTHON" - "$data/flowd.sqlite" "$1" "$2" <<'EOF'
import sqlite3, sys, time
path, where, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
start = last = time.monotonic()
while True:
    n = db.execute(f"SELECT count(*) FROM runs WHERE state IN ('scheduled','running') AND ({where})").fetchone()[0]
    now = time.monotonic()
    if n == 0:
        print(f"{now - start:.1f}")
        break
    if now - start > timeout:
        sys.exit(f"bench-engine: FAIL: {n} runs still scheduled or running after {timeout:.0f} s")
    if now - last >= 10:
        print(f"bench-engine:   {n} runs still scheduled or running", file=sys.stderr)
        last = now
    time.sleep(0.2)
EOF
}

say "5. end to end: draining the backlog of phases 3-4"
drain_s=$(wait_runs "1" "$DRAIN_TIMEOUT") || die "the backlog did not drain"
server_alive
say "   drained in $drain_s s; $E2E_N hello runs, tenant bench-e2e, 4 conns x 16 streams"
phase e2e_submit grpc -c 4 -m 16 -n "$E2E_N" -d "$work/run.bin" -H "authorization: Bearer $e2e_key" \
  --unique-header idempotency-key:e2e 127.0.0.1 "$port" /flowd.v1.Workflows/RunWorkflow
wait_runs "tenant = 'bench-e2e'" "$DRAIN_TIMEOUT" >/dev/null || die "the end-to-end runs did not finish"
server_alive
"$PYTHON" - "$data/flowd.sqlite" >"$work/e2e.json" <<'EOF'
import json, sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True, timeout=30)
n, ok, failed, first, last = db.execute(
    "SELECT count(*), sum(state = 'succeeded'), sum(state <> 'succeeded'), min(created_at), max(finished_at)"
    " FROM runs WHERE tenant = 'bench-e2e'").fetchone()
states = dict(db.execute("SELECT state, count(*) FROM runs WHERE tenant = 'bench-e2e' GROUP BY state"))
secs = (last - first) / 1000 if n else 0
print(json.dumps({"runs": n, "succeeded": ok or 0, "not_succeeded": failed or 0, "states": states,
                  "seconds": secs, "runs_per_s": round(n / secs, 1) if secs > 0 else 0}))
EOF
say "   $(cat "$work/e2e.json")"
[ "$(field "$work/e2e.json" runs)" = "$E2E_N" ] || die "end to end: $(field "$work/e2e.json" runs) runs stored, want $E2E_N"
[ "$(field "$work/e2e.json" not_succeeded)" = 0 ] || die "end to end: runs did not succeed: $(field "$work/e2e.json" states)"

# --- peak RSS -----------------------------------------------------------------------------
rss_kib=$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$server_pid/status")

# --- PostgreSQL: three processes on one database -------------------------------------------
if [ "$PG" != 0 ]; then
  say "7. PostgreSQL: a throwaway cluster (durable settings), three flowd processes, $PG_N async hello runs at 64 in flight"
  # The SQLite server is done: its CPU goes to the PostgreSQL phase.
  kill -TERM "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
  pg_env=$(FLOWD_PG_DURABLE=1 tools/pg-test-cluster.sh start) || die "could not start PostgreSQL (make deps)"
  pg_dir=$(printf '%s\n' "$pg_env" | sed -n 's/.*FLOWD_PG_DIR=\([^ ]*\).*/\1/p')
  pg_url=$(printf '%s\n' "$pg_env" | sed -n 's/.*FLOWD_TEST_POSTGRES_URL=\([^ ]*\).*/\1/p')
  [ -n "$pg_url" ] || die "pg-test-cluster.sh printed no URL"
  pg_url="$pg_url?sslmode=disable"
  pg_key=$("$FLOWD_BIN" keys create --tenant bench-pg --workflow hello --store "$pg_url" | tail -1)
  [ -n "$pg_key" ] || die "flowd keys create printed no key (PostgreSQL)"
  pg_ports=()
  for i in 0 1 2; do
    # shellcheck disable=SC2086  # SERVER_FLAGS is a list of flags
    "$FLOWD_BIN" serve --host 127.0.0.1 --port 0 --store "$pg_url" --workflows examples/workflows \
      --max-concurrent 100000000 --workers "$PG_WORKERS" $SERVER_FLAGS >"$work/pg$i.log" 2>&1 &
    pg_pids+=($!)
    p=""
    deadline=$((SECONDS + START_TIMEOUT))
    while [ $SECONDS -lt $deadline ]; do
      p=$(sed -n 's/^flowd: listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$work/pg$i.log" | head -1)
      [ -n "$p" ] && break
      kill -0 "${pg_pids[$i]}" 2>/dev/null || { cat "$work/pg$i.log" >&2; die "flowd (PostgreSQL) exited before listening"; }
      sleep 0.1
    done
    [ -n "$p" ] || die "flowd (PostgreSQL) did not listen within ${START_TIMEOUT} s"
    pg_ports+=("$p")
  done
  say "   flowd on ports ${pg_ports[*]}"
  per=$((PG_N / 3))
  streams=(22 21 21)
  lg_pids=()
  for i in 0 1 2; do
    "$work/loadgen" grpc -c 1 -m "${streams[$i]}" -n "$per" -d "$work/run.bin" -H "authorization: Bearer $pg_key" \
      --unique-header "idempotency-key:pg$i" -t "$PHASE_TIMEOUT" 127.0.0.1 "${pg_ports[$i]}" /flowd.v1.Workflows/RunWorkflow \
      >"$work/pg_async_$i.json" 2>"$work/pg_async_$i.err" &
    lg_pids+=($!)
  done
  for i in 0 1 2; do
    wait "${lg_pids[$i]}" || { cat "$work/pg_async_$i.err" >&2; die "PostgreSQL load generator $i failed"; }
  done
  "$PYTHON" - "$work" >"$work/pg_async.json" <<'PY' || die "PostgreSQL submissions failed"
import json, sys
parts = [json.load(open(f"{sys.argv[1]}/pg_async_{i}.json")) for i in range(3)]
requests = sum(p["requests"] for p in parts)
ok = sum(p["ok"] for p in parts)
seconds = max(p["seconds"] for p in parts)
if ok != requests or any(p["failed"] for p in parts):
    sys.exit(f"bench-engine: PostgreSQL: {requests - ok} of {requests} requests failed: {[p['failures'] for p in parts]}")
print(json.dumps({"requests": requests, "ok": ok, "seconds": seconds, "rps": requests / seconds,
                  "p50_ms": max(p["p50_ms"] for p in parts), "p99_ms": max(p["p99_ms"] for p in parts),
                  "max_ms": max(p["max_ms"] for p in parts), "per_process": parts}))
PY
  say "   submissions: $("$PYTHON" -c 'import json, sys; r = json.load(open(sys.argv[1])); print("%.0f/s, p50 %.2f / p99 %.2f ms (worst of the three), %d in %.2f s" % (r["rps"], r["p50_ms"], r["p99_ms"], r["requests"], r["seconds"]))' "$work/pg_async.json")"
  psql_q() { psql "$pg_url" -Atc "$1"; }
  deadline=$((SECONDS + DRAIN_TIMEOUT))
  while :; do
    left=$(psql_q "SELECT count(*) FROM runs WHERE state IN ('scheduled','running')") || die "psql failed"
    [ "$left" = 0 ] && break
    [ $SECONDS -lt $deadline ] || die "PostgreSQL: $left runs still scheduled or running after $DRAIN_TIMEOUT s"
    for pid in "${pg_pids[@]}"; do kill -0 "$pid" 2>/dev/null || die "a flowd (PostgreSQL) process died"; done
    sleep 0.2
  done
  psql_q "SELECT json_build_object('runs', count(*), 'succeeded', count(*) FILTER (WHERE state = 'succeeded'),
            'seconds', (max(finished_at) - min(created_at)) / 1000.0) FROM runs" >"$work/pg_e2e_raw.json" \
    || die "psql failed"
  "$PYTHON" - "$work/pg_e2e_raw.json" >"$work/pg_e2e.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
r["not_succeeded"] = r["runs"] - r["succeeded"]
r["runs_per_s"] = round(r["runs"] / r["seconds"], 1) if r["seconds"] else 0
print(json.dumps(r))
PY
  say "   $(cat "$work/pg_e2e.json")"
  [ "$(field "$work/pg_e2e.json" runs)" = "$((per * 3))" ] || die "PostgreSQL: $(field "$work/pg_e2e.json" runs) runs stored, want $((per * 3))"
  [ "$(field "$work/pg_e2e.json" not_succeeded)" = 0 ] || die "PostgreSQL: some runs did not succeed"
fi

# --- table, JSON -------------------------------------------------------------------------
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD -- Sources Package.swift 2>/dev/null || commit="$commit+uncommitted"

RSS_KIB=$rss_kib COMMIT=$commit NPROC=$nproc_n CPU=$cpu DRAIN_S=$drain_s WORKERS=$WORKERS SERVER_FLAGS=$SERVER_FLAGS \
  "$PYTHON" - "$work" "$OUT" <<'EOF'
import json, os, sys, time
work, out = sys.argv[1], sys.argv[2]
env = os.environ
def load(name): return json.load(open(f"{work}/{name}.json"))
r = {name: load(name) for name in ("health", "getrun", "async_1", "async_16", "async_64", "rest_async", "e2e_submit", "e2e")}
ratio = r["getrun"]["rps"] / r["health"]["rps"]
a64, rest, e2e = r["async_64"], r["rest_async"], r["e2e"]
def lat(x): return f"p50 {x['p50_ms']:.2f} / p99 {x['p99_ms']:.2f} / max {x['max_ms']:.2f} ms"
rows = [
    ("gRPC Health/Check (8x32)", f"{r['health']['rps']:,.0f} calls/s", "", None),
    ("gRPC GetRun (8x32)", f"{r['getrun']['rps']:,.0f} calls/s = {ratio:.0%} of Health", ">= 50 % of Health", ratio >= 0.5),
    ("async RunWorkflow, 1 in flight (1x1)", f"{r['async_1']['rps']:,.0f}/s, {lat(r['async_1'])}", "", None),
    ("async RunWorkflow, 16 in flight (1x16)", f"{r['async_16']['rps']:,.0f}/s, {lat(r['async_16'])}", "", None),
    ("async RunWorkflow, 64 in flight (4x16)", f"{a64['rps']:,.0f}/s, {lat(a64)}", ">= 20,000/s and p99 < 10 ms",
     a64["rps"] >= 20000 and a64["p99_ms"] < 10),
    ("REST async, 64 HTTP/1.1 conns", f"{rest['rps']:,.0f}/s, {lat(rest)}", ">= 10,000/s", rest["rps"] >= 10000),
    ("hello end to end, 64 in flight", f"{e2e['runs_per_s']:,.0f} runs/s ({e2e['succeeded']} succeeded, {e2e['not_succeeded']} not)",
     ">= 5,000 runs/s", e2e["runs_per_s"] >= 5000),
    ("server peak RSS (VmHWM)", f"{int(env['RSS_KIB']) / 1024:,.0f} MiB", "", None),
]
pg = None
if os.path.exists(f"{work}/pg_e2e.json"):
    pg = {"async_64": load("pg_async"), "e2e": load("pg_e2e")}
    rows += [
        ("PostgreSQL, 3 processes: async RunWorkflow, 64 in flight", f"{pg['async_64']['rps']:,.0f}/s, {lat(pg['async_64'])}", "", None),
        ("PostgreSQL, 3 processes: hello end to end", f"{pg['e2e']['runs_per_s']:,.0f} runs/s ({pg['e2e']['succeeded']} succeeded)", "", None),
    ]
sys.path.insert(0, "tools/bench")
from benchtable import print_table
print_table(("path", "figure", "target", "met?"), rows)
doc = {
    "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "commit": env["COMMIT"],
    "machine": {"nproc": int(env["NPROC"]), "cpu": env["CPU"]},
    "server": {"workers": int(env["WORKERS"]), "flags": env["SERVER_FLAGS"], "peak_rss_kib": int(env["RSS_KIB"])},
    "health": r["health"], "getrun": dict(r["getrun"], ratio_to_health=round(ratio, 3)),
    "async_1": r["async_1"], "async_16": r["async_16"], "async_64": r["async_64"],
    "rest_async": r["rest_async"], "e2e": dict(e2e, submit=r["e2e_submit"]),
    "backlog_drain_seconds": float(env["DRAIN_S"]),
    "postgres_3_processes": pg,
    "targets": [{"path": p, "figure": f, "target": t, "met": m} for p, f, t, m in rows if m is not None],
}
with open(out, "w") as f: json.dump(doc, f, indent=2); f.write("\n")
EOF
say "figures written to $OUT"
