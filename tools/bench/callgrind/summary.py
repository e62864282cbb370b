"""Self cost per function of a callgrind profile, per call: summary.py PROFILE CALLS [TOP].

callgrind_annotate attributes everything to start_thread for a profile zeroed mid-run
(callgrind_control -z), so this reads the file itself: a cost line after `calls=` is the
inclusive cost of that call, any other cost line is self cost of the current `fn=`.
Swift names are demangled with swift-demangle when it is on PATH.

It also prints the instructions per call by object (the flowd binary, libnghttp2, libc, ...)
and how many times per call the allocators and Swift's reference counting were called
(`malloc`, flowd's nghttp2 pool `pool_malloc`, `swift_allocObject`, `swift_retain`,
`swift_release`): the figures the README quotes for where a call's instructions go.
"""
import collections
import re
import shutil
import subprocess
import sys


def main() -> None:
    path, calls = sys.argv[1], int(sys.argv[2])
    top = int(sys.argv[3]) if len(sys.argv) > 3 else 30
    names: dict[str, str] = {}
    objects: dict[str, str] = {}
    self_cost: collections.Counter[str] = collections.Counter()
    object_cost: collections.Counter[str] = collections.Counter()
    called: collections.Counter[str] = collections.Counter()
    fn = "?"
    obj = "?"
    callee = "?"
    after_calls = False

    def resolve(table: dict[str, str], rest: str) -> str:
        match = re.match(r"\((\d+)\)(?: (.*))?", rest)
        if not match:
            return rest
        if match.group(2):
            table[match.group(1)] = match.group(2)
        return table.get(match.group(1), match.group(1))

    with open(path, errors="replace") as profile:
        for line in profile:
            if line.startswith(("ob=", "cob=")):
                key, _, rest = line.rstrip("\n").partition("=")
                name = resolve(objects, rest)
                if key == "ob":
                    obj = name
            elif line.startswith(("fn=", "cfn=")):
                key, _, rest = line.rstrip("\n").partition("=")
                name = resolve(names, rest)
                if key == "fn":
                    fn, after_calls = name, False
                else:
                    callee = name
            elif line.startswith("calls="):
                after_calls = True
                called[callee] += int(line[6:].split()[0])
            elif line[:1].isdigit() or line[:1] in "+-*":
                parts = line.split()
                if len(parts) >= 2:
                    if after_calls:
                        after_calls = False
                    else:
                        self_cost[fn] += int(parts[1])
                        object_cost[obj] += int(parts[1])
    total = sum(self_cost.values())
    print(f"total {total:,} instructions = {total // calls:,} per call")
    print("by object: " + ", ".join(f"{name.rsplit('/', 1)[-1]} {cost // calls:,}"
                                     for name, cost in object_cost.most_common() if cost // calls > 0))
    counted = ["malloc", "pool_malloc", "swift_allocObject", "swift_retain", "swift_release"]
    print("calls per call: " + ", ".join(f"{name} {called[name] / calls:.1f}" for name in counted))
    demangler = shutil.which("swift-demangle")
    for name, cost in self_cost.most_common(top):
        if demangler:
            name = subprocess.run([demangler, "--simplified", "--compact", name],
                                  capture_output=True, text=True).stdout.strip() or name
        print(f"{cost / total * 100:6.2f}%  {cost // calls:7,}/call  {name[:140]}")


if __name__ == "__main__":
    main()
