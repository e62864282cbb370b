#!/usr/bin/env bash
# Regenerates tools/link-order.txt, the order in which lld lays out the release flowd's
# functions (Package.swift passes it with --symbol-ordering-file): the functions a release
# flowd runs while it starts and serves a little of each kind of call, so that they sit
# together instead of spread over 33 MiB of code.
#
#   tools/gen-link-order.sh            (about two minutes; needs valgrind, protoc, cc)
#
# Why: the kernel maps a file's pages in 64 KiB runs around each page a process touches
# (fault-around), so a server that runs a few thousand functions scattered through the binary
# holds most of its code resident. Listed first, in the order below, they share few runs.
#
# It builds the release flowd and tools/bench/loadgen.c, starts `flowd serve` under valgrind's
# callgrind (a count of what runs, not a time), waits for its listening line, sends 200 calls
# of each of Health/Check, GetRun, RunWorkflow (async) and REST POST /v1/workflows/run, and
# dumps the profile. Every function of the flowd image that ran is written out, hottest
# (instructions executed in the function itself) first. A stale list costs nothing but
# locality: functions added since are laid out after the listed ones (lld ignores names it no
# longer finds: --no-warn-symbol-ordering). Rerun it after larger changes.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
START_TIMEOUT=${START_TIMEOUT:-120}
say() { echo "gen-link-order: $*"; }
die() { echo "gen-link-order: FAIL: $*" >&2; exit 1; }
# shellcheck source=tools/bench/lib.sh
. tools/bench/lib.sh
for tool in valgrind callgrind_control objcopy protoc cc; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found (Debian valgrind, binutils, protobuf-compiler, gcc)"
done

work=$(mktemp -d)
server_pid=""
cleanup() {
  bench_stop_valgrind_server "$server_pid"
  rm -rf "$work"
}
trap cleanup EXIT

bench_build_flowd .build-release
bench_build_loadgen
cc -shared -fPIC -O2 -o "$work/nosigsuspend.so" tools/bench/callgrind/nosigsuspend.c
# valgrind cannot read lld's debug information: the server runs a copy without it.
objcopy --strip-debug "$FLOWD_BIN" "$work/flowd"
FLOWD_BIN="$work/flowd"
key=$("$FLOWD_BIN" keys create --tenant order --workflow hello --data-dir "$work/data" | tail -1)
[ -n "$key" ] || die "flowd keys create printed no key"

bench_start_flowd_under env GLIBC_TUNABLES="$bench_flowd_tunables" LD_PRELOAD="$work/nosigsuspend.so" \
  valgrind --tool=callgrind --demangle=no --callgrind-out-file="$work/callgrind.out" -- \
  "$work/server.log" --host 127.0.0.1 --port 0 --data-dir "$work/data" --workflows examples/workflows --workers 4
say "flowd under callgrind on 127.0.0.1:$port"

rest_body='{"inputs":{"name":"Ada"},"user":"u1","response_mode":"async"}'
run_id=$(bench_submit_run "$port" "$key" "$rest_body" 120) || die "could not submit a run"
printf '' | frame "$work/health.bin"
printf 'run_id: "%s"\n' "$run_id" | protoc --encode=flowd.v1.GetRunRequest -I proto proto/flowd/v1/workflows.proto \
  | frame "$work/getrun.bin"
printf 'workflow: "hello"\ninputs_json: "{\\"name\\":\\"Ada\\"}"\nresponse_mode: RESPONSE_MODE_ASYNC\n' \
  | protoc --encode=flowd.v1.RunWorkflowRequest -I proto proto/flowd/v1/workflows.proto | frame "$work/run.bin"
printf '%s' "$rest_body" >"$work/rest.json"
auth=(-H "authorization: Bearer $key")
"$work/loadgen" grpc -c 2 -m 8 -n 200 -t 300 -d "$work/health.bin" 127.0.0.1 "$port" /grpc.health.v1.Health/Check >/dev/null
"$work/loadgen" grpc -c 2 -m 8 -n 200 -t 300 -d "$work/getrun.bin" "${auth[@]}" 127.0.0.1 "$port" /flowd.v1.Workflows/GetRun >/dev/null
"$work/loadgen" grpc -c 2 -m 8 -n 200 -t 300 -d "$work/run.bin" "${auth[@]}" --unique-header idempotency-key:order \
  127.0.0.1 "$port" /flowd.v1.Workflows/RunWorkflow >/dev/null
"$work/loadgen" http1 -c 4 -n 200 -t 300 -X POST -d "$work/rest.json" --expect 202 -H "Authorization: Bearer $key" \
  -H 'Content-Type: application/json' --unique-header Idempotency-Key:order 127.0.0.1 "$port" /v1/workflows/run >/dev/null
profile=$(bench_callgrind_dump "$server_pid" "$work")

"$PYTHON" - "$profile" tools/link-order.txt <<'PY'
import collections, re, sys
profile, out = sys.argv[1], sys.argv[2]
names, objects = {}, {}
self_cost = collections.Counter()
current_ob = current_fn = None
in_call = False
def named(table, spec):  # "(12) name" defines id 12; "(12)" refers to it
    m = re.match(r"\((\d+)\)(?: (.*))?", spec)
    if not m:
        return spec
    if m.group(2) is not None:
        table[m.group(1)] = m.group(2)
    return table.get(m.group(1))
for line in open(profile, errors="replace"):
    line = line.rstrip("\n")
    if line.startswith("ob="):
        current_ob = named(objects, line[3:])
    elif line.startswith("fn="):
        current_fn = named(names, line[3:])
    elif line.startswith(("cob=", "cfn=", "cfi=", "cfl=")):
        if line.startswith("cob="): named(objects, line[4:])
        if line.startswith("cfn="): named(names, line[4:])
    elif line.startswith("calls="):
        in_call = True  # the next cost line is the call's inclusive cost, not self cost
    elif line and (line[0].isdigit() or line[0] in "+-*"):
        if in_call:
            in_call = False
        elif current_fn and current_ob and current_ob.endswith("/flowd"):
            parts = line.split()
            if len(parts) >= 2:
                self_cost[current_fn] += int(parts[1])
wanted = [n for n, _ in self_cost.most_common() if n and not n.startswith("0x") and " " not in n]
with open(out, "w") as f:
    f.write("".join(n + "\n" for n in wanted))
print(f"gen-link-order: {len(wanted)} functions written to {out}")
PY
# SwiftPM does not track the list as an input of the link: drop the release binary so that the
# next release build links it again with the new order.
rm -f "$(swift build -c release --scratch-path .build-release --show-bin-path)/flowd"
say "the next release build relinks flowd with it"
