"""Plumbing shared by the interop suites: a check that fails raises CheckFailed; Report prints
one `PASS name: detail` / `FAIL name: detail` line per check and closes with the line
`N passed, M failed` that CI reads."""

from __future__ import annotations

import threading


class CheckFailed(Exception):
    pass


def fail(detail: str) -> None:
    raise CheckFailed(detail)


def one_line(text: str, limit: int = 700) -> str:
    text = str(text).replace("\r", "\\r").replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Report:
    """Counts and prints results; thread-safe so that a watchdog can close the report."""

    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0
        self.current = "(start)"
        self.closed = False
        self.lock = threading.Lock()

    def record(self, ok: bool, name: str, detail: str) -> None:
        with self.lock:
            if self.closed:
                return
            if ok:
                self.passed += 1
            else:
                self.failed += 1
            print(f"{'PASS' if ok else 'FAIL'} {name}: {one_line(detail)}", flush=True)

    def close(self) -> int:
        with self.lock:
            if not self.closed:
                self.closed = True
                print(f"{self.passed} passed, {self.failed} failed", flush=True)
            return 0 if self.failed == 0 else 1


def rpc_error_text(err) -> str:
    try:
        return f"{err.code().name} {err.details()!r}"
    except Exception:  # not a grpc.Call
        return repr(err)


def add_suite_arguments(ap) -> None:
    """The arguments every grpcio suite takes besides its own."""
    ap.add_argument("--proto-dir", default=None, help="proto/ folder (default: the repository's)")
    ap.add_argument("--only", default="", help="comma-separated check names (see --list)")
    ap.add_argument("--list", action="store_true", help="print the check names and exit")
    ap.add_argument("--deadline", type=float, default=240.0,
                    help="seconds for the whole suite; past it the run fails (default 240)")
    ap.add_argument("--connect-timeout", type=float, default=10.0)
    ap.add_argument("--keep-stubs", metavar="DIR", default=None,
                    help="generate the stubs into DIR and keep them (default: a temporary folder)")


def run_suite(ap, args, make_suite) -> int:
    """--list, or runs `make_suite(args, report).run()` under a watchdog of `args.deadline`
    seconds; returns the exit status (0 only when every check passed)."""
    import os

    if args.list:
        for names, _ in make_suite(args, Report()).plan():
            for name in names:
                print(name)
        return 0
    if not args.target:
        ap.error("--target is required")
    report = Report()

    def on_deadline():
        report.record(False, "watchdog", f"the suite did not finish within {args.deadline:.0f} s "
                                         f"(stuck in {report.current})")
        report.close()
        os._exit(1)

    watchdog = threading.Timer(args.deadline, on_deadline)
    watchdog.daemon = True
    watchdog.start()
    try:
        make_suite(args, report).run()
    finally:
        watchdog.cancel()
    return report.close()
