#!/usr/bin/env python3
"""A small command-line client for flowd's gRPC Workflows API (grpcio, stock stubs).

The stubs are generated from proto/ on the fly (see flowd_stubs.py; needs grpcio,
grpcio-tools and grpcio-status). The API key comes from --key or the FLOWD_API_KEY
environment variable, the server from --target or FLOWD_TARGET (default 127.0.0.1:50051).

    export FLOWD_API_KEY=flowd_...
    python3 tools/interop/flowd_client.py run hello --inputs '{"name": "Ada"}'
    python3 tools/interop/flowd_client.py run hello --inputs '{"name": "Ada"}' --mode blocking
    python3 tools/interop/flowd_client.py run hello --inputs '{"name": "Ada"}' --mode stream
    python3 tools/interop/flowd_client.py get RUN_ID
    python3 tools/interop/flowd_client.py watch RUN_ID [--after N]
    python3 tools/interop/flowd_client.py stop RUN_ID
    python3 tools/interop/flowd_client.py list [--page-size N] [--status succeeded,...] [--all]

`run`, `get` and `stop` print the run as JSON (proto field names); `watch` and `run --mode
stream` print one line per event (sequence, kind, summary) until the run's terminal event;
`list` prints one line per run and the next page token. A failed call prints its gRPC code,
message and decoded error details (google.rpc.Status) on stderr and exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import flowd_stubs  # noqa: E402

MODES = {"async": "RESPONSE_MODE_ASYNC", "blocking": "RESPONSE_MODE_BLOCKING"}


def run_json(message) -> dict:
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(message, preserving_proto_field_name=True)


def print_json(value) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def short(text: str, limit: int = 80) -> str:
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def event_line(stubs, ev) -> str:
    """One line for a RunEvent: sequence, kind and a short summary."""
    pb = stubs.workflows_pb2
    kind = ev.WhichOneof("event") or "unknown"
    summary = ""
    if kind in ("run_started", "run_finished"):
        run = getattr(ev, kind).run
        summary = f"run {run.id} {pb.RunStatus.Name(run.status).replace('RUN_STATUS_', '').lower()}"
        if run.error:
            summary += f" error={short(run.error)!r}"
        if run.outputs_json:
            summary += f" outputs={short(run.outputs_json)}"
        if kind == "run_finished":
            summary += f" elapsed_ms={run.elapsed_ms} steps={run.total_steps}"
    elif kind == "node_started":
        n = ev.node_started
        summary = f"node {n.node_id} ({n.node_kind}) #{n.index}" + (f" {n.title!r}" if n.title else "")
    elif kind == "node_finished":
        n = ev.node_finished
        summary = (f"node {n.node_id} ({n.node_kind}) #{n.index} "
                   f"{pb.NodeStatus.Name(n.status).replace('NODE_STATUS_', '').lower()} elapsed_ms={n.elapsed_ms}")
        if n.error:
            summary += f" error={short(n.error)!r}"
        if n.outputs_json:
            summary += f" outputs={short(n.outputs_json)}"
    elif kind == "text_chunk":
        summary = f"node {ev.text_chunk.node_id} {short(ev.text_chunk.text)!r}"
    time = ev.time.ToJsonString() if ev.HasField("time") else "-"
    return f"{ev.sequence}\t{time}\t{kind}\t{summary}".rstrip()


def print_error(stubs, err) -> None:
    """The gRPC code, message and decoded google.rpc.Status details of a failed call."""
    from google.protobuf import text_format
    from grpc_status import rpc_status

    try:
        code = err.code().name
        message = err.details()
    except Exception:  # not a grpc.Call
        print(f"error: {err!r}", file=sys.stderr)
        return
    print(f"error: {code}: {message}", file=sys.stderr)
    try:
        status = rpc_status.from_call(err)
    except ValueError as exc:
        print(f"  (error details do not match the call: {exc})", file=sys.stderr)
        return
    if status is None:
        return
    ed = stubs.error_details_pb2
    known = [ed.ErrorInfo, ed.RetryInfo, ed.QuotaFailure, ed.BadRequest, ed.PreconditionFailure,
             ed.ResourceInfo, ed.Help, ed.LocalizedMessage, ed.DebugInfo, ed.RequestInfo]
    for detail in status.details:
        cls = next((c for c in known if detail.Is(c.DESCRIPTOR)), None)
        if cls is None:
            print(f"  {detail.type_url} ({len(detail.value)} bytes)", file=sys.stderr)
            continue
        msg = cls()
        detail.Unpack(msg)
        print(f"  {cls.DESCRIPTOR.name} {{{text_format.MessageToString(msg, as_one_line=True)}}}", file=sys.stderr)


def stream_events(stubs, call) -> None:
    for ev in call:
        print(event_line(stubs, ev), flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--target", default=os.environ.get("FLOWD_TARGET", "127.0.0.1:50051"),
                    help="host:port of flowd (env FLOWD_TARGET; default 127.0.0.1:50051)")
    ap.add_argument("--key", default=os.environ.get("FLOWD_API_KEY", ""), help="API key (env FLOWD_API_KEY)")
    ap.add_argument("--timeout", type=float, default=None,
                    help="deadline of the call in seconds (default: 30 for get/stop/list/async run, none otherwise)")
    ap.add_argument("--proto-dir", default=None, help="proto/ folder (default: the repository's)")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="submit a run of WORKFLOW")
    p.add_argument("workflow", nargs="?", default="", help="workflow name (may be omitted: the key names one)")
    p.add_argument("--inputs", default="{}", help="inputs as a JSON object (default {})")
    p.add_argument("--mode", choices=["async", "blocking", "stream"], default="async")
    p.add_argument("--idempotency-key", default="")
    p.add_argument("--user", default="")

    p = sub.add_parser("get", help="print a run")
    p.add_argument("run_id")

    p = sub.add_parser("watch", help="print a run's events until its end")
    p.add_argument("run_id")
    p.add_argument("--after", type=int, default=0, help="only events with a greater sequence (resume)")

    p = sub.add_parser("stop", help="stop a run")
    p.add_argument("run_id")
    p.add_argument("--user", default="")

    p = sub.add_parser("list", help="list your runs, newest first")
    p.add_argument("--page-size", type=int, default=0)
    p.add_argument("--page-token", default="")
    p.add_argument("--status", default="", help="comma-separated: scheduled,running,succeeded,failed,stopped,...")
    p.add_argument("--workflow", default="")
    p.add_argument("--user", default="")
    p.add_argument("--all", action="store_true", help="follow the page tokens to the end")

    args = ap.parse_args(argv)
    if not args.key:
        ap.error("no API key: pass --key or set FLOWD_API_KEY")

    try:
        stubs = flowd_stubs.load(args.proto_dir)
    except Exception as exc:
        print(f"error: cannot generate the stubs: {exc}", file=sys.stderr)
        return 1
    import grpc

    pb = stubs.workflows_pb2
    metadata = (("authorization", f"Bearer {args.key}"),)
    unary_timeout = args.timeout if args.timeout is not None else 30.0
    channel = grpc.insecure_channel(args.target)
    api = stubs.workflows_pb2_grpc.WorkflowsStub(channel)
    try:
        if args.command == "run":
            req = pb.RunWorkflowRequest(workflow=args.workflow, inputs_json=args.inputs, user=args.user,
                                        idempotency_key=args.idempotency_key)
            if args.mode == "stream":
                stream_events(stubs, api.StreamWorkflow(req, metadata=metadata, timeout=args.timeout))
            else:
                req.response_mode = pb.ResponseMode.Value(MODES[args.mode])
                timeout = args.timeout if args.timeout is not None else (30.0 if args.mode == "async" else None)
                resp = api.RunWorkflow(req, metadata=metadata, timeout=timeout)
                print_json({"created": resp.created, "run": run_json(resp.run)})
        elif args.command == "get":
            print_json(run_json(api.GetRun(pb.GetRunRequest(run_id=args.run_id), metadata=metadata,
                                           timeout=unary_timeout)))
        elif args.command == "watch":
            stream_events(stubs, api.WatchRun(pb.WatchRunRequest(run_id=args.run_id, after_sequence=args.after),
                                              metadata=metadata, timeout=args.timeout))
        elif args.command == "stop":
            print_json(run_json(api.StopRun(pb.StopRunRequest(run_id=args.run_id, user=args.user),
                                            metadata=metadata, timeout=unary_timeout)))
        elif args.command == "list":
            statuses = []
            for name in filter(None, (s.strip() for s in args.status.split(","))):
                try:
                    statuses.append(pb.RunStatus.Value("RUN_STATUS_" + name.upper().replace("-", "_")))
                except ValueError:
                    ap.error(f"unknown status {name!r}")
            token = args.page_token
            while True:
                resp = api.ListRuns(pb.ListRunsRequest(page_size=args.page_size, page_token=token, statuses=statuses,
                                                       workflow=args.workflow, user=args.user),
                                    metadata=metadata, timeout=unary_timeout)
                for run in resp.runs:
                    created = run.created_at.ToJsonString() if run.HasField("created_at") else "-"
                    status = pb.RunStatus.Name(run.status).replace("RUN_STATUS_", "").lower()
                    print(f"{run.id}\t{created}\t{status}\t{run.workflow}\t{run.elapsed_ms} ms", flush=True)
                token = resp.next_page_token
                if not token or not args.all:
                    break
            if token:
                print(f"next_page_token: {token}")
    except grpc.RpcError as err:
        print_error(stubs, err)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        channel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
