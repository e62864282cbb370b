#!/usr/bin/env bash
# Generates, once, the grpc-swift-2 peer's stubs for grpc.health.v1 (proto/grpc/health/v1/health.proto)
# into tools/bench/peers/swift/Sources/GRPCSwiftHealth/Generated/, with protoc (Debian's
# protobuf-compiler), protoc-gen-swift (apple/swift-protobuf) and protoc-gen-grpc-swift-2
# (grpc/grpc-swift-protobuf), both built in debug from the Swift package mirror, at the versions
# tools/bench/peers/swift/Package.swift pins. The output is committed; make bench-peers does not
# run this (the plugins' build takes many minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/../../.."
pkg=tools/bench/peers/swift
scratch=.build-peers/swift-gen
out=$pkg/Sources/GRPCSwiftHealth/Generated
for product in protoc-gen-swift protoc-gen-grpc-swift-2; do
  echo "gen-swift-stubs: swift build --product $product (debug)"
  nice -n 15 swift build --package-path "$pkg" --scratch-path "$scratch" --product "$product"
done
bin=$(swift build --package-path "$pkg" --scratch-path "$scratch" --show-bin-path)
mkdir -p "$out"
protoc --proto_path=proto \
  --plugin=protoc-gen-swift="$bin/protoc-gen-swift" \
  --plugin=protoc-gen-grpc-swift="$bin/protoc-gen-grpc-swift-2" \
  --swift_out="$out" --swift_opt=Visibility=Internal \
  --grpc-swift_out="$out" --grpc-swift_opt=Visibility=Internal,Server=true,Client=false \
  grpc/health/v1/health.proto
ls -l "$out"/grpc/health/v1
