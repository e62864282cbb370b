#!/usr/bin/env python3
"""Live events across processes: runs submitted to one flowd process, watched on another.

    watch_delay.py --submit 127.0.0.1:A --watch 127.0.0.1:B --key KEY [--runs 20] [--seconds 0.4]

Submits `runs` async runs of the `slow` workflow (four sleeps adding up to `seconds`, so each run
writes its events over that time) to --submit, opens a WatchRun stream for each on --watch as
soon as it is accepted, and reads every stream to its end. For each event written after its
stream was opened (a live event, not one replayed from the store) it records the delay from the
event's time (stamped by the process that wrote it) to its arrival here (the same machine's
clock). Prints one JSON object: runs, events, live events, every stream's sequences in order and
without gap (ok), the final states, and the live delay's p50/p99/max in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import flowd_stubs  # noqa: E402


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--submit", required=True)
    parser.add_argument("--watch", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=0.4)
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()

    stubs = flowd_stubs.load()
    import grpc

    pb = stubs.workflows_pb2
    submit_api = stubs.workflows_pb2_grpc.WorkflowsStub(grpc.insecure_channel(args.submit))
    watch_api = stubs.workflows_pb2_grpc.WorkflowsStub(grpc.insecure_channel(args.watch))
    metadata = (("authorization", f"Bearer {args.key}"),)

    lock = threading.Lock()
    delays: list[float] = []
    counted = [0]
    sequences: dict[str, list[int]] = {}
    finals: dict[str, str] = {}
    failures: list[str] = []

    def watch(run_id: str) -> None:
        seen: list[int] = []
        opened = time.time()
        try:
            stream = watch_api.WatchRun(pb.WatchRunRequest(run_id=run_id), metadata=metadata, timeout=args.timeout)
            for event in stream:
                arrived = time.time()
                kind = event.WhichOneof("event")
                if kind == "heartbeat":
                    continue
                seen.append(event.sequence)
                written = event.time.seconds + event.time.nanos / 1e9
                with lock:
                    counted[0] += 1
                    if written >= opened:
                        delays.append((arrived - written) * 1000)
                if kind == "run_finished":
                    with lock:
                        finals[run_id] = pb.RunStatus.Name(event.run_finished.run.status)
        except grpc.RpcError as error:  # a stream that fails is reported, not hidden
            with lock:
                failures.append(f"{run_id}: {error.code().name} {error.details()}")
        with lock:
            sequences[run_id] = seen

    threads = []
    inputs = json.dumps({"seconds": args.seconds})
    for index in range(args.runs):
        request = pb.RunWorkflowRequest(workflow="slow", inputs_json=inputs,
                                        response_mode=pb.RESPONSE_MODE_ASYNC)
        response = submit_api.RunWorkflow(request, metadata=metadata, timeout=args.timeout)
        thread = threading.Thread(target=watch, args=(response.run.id,))
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join(args.timeout)

    in_order = all(seq == list(range(1, len(seq) + 1)) and len(seq) > 0 for seq in sequences.values())
    print(json.dumps({
        "runs": args.runs,
        "streams": len(sequences),
        "events": counted[0],
        "live_events": len(delays),
        "ok": in_order and len(sequences) == args.runs and not failures,
        "states": sorted(set(finals.values())),
        "finished": len(finals),
        "failures": failures[:10],
        "delay_ms": {"p50": round(percentile(delays, 0.5), 1), "p99": round(percentile(delays, 0.99), 1),
                     "max": round(max(delays, default=0), 1)},
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
