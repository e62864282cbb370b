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
