#!/usr/bin/env python3
"""Writes Tests/CodecTests/Golden/vectors.json: protobuf encodings made by the official
Python runtime, which the Codec tests compare with protobuf-c's (byte for byte) and decode.

    python3 tools/golden/make-golden.py          # rewrite the vectors
    python3 tools/golden/make-golden.py --check  # fail if the committed vectors differ

The Python modules are generated from proto/ with grpc_tools.protoc into a temporary folder
and loaded by path, so the googleapis packages installed on the machine play no part.
Serialization is deterministic (map entries sorted by key), and so is the JSON.
The Swift side builds the same messages in Tests/CodecTests/GoldenTests.swift: change both.
"""
import importlib.util
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "Tests", "CodecTests", "Golden", "vectors.json")
PROTOS = [
    "google/rpc/status.proto",
    "google/rpc/error_details.proto",
    "grpc/health/v1/health.proto",
    "flowd/v1/workflows.proto",
]


def load_modules(tmp):
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I" + os.path.join(ROOT, "proto"),
                    "--python_out=" + tmp] + PROTOS, check=True)
    modules = {}
    for proto in PROTOS:
        path = os.path.join(tmp, proto.replace(".proto", "_pb2.py"))
        name = "golden_" + proto.replace("/", "_").replace(".proto", "")
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        modules[proto] = module
    return modules


