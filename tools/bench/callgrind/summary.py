"""Self cost per function of a callgrind profile, per call: summary.py PROFILE CALLS [TOP].

callgrind_annotate attributes everything to start_thread for a profile zeroed mid-run
(callgrind_control -z), so this reads the file itself: a cost line after `calls=` is the
inclusive cost of that call, any other cost line is self cost of the current `fn=`.
Swift names are demangled with swift-demangle when it is on PATH.
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
    self_cost: collections.Counter[str] = collections.Counter()
    fn = "?"
    after_calls = False
    with open(path, errors="replace") as profile:
        for line in profile:
            if line.startswith(("fn=", "cfn=")):
                key, _, rest = line.rstrip("\n").partition("=")
                match = re.match(r"\((\d+)\)(?: (.*))?", rest)
                name = rest
                if match:
                    if match.group(2):
                        names[match.group(1)] = match.group(2)
                    name = names.get(match.group(1), match.group(1))
                if key == "fn":
                    fn, after_calls = name, False
            elif line.startswith("calls="):
                after_calls = True
            elif line[:1].isdigit() or line[:1] in "+-*":
                parts = line.split()
                if len(parts) >= 2:
                    if after_calls:
                        after_calls = False
                    else:
                        self_cost[fn] += int(parts[1])
    total = sum(self_cost.values())
    print(f"total {total:,} instructions = {total // calls:,} per call")
    demangler = shutil.which("swift-demangle")
    for name, cost in self_cost.most_common(top):
        if demangler:
            name = subprocess.run([demangler, "--simplified", "--compact", name],
                                  capture_output=True, text=True).stdout.strip() or name
        print(f"{cost / total * 100:6.2f}%  {cost // calls:7,}/call  {name[:140]}")


if __name__ == "__main__":
    main()
