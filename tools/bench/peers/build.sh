#!/usr/bin/env bash
# Builds what make bench-peers runs, only what is missing or older than its sources; every
# compiler runs under `nice -n ${NICE:-15}`. Outputs (git-ignored):
#
#   .build-release/release/flowd                 swift build -c release --static-swift-stdlib --product flowd --scratch-path .build-release
#   .build-peers/bin/grpc-go-health              go build, GOPATH=/usr/share/gocode GO111MODULE=off (Debian's grpc-go)
#   .build-peers/bin/h2health                    cc -O2 on libnghttp2 (tools/bench/peers/c)
#   .build-peers/swift/release/GRPCSwiftHealth   swift build -c release (tools/bench/peers/swift; grpc-swift-2)
#
# The Swift builds are incremental (a second run is a no-op of a few seconds each); the first
# grpc-swift-2 release build takes many minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/../../.."
NICE=${NICE:-15}
peers=tools/bench/peers
out=.build-peers
mkdir -p "$out/bin"
say() { echo "bench-peers build: $*"; }

# newer OUTPUT INPUT...: true when OUTPUT exists and no INPUT is newer
newer() { local o=$1; shift; [ -e "$o" ] || return 1; for i in "$@"; do [ "$i" -nt "$o" ] && return 1; done; return 0; }

say "flowd: swift build -c release --static-swift-stdlib --product flowd --scratch-path .build-release"
nice -n "$NICE" swift build -c release --static-swift-stdlib --product flowd --scratch-path .build-release

if newer "$out/bin/grpc-go-health" "$peers/go/main.go"; then
  say "grpc-go: $out/bin/grpc-go-health is up to date"
else
  say "grpc-go: go build (GOPATH=/usr/share/gocode GO111MODULE=off)"
  (cd "$peers/go" && GOPATH=/usr/share/gocode GO111MODULE=off GOCACHE="$PWD/../../../../$out/go-cache" \
     nice -n "$NICE" go build -trimpath -o "../../../../$out/bin/grpc-go-health" main.go)
fi

if newer "$out/bin/h2health" "$peers/c/h2health.c"; then
  say "C: $out/bin/h2health is up to date"
else
  say "C: cc -O2 h2health.c \$(pkg-config --cflags --libs libnghttp2) -lpthread"
  # shellcheck disable=SC2046
  nice -n "$NICE" cc -O2 -Wall -Wextra -o "$out/bin/h2health" "$peers/c/h2health.c" \
    $(pkg-config --cflags --libs libnghttp2) -lpthread
fi

say "grpc-swift-2: swift build -c release (tools/bench/peers/swift, scratch $out/swift)"
nice -n "$NICE" swift build -c release --package-path "$peers/swift" --scratch-path "$out/swift" \
  --product GRPCSwiftHealth
say "all built"