def build(m):
    from google.protobuf import any_pb2, duration_pb2, timestamp_pb2

    status = m["google/rpc/status.proto"]
    details = m["google/rpc/error_details.proto"]
    health = m["grpc/health/v1/health.proto"]
    f = m["flowd/v1/workflows.proto"]

    def ts(seconds, nanos=0):
        return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)

    def packed(message):
        any_ = any_pb2.Any()
        any_.Pack(message)  # type.googleapis.com/<full name>
        return any_

    full_run = f.Run(
        id="run-0001", workflow="greeting", workflow_version="v3", status=f.RUN_STATUS_SUCCEEDED,
        inputs_json='{"name":"Zoë"}', outputs_json='{"text":"Hello, Zoë 😈"}', error="",
        triggered_from=f.TRIGGER_API_STREAMING, transport=f.TRANSPORT_GRPC, user="user-☺",
        created_at=ts(1_700_000_000, 123_000_000), started_at=ts(1_700_000_001, 5),
        finished_at=ts(1_700_000_002, 999_999_999), elapsed_ms=1877, total_steps=4, attempt=2,
        last_sequence=9, total_tokens=1234567890123)
    failed_run = f.Run(
        id="run-0002", workflow="greeting", status=f.RUN_STATUS_FAILED, inputs_json="{}",
        error="node llm-1 failed: timeout", triggered_from=f.TRIGGER_API_ASYNC,
        transport=f.TRANSPORT_REST, user="bob", created_at=ts(0), elapsed_ms=-1, attempt=1)

    error_info = details.ErrorInfo(reason="TENANT_CONCURRENCY_LIMIT", domain="flowd",
                                   metadata={"tenant": "acme"})
    retry_info = details.RetryInfo(retry_delay=duration_pb2.Duration(seconds=1, nanos=500_000_000))
    quota_failure = details.QuotaFailure(violations=[
        details.QuotaFailure.Violation(subject="tenant:acme", description="4 of 4 concurrent runs in use")])
    bad_request = details.BadRequest(field_violations=[
        details.BadRequest.FieldViolation(field="inputs_json", description="not a JSON object",
                                          reason="INVALID_JSON"),
        details.BadRequest.FieldViolation(field="idempotency_key", description="longer than 255 bytes")])
    debug_info = details.DebugInfo(stack_entries=["a", "b"], detail="opaque to flowd")

    return {
        "health_check_request": health.HealthCheckRequest(service="flowd.v1.Workflows"),
        "health_check_request_empty": health.HealthCheckRequest(),
        "health_check_response_serving": health.HealthCheckResponse(
            status=health.HealthCheckResponse.SERVING),
        "health_check_response_unknown_enum_value": health.HealthCheckResponse(status=7),
        "rpc_status_all_details": status.Status(
            code=8, message="tenant acme is over its limit ☺",
            details=[packed(error_info), packed(retry_info), packed(quota_failure), packed(bad_request),
                     packed(debug_info)]),
        "rpc_status_code_only": status.Status(code=5),
        # Keys sort bytewise. No key is a prefix of another: there, upb (Python) emits the
        # longer key first, while C++, Go and the Swift codec emit the shorter one first.
        "error_info_sorted_metadata": details.ErrorInfo(
            reason="IDEMPOTENCY_KEY_REUSED", domain="flowd",
            metadata={"run_id": "run-0001", "b": "2", "a": "1", "é": "accent"}),
        "retry_info_negative": details.RetryInfo(
            retry_delay=duration_pb2.Duration(seconds=-1, nanos=-500_000_000)),
        "run_workflow_request_unicode": f.RunWorkflowRequest(
            workflow="greeting", inputs_json='{"name":"Zoë 😈","note":"tab\\there"}',
            response_mode=f.RESPONSE_MODE_ASYNC, user="user-☺", idempotency_key="key-1"),
        "run_workflow_response": f.RunWorkflowResponse(run=full_run, created=True),
        "run_full": full_run,
        "run_event_run_started": f.RunEvent(
            run_id="run-0001", sequence=1, time=ts(1_700_000_001),
            run_started=f.RunStarted(run=f.Run(id="run-0001", status=f.RUN_STATUS_RUNNING))),
        "run_event_node_started": f.RunEvent(
            run_id="run-0001", sequence=2, time=ts(1_700_000_001, 10),
            node_started=f.NodeStarted(node_id="llm-1", node_kind="llm", title="Say hello", index=1,
                                       inputs_json='{"prompt":"hi"}', inputs_truncated=True)),
        "run_event_node_finished": f.RunEvent(
            run_id="run-0001", sequence=3, time=ts(1_700_000_002),
            node_finished=f.NodeFinished(
                node_id="llm-1", node_kind="llm", title="Say hello", index=1, status=f.NODE_STATUS_SUCCEEDED,
                inputs_json='{"prompt":"hi"}', outputs_json='{"text":"hello"}', error="", elapsed_ms=250,
                inputs_truncated=False, outputs_truncated=True, attempt=1)),
        "run_event_text_chunk": f.RunEvent(
            run_id="run-0001", sequence=4, text_chunk=f.TextChunk(node_id="llm-1", text="Hel😈lo")),
        "run_event_run_finished": f.RunEvent(
            run_id="run-0001", sequence=9, time=ts(1_700_000_002, 999_999_999),
            run_finished=f.RunFinished(run=full_run)),
        "run_event_heartbeat": f.RunEvent(run_id="run-0001", sequence=9, time=ts(1_700_000_010),
                                          heartbeat=f.Heartbeat()),
        "get_run_request": f.GetRunRequest(run_id="run-0001"),
        "watch_run_request": f.WatchRunRequest(run_id="run-0001", after_sequence=4),
        "stop_run_request": f.StopRunRequest(run_id="run-0001", user="user-☺"),
        "list_runs_request": f.ListRunsRequest(
            page_size=50, page_token="cGFnZS0y", workflow="greeting", user="bob",
            statuses=[f.RUN_STATUS_RUNNING, f.RUN_STATUS_FAILED, f.RUN_STATUS_PARTIAL_SUCCEEDED]),
        "list_runs_response": f.ListRunsResponse(runs=[full_run, failed_run], next_page_token="cGFnZS0z"),
    }


def render():
    with tempfile.TemporaryDirectory() as tmp:
        messages = build(load_modules(tmp))
        vectors = {
            name: {"message": message.DESCRIPTOR.full_name,
                   "hex": message.SerializeToString(deterministic=True).hex()}
            for name, message in messages.items()
        }
    import google.protobuf
    document = {
        "generator": "tools/golden/make-golden.py, Python protobuf " + google.protobuf.__version__,
        "vectors": vectors,
    }
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main():
    text = render()
    if sys.argv[1:] == ["--check"]:
        with open(OUT, encoding="utf-8") as existing:
            if existing.read() != text:
                sys.exit("make-golden: " + os.path.relpath(OUT, ROOT) + " is out of date")
        return
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as out:
        out.write(text)


if __name__ == "__main__":
    main()
