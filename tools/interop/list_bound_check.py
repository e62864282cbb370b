#!/usr/bin/env python3
"""ListRuns under a byte bound: submits N runs with large inputs to a running flowd (stock
grpcio, stubs generated from proto/), waits until each has ended, then lists them with page_size 100, following
next_page_token, and checks that every page's serialized size stays under --bound, that every
run is listed exactly once. Prints one line per page and a summary; exits 1 on
a failed check.

    python3 tools/interop/list_bound_check.py --target 127.0.0.1:PORT --key KEY --workflow W \
        --runs 100 --input-bytes 1000000 --bound 1048576
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import flowd_stubs  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--workflow", required=True)
    ap.add_argument("--field", default="message", help="the string input that gets the large value")
    ap.add_argument("--extra", default="{}", help="other inputs, a JSON object")
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--input-bytes", type=int, default=1_000_000)
    ap.add_argument("--bound", type=int, required=True)
    args = ap.parse_args()

    import grpc

    stubs = flowd_stubs.load()
    pb = stubs.workflows_pb2
    # Room for whatever the server sends: a missing bound must show as a large page, not as
    # this client's own refusal.
    channel = grpc.insecure_channel(args.target, options=[("grpc.max_receive_message_length", 512 * 1024 * 1024),
                                                          ("grpc.max_send_message_length", 16 * 1024 * 1024)])
    api = stubs.workflows_pb2_grpc.WorkflowsStub(channel)
    metadata = [("authorization", f"Bearer {args.key}")]

    submitted = []
    for i in range(args.runs):
        inputs = json.loads(args.extra)
        inputs[args.field] = ("%06d" % i) + "x" * (args.input_bytes - 6)
        resp = api.RunWorkflow(pb.RunWorkflowRequest(workflow=args.workflow, inputs_json=json.dumps(inputs),
                                                     response_mode=pb.RESPONSE_MODE_ASYNC), metadata=metadata, timeout=60)
        submitted.append(resp.run.id)
    # The pages' sizes depend on the runs' outputs: list them once every run has ended (each
    # WatchRun stream ends after its run's last event).
    for run_id in submitted:
        for _ in api.WatchRun(pb.WatchRunRequest(run_id=run_id), metadata=metadata, timeout=60):
            pass

    failures = 0
    listed = []
    token = ""
    pages = 0
    largest = 0
    while True:
        resp = api.ListRuns(pb.ListRunsRequest(page_size=100, page_token=token), metadata=metadata, timeout=60)
        size = resp.ByteSize()
        pages += 1
        largest = max(largest, size)
        print(f"page {pages}: {len(resp.runs)} runs, {size} bytes")
        if size > args.bound:
            print(f"FAIL page {pages} is {size} bytes, over the bound {args.bound}")
            failures += 1
        listed += [run.id for run in resp.runs]
        token = resp.next_page_token
        if not token:
            break
    if sorted(listed) != sorted(submitted) or len(set(listed)) != len(listed):
        print(f"FAIL listed {len(listed)} runs ({len(set(listed))} distinct), submitted {len(submitted)}")
        failures += 1
    print(f"{len(submitted)} runs of {args.input_bytes} input bytes: {pages} pages, largest {largest} bytes "
          f"(bound {args.bound}); {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
