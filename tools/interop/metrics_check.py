#!/usr/bin/env python3
"""GET /metrics of a real flowd server after a known workload (issue 14), read with PyPI
prometheus-client's text parser (`text_string_to_metric_families`).

The server must have been started for this check: tenant of --key and --limit-key bound to
`echo` (the test executor: inputs {"steps": N, "sleep_ms": M, "fail": true}), no runs yet,
ONE worker, the --limit-key tenant with a concurrency limit of 0, at most --max-pings PINGs per
abuse window, and a fresh metrics registry. The workload goes over gRPC (grpcio), REST over
HTTP/1.1 (requests) and REST over h2c (httpx with prior knowledge); then the scrape must show
exactly the counts the workload implies.

Prints PASS/FAIL lines, the last scrape, and "N passed, M failed"; exits 0 only when
everything passed.
"""
import argparse
import json
import socket
import sys

import grpc
import h2.config
import h2.connection
import httpx
import requests
from prometheus_client.parser import text_string_to_metric_families

import flowd_stubs
from checklib import Report

RPC_TIMEOUT = 30


class Scraper:
    """Scrapes and parses; counts its own scrapes (each is a REST request to /metrics)."""

    def __init__(self, base: str):
        self.base = base
        self.count = 0
        self.text = ""

    def samples(self, text: str) -> dict:
        """{(sample name, sorted label items): value} of every sample."""
        out = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def http1(self) -> dict:
        response = requests.get(self.base + "/metrics", timeout=RPC_TIMEOUT)
        self.count += 1
        if response.status_code != 200 or not response.headers["content-type"].startswith("text/plain; version=0.0.4"):
            raise AssertionError(f"/metrics answered {response.status_code} {response.headers.get('content-type')}")
        self.text = response.text
        return self.samples(response.text)

    def h2c(self) -> tuple:
        with httpx.Client(http1=False, http2=True, timeout=RPC_TIMEOUT) as client:
            response = client.get(self.base + "/metrics")
        self.count += 1
        return response, self.samples(response.text)


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", required=True, help="host:port of the server")
    ap.add_argument("--key", required=True, help="API key of a tenant bound to echo, without runs")
    ap.add_argument("--limit-key", required=True, help="API key of a tenant bound to echo whose limit is 0")
    ap.add_argument("--max-pings", type=int, required=True, help="the server's PINGs per abuse window")
    args = ap.parse_args(argv)
    report = Report()

    def check(name, ok, detail=""):
        report.record(bool(ok), name, detail)

    stubs = flowd_stubs.load()
    pb = stubs.workflows_pb2
    channel = grpc.insecure_channel(args.target)
    api = stubs.workflows_pb2_grpc.WorkflowsStub(channel)
    auth = (("authorization", f"Bearer {args.key}"),)
    base = f"http://{args.target}"
    scraper = Scraper(base)

    def run(inputs, mode=pb.RESPONSE_MODE_BLOCKING, key="", metadata=auth):
        return api.RunWorkflow(pb.RunWorkflowRequest(inputs_json=json.dumps(inputs), response_mode=mode, user="m",
                                                     idempotency_key=key), metadata=metadata, timeout=RPC_TIMEOUT)

    def code_of(fn):
        try:
            fn()
        except grpc.RpcError as err:
            return err.code()
        return grpc.StatusCode.OK

    # -- gRPC: submissions of every outcome, finished runs, errors -----------------------------
    first = run({"steps": 2})
    keyed = run({"steps": 1}, key="metrics-k1")
    replay = run({"steps": 1}, key="metrics-k1")
    check("grpc_workload", first.run.status == pb.RUN_STATUS_SUCCEEDED and keyed.created and not replay.created,
          f"{pb.RunStatus.Name(first.run.status)}, created {keyed.created}, replayed {not replay.created}")
    check("grpc_key_reused", code_of(lambda: run({"steps": 3}, key="metrics-k1")) == grpc.StatusCode.ALREADY_EXISTS)
    limited = (("authorization", f"Bearer {args.limit_key}"),)
    check("grpc_over_limit", code_of(lambda: run({}, metadata=limited)) == grpc.StatusCode.RESOURCE_EXHAUSTED)
    failed = run({"fail": True})
    check("grpc_failed_run", failed.run.status == pb.RUN_STATUS_FAILED, pb.RunStatus.Name(failed.run.status))
    api.GetRun(pb.GetRunRequest(run_id=first.run.id), metadata=auth, timeout=RPC_TIMEOUT)
    check("grpc_not_found", code_of(lambda: api.GetRun(pb.GetRunRequest(run_id="nope"), metadata=auth,
                                                        timeout=RPC_TIMEOUT)) == grpc.StatusCode.NOT_FOUND)
    check("grpc_unauthenticated", code_of(lambda: api.GetRun(
        pb.GetRunRequest(run_id="nope"), metadata=(("authorization", "Bearer wrong"),),
        timeout=RPC_TIMEOUT)) == grpc.StatusCode.UNAUTHENTICATED)
    unknown = channel.unary_unary("/flowd.v1.Workflows/NoSuchMethod", request_serializer=lambda b: b,
                                  response_deserializer=lambda b: b)
    check("grpc_unimplemented", code_of(lambda: unknown(b"", timeout=RPC_TIMEOUT)) == grpc.StatusCode.UNIMPLEMENTED)
    events = list(api.WatchRun(pb.WatchRunRequest(run_id=first.run.id), metadata=auth, timeout=RPC_TIMEOUT))
    check("grpc_watch_finished", events and events[-1].WhichOneof("event") == "run_finished", f"{len(events)} events")

    # -- one run running (watched), one scheduled behind it (one worker) -------------------------
    long = run({"sleep_ms": 600000}, mode=pb.RESPONSE_MODE_ASYNC)
    watch = api.WatchRun(pb.WatchRunRequest(run_id=long.run.id), metadata=auth, timeout=120)
    started = next(watch)
    queued = run({"steps": 1}, mode=pb.RESPONSE_MODE_ASYNC)
    response, live = scraper.h2c()
    check("h2c_scrape", response.status_code == 200 and response.http_version == "HTTP/2"
          and response.headers["content-type"].startswith("text/plain; version=0.0.4"),
          f"{response.http_version} {response.status_code} {response.headers.get('content-type')}")
    check("gauges_while_active",
          started.WhichOneof("event") == "run_started"
          and value(live, "flowd_runs_running") == 1 and value(live, "flowd_runs_scheduled") == 1
          and value(live, "flowd_watch_streams_open", transport="grpc") == 1,
          f"running {value(live, 'flowd_runs_running')}, scheduled {value(live, 'flowd_runs_scheduled')}, "
          f"grpc watch streams {value(live, 'flowd_watch_streams_open', transport='grpc')}")
    api.StopRun(pb.StopRunRequest(run_id=queued.run.id), metadata=auth, timeout=RPC_TIMEOUT)
    api.StopRun(pb.StopRunRequest(run_id=long.run.id), metadata=auth, timeout=RPC_TIMEOUT)
    rest = list(watch)
    check("long_run_stopped", rest and rest[-1].run_finished.run.status == pb.RUN_STATUS_STOPPED, f"{len(rest)} events")

    # -- REST over HTTP/1.1 and h2c --------------------------------------------------------------
    headers = {"Authorization": f"Bearer {args.key}"}
    with requests.Session() as http:
        blocking = http.post(base + "/v1/workflows/run", headers=headers, timeout=RPC_TIMEOUT,
                             json={"inputs": {"steps": 1}, "user": "m", "response_mode": "blocking"})
        run_id = blocking.json()["workflow_run_id"]
        got = http.get(f"{base}/v1/workflows/run/{run_id}", headers=headers, timeout=RPC_TIMEOUT)
        unauthorized = http.get(f"{base}/v1/workflows/run/{run_id}", timeout=RPC_TIMEOUT)
        missing = http.get(base + "/v1/no/such/route", headers=headers, timeout=RPC_TIMEOUT)
        with http.post(base + "/v1/workflows/run", headers=headers, timeout=RPC_TIMEOUT, stream=True,
                       json={"inputs": {"steps": 1}, "user": "m", "response_mode": "streaming"}) as streaming:
            lines = [line for line in streaming.iter_lines() if line]
    with httpx.Client(http1=False, http2=True, timeout=RPC_TIMEOUT) as client:
        got_h2 = client.get(f"{base}/v1/workflows/run/{run_id}", headers=headers)
    check("rest_workload",
          [blocking.status_code, got.status_code, unauthorized.status_code, missing.status_code,
           streaming.status_code, got_h2.status_code] == [200, 200, 401, 404, 200, 200]
          and got_h2.http_version == "HTTP/2" and b"workflow_finished" in lines[-1],
          f"{blocking.status_code} {got.status_code} {unauthorized.status_code} {missing.status_code} "
          f"{streaming.status_code} {got_h2.status_code} {got_h2.http_version}; last SSE line {lines[-1][:40]!r}")

    # -- an abusive connection: a PING flood gets GOAWAY(ENHANCE_YOUR_CALM) and is closed --------
    host, port = args.target.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=RPC_TIMEOUT) as sock:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        for i in range(args.max_pings + 5):
            conn.ping(i.to_bytes(8, "big"))
        sock.sendall(conn.data_to_send())
        while sock.recv(65536):  # until the server closes
            pass
    closed = {}
    for _ in range(100):  # the close is counted on the server's loop right after it; bounded
        closed = scraper.http1()
        if value(closed, "flowd_connections_closed_total", reason="abuse_too_many_pings") >= 1:
            break
    check("abuse_close_counted", value(closed, "flowd_connections_closed_total", reason="abuse_too_many_pings") == 1,
          f"{value(closed, 'flowd_connections_closed_total', reason='abuse_too_many_pings')}")
    channel.close()

    # -- the final scrape: exact counts ---------------------------------------------------------
    scrapes_before = scraper.count
    s = scraper.http1()
    wf = "/flowd.v1.Workflows/"
    expected = [
        ("flowd_submissions_total", {"outcome": "created"}, 7),
        ("flowd_submissions_total", {"outcome": "replayed"}, 1),
        ("flowd_submissions_total", {"outcome": "key_reused"}, 1),
        ("flowd_submissions_total", {"outcome": "over_limit"}, 1),
        ("flowd_runs_finished_total", {"state": "succeeded"}, 4),
        ("flowd_runs_finished_total", {"state": "failed"}, 1),
        ("flowd_runs_finished_total", {"state": "stopped"}, 2),
        ("flowd_runs_finished_total", {"state": "partial-succeeded"}, 0),
        ("flowd_run_schedule_delay_seconds_count", {}, 6),
        ("flowd_run_duration_seconds_count", {}, 6),
        ("flowd_runs_running", {}, 0),
        ("flowd_runs_scheduled", {}, 0),
        ("flowd_watch_streams_open", {"transport": "grpc"}, 0),
        ("flowd_watch_streams_open", {"transport": "rest"}, 0),
        ("flowd_reaper_actions_total", {"action": "scheduled_timeout"}, 0),
        ("flowd_grpc_requests_total", {"method": wf + "RunWorkflow", "code": "OK"}, 6),
        ("flowd_grpc_requests_total", {"method": wf + "RunWorkflow", "code": "ALREADY_EXISTS"}, 1),
        ("flowd_grpc_requests_total", {"method": wf + "RunWorkflow", "code": "RESOURCE_EXHAUSTED"}, 1),
        ("flowd_grpc_request_duration_seconds_count", {"method": wf + "RunWorkflow"}, 8),
        ("flowd_grpc_requests_total", {"method": wf + "GetRun", "code": "OK"}, 1),
        ("flowd_grpc_requests_total", {"method": wf + "GetRun", "code": "NOT_FOUND"}, 1),
        ("flowd_grpc_requests_total", {"method": wf + "GetRun", "code": "UNAUTHENTICATED"}, 1),
        ("flowd_grpc_requests_total", {"method": wf + "WatchRun", "code": "OK"}, 2),
        ("flowd_grpc_requests_total", {"method": wf + "StopRun", "code": "OK"}, 2),
        ("flowd_grpc_requests_total", {"method": "unknown", "code": "UNIMPLEMENTED"}, 1),
        ("flowd_http_requests_total", {"route": "/v1/workflows/run", "method": "POST", "code": "200"}, 2),
        ("flowd_http_requests_total", {"route": "/v1/workflows/run/{id}", "method": "GET", "code": "200"}, 2),
        ("flowd_http_requests_total", {"route": "/v1/workflows/run/{id}", "method": "GET", "code": "401"}, 1),
        ("flowd_http_requests_total", {"route": "other", "method": "GET", "code": "404"}, 1),
        ("flowd_http_requests_total", {"route": "/metrics", "method": "GET", "code": "200"}, scrapes_before),
        ("flowd_http_request_duration_seconds_count", {"route": "/v1/workflows/run", "method": "POST"}, 2),
        ("flowd_connections_closed_total", {"reason": "abuse_too_many_pings"}, 1),
    ]
    for name, labels, want in expected:
        got_value = value(s, name, **labels)
        check(f"{name}{json.dumps(labels, sort_keys=True) if labels else ''}", got_value == want,
              f"{got_value:g} (expected {want})")
    transactions = value(s, "flowd_store_transaction_duration_seconds_count", store="sqlite")
    batches = value(s, "flowd_store_group_commit_batch_size_count", store="sqlite")
    writes = value(s, "flowd_store_group_commit_batch_size_sum", store="sqlite")
    check("store_metrics", transactions >= 1 and batches == transactions and writes >= batches,
          f"{transactions:g} transactions, {writes:g} writes")
    check("connections_open", value(s, "flowd_connections_open") >= 1, f"{value(s, 'flowd_connections_open'):g}")
    print("--- the last scrape ---")
    print(scraper.text, end="")
    print("--- end of scrape ---")
    return report.close()


if __name__ == "__main__":
    sys.exit(main())
