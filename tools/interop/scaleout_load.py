#!/usr/bin/env python3
"""Async `hello` submissions spread over several flowd processes on one PostgreSQL database.

    scaleout_load.py --targets 127.0.0.1:A,127.0.0.1:B,127.0.0.1:C --key KEY \
                     [--plain 1000] [--keys 100] [--repeats 20] [--threads 32]

Sends `plain` submissions without an idempotency key (round-robin over the targets) and
`keys` x `repeats` submissions with an idempotency key, each key's repeats going to the targets
in turn (so every key reaches every process), all interleaved. A submission refused for the
tenant's limit (RESOURCE_EXHAUSTED) is sent again after a short pause, as a client would (at
most 10,000 times). Prints one JSON object: the run ids per key, the plain run ids, the count of
refusals for the limit, and every other failure.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import flowd_stubs  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--targets", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--plain", type=int, default=1000)
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=32)
    args = parser.parse_args()

    stubs = flowd_stubs.load()
    import grpc

    pb = stubs.workflows_pb2
    targets = args.targets.split(",")
    apis = [stubs.workflows_pb2_grpc.WorkflowsStub(grpc.insecure_channel(t)) for t in targets]
    metadata = (("authorization", f"Bearer {args.key}"),)

    jobs = [(i % len(targets), "", f"plain-{i}") for i in range(args.plain)]
    jobs += [(r % len(targets), f"key-{k}", f"key-{k}") for k in range(args.keys) for r in range(args.repeats)]
    random.Random(7).shuffle(jobs)

    lock = threading.Lock()
    by_key: dict[str, list[str]] = {}
    plain: list[str] = []
    over_limit = 0
    failures: list[str] = []

    def submit(job):
        nonlocal over_limit
        target, key, name = job
        request = pb.RunWorkflowRequest(workflow="hello", inputs_json=json.dumps({"name": name}),
                                        response_mode=pb.RESPONSE_MODE_ASYNC, idempotency_key=key)
        for _ in range(10_000):
            try:
                response = apis[target].RunWorkflow(request, metadata=metadata, timeout=60)
            except grpc.RpcError as err:
                if err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    with lock:
                        over_limit += 1
                    time.sleep(0.005)
                    continue
                with lock:
                    failures.append(f"{name} on {targets[target]}: {err.code().name} {err.details()}")
                return
            with lock:
                if key:
                    by_key.setdefault(key, []).append(response.run.id)
                else:
                    plain.append(response.run.id)
            return
        with lock:
            failures.append(f"{name}: refused for the limit 10,000 times")

    with ThreadPoolExecutor(max_workers=args.threads) as pool:
        list(pool.map(submit, jobs))
    print(json.dumps({"submissions": len(jobs), "by_key": by_key, "plain": plain, "over_limit": over_limit,
                      "failures": failures}))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
