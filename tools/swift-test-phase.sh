#!/usr/bin/env bash
# Runs one phase of the test suite under a time bound: the built test bundle with Swift
# Testing's arguments (`--filter REGEX`, `--skip REGEX`).
#
#   tools/swift-test-phase.sh NAME MINUTES [arguments...]
#
# The bundle is run directly rather than through `swift test`, which holds back its output
# until the end when it is not a terminal: a CI log then shows each test as it starts and ends.
#
# A phase that outlives MINUTES is a hang, not a slow machine (each phase takes one or two
# minutes on 2 cores): the script then prints the tests that started and never finished and
# every thread's stack in the test process (gdb, when installed) and the processes still
# alive in the run's session (a child a test left running keeps `swift test` waiting
# for the end of its output), kills them all and fails, so CI shows where it hung instead of
# running into its own limit.
set -uo pipefail

name=$1 minutes=$2
shift 2
SWIFT=${SWIFT:-swift}
log=$(mktemp -t "flowd-test-$name.XXXXXX")
trap 'rm -f "$log"' EXIT

# Swift Testing prints `◇ Test "…" started.`, then `✔`/`✘ Test "…" … passed|failed after …`.
unfinished_tests() {
    python3 - "$log" << 'PY'
import re, sys
started, finished = [], set()
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    line = re.sub(r"\x1b\[[0-9;]*m", "", line.rstrip("\n"))
    if m := re.match(r'◇ Test "(.*)" started\.$', line):
        started.append(m.group(1))
    elif m := re.match(r'[✔✘] Test "(.*)" (with \d+ test cases? )?(passed|failed) after ', line):
        finished.add(m.group(1))
for test in dict.fromkeys(started):
    if test not in finished:
        print(f"!!   {test}")
PY
}

bundle="$($SWIFT build --show-bin-path)/flowdPackageTests.xctest"
echo "== swift test: $name (bounded at $minutes min)"
# In a session of its own: every process a test starts stays in it, even once orphaned.
NO_COLOR=1 setsid "$bundle" --testing-library swift-testing "$@" > >(tee "$log") 2>&1 &
runner=$!
trap 'pkill -TERM -s "$runner"; exit 130' INT TERM

(
    sleep "${minutes}m" &
    wait $!
    echo
    echo "!! tests: $name still running after $minutes min: treated as a hang"
    echo "!! tests that started and did not finish:"
    unfinished_tests
    for pid in $(pgrep -s "$runner"); do
        grep -q '\.xctest' "/proc/$pid/cmdline" 2> /dev/null || continue
        if command -v gdb > /dev/null; then
            echo "!! thread stacks of the test process $pid:"
            timeout 120 gdb -p "$pid" -batch -ex "thread apply all bt 25" 2> /dev/null \
                | grep -E '^(Thread|#)' | { swift demangle --simplified 2> /dev/null || cat; } | cut -c1-240
        else
            echo "!! gdb is not installed: no stacks for $pid"
        fi
    done
    echo "!! processes left in the run's session:"
    ps -o pid=,etime=,args= --sid "$runner" | cut -c1-200 | sed 's/^/!!   /'
    pkill -9 -s "$runner"
) &
watchdog=$!

wait $runner
status=$?
sleeper=$(pgrep -P "$watchdog" sleep)
kill "$watchdog" 2> /dev/null  # first: once its sleep ends, it reports a hang
wait "$watchdog" 2> /dev/null
[ -n "$sleeper" ] && kill "$sleeper" 2> /dev/null
# A process a test started and left running is a leak in that test: named, then stopped.
if leftover=$(ps -o pid=,etime=,args= --sid "$runner" | cut -c1-200) && [ -n "$leftover" ]; then
    echo "!! processes the tests left running (stopped now):"
    echo "$leftover" | sed 's/^/!!   /'
    pkill -9 -s "$runner"
fi
exit $status
