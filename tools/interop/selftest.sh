#!/usr/bin/env bash
# Checks the interop suite itself: runs tools/interop/grpc_interop.py against
# tools/interop/reference_server.py (grpcio's own server implementing the Control service).
# Every check must pass there; the suite's expectations are then those of a stock gRPC server.
set -euo pipefail
cd "$(dirname "$0")/../.."

log=$(mktemp)
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -f "$log"
}
trap cleanup EXIT

python3 tools/interop/reference_server.py --host 127.0.0.1 --port 0 >"$log" 2>&1 &
server_pid=$!
port=""
for _ in $(seq 1 300); do
  port=$(sed -n 's/^reference_server: listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$log" | head -1)
  [ -n "$port" ] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$log" >&2; echo "selftest: reference server exited" >&2; exit 1; }
  sleep 0.1
done
[ -n "$port" ] || { cat "$log" >&2; echo "selftest: reference server did not start" >&2; exit 1; }
python3 tools/interop/grpc_interop.py --include-known-issues --target "127.0.0.1:$port"
