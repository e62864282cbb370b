#!/usr/bin/env bash
# Builds the libFuzzer harnesses (Sources/FuzzFraming, FuzzProto, FuzzHeaders, FuzzJSON) with
# coverage and AddressSanitizer through the Swift toolchain, and runs each for its time:
# FUZZ_SECONDS when set, else 60 s each (fuzz-framing, fuzz-proto, fuzz-headers: grpc-timeout,
# authorization, idempotency-key, content-type, -bin metadata, the protocol sniffer; fuzz-json:
# JSON text and the REST run payload).
#
#   tools/fuzz.sh                 every target, default times (what make test runs)
#   FUZZ_SECONDS=600 tools/fuzz.sh fuzz-proto   one target, longer
#
# New inputs go to .build-fuzz/corpus/<target> (the first corpus directory); the committed seeds
# are in Tests/Fuzz/Corpus/<target>. A crash fails the run and leaves its input in
# .build-fuzz/artifacts/; copy it to Tests/Fuzz/Corpus/<target>/ as a regression case once fixed
# (every later run replays the seeds first). Facts behind the flags: notes on libFuzzer in the
# shared notes (one -sanitize=fuzzer,address flag; --disable-dead-strip; lld; no Swift backtracer).
set -euo pipefail
cd "$(dirname "$0")/.."
SWIFT=${SWIFT:-swift}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(fuzz-framing fuzz-proto fuzz-headers fuzz-json)
mkdir -p .build-fuzz/artifacts
for target in "${targets[@]}"; do
  echo "== fuzz $target: build"
  nice -n 10 "$SWIFT" build -c release --disable-dead-strip --scratch-path .build-fuzz --sanitize=fuzzer \
    -Xswiftc -sanitize=fuzzer,address -Xcc -fsanitize=address -Xswiftc -use-ld=lld --product "$target" 2>&1 | tail -n 3
  mkdir -p ".build-fuzz/corpus/$target"
  seconds=${FUZZ_SECONDS:-60}
  echo "== fuzz $target: ${seconds} s"
  log=".build-fuzz/$target.log"
  set +e
  SWIFT_BACKTRACE=enable=no ".build-fuzz/release/$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix=".build-fuzz/artifacts/$target-" \
    ".build-fuzz/corpus/$target" "Tests/Fuzz/Corpus/$target" > "$log" 2>&1
  status=$?
  set -e
  grep -E "^#[0-9]+ *DONE|stat::number_of_executed_units|ERROR|SUMMARY|Fatal error|precondition|Test unit written" "$log" || true
  if [ "$status" -ne 0 ]; then
    echo "fuzz $target: FAILED (exit $status); inputs in .build-fuzz/artifacts/"
    exit 1
  fi
done
echo "== fuzz: every target ran clean"
