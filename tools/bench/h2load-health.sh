#!/usr/bin/env bash
# Load test: unary grpc.health.v1.Health/Check calls driven by h2load (Debian nghttp2-client)
# against a release build of flowd on loopback.
#
#   tools/bench/h2load-health.sh                 100,000 calls, 8 connections x 32 streams, 2 threads
#   N=200000 C=16 M=100 tools/bench/h2load-health.sh
#   FLOWD_BIN=.build/debug/flowd tools/bench/h2load-health.sh      skip the release build
#
# It builds `swift build -c release --static-swift-stdlib --product flowd` (incremental), starts
# `flowd serve --host 127.0.0.1 --port 0`, reads the bound port from its line
# `flowd: listening on 127.0.0.1:PORT` (or its structured log line `address=...:PORT ... listening`), checks one call with nghttp (grpc-status 0, body
# SERVING), runs h2load, prints h2load's summary and fails unless every request succeeded.
# h2load only sees HTTP statuses (a gRPC error with :status 200 still "succeeds"), hence the
# nghttp check of grpc-status first.
set -euo pipefail
cd "$(dirname "$0")/../.."

N=${N:-100000}
C=${C:-8}
M=${M:-32}
T=${T:-2}
H2LOAD_TIMEOUT=${H2LOAD_TIMEOUT:-300}   # seconds for the h2load run
START_TIMEOUT=${START_TIMEOUT:-60}      # seconds for flowd to print its listening line

say() { echo "bench: $*"; }
die() { echo "bench: FAIL: $*" >&2; exit 1; }

for tool in h2load nghttp; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found (Debian nghttp2-client; make deps)"
done

if [ -z "${FLOWD_BIN:-}" ]; then
  say "building release (swift build -c release --static-swift-stdlib --product flowd)"
  swift build -c release --static-swift-stdlib --product flowd
  FLOWD_BIN="$(swift build -c release --show-bin-path)/flowd"
fi
[ -x "$FLOWD_BIN" ] || die "no flowd binary at $FLOWD_BIN"

work=$(mktemp -d)
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$FLOWD_BIN" serve --host 127.0.0.1 --port 0 >"$work/server.log" 2>&1 &
server_pid=$!

port=""
deadline=$((SECONDS + START_TIMEOUT))
while [ $SECONDS -lt $deadline ]; do
  port=$(sed -n 's/^flowd: listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$work/server.log" | head -1)
  # Fallback: the structured log line `... address=[IPv4]127.0.0.1/127.0.0.1:PORT ... listening`.
  [ -n "$port" ] || port=$(sed -n 's/.*address=[^ ]*127\.0\.0\.1:\([0-9][0-9]*\).*listening.*/\1/p' "$work/server.log" | head -1)
  [ -n "$port" ] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; die "flowd exited before listening"; }
  sleep 0.1
done
[ -n "$port" ] || { tail -20 "$work/server.log" >&2; die "no 'flowd: listening on 127.0.0.1:PORT' line within ${START_TIMEOUT} s"; }
url="http://127.0.0.1:$port/grpc.health.v1.Health/Check"
say "flowd (pid $server_pid) listening on 127.0.0.1:$port"

# Request body: the 5-byte gRPC prefix (uncompressed, length 0) + an empty HealthCheckRequest.
printf '\x00\x00\x00\x00\x00' >"$work/check.bin"
headers=(-H 'content-type: application/grpc' -H 'te: trailers')

# One call first: h2load cannot see grpc-status, nghttp can.
if ! timeout 20 nghttp -v "${headers[@]}" -d "$work/check.bin" "$url" >"$work/nghttp.txt" 2>&1; then
  cat "$work/nghttp.txt" >&2; die "nghttp could not call $url"
fi
grep -Eq 'grpc-status: 0([^0-9]|$)' "$work/nghttp.txt" \
  || { cat "$work/nghttp.txt" >&2; die "one Check call did not end with grpc-status 0"; }
# The response body: prefix 00 00000002 + HealthCheckResponse{status: SERVING} = 08 01.
timeout 20 nghttp "${headers[@]}" -d "$work/check.bin" "$url" >"$work/body.bin" 2>/dev/null || true
body_hex=$(od -An -tx1 "$work/body.bin" | tr -d ' \n')
[ "$body_hex" = "00000000020801" ] || die "Check response body is '$body_hex', want 00000000020801 (SERVING)"
say "one Check: grpc-status 0, SERVING"

say "h2load -n $N -c $C -m $M -t $T ... $url"
set +e
timeout "$H2LOAD_TIMEOUT" h2load -n "$N" -c "$C" -m "$M" -t "$T" "${headers[@]}" \
  -d "$work/check.bin" "$url" >"$work/h2load.txt" 2>&1
rc=$?
set -e
# The summary: from "finished in" to the end, without the per-client progress lines.
sed -n '/^finished in/,$p' "$work/h2load.txt"
[ $rc -eq 0 ] || { tail -20 "$work/h2load.txt" >&2; die "h2load exited $rc (124 = over ${H2LOAD_TIMEOUT} s)"; }

line=$(grep -E '^requests: ' "$work/h2load.txt" || true)
num() { sed -n "s/.* \([0-9][0-9]*\) $1.*/\1/p" <<<"$line"; }
succeeded=$(num succeeded); failed=$(num failed); errored=$(num errored); timedout=$(num timeout)
[ -n "$succeeded" ] || die "no 'requests:' line in h2load's output"
kill -0 "$server_pid" 2>/dev/null || die "flowd died during the run"
if [ "$succeeded" != "$N" ] || [ "${failed:-1}" != 0 ] || [ "${errored:-1}" != 0 ] || [ "${timedout:-0}" != 0 ]; then
  die "succeeded=$succeeded (want $N), failed=$failed, errored=$errored, timeout=$timedout"
fi
rps=$(sed -n 's/^finished in .*, \([0-9.]*\) req\/s.*/\1/p' "$work/h2load.txt")
say "PASS: $succeeded/$N Health/Check calls succeeded over $C connections ($rps req/s)"
