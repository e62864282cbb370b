# Shared by the benches that start one flowd and drive it with loadgen (engine.sh,
# watchers.sh). Sourced after the caller defined `say` and `die` and set `work` (a temporary
# directory), `PYTHON` and `START_TIMEOUT`.

# bench_build_flowd SCRATCH: the release flowd in FLOWD_BIN, built in SCRATCH (incremental)
# unless FLOWD_BIN is set already.
bench_build_flowd() {
  if [ -z "${FLOWD_BIN:-}" ]; then
    say "building release flowd (swift build -c release --static-swift-stdlib --product flowd --scratch-path $1)"
    swift build -c release --static-swift-stdlib --product flowd --scratch-path "$1"
    FLOWD_BIN="$(swift build -c release --scratch-path "$1" --show-bin-path)/flowd"
  fi
  [ -x "$FLOWD_BIN" ] || die "no flowd binary at $FLOWD_BIN"
}

# bench_build_loadgen: tools/bench/loadgen.c as $work/loadgen.
bench_build_loadgen() {
  # shellcheck disable=SC2046  # pkg-config prints several words on purpose
  cc -O2 -o "$work/loadgen" tools/bench/loadgen.c $(pkg-config --cflags --libs libnghttp2) \
    || die "could not build tools/bench/loadgen.c (libnghttp2-dev: make deps)"
}

# frame FILE: stdin (a serialized message) -> FILE with the gRPC length prefix.
frame() {
  "$PYTHON" -c 'import sys; d = sys.stdin.buffer.read(); open(sys.argv[1], "wb").write(b"\0" + len(d).to_bytes(4, "big") + d)' "$1"
}

# What `flowd serve` re-executes itself with when GLIBC_TUNABLES does not name it
# (Sources/flowd/AllocatorTuning.swift): set for a server run under valgrind, which does not
# follow the re-exec, so that it runs with the allocator it has in production.
bench_flowd_tunables=glibc.malloc.tcache_count=256

# bench_start_flowd LOG ARGS...: starts `$FLOWD_BIN serve ARGS` with its output in LOG, sets
# server_pid, and waits up to START_TIMEOUT s for its `flowd: listening on 127.0.0.1:PORT`
# line, setting port.
bench_start_flowd() {
  bench_start_flowd_under -- "$@"
}

# bench_start_flowd_under COMMAND... -- LOG ARGS...: bench_start_flowd with `$FLOWD_BIN serve
# ARGS` run by COMMAND (valgrind, say); server_pid is COMMAND's.
bench_start_flowd_under() {
  local wrapper=() log deadline
  while [ "$1" != "--" ]; do wrapper+=("$1"); shift; done
  shift
  log=$1
  shift
  "${wrapper[@]}" "$FLOWD_BIN" serve "$@" >"$log" 2>&1 &
  server_pid=$!
  port=""
  deadline=$((SECONDS + START_TIMEOUT))
  while [ $SECONDS -lt $deadline ]; do
    port=$(sed -n 's/^flowd: listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$log" | head -1)
    [ -n "$port" ] && return 0
    kill -0 "$server_pid" 2>/dev/null || { cat "$log" >&2; die "flowd exited before listening"; }
    sleep 0.1
  done
  tail -20 "$log" >&2
  die "no 'flowd: listening on 127.0.0.1:PORT' line within ${START_TIMEOUT} s"
}

# bench_stop_server PID: SIGTERM, up to 10 s for a graceful exit, then SIGKILL.
bench_stop_server() {
  if [ -n "$1" ] && kill -0 "$1" 2>/dev/null; then
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
  fi
}

# bench_submit_run PORT KEY BODY [TIMEOUT]: POSTs BODY (an async run request) to the server's
# /v1/workflows/run with KEY, requires 202, prints the run's id (TIMEOUT s, default 20).
bench_submit_run() {
  "$PYTHON" - "$1" "$2" "$3" "${4:-20}" <<'PY'
import json, sys, urllib.request
port, key, body, timeout = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/workflows/run", data=body.encode(), method="POST",
                                 headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=timeout) as response:  # no proxy
    assert response.status == 202, response.status
    print(json.load(response)["workflow_run_id"])
PY
}

# bench_stop_valgrind_server PID: TERM, then KILL after 2 s: under valgrind the parked main
# thread (tools/bench/callgrind/nosigsuspend.c) keeps a stopping process alive.
bench_stop_valgrind_server() {
  [ -n "$1" ] || return 0
  kill -TERM "$1" 2>/dev/null || true
  sleep 2
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# bench_callgrind_dump PID DIR: has the callgrind-run server PID dump its counters and prints
# the profile's path once written in DIR (the server writes it asynchronously).
bench_callgrind_dump() {
  local profile=""
  callgrind_control -d "$1" >/dev/null
  for _ in $(seq 1 100); do
    profile=$(find "$2" -name 'callgrind.out*' -size +1k | head -1)
    [ -n "$profile" ] && break
    sleep 0.2
  done
  [ -n "$profile" ] || die "no profile dumped in $2"
  sleep 1
  echo "$profile"
}
