#!/usr/bin/env python3
"""grpcio end-to-end suite for flowd's `flowd.v1.Workflows` API (issue 5).

Calls a running server with the stock Python client (grpcio) through stubs generated from
proto/ at run time (see flowd_stubs.py) and prints one line per check:

    PASS name: detail
    FAIL name: detail

and last a line `N passed, M failed`. Exit status 0 only when nothing failed.

The server must know the workflow `echo` (version `echo-1`) and execute runs as the
RPCServer test target's ScriptedExecutor does: inputs `{"sleep_ms": N, "steps": K,
"fail": true}` make K steps (a node_started and a node_finished each), then succeed with
outputs `{"steps": K}` or fail with "asked to fail"; an input named `bad` is rejected with
INVALID_ARGUMENT (field `inputs.bad`). Tests/RPCServerTests/EndToEnd/WorkflowsAPITests.swift
starts such a server on 127.0.0.1:0 and runs:

    python3 tools/interop/workflows_api.py --target 127.0.0.1:PORT --key ACME_KEY \
        --other-tenant-key GLOBEX_KEY --limit-key LIMITED_KEY --revoked-key REVOKED_ACME_KEY

--key, --other-tenant-key and --limit-key are keys of three different tenants bound to
`echo`; the --limit-key tenant must have no runs and the default limit of 50 active runs;
--revoked-key is a revoked key of the --key tenant.

    python3 tools/interop/workflows_api.py --list
    python3 tools/interop/workflows_api.py --target ... --only stop_running,list_paging
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import flowd_stubs  # noqa: E402
from checklib import CheckFailed, Report, add_suite_arguments, fail, one_line, rpc_error_text, run_suite  # noqa: E402,F401

HERE = os.path.dirname(os.path.abspath(__file__))
WORKFLOW = "echo"
WORKFLOW_VERSION = "echo-1"
CONCURRENCY_LIMIT = 50
RPC_TIMEOUT = 10.0  # seconds, for every unary call that is not about deadlines


def details_bin(err) -> bytes | None:
    """The raw grpc-status-details-bin trailer of a failed call."""
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            return value
    return None


def answer(err) -> tuple:
    """What a caller can see of an error: code, message and the details bytes."""
    return (err.code(), err.details(), details_bin(err))


def parse_json(text: str, what: str):
    try:
        return json.loads(text)
    except ValueError as exc:
        fail(f"{what} is not JSON ({exc}): {text!r}")


class Suite:
    def __init__(self, args, report: Report) -> None:
        self.args = args
        self.report = report
        self.stubs = None
        self.channel = None
        self.api = None
        # Shared between checks; each check that needs one creates it when it is missing.
        self.acme_runs: set[str] = set()  # every acme run this suite created
        self.succeeded_run = None  # a SUCCEEDED acme run (Run message)
        self.streamed = None  # (run id, the stored events of StreamWorkflow, in order)

    # -- plumbing ---------------------------------------------------------------------------

    def run_check(self, names: list[str], fn) -> None:
        """Runs fn. fn returns a detail string (one check) or a list of (name, ok, detail)."""
        import grpc

        self.report.current = names[0]
        try:
            result = fn()
        except CheckFailed as exc:
            for n in names:
                self.report.record(False, n, str(exc))
            return
        except grpc.RpcError as exc:
            for n in names:
                self.report.record(False, n, "unexpected RPC error: " + rpc_error_text(exc))
            return
        except Exception as exc:  # a bug in the check or a broken stub: still one line
            for n in names:
                self.report.record(False, n, f"{type(exc).__name__}: {exc}")
            return
        if isinstance(result, list):
            done = set()
            for n, ok, detail in result:
                done.add(n)
                self.report.record(ok, n, detail)
            for n in names:
                if n not in done:
                    self.report.record(False, n, "not reached (an earlier part of the check failed)")
        else:
            self.report.record(True, names[0], result or "ok")

    @property
    def pb(self):
        return self.stubs.workflows_pb2

    def status_name(self, status: int) -> str:
        return self.pb.RunStatus.Name(status)

    @staticmethod
    def auth(key: str, *extra) -> tuple:
        return (("authorization", f"Bearer {key}"),) + tuple(extra)

    def key(self, who: str = "acme") -> str:
        return {"acme": self.args.key, "globex": self.args.other_tenant_key,
                "limited": self.args.limit_key}[who]

    def submit(self, inputs, mode=None, who="acme", idempotency_key="", workflow="", user="",
               metadata=(), timeout=RPC_TIMEOUT, raw_inputs=None):
        """RunWorkflow; returns the RunWorkflowResponse (raises grpc.RpcError)."""
        pb = self.pb
        req = pb.RunWorkflowRequest(
            workflow=workflow,
            inputs_json=raw_inputs if raw_inputs is not None else json.dumps(inputs),
            response_mode=pb.RESPONSE_MODE_ASYNC if mode is None else mode,
            user=user, idempotency_key=idempotency_key)
        resp = self.api.RunWorkflow(req, metadata=self.auth(self.key(who), *metadata), timeout=timeout)
        if who == "acme":
            self.acme_runs.add(resp.run.id)
        return resp

    def get(self, run_id: str, who="acme", timeout=RPC_TIMEOUT):
        return self.api.GetRun(self.pb.GetRunRequest(run_id=run_id), metadata=self.auth(self.key(who)),
                               timeout=timeout)

    def stop(self, run_id: str, who="acme", timeout=RPC_TIMEOUT):
        return self.api.StopRun(self.pb.StopRunRequest(run_id=run_id), metadata=self.auth(self.key(who)),
                                timeout=timeout)

    def poll(self, run_id: str, statuses, within: float, who="acme"):
        """GetRun until the status is one of `statuses`; fails after `within` seconds."""
        wanted = set(statuses)
        end = time.monotonic() + within
        seen = []
        while True:
            run = self.get(run_id, who)
            name = self.status_name(run.status)
            if not seen or seen[-1] != name:
                seen.append(name)
            if run.status in wanted:
                return run
            if time.monotonic() >= end:
                fail(f"run {run_id} not {'/'.join(self.status_name(s) for s in wanted)} within {within:.0f} s; "
                     f"statuses seen: {' -> '.join(seen)}")
            time.sleep(0.05)

    def expect_error(self, call_fn, code, what: str):
        import grpc

        try:
            result = call_fn()
        except grpc.RpcError as err:
            if err.code() != code:
                fail(f"{what}: want {code.name}, got {rpc_error_text(err)}")
            return err
        fail(f"{what}: want {code.name}, got OK ({one_line(repr(result), 160)})")

    def watch(self, run_id: str, after: int = 0, who="acme", timeout=15.0, stop_after=None):
        """WatchRun; returns (events, error or None). Bounded by the call deadline."""
        import grpc

        call = self.api.WatchRun(self.pb.WatchRunRequest(run_id=run_id, after_sequence=after),
                                 metadata=self.auth(self.key(who)), timeout=timeout)
        events = []
        try:
            for ev in call:
                events.append(ev)
                if stop_after is not None and len(events) >= stop_after:
                    call.cancel()
                    break
        except grpc.RpcError as err:
            return events, err
        return events, None

    def decode(self, err) -> dict:
        """The google.rpc.Status details of a failed call, by type; fails when they do not decode."""
        from grpc_status import rpc_status

        ed = self.stubs.error_details_pb2
        try:
            status = rpc_status.from_call(err)
        except ValueError as exc:  # the Status's code or message differ from the call's
            fail(f"{rpc_error_text(err)}: grpc-status-details-bin disagrees with the call: {exc}")
        if status is None:
            fail(f"{rpc_error_text(err)}: no grpc-status-details-bin")
        out = {"ErrorInfo": [], "RetryInfo": [], "QuotaFailure": [], "BadRequest": [], "other": []}
        for any_msg in status.details:
            for label in ("ErrorInfo", "RetryInfo", "QuotaFailure", "BadRequest"):
                cls = getattr(ed, label)
                if any_msg.Is(cls.DESCRIPTOR):
                    msg = cls()
                    if not any_msg.Unpack(msg):
                        fail(f"{rpc_error_text(err)}: a {label} detail does not unpack")
                    out[label].append(msg)
                    break
            else:
                out["other"].append(any_msg.type_url)
        return out

    @staticmethod
    def describe(details: dict) -> str:
        from google.protobuf import text_format

        parts = []
        for label in ("ErrorInfo", "RetryInfo", "QuotaFailure", "BadRequest"):
            for msg in details[label]:
                parts.append(f"{label}{{{text_format.MessageToString(msg, as_one_line=True)}}}")
        parts += [f"other {u}" for u in details["other"]]
        return " ".join(parts) or "(no details)"

    def error_info(self, err, reason: str | None = None):
        """The call's single ErrorInfo, which must have domain flowd (and `reason`, if given)."""
        details = self.decode(err)
        infos = details["ErrorInfo"]
        if len(infos) != 1:
            fail(f"{rpc_error_text(err)}: {len(infos)} ErrorInfo details, want 1: {self.describe(details)}")
        info = infos[0]
        if info.domain != "flowd":
            fail(f"{rpc_error_text(err)}: ErrorInfo.domain {info.domain!r}, want 'flowd'")
        if reason is not None and info.reason != reason:
            fail(f"{rpc_error_text(err)}: ErrorInfo.reason {info.reason!r}, want {reason!r}")
        return info, details

    def list_all(self, who="acme", statuses=(), page_size=100, limit_pages=200):
        """Every run ListRuns gives, following the page tokens."""
        runs, token = [], ""
        for _ in range(limit_pages):
            resp = self.api.ListRuns(self.pb.ListRunsRequest(page_size=page_size, page_token=token,
                                                             statuses=list(statuses)),
                                     metadata=self.auth(self.key(who)), timeout=RPC_TIMEOUT)
            runs.extend(resp.runs)
            token = resp.next_page_token
            if not token:
                return runs
        fail(f"ListRuns still had a next_page_token after {limit_pages} pages")

    def ensure_succeeded_run(self):
        if self.succeeded_run is None:
            resp = self.submit({"steps": 1}, mode=self.pb.RESPONSE_MODE_BLOCKING, timeout=20)
            if resp.run.status != self.pb.RUN_STATUS_SUCCEEDED:
                fail(f"setup: a blocking {{'steps': 1}} run ended {self.status_name(resp.run.status)}")
            self.succeeded_run = resp.run
        return self.succeeded_run

    @staticmethod
    def kind(ev) -> str:
        return ev.WhichOneof("event") or "(none)"

    # -- checks -----------------------------------------------------------------------------

    def c_connect(self):
        import grpc

        t0 = time.monotonic()
        try:
            grpc.channel_ready_future(self.channel).result(timeout=self.args.connect_timeout)
        except grpc.FutureTimeoutError:
            fail(f"channel to {self.args.target} not ready within {self.args.connect_timeout} s")
        return f"channel to {self.args.target} ready in {time.monotonic() - t0:.3f} s"

    def c_async(self):
        pb = self.pb
        names = ["async_submit_scheduled", "async_poll_succeeded"]
        inputs = {"steps": 2, "sleep_ms": 200}
        t0 = time.monotonic()
        resp = self.submit(inputs, mode=pb.RESPONSE_MODE_ASYNC, user="suite-user")
        took = time.monotonic() - t0
        run = resp.run
        problems = []
        if run.status != pb.RUN_STATUS_SCHEDULED:
            problems.append(f"status {self.status_name(run.status)}, want RUN_STATUS_SCHEDULED")
        if not resp.created:
            problems.append("created = false, want true")
        if run.triggered_from != pb.TRIGGER_API_ASYNC:
            problems.append(f"triggered_from {pb.Trigger.Name(run.triggered_from)}, want TRIGGER_API_ASYNC")
        if run.transport != pb.TRANSPORT_GRPC:
            problems.append(f"transport {pb.Transport.Name(run.transport)}, want TRANSPORT_GRPC")
        if run.workflow != WORKFLOW or run.workflow_version != WORKFLOW_VERSION:
            problems.append(f"workflow {run.workflow!r} version {run.workflow_version!r}, "
                            f"want {WORKFLOW!r} {WORKFLOW_VERSION!r} (the request left workflow empty)")
        if not run.id:
            problems.append("empty run id")
        if run.user != "suite-user":
            problems.append(f"user {run.user!r}, want 'suite-user'")
        if not run.HasField("created_at"):
            problems.append("created_at not set")
        if run.inputs_json and parse_json(run.inputs_json, "inputs_json") != inputs:
            problems.append(f"inputs_json {run.inputs_json!r}, want {json.dumps(inputs)}")
        results = [(names[0], not problems,
                    "; ".join(problems) if problems else
                    f"run {run.id}: SCHEDULED, created, TRIGGER_API_ASYNC, TRANSPORT_GRPC, "
                    f"{run.workflow}/{run.workflow_version}, answered in {took * 1000:.0f} ms")]
        if not run.id:
            return results

        t0 = time.monotonic()
        final = self.poll(run.id, [pb.RUN_STATUS_SUCCEEDED, pb.RUN_STATUS_FAILED, pb.RUN_STATUS_STOPPED,
                                   pb.RUN_STATUS_PARTIAL_SUCCEEDED], within=15)
        problems = []
        if final.status != pb.RUN_STATUS_SUCCEEDED:
            problems.append(f"ended {self.status_name(final.status)} (error {final.error!r}), want SUCCEEDED")
        elif parse_json(final.outputs_json, "outputs_json") != {"steps": 2}:
            problems.append(f"outputs_json {final.outputs_json!r}, want {{\"steps\":2}}")
        if final.total_steps != 2:
            problems.append(f"total_steps {final.total_steps}, want 2")
        if not final.HasField("started_at") or not final.HasField("finished_at"):
            problems.append(f"started_at set: {final.HasField('started_at')}, "
                            f"finished_at set: {final.HasField('finished_at')}")
        elif final.finished_at.ToMilliseconds() < final.started_at.ToMilliseconds():
            problems.append("finished_at is before started_at")
        if final.elapsed_ms <= 0:
            problems.append(f"elapsed_ms {final.elapsed_ms}, want > 0")
        if final.triggered_from != pb.TRIGGER_API_ASYNC or final.transport != pb.TRANSPORT_GRPC:
            problems.append("the trigger audit changed: "
                            f"{pb.Trigger.Name(final.triggered_from)}/{pb.Transport.Name(final.transport)}")
        if final.id != run.id:
            problems.append(f"GetRun returned id {final.id!r}")
        if not problems:
            self.succeeded_run = final
        results.append((names[1], not problems, "; ".join(problems) if problems else
                        f"SUCCEEDED after {time.monotonic() - t0:.2f} s of polling; outputs {final.outputs_json}, "
                        f"total_steps 2, elapsed_ms {final.elapsed_ms}, last_sequence {final.last_sequence}"))
        return results

    def c_blocking(self):
        pb = self.pb
        results = []
        for name, mode, inputs, want_status, want in [
            ("blocking_succeeded", pb.RESPONSE_MODE_BLOCKING, {"steps": 1, "sleep_ms": 300},
             pb.RUN_STATUS_SUCCEEDED, {"steps": 1}),
            ("blocking_unspecified_mode", pb.RESPONSE_MODE_UNSPECIFIED, {"steps": 2, "sleep_ms": 200},
             pb.RUN_STATUS_SUCCEEDED, {"steps": 2}),
            ("blocking_failed_run", pb.RESPONSE_MODE_BLOCKING, {"steps": 1, "fail": True},
             pb.RUN_STATUS_FAILED, "asked to fail"),
        ]:
            t0 = time.monotonic()
            resp = self.submit(inputs, mode=mode, timeout=20)
            took = time.monotonic() - t0
            run = resp.run
            problems = []
            if run.status != want_status:
                problems.append(f"status {self.status_name(run.status)} (error {run.error!r}), "
                                f"want {self.status_name(want_status)}")
            elif want_status == pb.RUN_STATUS_SUCCEEDED:
                if parse_json(run.outputs_json, "outputs_json") != want:
                    problems.append(f"outputs_json {run.outputs_json!r}, want {json.dumps(want)}")
                if self.succeeded_run is None:
                    self.succeeded_run = run
            elif run.error != want:
                problems.append(f"error {run.error!r}, want {want!r}")
            if not resp.created:
                problems.append("created = false")
            if run.triggered_from != pb.TRIGGER_API_BLOCKING:
                problems.append(f"triggered_from {pb.Trigger.Name(run.triggered_from)}, want TRIGGER_API_BLOCKING")
            if not run.HasField("finished_at"):
                problems.append("finished_at not set")
            results.append((name, not problems, "; ".join(problems) if problems else
                            f"{pb.ResponseMode.Name(mode)} {json.dumps(inputs)} -> OK with the terminal run "
                            f"{self.status_name(run.status)}"
                            + (f" error {run.error!r}" if run.error else f" outputs {run.outputs_json}")
                            + f" in {took:.2f} s"))
        return results

    def c_blocking_deadline(self):
        import grpc

        pb = self.pb
        names = ["blocking_deadline_exceeded", "blocking_deadline_run_continues"]
        ikey = "deadline-" + uuid.uuid4().hex
        inputs = {"steps": 1, "sleep_ms": 3000}
        t0 = time.monotonic()
        err = self.expect_error(
            lambda: self.submit(inputs, mode=pb.RESPONSE_MODE_BLOCKING, idempotency_key=ikey, timeout=0.5),
            grpc.StatusCode.DEADLINE_EXCEEDED, "blocking run of 3 s with a 0.5 s deadline")
        took = time.monotonic() - t0
        results = [(names[0], took < 2.0, f"{rpc_error_text(err)} after {took:.3f} s")]
        # The same request and key again, async: the run the blocking call created.
        resp = self.submit(inputs, mode=pb.RESPONSE_MODE_ASYNC, idempotency_key=ikey)
        run = resp.run
        problems = []
        if resp.created:
            problems.append(f"the async replay with the same key created a new run {run.id} "
                            "(the blocking call's run was not found by its idempotency key)")
        if run.triggered_from != pb.TRIGGER_API_BLOCKING:
            problems.append(f"the replayed run has triggered_from {pb.Trigger.Name(run.triggered_from)}, "
                            "want TRIGGER_API_BLOCKING (the original submission)")
        if run.status not in (pb.RUN_STATUS_SCHEDULED, pb.RUN_STATUS_RUNNING):
            problems.append(f"just after the deadline the run is {self.status_name(run.status)}, "
                            "want SCHEDULED or RUNNING")
        if problems:
            results.append((names[1], False, "; ".join(problems)))
            return results
        final = self.poll(run.id, [pb.RUN_STATUS_SUCCEEDED, pb.RUN_STATUS_FAILED, pb.RUN_STATUS_STOPPED,
                                   pb.RUN_STATUS_PARTIAL_SUCCEEDED], within=10)
        ok = final.status == pb.RUN_STATUS_SUCCEEDED
        results.append((names[1], ok,
                        f"run {run.id} (found by replaying its idempotency key async: created=false) "
                        f"was {self.status_name(run.status)} after the deadline, then "
                        f"{self.status_name(final.status)} {final.error!r} "
                        f"{time.monotonic() - t0:.2f} s after the submission"))
        return results

    def c_stream(self):
        import grpc

        pb = self.pb
        req = pb.RunWorkflowRequest(inputs_json=json.dumps({"steps": 3, "sleep_ms": 300}))
        call = self.api.StreamWorkflow(req, metadata=self.auth(self.key()), timeout=20)
        events = []
        try:
            for ev in call:
                events.append(ev)
        except grpc.RpcError as err:
            fail(f"after {len(events)} events ({[self.kind(e) for e in events]}) the call ended "
                 f"{rpc_error_text(err)}, want OK")
        stored = self.check_event_log(events, 0, 3, "StreamWorkflow")
        run_id = stored[0].run_id
        self.acme_runs.add(run_id)
        final = stored[-1].run_finished.run
        problems = []
        if final.status != pb.RUN_STATUS_SUCCEEDED:
            problems.append(f"run_finished carries status {self.status_name(final.status)}, want SUCCEEDED")
        if final.triggered_from != pb.TRIGGER_API_STREAMING:
            problems.append(f"triggered_from {pb.Trigger.Name(final.triggered_from)}, want TRIGGER_API_STREAMING")
        if parse_json(final.outputs_json or "null", "run_finished outputs_json") != {"steps": 3}:
            problems.append(f"run_finished outputs_json {final.outputs_json!r}")
        got = self.get(run_id)
        if got.last_sequence != stored[-1].sequence:
            problems.append(f"GetRun.last_sequence {got.last_sequence}, but the last event was "
                            f"{stored[-1].sequence}")
        if problems:
            fail("; ".join(problems))
        self.streamed = (run_id, stored)
        heartbeats = len(events) - len(stored)
        return (f"run {run_id}: {len(stored)} events, sequence 1..{len(stored)}: "
                f"{' '.join(self.kind(e) for e in stored)}"
                + (f" (+{heartbeats} heartbeats)" if heartbeats else "") + "; run_finished SUCCEEDED; call OK")

    def check_event_log(self, events, after: int, steps: int | None, what: str):
        """Checks a run's events (heartbeats allowed) and returns the stored ones.

        after: the after_sequence asked for (0: the log must be complete from run_started).
        steps: when set, the node events must be `steps` started/finished pairs s0, s1, ...
        """
        if not events:
            fail(f"{what}: no events")
        run_id = events[0].run_id
        stored, last = [], after
        for i, ev in enumerate(events):
            k = self.kind(ev)
            if ev.run_id != run_id:
                fail(f"{what}: event {i} has run_id {ev.run_id!r}, the first had {run_id!r}")
            if not ev.HasField("time"):
                fail(f"{what}: event {i} ({k}) has no time")
            if k == "heartbeat":
                if ev.sequence != last:
                    fail(f"{what}: a heartbeat after sequence {last} has sequence {ev.sequence}")
                continue
            if ev.sequence != last + 1:
                fail(f"{what}: event {i} ({k}) has sequence {ev.sequence} after {last}; sequences "
                     f"{[e.sequence for e in events]}")
            last = ev.sequence
            stored.append(ev)
        kinds = [self.kind(e) for e in stored]
        if after == 0 and kinds[0] != "run_started":
            fail(f"{what}: first event {kinds[0]}, want run_started; events {kinds}")
        if kinds[-1] != "run_finished":
            fail(f"{what}: last event {kinds[-1]}, want run_finished; events {kinds}")
        if kinds.count("run_finished") != 1 or kinds.count("run_started") > 1:
            fail(f"{what}: events {kinds}")
        if steps is not None and after == 0:
            nodes = stored[1:-1]
            want = ["node_started", "node_finished"] * steps
            if [self.kind(e) for e in nodes] != want:
                fail(f"{what}: node events {[self.kind(e) for e in nodes]}, want {steps} started/finished pairs")
            for i in range(steps):
                started, finished = nodes[2 * i].node_started, nodes[2 * i + 1].node_finished
                if not started.node_id or started.node_id != finished.node_id or started.node_id != f"s{i}":
                    fail(f"{what}: step {i}: node_started.node_id {started.node_id!r}, "
                         f"node_finished.node_id {finished.node_id!r}, want 's{i}'")
                if finished.status != self.pb.NODE_STATUS_SUCCEEDED:
                    fail(f"{what}: node {finished.node_id} finished {self.pb.NodeStatus.Name(finished.status)}")
        return stored

    def ensure_streamed(self):
        if self.streamed is None:
            self.c_stream()
        return self.streamed

    def c_watch_finished(self):
        run_id, stored = self.ensure_streamed()
        events, err = self.watch(run_id, 0)
        if err is not None:
            fail(f"after {len(events)} events the call ended {rpc_error_text(err)}, want OK")
        got = self.check_event_log(events, 0, 3, "WatchRun(after 0)")
        if [(e.sequence, self.kind(e)) for e in got] != [(e.sequence, self.kind(e)) for e in stored]:
            fail(f"WatchRun gave {[(e.sequence, self.kind(e)) for e in got]}, "
                 f"StreamWorkflow gave {[(e.sequence, self.kind(e)) for e in stored]}")
        if got[-1].run_finished.run.status != self.pb.RUN_STATUS_SUCCEEDED:
            fail(f"run_finished carries {self.status_name(got[-1].run_finished.run.status)}")
        return f"finished run {run_id}: the whole history, sequence 1..{len(got)}, as streamed; then OK"

    def c_watch_resume(self):
        run_id, stored = self.ensure_streamed()
        n = len(stored)
        k = n // 2
        events, err = self.watch(run_id, k)
        if err is not None:
            fail(f"after {len(events)} events the call ended {rpc_error_text(err)}, want OK")
        got = [e for e in events if self.kind(e) != "heartbeat"]
        seqs = [e.sequence for e in got]
        if seqs != list(range(k + 1, n + 1)):
            fail(f"after_sequence={k}: sequences {seqs}, want {list(range(k + 1, n + 1))}")
        if [self.kind(e) for e in got] != [self.kind(e) for e in stored[k:]]:
            fail(f"after_sequence={k}: kinds {[self.kind(e) for e in got]}, want {[self.kind(e) for e in stored[k:]]}")
        return f"after_sequence={k} on a run of {n} events: exactly {k + 1}..{n}, then OK"

    def c_watch_after_last(self):
        run_id, stored = self.ensure_streamed()
        n = len(stored)
        t0 = time.monotonic()
        events, err = self.watch(run_id, n, timeout=5)
        took = time.monotonic() - t0
        got = [e for e in events if self.kind(e) != "heartbeat"]
        if err is not None:
            fail(f"WatchRun(after_sequence={n}) of a finished run of {n} events: {len(got)} events "
                 f"(+{len(events) - len(got)} heartbeats), then {rpc_error_text(err)} after {took:.2f} s; "
                 "want no events and OK (the terminal event is already behind the cursor)")
        if got:
            fail(f"WatchRun(after_sequence={n}) gave events {[(e.sequence, self.kind(e)) for e in got]}")
        return f"after_sequence={n} (the last event) on a finished run: no events, OK in {took:.3f} s"

    def c_watch_heartbeat(self):
        pb = self.pb
        resp = self.submit({"steps": 1, "sleep_ms": 2000})
        run_id = resp.run.id
        events, err = self.watch(run_id, 0, timeout=20)
        if err is not None:
            fail(f"after {[self.kind(e) for e in events]} the call ended {rpc_error_text(err)}, want OK")
        stored = self.check_event_log(events, 0, 1, "WatchRun of a 2 s run")
        beats = [(i, e) for i, e in enumerate(events) if self.kind(e) == "heartbeat"]
        if not beats:
            fail(f"no heartbeat while the run slept 2 s (interval 0.5 s); events {[self.kind(e) for e in events]}")
        finished_at = next(i for i, e in enumerate(events) if self.kind(e) == "run_finished")
        if beats[0][0] > finished_at:
            fail("heartbeats only after run_finished")
        if stored[-1].run_finished.run.status != pb.RUN_STATUS_SUCCEEDED:
            fail(f"run_finished carries {self.status_name(stored[-1].run_finished.run.status)}")
        return (f"run {run_id}: {len(beats)} heartbeats (each with the last stored sequence) among "
                f"{' '.join(self.kind(e) + '#' + str(e.sequence) for e in events)}; then OK")

    def c_stop(self):
        pb = self.pb
        names = ["stop_running", "stop_again_unchanged", "stop_finished_unchanged"]
        resp = self.submit({"steps": 1, "sleep_ms": 5000})
        run_id = resp.run.id
        self.poll(run_id, [pb.RUN_STATUS_RUNNING], within=10)
        t0 = time.monotonic()
        stopped = self.stop(run_id)
        took = time.monotonic() - t0
        problems = []
        if stopped.status != pb.RUN_STATUS_STOPPED:
            problems.append(f"StopRun returned status {self.status_name(stopped.status)}, want STOPPED "
                            "(the server waits for the stop)")
        if not stopped.HasField("finished_at"):
            problems.append("finished_at not set")
        if stopped.id != run_id:
            problems.append(f"StopRun returned run {stopped.id!r}")
        results = [(names[0], not problems, "; ".join(problems) if problems else
                    f"running run {run_id} -> STOPPED in {took:.3f} s")]
        if problems:
            return results
        again = self.stop(run_id)
        got = self.get(run_id)
        ok = again == stopped and got == stopped
        results.append((names[1], ok, "StopRun again and GetRun return the same STOPPED run" if ok else
                        f"first StopRun {one_line(str(stopped), 250)} | second {one_line(str(again), 250)} | "
                        f"GetRun {one_line(str(got), 250)}"))
        done = self.get(self.ensure_succeeded_run().id)
        after = self.stop(done.id)
        ok = after == done and after.status == pb.RUN_STATUS_SUCCEEDED
        results.append((names[2], ok, f"StopRun on SUCCEEDED run {done.id} returns it unchanged" if ok else
                        f"GetRun {one_line(str(done), 250)} | StopRun {one_line(str(after), 250)}"))
        return results

    def c_list(self):
        import grpc

        pb = self.pb
        names = ["list_paging", "list_stable_under_inserts", "list_status_filter", "list_invalid_page_token",
                 "list_page_token_other_filter"]
        terminal = [pb.RUN_STATUS_SUCCEEDED, pb.RUN_STATUS_FAILED, pb.RUN_STATUS_STOPPED,
                    pb.RUN_STATUS_PARTIAL_SUCCEEDED]
        created = [self.submit({"steps": 1, "list": i}).run.id for i in range(5)]
        created.append(self.submit({"steps": 1, "fail": True, "list": 5}).run.id)
        for run_id in created:
            self.poll(run_id, terminal, within=15)
        # Nothing of acme runs from here on, except the run inserted between pages below.
        for run_id in list(self.acme_runs):
            self.poll(run_id, terminal, within=15)
        full = self.list_all(page_size=100)
        full_ids = [r.id for r in full]
        results = []

        # Paging with page_size 2, a new run submitted after the first page.
        pages, token, inserted = [], "", None
        for _ in range(500):
            resp = self.api.ListRuns(pb.ListRunsRequest(page_size=2, page_token=token),
                                     metadata=self.auth(self.key()), timeout=RPC_TIMEOUT)
            pages.append([r for r in resp.runs])
            token = resp.next_page_token
            if inserted is None:
                inserted = self.submit({"steps": 1, "list": "between pages"}).run.id
            if not token:
                break
        else:
            fail("ListRuns(page_size=2) still had a next_page_token after 500 pages")
        paged = [r for page in pages for r in page]
        paged_ids = [r.id for r in paged]
        problems = []
        if any(len(p) > 2 for p in pages):
            problems.append(f"page sizes {[len(p) for p in pages]} (page_size 2)")
        if any(len(p) == 0 for p in pages[:-1]):
            problems.append(f"an empty page before the last: sizes {[len(p) for p in pages]}")
        if len(set(paged_ids)) != len(paged_ids):
            problems.append(f"duplicate ids in {len(paged_ids)} paged runs")
        created_ms = [r.created_at.ToMilliseconds() for r in paged]
        if any(a < b for a, b in zip(created_ms, created_ms[1:])):
            problems.append(f"not newest first: created_at (ms) {created_ms}")
        missing = self.acme_runs - set(full_ids) - {inserted}
        if missing:
            problems.append(f"{len(missing)} runs this suite created are not listed: {sorted(missing)[:3]}")
        if len(full) < 6:
            problems.append(f"only {len(full)} runs listed")
        results.append((names[0], not problems, "; ".join(problems) if problems else
                        f"{len(paged)} runs in {len(pages)} pages of <= 2, ids unique, newest first; "
                        f"the tenant has {len(full)} runs (one ListRuns page of 100), all {len(self.acme_runs) - 1} "
                        "this suite created among them"))

        problems = []
        if paged_ids != full_ids:
            skipped = [i for i in full_ids if i not in paged_ids]
            extra = [i for i in paged_ids if i not in full_ids]
            problems.append(f"paging with a run submitted after page 1 gave {len(paged_ids)} runs, the listing "
                            f"before had {len(full_ids)}; skipped {skipped[:3]}, extra {extra[:3]}"
                            + ("" if skipped or extra else "; same ids, other order"))
        fresh = self.list_all(page_size=100)
        if not fresh or fresh[0].id != inserted:
            problems.append(f"a new listing does not start with the new run {inserted}: "
                            f"{[r.id for r in fresh[:2]]}")
        elif [r.id for r in fresh[1:]] != full_ids:
            problems.append("a new listing is not the new run followed by the earlier listing")
        results.append((names[1], not problems, "; ".join(problems) if problems else
                        f"the {len(full_ids)} older runs came exactly once, in order, although run {inserted} "
                        "was submitted after page 1; a new listing starts with it"))
        self.poll(inserted, terminal, within=15)

        # Status filter (everything is terminal now), paged too so that the token keeps the filter.
        everything = self.list_all(page_size=100)
        problems, counts = [], {}
        for statuses in ([pb.RUN_STATUS_SUCCEEDED], [pb.RUN_STATUS_FAILED],
                         [pb.RUN_STATUS_FAILED, pb.RUN_STATUS_STOPPED], [pb.RUN_STATUS_RUNNING]):
            label = "+".join(self.status_name(s).replace("RUN_STATUS_", "") for s in statuses)
            got = self.list_all(statuses=statuses, page_size=2)
            want = [r.id for r in everything if r.status in statuses]
            counts[label] = len(got)
            if [r.id for r in got] != want:
                wrong = [self.status_name(r.status) for r in got if r.status not in statuses]
                problems.append(f"statuses={label}: {len(got)} runs (other statuses: {wrong[:3]}), "
                                f"want the {len(want)} of the full listing")
        if counts.get("SUCCEEDED", 0) == 0 or counts.get("FAILED", 0) == 0:
            problems.append(f"counts {counts}: want SUCCEEDED and FAILED runs")
        results.append((names[2], not problems, "; ".join(problems) if problems else
                        f"filtered listings (page_size 2) match the full one: {counts}"))

        bad_tokens = ["not-a-page-token", "eyJjIjoxfQ", "\u00e9t\u00e9"]
        problems, answers = [], []
        for bad in bad_tokens:
            try:
                self.api.ListRuns(pb.ListRunsRequest(page_size=2, page_token=bad),
                                  metadata=self.auth(self.key()), timeout=RPC_TIMEOUT)
                problems.append(f"page_token {bad!r} -> OK")
            except grpc.RpcError as err:
                if err.code() != grpc.StatusCode.INVALID_ARGUMENT:
                    problems.append(f"page_token {bad!r} -> {rpc_error_text(err)}")
                    continue
                info, details = self.error_info(err)
                fields = [v.field for b in details["BadRequest"] for v in b.field_violations]
                if "page_token" not in fields:
                    problems.append(f"page_token {bad!r}: BadRequest fields {fields}, want page_token")
                answers.append(rpc_error_text(err))
        results.append((names[3], not problems, "; ".join(problems) if problems else
                        f"{len(bad_tokens)} invalid tokens -> {answers[0]} with ErrorInfo and BadRequest(page_token)"))

        first = self.api.ListRuns(pb.ListRunsRequest(page_size=1, statuses=[pb.RUN_STATUS_SUCCEEDED]),
                                  metadata=self.auth(self.key()), timeout=RPC_TIMEOUT)
        if not first.next_page_token:
            results.append((names[4], False, "ListRuns(page_size=1, SUCCEEDED) gave no next_page_token"))
            return results
        err = self.expect_error(
            lambda: self.api.ListRuns(pb.ListRunsRequest(page_size=1, page_token=first.next_page_token,
                                                         statuses=[pb.RUN_STATUS_FAILED]),
                                      metadata=self.auth(self.key()), timeout=RPC_TIMEOUT),
            grpc.StatusCode.INVALID_ARGUMENT, "a SUCCEEDED-filter page token with statuses=FAILED")
        results.append((names[4], True, f"a page token reused with another filter -> {rpc_error_text(err)}"))
        return results

    def c_idempotency(self):
        import grpc

        pb = self.pb
        names = ["idempotent_replay_field", "idempotent_replay_metadata", "idempotency_key_reused"]
        results = []
        k1 = "suite-field-" + uuid.uuid4().hex
        inputs = {"steps": 1, "greeting": "hello", "n": [1, 2]}
        first = self.submit(inputs, idempotency_key=k1)
        # The same request in another JSON encoding (key order, spacing) and in blocking mode.
        again = self.submit(None, idempotency_key=k1, raw_inputs='{ "n" : [1,2], "greeting":"hello","steps":1 }')
        blocking = self.submit(inputs, idempotency_key=k1, mode=pb.RESPONSE_MODE_BLOCKING, timeout=20)
        problems = []
        if not first.created:
            problems.append("the first submission has created = false")
        for label, resp in (("replay", again), ("blocking replay", blocking)):
            if resp.created or resp.run.id != first.run.id:
                problems.append(f"{label}: created={resp.created} id {resp.run.id}, want created=false id {first.run.id}")
        if blocking.run.status != pb.RUN_STATUS_SUCCEEDED:
            problems.append(f"the blocking replay returned {self.status_name(blocking.run.status)}, "
                            "want the run's terminal state SUCCEEDED")
        results.append((names[0], not problems, "; ".join(problems) if problems else
                        f"key in the request field: run {first.run.id} created once; the same request "
                        "(re-encoded JSON, and in blocking mode) -> created=false, same id"))

        k2 = "suite-metadata-" + uuid.uuid4().hex
        m1 = self.submit({"steps": 1, "via": "metadata"}, metadata=(("idempotency-key", k2),))
        m2 = self.submit({"steps": 1, "via": "metadata"}, metadata=(("idempotency-key", k2),))
        m3 = self.submit({"steps": 1, "via": "metadata"}, idempotency_key=k2)
        f1 = self.submit(inputs, metadata=(("idempotency-key", k1),))
        problems = []
        if not m1.created:
            problems.append("the first submission with idempotency-key metadata has created = false")
        if m2.created or m2.run.id != m1.run.id:
            problems.append(f"metadata replay: created={m2.created} id {m2.run.id}, want false {m1.run.id}")
        if m3.created or m3.run.id != m1.run.id:
            problems.append(f"the metadata key given in the request field: created={m3.created} id {m3.run.id}, "
                            f"want false {m1.run.id}")
        if f1.created or f1.run.id != first.run.id:
            problems.append(f"the request-field key given as metadata: created={f1.created} id {f1.run.id}, "
                            f"want false {first.run.id}")
        results.append((names[1], not problems, "; ".join(problems) if problems else
                        f"key as idempotency-key metadata: run {m1.run.id} created once, replayed with "
                        "created=false; metadata and request field name the same key"))

        err = self.expect_error(lambda: self.submit({"steps": 2, "greeting": "hello", "n": [1, 2]},
                                                    idempotency_key=k1),
                                grpc.StatusCode.ALREADY_EXISTS, "the same key with other inputs")
        err_md = self.expect_error(lambda: self.submit({"steps": 1, "via": "other"},
                                                       metadata=(("idempotency-key", k2),)),
                                   grpc.StatusCode.ALREADY_EXISTS, "the same metadata key with other inputs")
        problems = []
        for e, want_id in ((err, first.run.id), (err_md, m1.run.id)):
            info, details = self.error_info(e, "IDEMPOTENCY_KEY_REUSED")
            if info.metadata.get("run_id") != want_id:
                problems.append(f"ErrorInfo.metadata {dict(info.metadata)}, want run_id {want_id}")
            if details["RetryInfo"]:
                problems.append("RetryInfo on a non-retryable error")
        results.append((names[2], not problems, "; ".join(problems) if problems else
                        f"{rpc_error_text(err)}; details: {self.describe(self.decode(err))}"))
        return results

    def c_concurrency(self):
        import grpc

        pb = self.pb
        names = ["concurrency_limit_exact", "concurrency_limit_details", "concurrency_nothing_created",
                 "concurrency_stop_all"]
        active = [pb.RUN_STATUS_SCHEDULED, pb.RUN_STATUS_RUNNING]
        already = self.list_all(who="limited", statuses=active)
        if already:
            fail(f"the --limit-key tenant already has {len(already)} active runs")
        before = {r.id for r in self.list_all(who="limited")}
        req = pb.RunWorkflowRequest(inputs_json=json.dumps({"sleep_ms": 4000}),
                                    response_mode=pb.RESPONSE_MODE_ASYNC)
        md = self.auth(self.key("limited"))
        barrier = threading.Barrier(CONCURRENCY_LIMIT + 1, timeout=30)
        outcomes: list = [None] * (CONCURRENCY_LIMIT + 1)

        def one(i):
            try:
                barrier.wait()
                outcomes[i] = self.api.RunWorkflow(req, metadata=md, timeout=30)
            except grpc.RpcError as err:
                outcomes[i] = err
            except Exception as exc:  # the barrier broke
                outcomes[i] = exc

        threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(CONCURRENCY_LIMIT + 1)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        took = time.monotonic() - t0
        ok = [o for o in outcomes if isinstance(o, pb.RunWorkflowResponse)]
        errors = [o for o in outcomes if isinstance(o, grpc.RpcError)]
        exhausted = [e for e in errors if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED]
        other = [o for o in outcomes if o is None or (not isinstance(o, pb.RunWorkflowResponse)
                                                       and o not in exhausted)]
        ok_ids = [r.run.id for r in ok]
        results = []
        try:
            problems = []
            if len(ok) != CONCURRENCY_LIMIT or len(exhausted) != 1 or other:
                problems.append(f"{len(ok)} OK, {len(exhausted)} RESOURCE_EXHAUSTED, others: "
                                f"{[rpc_error_text(o) if isinstance(o, grpc.RpcError) else repr(o) for o in other][:3]}"
                                f"; want exactly {CONCURRENCY_LIMIT} OK and 1 RESOURCE_EXHAUSTED")
            if len(set(ok_ids)) != len(ok_ids) or not all(r.created for r in ok):
                problems.append("the admitted runs are not distinct new runs")
            results.append((names[0], not problems, "; ".join(problems) if problems else
                            f"{CONCURRENCY_LIMIT + 1} concurrent async submits in {took:.2f} s: "
                            f"{len(ok)} OK, 1 {rpc_error_text(exhausted[0])}"))

            if len(exhausted) == 1:
                err = exhausted[0]
                info, details = self.error_info(err, "TENANT_CONCURRENCY_LIMIT")
                problems = []
                retry = details["RetryInfo"]
                if len(retry) != 1:
                    problems.append(f"{len(retry)} RetryInfo details, want 1")
                elif retry[0].retry_delay.seconds * 1_000_000_000 + retry[0].retry_delay.nanos <= 0:
                    problems.append(f"RetryInfo.retry_delay {retry[0].retry_delay}, want > 0")
                quota = details["QuotaFailure"]
                if len(quota) != 1 or not quota[0].violations:
                    problems.append(f"QuotaFailure details {len(quota)}, want 1 with a violation")
                results.append((names[1], not problems, "; ".join(problems) + " | " + self.describe(details)
                                if problems else "details decoded: " + self.describe(details)))
            else:
                results.append((names[1], False, f"{len(exhausted)} RESOURCE_EXHAUSTED answers to decode"))

            after = self.list_all(who="limited")
            new = {r.id for r in after} - before
            now_active = [r for r in after if r.status in active]
            ok_nothing = new == set(ok_ids) and len(now_active) == len(ok_ids)
            results.append((names[2], ok_nothing,
                            f"the tenant gained {len(new)} runs, exactly the {len(ok_ids)} admitted ones; "
                            f"{len(now_active)} active" if ok_nothing else
                            f"the tenant gained {len(new)} runs ({len(new - set(ok_ids))} not admitted by an OK "
                            f"answer), {len(now_active)} active; {len(ok_ids)} were admitted"))
        finally:
            # Stop them all, whatever happened above, so the server is not left busy.
            futures = [(i, self.api.StopRun.future(pb.StopRunRequest(run_id=i), metadata=md, timeout=30))
                       for i in ok_ids]
            stop_problems = []
            for run_id, fut in futures:
                try:
                    run = fut.result()
                    if run.status != pb.RUN_STATUS_STOPPED:
                        stop_problems.append(f"{run_id}: {self.status_name(run.status)}")
                except grpc.RpcError as err:
                    stop_problems.append(f"{run_id}: {rpc_error_text(err)}")
        left = self.list_all(who="limited", statuses=active)
        if left:
            stop_problems.append(f"{len(left)} runs still active after the stops")
        retry_ok = None
        if not stop_problems:
            # A slot is free again: the retry the RetryInfo suggests succeeds.
            r = self.api.RunWorkflow(pb.RunWorkflowRequest(inputs_json='{"steps": 1}',
                                                           response_mode=pb.RESPONSE_MODE_ASYNC),
                                     metadata=md, timeout=RPC_TIMEOUT)
            retry_ok = r.created
            if not retry_ok:
                stop_problems.append("a submission after the stops has created = false")
        results.append((names[3], not stop_problems, "; ".join(stop_problems[:5]) if stop_problems else
                        f"StopRun of the {len(ok_ids)} admitted runs: all STOPPED, none active; "
                        "a new submission is admitted again"))
        return results

    def c_bad_input(self):
        import grpc

        pb = self.pb
        names = ["bad_input_not_json", "bad_input_undeclared", "bad_input_not_object", "bad_idempotency_key"]
        results = []
        for name, raw, want_field in [
            ("bad_input_not_json", "not json", None),
            ("bad_input_undeclared", '{"bad": 1}', "inputs.bad"),
            ("bad_input_not_object", "[1, 2]", None),
        ]:
            try:
                err = self.expect_error(lambda: self.submit(None, raw_inputs=raw), grpc.StatusCode.INVALID_ARGUMENT,
                                        f"inputs_json {raw!r}")
                info, details = self.error_info(err)
                fields = [v.field for b in details["BadRequest"] for v in b.field_violations]
                if not fields or not all(fields):
                    fail(f"inputs_json {raw!r}: BadRequest field violations {fields}, want field names; "
                         + self.describe(details))
                if want_field is not None and want_field not in fields:
                    fail(f"inputs_json {raw!r}: BadRequest fields {fields}, want {want_field!r}")
                if want_field is None and not all(f.startswith("inputs") for f in fields):
                    fail(f"inputs_json {raw!r}: BadRequest fields {fields}, want the inputs field")
                results.append((name, True, f"inputs_json {raw!r} -> {rpc_error_text(err)}; {self.describe(details)}"))
            except CheckFailed as exc:
                results.append((name, False, str(exc)))
        problems, seen = [], []
        for label, kwargs in [
            ("a 300-character key", {"idempotency_key": "k" * 300}),
            ("a key with a tab", {"idempotency_key": "tab\there"}),
            ("a non-ASCII key", {"idempotency_key": "cl\u00e9"}),
            ("a 300-character metadata key", {"metadata": (("idempotency-key", "m" * 300),)}),
        ]:
            try:
                err = self.expect_error(lambda: self.submit({"steps": 1}, **kwargs), grpc.StatusCode.INVALID_ARGUMENT,
                                        label)
                info, details = self.error_info(err)
                fields = [v.field for b in details["BadRequest"] for v in b.field_violations]
                if "idempotency_key" not in fields:
                    problems.append(f"{label}: BadRequest fields {fields}, want idempotency_key")
                seen.append(label)
            except CheckFailed as exc:
                problems.append(str(exc))
        ok_key = self.submit({"steps": 1}, idempotency_key="k" * 255)
        if not ok_key.created:
            problems.append("a 255-character key: created = false on its first use")
        results.append((names[3], not problems, "; ".join(problems) if problems else
                        f"{', '.join(seen)} -> INVALID_ARGUMENT with BadRequest(idempotency_key); "
                        "a 255-character key is accepted"))
        return results

    def c_cross_tenant(self):
        import grpc

        pb = self.pb
        names = ["cross_tenant_get", "cross_tenant_watch", "cross_tenant_stop", "cross_tenant_list"]
        acme_run = self.ensure_succeeded_run()
        live = self.submit({"steps": 1, "sleep_ms": 1500})  # a running acme run for Watch and Stop
        missing = str(uuid.uuid4())
        results = []
        reference = self.expect_error(lambda: self.get(missing, "globex"), grpc.StatusCode.NOT_FOUND,
                                      "globex GetRun of a run that does not exist")
        self.error_info(reference, "RUN_NOT_FOUND")
        ref = answer(reference)

        def watch_err(run_id):
            events, err = self.watch(run_id, 0, who="globex", timeout=10)
            if err is None or events:
                fail(f"globex WatchRun({run_id}): {len(events)} events, then "
                     f"{'OK' if err is None else rpc_error_text(err)}; want NOT_FOUND and nothing else")
            return err

        for name, fn in [
            ("cross_tenant_get", lambda run_id: self.expect_error(lambda: self.get(run_id, "globex"),
                                                                  grpc.StatusCode.NOT_FOUND, "globex GetRun")),
            ("cross_tenant_watch", watch_err),
            ("cross_tenant_stop", lambda run_id: self.expect_error(lambda: self.stop(run_id, "globex"),
                                                                   grpc.StatusCode.NOT_FOUND, "globex StopRun")),
        ]:
            try:
                problems = []
                for label, run_id in (("finished", acme_run.id), ("running", live.run.id)):
                    err = fn(run_id)
                    same_rpc = fn(str(uuid.uuid4()))
                    if answer(err) != ref:
                        problems.append(f"acme's {label} run: {answer(err)!r} differs from GetRun of a "
                                        f"non-existent id: {ref!r}")
                    if answer(same_rpc) != ref:
                        problems.append(f"the same RPC on a non-existent id: {answer(same_rpc)!r} differs from {ref!r}")
                results.append((name, not problems, "; ".join(problems) if problems else
                                f"acme's finished and running runs -> {rpc_error_text(reference)}, code, message and "
                                f"details bytes ({len(ref[2] or b'')} bytes) identical to a non-existent id"))
            except CheckFailed as exc:
                results.append((name, False, str(exc)))
        # The stops above did nothing to acme's run.
        still = self.get(live.run.id)
        globex_run = self.api.RunWorkflow(pb.RunWorkflowRequest(inputs_json='{"steps": 1}',
                                                                response_mode=pb.RESPONSE_MODE_ASYNC),
                                          metadata=self.auth(self.key("globex")), timeout=RPC_TIMEOUT).run
        globex_ids = {r.id for r in self.list_all(who="globex")}
        acme_ids = {r.id for r in self.list_all(who="acme")}
        problems = []
        if still.status == pb.RUN_STATUS_STOPPED:
            problems.append("globex's StopRun stopped acme's run")
        leaked = globex_ids & (self.acme_runs | acme_ids)
        if leaked:
            problems.append(f"globex's ListRuns contains {len(leaked)} acme runs, e.g. {sorted(leaked)[:2]}")
        if globex_run.id not in globex_ids:
            problems.append(f"globex's ListRuns lacks its own run {globex_run.id}")
        if globex_run.id in acme_ids:
            problems.append("acme's ListRuns contains globex's run")
        results.append((names[3], not problems, "; ".join(problems) if problems else
                        f"globex lists {len(globex_ids)} runs, none of acme's {len(acme_ids)}; acme's listing "
                        "lacks globex's run; acme's running run was not stopped by globex"))
        self.poll(live.run.id, [pb.RUN_STATUS_SUCCEEDED], within=15)
        return results

    def c_unauthenticated(self):
        import grpc

        pb = self.pb
        names = ["unauthenticated_no_metadata", "unauthenticated_basic_scheme", "unauthenticated_malformed_key",
                 "unauthenticated_unknown_key", "unauthenticated_revoked_key", "unauthenticated_same_answer",
                 "bearer_scheme_case_insensitive"]
        run_id = self.ensure_succeeded_run().id
        well_formed_unknown = "flowd_000000000000_" + "a" * 64
        cases = [
            ("unauthenticated_no_metadata", ()),
            ("unauthenticated_basic_scheme", (("authorization", "Basic x"),)),
            ("unauthenticated_malformed_key", (("authorization", "Bearer not-a-flowd-key"),)),
            ("unauthenticated_unknown_key", (("authorization", f"Bearer {well_formed_unknown}"),)),
            ("unauthenticated_revoked_key", (("authorization", f"Bearer {self.args.revoked_key}"),)),
        ]
        extra = [
            ("Bearer alone", (("authorization", "Bearer"),)),
            ("the key without a scheme", (("authorization", self.args.key),)),
            ("the key with its last character changed",
             (("authorization", "Bearer " + self.args.key[:-1] + ("0" if self.args.key[-1] != "0" else "1")),)),
        ]
        results, answers = [], {}
        for name, md in cases + extra:
            try:
                err = self.expect_error(lambda: self.api.GetRun(pb.GetRunRequest(run_id=run_id), metadata=md,
                                                                timeout=RPC_TIMEOUT),
                                        grpc.StatusCode.UNAUTHENTICATED, f"GetRun with {md!r}"[:200])
                info, details = self.error_info(err)
                answers[name] = answer(err)
                if name.startswith("unauthenticated_"):
                    results.append((name, True, f"{rpc_error_text(err)}; {self.describe(details)}"))
            except CheckFailed as exc:
                if name.startswith("unauthenticated_"):
                    results.append((name, False, str(exc)))
                else:
                    answers[name] = ("FAILED", str(exc))
        # Every RPC answers a missing key the same way, before looking at the request.
        for label, fn in [
            ("RunWorkflow", lambda: self.api.RunWorkflow(pb.RunWorkflowRequest(inputs_json='{"bad": 1}'),
                                                         timeout=RPC_TIMEOUT)),
            ("StopRun", lambda: self.api.StopRun(pb.StopRunRequest(run_id=run_id), timeout=RPC_TIMEOUT)),
            ("ListRuns", lambda: self.api.ListRuns(pb.ListRunsRequest(page_token="junk"), timeout=RPC_TIMEOUT)),
        ]:
            try:
                answers[f"{label} without metadata"] = answer(
                    self.expect_error(fn, grpc.StatusCode.UNAUTHENTICATED, f"{label} without metadata"))
            except CheckFailed as exc:
                answers[f"{label} without metadata"] = ("FAILED", str(exc))
        for label, call in [("WatchRun", lambda: self.api.WatchRun(pb.WatchRunRequest(run_id=run_id), timeout=10)),
                            ("StreamWorkflow", lambda: self.api.StreamWorkflow(
                                pb.RunWorkflowRequest(inputs_json='{"steps": 1}'), timeout=10))]:
            got = []
            try:
                for ev in call():
                    got.append(ev)
                answers[f"{label} without metadata"] = ("FAILED", f"{len(got)} events then OK")
            except grpc.RpcError as err:
                answers[f"{label} without metadata"] = answer(err) if not got else ("FAILED", f"{len(got)} events")
        first = answers.get("unauthenticated_no_metadata")
        differing = {k: v for k, v in answers.items() if v != first}
        results.append((names[5], first is not None and not differing,
                        f"{len(answers)} cases (the five above, Bearer without a key, the key without a scheme, "
                        "a changed key, and every other RPC without metadata) give one answer: "
                        f"{first[0].name} {first[1]!r} + {len(first[2] or b'')} details bytes"
                        if first is not None and not differing else
                        f"answers differ from the no-metadata one {first!r}: {differing!r}"))
        problems = []
        for scheme in ("bearer", "BEARER", "BeArEr"):
            try:
                got = self.api.GetRun(pb.GetRunRequest(run_id=run_id),
                                      metadata=(("authorization", f"{scheme} {self.args.key}"),), timeout=RPC_TIMEOUT)
                if got.id != run_id:
                    problems.append(f"{scheme}: GetRun returned {got.id!r}")
            except grpc.RpcError as err:
                problems.append(f"'{scheme} <key>': {rpc_error_text(err)}")
        results.append((names[6], not problems, "; ".join(problems) if problems else
                        "'bearer', 'BEARER' and 'BeArEr' <key> are accepted"))
        return results

    def c_permission(self):
        import grpc

        err = self.expect_error(lambda: self.submit({"steps": 1}, workflow="other"),
                                grpc.StatusCode.PERMISSION_DENIED, "workflow 'other' with an echo key")
        info, details = self.error_info(err)
        if info is None or info.reason != "WORKFLOW_NOT_ALLOWED" or dict(info.metadata).get("workflow") != "other":
            fail(f"ErrorInfo {info} should have reason WORKFLOW_NOT_ALLOWED and metadata workflow=other")
        explicit = self.submit({"steps": 1}, workflow=WORKFLOW)
        if explicit.run.workflow != WORKFLOW:
            fail(f"workflow 'echo' given explicitly: run workflow {explicit.run.workflow!r}")
        return f"{rpc_error_text(err)}; {self.describe(details)}; workflow 'echo' given explicitly is accepted"

    def c_client_cli(self):
        pb = self.pb
        names = ["client_cli_get", "client_cli_watch", "client_cli_error"]
        run = self.ensure_succeeded_run()
        env = dict(os.environ, FLOWD_API_KEY=self.args.key)
        client = [sys.executable, os.path.join(HERE, "flowd_client.py"), "--target", self.args.target]
        if self.args.proto_dir:
            client += ["--proto-dir", self.args.proto_dir]
        results = []

        def cli(*argv, timeout=30):
            try:
                return subprocess.run(client + list(argv), capture_output=True, text=True, timeout=timeout, env=env)
            except subprocess.TimeoutExpired:
                fail(f"flowd_client.py {' '.join(argv)} did not finish within {timeout} s")

        proc = cli("get", run.id)
        try:
            if proc.returncode != 0:
                fail(f"flowd_client.py get exited {proc.returncode}: {proc.stderr.strip()}")
            printed = parse_json(proc.stdout, "flowd_client.py get output")
            if printed.get("id") != run.id or printed.get("status") != "RUN_STATUS_SUCCEEDED":
                fail(f"flowd_client.py get printed id {printed.get('id')!r} status {printed.get('status')!r}")
            results.append((names[0], True, f"flowd_client.py get {run.id} (key from FLOWD_API_KEY) printed the run "
                                            f"as JSON: status {printed['status']}, outputs_json {printed.get('outputs_json')}"))
        except CheckFailed as exc:
            results.append((names[0], False, str(exc)))

        proc = cli("watch", run.id)
        lines = proc.stdout.strip().splitlines()
        ok = (proc.returncode == 0 and len(lines) == run.last_sequence and lines
              and "run_started" in lines[0] and "run_finished" in lines[-1])
        results.append((names[1], bool(ok), f"flowd_client.py watch printed {len(lines)} lines, first {lines[0]!r}, "
                                            f"last {lines[-1]!r}" if ok else
                        f"flowd_client.py watch exited {proc.returncode}, {len(lines)} lines (want "
                        f"{run.last_sequence}): {proc.stdout[-300:]!r} {proc.stderr[-300:]!r}"))

        missing = str(uuid.uuid4())
        proc = cli("get", missing)
        ok = proc.returncode == 1 and "NOT_FOUND" in proc.stderr and "RUN_NOT_FOUND" in proc.stderr
        results.append((names[2], ok, f"flowd_client.py get of an unknown run exited 1: {proc.stderr.strip()}" if ok
                        else f"exited {proc.returncode}; stdout {proc.stdout!r}; stderr {proc.stderr!r}"))
        return results

    # -- order ------------------------------------------------------------------------------

    def plan(self):
        c = self
        return [
            (["connect"], c.c_connect),
            (["async_submit_scheduled", "async_poll_succeeded"], c.c_async),
            (["blocking_succeeded", "blocking_unspecified_mode", "blocking_failed_run"], c.c_blocking),
            (["blocking_deadline_exceeded", "blocking_deadline_run_continues"], c.c_blocking_deadline),
            (["stream_workflow"], c.c_stream),
            (["watch_finished_from_0"], c.c_watch_finished),
            (["watch_resume_middle"], c.c_watch_resume),
            (["watch_after_last_event"], c.c_watch_after_last),
            (["watch_heartbeat"], c.c_watch_heartbeat),
            (["stop_running", "stop_again_unchanged", "stop_finished_unchanged"], c.c_stop),
            (["idempotent_replay_field", "idempotent_replay_metadata", "idempotency_key_reused"], c.c_idempotency),
            (["bad_input_not_json", "bad_input_undeclared", "bad_input_not_object", "bad_idempotency_key"],
             c.c_bad_input),
            (["workflow_not_allowed"], c.c_permission),
            (["cross_tenant_get", "cross_tenant_watch", "cross_tenant_stop", "cross_tenant_list"],
             c.c_cross_tenant),
            (["unauthenticated_no_metadata", "unauthenticated_basic_scheme", "unauthenticated_malformed_key",
              "unauthenticated_unknown_key", "unauthenticated_revoked_key", "unauthenticated_same_answer",
              "bearer_scheme_case_insensitive"], c.c_unauthenticated),
            (["list_paging", "list_stable_under_inserts", "list_status_filter", "list_invalid_page_token",
              "list_page_token_other_filter"], c.c_list),
            (["concurrency_limit_exact", "concurrency_limit_details", "concurrency_nothing_created",
              "concurrency_stop_all"], c.c_concurrency),
            (["client_cli_get", "client_cli_watch", "client_cli_error"], c.c_client_cli),
        ]

    def run(self) -> None:
        plan = self.plan()
        if self.args.only:
            wanted = set(self.args.only.split(","))
            known = {n for names, _ in plan for n in names}
            unknown = wanted - known
            if unknown:
                self.report.record(False, "arguments", f"unknown check(s) {sorted(unknown)}; see --list")
                return
            plan = [(names, fn) for names, fn in plan if names == ["connect"] or wanted & set(names)]
        missing = [o for o in ("key", "other_tenant_key", "limit_key", "revoked_key") if not getattr(self.args, o)]
        if missing:
            self.report.record(False, "arguments", "missing " + ", ".join("--" + m.replace("_", "-") for m in missing))
            return

        self.report.current = "stubs"
        try:
            self.stubs = flowd_stubs.load(self.args.proto_dir, self.args.keep_stubs)
        except Exception as exc:
            self.report.record(False, "stubs", f"{type(exc).__name__}: {exc}")
            return
        import grpc

        methods = [m.name for m in self.pb.DESCRIPTOR.services_by_name["Workflows"].methods]
        self.report.record(True, "stubs", f"generated from proto/ with grpcio-tools (grpcio {grpc.__version__}); "
                                          f"flowd.v1.Workflows has {', '.join(methods)}")
        self.channel = grpc.insecure_channel(self.args.target)
        self.api = self.stubs.workflows_pb2_grpc.WorkflowsStub(self.channel)
        try:
            for names, fn in plan:
                failed_before = self.report.failed
                self.run_check(names, fn)
                if names == ["connect"] and self.report.failed > failed_before:
                    break  # nothing else can pass; the FAIL line says why
        finally:
            self.channel.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", help="host:port of the server, e.g. 127.0.0.1:50051")
    ap.add_argument("--key", help="API key of a tenant, bound to workflow echo")
    ap.add_argument("--other-tenant-key", help="API key of another tenant, bound to echo")
    ap.add_argument("--limit-key", help="API key of a third tenant without runs (limit 50 active runs)")
    ap.add_argument("--revoked-key", help="a revoked API key of the --key tenant")
    add_suite_arguments(ap)
    args = ap.parse_args(argv)
    return run_suite(ap, args, Suite)


if __name__ == "__main__":
    sys.exit(main())
