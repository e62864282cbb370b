#!/usr/bin/env bash
# Durable submissions per second (async, each with an idempotency key) at 1, 16 and 64
# concurrent submitters, on a fresh SQLite data directory each (WAL, synchronous=FULL).
#   tools/bench/engine-submit.sh [COUNT]   (default 4096 submissions per run)
set -euo pipefail
cd "$(dirname "$0")/../.."
COUNT=${1:-4096}
swift build -c release --product flowd-engine-harness >/dev/null
BIN=$(swift build -c release --show-bin-path)/flowd-engine-harness
for submitters in 1 16 64; do
  dir=$(mktemp -d)
  timeout 600 "$BIN" bench-submit "$dir" "$submitters" "$COUNT"
  rm -rf "$dir"
done
