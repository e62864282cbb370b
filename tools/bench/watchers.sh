#!/usr/bin/env bash
# Watcher benchmark: the memory of many concurrent WatchRun streams on one run.
#
#   make bench-watchers                          (= tools/bench/watchers.sh, after make deps)
#   FLOWD_BIN=path/to/flowd tools/bench/watchers.sh          skip the release build
#   ROUNDS="1000:10x100 10000:100x100" tools/bench/watchers.sh   (the default)
#
# It builds `swift build -c release --static-swift-stdlib --product flowd --scratch-path .build-release` (incremental;
# FLOWD_BIN skips it) and tools/bench/loadgen.c, creates an API key bound to the `slow` example
# workflow in a fresh temporary data directory, starts ONE `flowd serve --host 127.0.0.1 --port 0
# --max-connections-per-address 1024 $SERVER_FLAGS`, waits SETTLE s and records the idle RSS
# (VmRSS). Then, for each round N:CxM of ROUNDS: it submits one async run of `slow` lasting
# RUN_SECONDS (24 s: four sleeps of 6 s, so no heartbeat falls between events), and opens N
# WatchRun streams on it (after_sequence 0) with loadgen in grpc mode, C connections x M
# streams. While they are open it samples, every 0.2 s, the server's VmRSS, and in a second
# loop the `flowd_watch_streams_open{transport="grpc"}` gauge from /metrics: the peak RSS of the
# round, the highest RSS while all N streams were open (between the first and the last scrape
# that saw N), and the most streams seen open.
# After the streams end (and SETTLE s more) it records the RSS again.
#
# Every stream must end with grpc-status 0 after at least the run's stored events (its
# last_sequence, read from DATA/flowd.sqlite), all N must have been open at once, and each round
# must end within ROUND_TIMEOUT s (default 120); otherwise the bench fails (exit 1).
#
# It prints one line per round and a table (figure | value | target | met?), with the bytes per
# stream from the difference between the two rounds' "all open" RSS, and writes the figures as
# JSON to $OUT (default bench-watchers.json in the current directory). Targets (issue 13): idle
# RSS < 30 MiB; RSS with 10,000 streams open < 200 MiB. KEEP_WORK=1 keeps the temporary
# directory (server log, data, loadgen outputs, RSS samples).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-bench-watchers.json}
case "$OUT" in /*) ;; *) OUT="$OLDPWD/$OUT" ;; esac   # relative to the caller's directory

ROUNDS=${ROUNDS:-"1000:10x100 10000:100x100"}
RUN_SECONDS=${RUN_SECONDS:-24}
SETTLE=${SETTLE:-3}
ROUND_TIMEOUT=${ROUND_TIMEOUT:-120}
START_TIMEOUT=${START_TIMEOUT:-60}
SERVER_FLAGS=${SERVER_FLAGS:-}
PYTHON=${PYTHON:-python3}

say() { echo "bench-watchers: $*"; }
die() { echo "bench-watchers: FAIL: $*" >&2; exit 1; }
# shellcheck source=tools/bench/lib.sh
. tools/bench/lib.sh

for tool in cc pkg-config protoc curl "$PYTHON"; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found (make deps)"
done

work=$(mktemp -d)
server_pid=""
sampler_pid=""
cleanup() {
  # shellcheck disable=SC2086  # a list of pids
  if [ -n "$sampler_pid" ]; then kill $sampler_pid 2>/dev/null || true; wait $sampler_pid 2>/dev/null || true; fi
  bench_stop_server "$server_pid"
  if [ "${KEEP_WORK:-0}" = 1 ]; then echo "bench-watchers: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- build ------------------------------------------------------------------------------
bench_build_flowd .build-release
bench_build_loadgen


# --- key and server ----------------------------------------------------------------------
data="$work/data"
mkdir -p "$data"
key=$("$FLOWD_BIN" keys create --tenant bench-watch --workflow slow --data-dir "$data" | tail -1)
[ -n "$key" ] || die "flowd keys create printed no key"

# shellcheck disable=SC2086  # SERVER_FLAGS is a list of flags
bench_start_flowd "$work/server.log" --host 127.0.0.1 --port 0 --data-dir "$data" --workflows examples/workflows \
  --max-connections-per-address 1024 $SERVER_FLAGS
say "flowd (pid $server_pid) listening on 127.0.0.1:$port, data in a fresh temporary directory"

server_alive() {
  kill -0 "$server_pid" 2>/dev/null || { tail -30 "$work/server.log" >&2; die "flowd died"; }
}
rss_kib() { sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$server_pid/status"; }

sleep "$SETTLE"
server_alive
idle_kib=$(rss_kib)
say "idle RSS $((idle_kib / 1024)) MiB ($idle_kib KiB)"

# --- rounds ------------------------------------------------------------------------------
submit_run() {
  bench_submit_run "$port" "$key" "{\"inputs\": {\"seconds\": $RUN_SECONDS}, \"user\": \"bench\", \"response_mode\": \"async\"}"
}

# sample_rss FILE: every 0.2 s, "SECONDS VmRSS-KiB", until killed.
sample_rss() {
  while kill -0 "$server_pid" 2>/dev/null; do
    echo "$(date +%s.%N) $(rss_kib || echo 0)" >>"$1"
    sleep 0.2
  done
}
# sample_open FILE: every 0.2 s, "SECONDS-BEFORE SECONDS-AFTER open-grpc-watch-streams" (a
# scrape of /metrics may take a while under load), until killed.
sample_open() {
  while kill -0 "$server_pid" 2>/dev/null; do
    t0=$(date +%s.%N)
    open=$(curl -s --noproxy '*' --max-time 10 "http://127.0.0.1:$port/metrics" 2>/dev/null \
      | sed -n 's/^flowd_watch_streams_open{transport="grpc"} \([0-9.e+]*\)$/\1/p' | head -1) || true
    echo "$t0 $(date +%s.%N) ${open:-0}" >>"$1"
    sleep 0.2
  done
}

for round in $ROUNDS; do
  n=${round%%:*}; shape=${round#*:}; c=${shape%%x*}; m=${shape#*x}
  [ $((c * m)) -ge "$n" ] || die "round $round: $c x $m streams cannot hold $n at once"
  server_alive
  run_id=$(submit_run) || die "could not submit a run of slow"
  printf 'run_id: "%s"\nafter_sequence: 0\n' "$run_id" \
    | protoc --encode=flowd.v1.WatchRunRequest -I proto proto/flowd/v1/workflows.proto | frame "$work/watch-$n.bin"
  before_kib=$(rss_kib)
  : >"$work/rss-$n.txt"
  : >"$work/open-$n.txt"
  sample_rss "$work/rss-$n.txt" &
  sampler_pid=$!
  sample_open "$work/open-$n.txt" &
  sampler_pid="$sampler_pid $!"
  rc=0
  "$work/loadgen" grpc -c "$c" -m "$m" -n "$n" -t "$ROUND_TIMEOUT" -d "$work/watch-$n.bin" \
    -H "authorization: Bearer $key" 127.0.0.1 "$port" /flowd.v1.Workflows/WatchRun \
    >"$work/loadgen-$n.json" 2>"$work/loadgen-$n.err" || rc=$?
  # shellcheck disable=SC2086  # two pids
  kill $sampler_pid 2>/dev/null || true
  # shellcheck disable=SC2086
  wait $sampler_pid 2>/dev/null || true
  sampler_pid=""
  if [ $rc -ne 0 ]; then
    cat "$work/loadgen-$n.err" "$work/loadgen-$n.json" >&2
    server_alive
    die "round $n: loadgen exited $rc"
  fi
  server_alive
  sleep "$SETTLE"
  after_kib=$(rss_kib)
  last_seq=$("$PYTHON" -c 'import sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True, timeout=30)
print(db.execute("SELECT last_sequence FROM runs WHERE id = ?", (sys.argv[2],)).fetchone()[0])' "$data/flowd.sqlite" "$run_id")
  N=$n BEFORE=$before_kib AFTER=$after_kib LAST_SEQ=$last_seq "$PYTHON" - "$work/loadgen-$n.json" "$work/rss-$n.txt" "$work/open-$n.txt" \
    >"$work/round-$n.json" <<'EOF' || die "round $n failed"
import json, os, sys
r = json.load(open(sys.argv[1]))
def rows(path, width):
    return [tuple(float(x) for x in line.split()) for line in open(path) if len(line.split()) == width]
rss, scrapes = rows(sys.argv[2], 2), rows(sys.argv[3], 3)
n, last_seq = int(os.environ["N"]), int(os.environ["LAST_SEQ"])
peak = max((kib for _, kib in rss), default=0)
most_open = int(max((s[2] for s in scrapes), default=0))
# All N were open from the start of the first scrape that saw them to the end of the last one.
full = [s for s in scrapes if s[2] >= n]
all_open = max((kib for t, kib in rss if full and full[0][0] <= t <= full[-1][1]), default=None)
samples = rss
out = {"streams": n, "connections": r["connections"], "streams_per_connection": r["streams_per_connection"],
       "ok": r["ok"], "failed": r["failed"], "failures": r["failures"], "seconds": r["seconds"],
       "events_stored": last_seq, "messages_min": r["messages_min"], "messages_max": r["messages_max"],
       "most_open": most_open, "rss_before_kib": int(os.environ["BEFORE"]), "rss_peak_kib": int(peak),
       "rss_all_open_kib": None if all_open is None else int(all_open), "rss_after_kib": int(os.environ["AFTER"]),
       "samples": len(samples)}
print(json.dumps(out))
errors = []
if r["ok"] != n or r["failed"]:
    errors.append(f"{n - r['ok']} of {n} streams did not end with grpc-status 0: {json.dumps(r['failures'])}")
if r["messages_min"] < last_seq:
    errors.append(f"a stream got {r['messages_min']} messages, fewer than the run's {last_seq} events")
if most_open < n:
    errors.append(f"at most {most_open} of {n} streams were seen open at once")
if errors:
    sys.exit("bench-watchers: " + "; ".join(errors))
EOF
  say "$("$PYTHON" -c 'import json, sys; r = json.load(open(sys.argv[1])); m = lambda k: "-" if r[k] is None else "%.0f MiB" % (r[k] / 1024)
print("%6d streams (%dx%d): all ok in %.1f s, %d-%d messages each (%d events stored), %d open at most; RSS before %s, peak %s, all open %s, after %s"
      % (r["streams"], r["connections"], r["streams_per_connection"], r["seconds"], r["messages_min"], r["messages_max"],
         r["events_stored"], r["most_open"], m("rss_before_kib"), m("rss_peak_kib"), m("rss_all_open_kib"), m("rss_after_kib")))' "$work/round-$n.json")"
done

# --- table, JSON -------------------------------------------------------------------------
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD -- Sources Package.swift 2>/dev/null || commit="$commit+uncommitted"
hwm_kib=$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$server_pid/status")

IDLE_KIB=$idle_kib HWM_KIB=$hwm_kib COMMIT=$commit ROUNDS=$ROUNDS RUN_SECONDS=$RUN_SECONDS SERVER_FLAGS=$SERVER_FLAGS \
  "$PYTHON" - "$work" "$OUT" <<'EOF'
import json, os, sys, time
work, out = sys.argv[1], sys.argv[2]
env = os.environ
rounds = [json.load(open(f"{work}/round-{r.split(':')[0]}.json")) for r in env["ROUNDS"].split()]
mib = lambda kib: kib / 1024
idle = int(env["IDLE_KIB"])
rows = [("idle RSS", f"{mib(idle):.1f} MiB", "< 30 MiB", mib(idle) < 30)]
for r in rounds:
    target = r["streams"] == 10000
    rows.append((f"RSS, {r['streams']:,} streams open", f"{mib(r['rss_all_open_kib'] or r['rss_peak_kib']):.1f} MiB (peak {mib(r['rss_peak_kib']):.1f})",
                 "< 200 MiB" if target else "", (mib(r["rss_peak_kib"]) < 200) if target else None))
    rows.append((f"RSS after {r['streams']:,} streams ended", f"{mib(r['rss_after_kib']):.1f} MiB", "", None))
per_stream = None
if len(rounds) >= 2:
    a, b = rounds[0], rounds[-1]
    ka, kb = a["rss_all_open_kib"] or a["rss_peak_kib"], b["rss_all_open_kib"] or b["rss_peak_kib"]
    if b["streams"] != a["streams"]:
        per_stream = (kb - ka) * 1024 / (b["streams"] - a["streams"])
        rows.append((f"bytes per open stream ({a['streams']:,} -> {b['streams']:,})", f"{per_stream:,.0f} B", "", None))
sys.path.insert(0, "tools/bench")
from benchtable import print_table
print_table(("figure", "value", "target", "met?"), rows)
doc = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "commit": env["COMMIT"], "nproc": os.cpu_count(),
       "server_flags": env["SERVER_FLAGS"], "run_seconds": float(env["RUN_SECONDS"]),
       "idle_rss_kib": idle, "peak_rss_kib": int(env["HWM_KIB"]), "rounds": rounds,
       "bytes_per_stream": None if per_stream is None else round(per_stream),
       "targets": [{"figure": p, "value": f, "target": t, "met": m} for p, f, t, m in rows if m is not None]}
with open(out, "w") as f: json.dump(doc, f, indent=2); f.write("\n")
EOF
say "figures written to $OUT"
