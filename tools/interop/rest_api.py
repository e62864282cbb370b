#!/usr/bin/env python3
"""The Dify-compatible REST shim (issue 6) against a real flowd server, over HTTP/1.1 with
the stock `requests` and `httpx` clients (and a raw socket for keep-alive and timeouts).

The server runs the scripted `echo` workflow: inputs {"sleep_ms": N, "steps": K, "fail": true}.
It is configured with a short ping interval, a small body limit and a short idle timeout.
Prints PASS/FAIL lines and "N passed, M failed"; exits 0 only when everything passed.
"""
import argparse
import concurrent.futures
import json
import socket
import sys
import threading
import time
import traceback

import httpx
import requests

DEADLINE = time.monotonic() + 240
RESULTS = {"passed": 0, "failed": 0}


def check(name):
    def wrap(fn):
        def run(ctx):
            if time.monotonic() > DEADLINE:
                print(f"FAIL {name}: suite deadline exceeded", flush=True)
                RESULTS["failed"] += 1
                return
            try:
                fn(ctx)
                print(f"PASS {name}", flush=True)
                RESULTS["passed"] += 1
            except Exception as error:  # noqa: BLE001 - every failure is reported
                print(f"FAIL {name}: {error!r}", flush=True)
                traceback.print_exc(limit=3, file=sys.stdout)
                RESULTS["failed"] += 1
        run.check_name = name
        return run
    return wrap


def expect(condition, message):
    if not condition:
        raise AssertionError(message)


class Ctx:
    def __init__(self, args):
        self.base = f"http://{args.target}"
        self.host, port = args.target.rsplit(":", 1)
        self.port = int(port)
        self.key = args.key
        self.other = args.other_tenant_key
        self.limited = args.limit_key
        self.revoked = args.revoked_key
        self.body_limit = args.body_limit
        self.idle_timeout = args.idle_timeout
        self.session = requests.Session()

    def headers(self, key=None, **extra):
        h = {"Authorization": f"Bearer {key or self.key}"}
        h.update(extra)
        return h

    def run(self, inputs, mode=None, key=None, user="alice", headers=None, timeout=30):
        body = {"inputs": inputs, "user": user}
        if mode is not None:
            body["response_mode"] = mode
        return self.session.post(f"{self.base}/v1/workflows/run", json=body,
                                 headers=self.headers(key, **(headers or {})), timeout=timeout)

    def get_run(self, run_id, key=None):
        return self.session.get(f"{self.base}/v1/workflows/run/{run_id}", headers=self.headers(key), timeout=10)

    def poll(self, run_id, statuses, timeout=30):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            r = self.get_run(run_id)
            expect(r.status_code == 200, f"GET run: {r.status_code} {r.text}")
            if r.json()["status"] in statuses:
                return r.json()
            time.sleep(0.05)
        raise AssertionError(f"run {run_id} never reached {statuses}")


def error_body(r, status, code):
    expect(r.status_code == status, f"expected {status}, got {r.status_code}: {r.text}")
    body = r.json()
    expect(set(body) == {"code", "message", "status"}, f"error keys: {body}")
    expect(body["code"] == code and body["status"] == status, f"error body: {body}")
    return body


# --- auth and request errors -----------------------------------------------------------

@check("401 without Authorization, with another scheme, with an unknown and a revoked key")
def auth(ctx):
    cases = [
        ({}, "Authorization header must be provided and start with 'Bearer'"),
        ({"Authorization": f"Basic {ctx.key}"}, "Authorization scheme must be 'Bearer'"),
        ({"Authorization": "Bearer flowd_000000000000_" + "0" * 64}, "Access token is invalid"),
        ({"Authorization": f"Bearer {ctx.revoked}"}, "Access token is invalid"),
    ]
    for headers, message in cases:
        r = requests.post(f"{ctx.base}/v1/workflows/run", json={"inputs": {}, "user": "u"}, headers=headers, timeout=10)
        body = error_body(r, 401, "unauthorized")
        expect(body["message"] == message, f"message {body['message']!r}")
        expect(r.headers.get("WWW-Authenticate") == 'Bearer realm="api"', f"WWW-Authenticate {r.headers}")
    r = requests.get(f"{ctx.base}/v1/workflows/logs", headers={"Authorization": f"bEaReR {ctx.key}"}, timeout=10)
    expect(r.status_code == 200, f"case-insensitive scheme: {r.status_code} {r.text}")


@check("404 unknown route, 405 wrong method, 415 non-JSON body, 400 bad JSON, missing user or inputs, bad mode")
def request_errors(ctx):
    error_body(requests.get(f"{ctx.base}/v1/nothing", headers=ctx.headers(), timeout=10), 404, "not_found")
    r = requests.get(f"{ctx.base}/v1/workflows/run", headers=ctx.headers(), timeout=10)
    error_body(r, 405, "method_not_allowed")
    expect(r.headers.get("Allow") == "POST", f"Allow {r.headers}")
    error_body(requests.delete(f"{ctx.base}/v1/workflows/logs", headers=ctx.headers(), timeout=10), 405, "method_not_allowed")
    r = requests.post(f"{ctx.base}/v1/workflows/run", data="inputs=1", headers=ctx.headers(**{"Content-Type": "text/plain"}), timeout=10)
    body = error_body(r, 415, "unsupported_media_type")
    expect(body["message"] == "Did not attempt to load JSON data because the request Content-Type was not 'application/json'.", body)
    r = requests.post(f"{ctx.base}/v1/workflows/run", data="{not json", headers=ctx.headers(**{"Content-Type": "application/json"}), timeout=10)
    error_body(r, 400, "bad_request")
    body = error_body(requests.post(f"{ctx.base}/v1/workflows/run", json={"inputs": {}}, headers=ctx.headers(), timeout=10), 400, "invalid_param")
    expect(body["message"] == "Arg user must be provided.", body)
    body = error_body(requests.post(f"{ctx.base}/v1/workflows/run", json={"user": "u"}, headers=ctx.headers(), timeout=10), 400, "invalid_param")
    expect("inputs" in body["message"], body)
    body = error_body(ctx.run({}, mode="sometimes"), 400, "invalid_param")
    expect("response_mode" in body["message"], body)
    body = error_body(ctx.run({"bad": 1}), 400, "invalid_param")
    expect("bad" in body["message"], body)


@check("413 for a body over the limit (Content-Length and chunked), the connection closes")
def too_large(ctx):
    big = json.dumps({"inputs": {"pad": "x" * (ctx.body_limit + 10)}, "user": "u"})
    r = requests.post(f"{ctx.base}/v1/workflows/run", data=big, headers=ctx.headers(**{"Content-Type": "application/json"}), timeout=10)
    error_body(r, 413, "request_entity_too_large")
    def chunks():
        for _ in range(ctx.body_limit // 4096 + 4):
            yield b"x" * 4096
    try:
        r = requests.post(f"{ctx.base}/v1/workflows/run", data=chunks(), headers=ctx.headers(**{"Content-Type": "application/json"}), timeout=10)
        error_body(r, 413, "request_entity_too_large")
    except requests.exceptions.ConnectionError:
        pass  # the server may close before the client has finished sending


# --- blocking --------------------------------------------------------------------------

BLOCKING_KEYS = ["task_id", "workflow_run_id", "data"]
DATA_KEYS = ["id", "workflow_id", "status", "outputs", "error", "elapsed_time", "total_tokens", "total_steps", "created_at", "finished_at"]


@check("blocking (and response_mode absent): 200 Dify body, succeeded, unix seconds, elapsed in seconds")
def blocking_success(ctx):
    for mode in ["blocking", None]:
        r = ctx.run({"steps": 2, "sleep_ms": 20}, mode=mode)
        expect(r.status_code == 200, f"{r.status_code} {r.text}")
        # Dify's blocking answer (Flask's mimetype="application/json") has no charset.
        expect(r.headers["Content-Type"] == "application/json", r.headers)
        body = r.json()
        expect(list(body) == BLOCKING_KEYS and list(body["data"]) == DATA_KEYS, f"keys {body}")
        data = body["data"]
        expect(body["task_id"] == body["workflow_run_id"] == data["id"], body)
        expect(data["status"] == "succeeded" and data["outputs"] == {"steps": 2} and data["error"] is None, data)
        expect(data["total_steps"] == 2 and isinstance(data["elapsed_time"], float), data)
        expect(isinstance(data["created_at"], int) and abs(data["created_at"] - time.time()) < 60, data)
        expect(isinstance(data["finished_at"], int) and data["finished_at"] >= data["created_at"], data)
        expect(r.text.startswith('{"task_id": "'), f"python json.dumps separators: {r.text[:40]}")
        expect("Idempotent-Replayed" not in r.headers, r.headers)


@check("blocking failure: still 200 with status failed and the error")
def blocking_failure(ctx):
    r = ctx.run({"fail": True}, mode="blocking")
    expect(r.status_code == 200, f"{r.status_code} {r.text}")
    data = r.json()["data"]
    expect(data["status"] == "failed" and data["error"] == "asked to fail", data)


# --- streaming -------------------------------------------------------------------------

def read_sse(response, stop_after=None):
    """Lines parsed strictly: `data: {json}` + blank line, or `event: ping` + blank line."""
    events, pings, pending = [], 0, None
    for line in response.iter_lines():
        if pending is not None:
            expect(line == "", f"a blank line must follow {pending!r}, got {line!r}")
            pending = None
            if stop_after and events and events[-1].get("event") == stop_after:
                return events, pings
            continue
        if line == "event: ping":
            pings += 1
        elif line.startswith("data: "):
            events.append(json.loads(line[len("data: "):]))
        else:
            raise AssertionError(f"unexpected SSE line {line!r}")
        pending = line
    return events, pings


@check("streaming (httpx): full SSE stream of a 3-step run, parsed line by line, with pings")
def streaming(ctx):
    with httpx.Client(timeout=30) as client:
        with client.stream("POST", f"{ctx.base}/v1/workflows/run", headers=ctx.headers(),
                           json={"inputs": {"steps": 3, "sleep_ms": 900}, "user": "alice", "response_mode": "streaming"}) as r:
            expect(r.status_code == 200, f"{r.status_code}")
            expect(r.headers["content-type"] == "text/event-stream; charset=utf-8", r.headers)
            events, pings = read_sse(r)
    names = [e["event"] for e in events]
    expect(names == ["workflow_started"] + ["node_started", "node_finished"] * 3 + ["workflow_finished"], names)
    expect(pings >= 1, f"no ping in {pings}")
    run_id = events[0]["workflow_run_id"]
    for e in events:
        expect(list(e)[:4] == ["event", "workflow_run_id", "task_id", "data"], f"envelope {list(e)}")
        expect(e["task_id"] == run_id and e["workflow_run_id"] == run_id, e)
    started = events[0]["data"]
    expect(started["id"] == run_id and started["inputs"] == {"steps": 3, "sleep_ms": 900}, started)
    node = events[2]["data"]
    expect(node["node_id"] == "s0" and node["status"] == "succeeded" and node["outputs"] == {"step": 0}, node)
    expect(events[1]["data"]["id"] == node["id"], "node_started and node_finished share the execution id")
    finished = events[-1]["data"]
    expect(finished["status"] == "succeeded" and finished["total_steps"] == 3 and finished["outputs"] == {"steps": 3}, finished)


@check("streaming client disconnects mid-run: the run still ends succeeded and GET shows it")
def streaming_disconnect(ctx):
    with httpx.Client(timeout=30) as client:
        with client.stream("POST", f"{ctx.base}/v1/workflows/run", headers=ctx.headers(),
                           json={"inputs": {"steps": 4, "sleep_ms": 2000, "tag": "disconnect"}, "user": "alice",
                                 "response_mode": "streaming"}) as r:
            events, _ = read_sse(r, stop_after="node_started")
    run_id = events[0]["workflow_run_id"]
    expect(ctx.get_run(run_id).json()["status"] == "running", "the run is still running after the disconnect")
    final = ctx.poll(run_id, {"succeeded", "failed", "stopped"})
    expect(final["status"] == "succeeded" and final["total_steps"] == 4, final)


# --- async, GET, idempotency -----------------------------------------------------------

@check("async: 202 with Location and scheduled body, then poll GET to succeeded; GET shape")
def async_run(ctx):
    r = ctx.run({"steps": 2, "sleep_ms": 200}, mode="async")
    expect(r.status_code == 202, f"{r.status_code} {r.text}")
    body = r.json()
    run_id = body["workflow_run_id"]
    expect(r.headers["Location"] == f"/v1/workflows/run/{run_id}", r.headers)
    expect(r.headers["Content-Type"] == "application/json; charset=utf-8", r.headers)
    expect(list(body) == BLOCKING_KEYS and list(body["data"]) == ["id", "workflow_id", "status", "created_at"], body)
    expect(body["task_id"] == run_id and body["data"]["status"] == "scheduled", body)
    final = ctx.poll(run_id, {"succeeded"})
    expect(list(final) == ["id", "workflow_id", "status", "inputs", "outputs", "error", "total_steps", "total_tokens",
                           "created_at", "finished_at", "elapsed_time"], list(final))
    expect(isinstance(final["inputs"], str) and json.loads(final["inputs"]) == {"steps": 2, "sleep_ms": 200}, final)
    expect(final["outputs"] == {"steps": 2} and final["total_steps"] == 2, final)


@check("GET unknown run and another tenant's run: the same 404 not_found")
def get_not_found(ctx):
    run_id = ctx.run({"steps": 1}, mode="blocking").json()["workflow_run_id"]
    foreign = ctx.get_run(run_id, key=ctx.other)
    unknown = ctx.get_run("00000000-0000-0000-0000-000000000000")
    error_body(foreign, 404, "not_found")
    error_body(unknown, 404, "not_found")
    expect(foreign.content == unknown.content, f"{foreign.content} != {unknown.content}")


@check("Idempotency-Key: async and blocking replays are 200 with the same body, mismatch 422, invalid 400")
def idempotency(ctx):
    key = f"k-{time.time_ns()}"
    first = ctx.run({"steps": 1, "n": 1}, mode="async", headers={"Idempotency-Key": key})
    expect(first.status_code == 202, f"{first.status_code} {first.text}")
    ctx.poll(first.json()["workflow_run_id"], {"succeeded"})
    replay = ctx.run({"steps": 1, "n": 1}, mode="async", headers={"Idempotency-Key": key})
    expect(replay.status_code == 200 and replay.headers.get("Idempotent-Replayed") == "true", f"{replay.status_code} {replay.headers}")
    expect(replay.content == first.content, f"{replay.text} != {first.text}")
    error_body(ctx.run({"steps": 1, "n": 2}, mode="async", headers={"Idempotency-Key": key}), 422, "idempotency_key_reused")
    error_body(ctx.run({"steps": 1}, mode="async", headers={"Idempotency-Key": "k" * 256}), 400, "bad_request")

    key = f"b-{time.time_ns()}"
    first = ctx.run({"steps": 2, "sleep_ms": 50}, mode="blocking", headers={"Idempotency-Key": key})
    expect(first.status_code == 200 and "Idempotent-Replayed" not in first.headers, first.headers)
    replay = ctx.run({"steps": 2, "sleep_ms": 50}, mode="blocking", headers={"Idempotency-Key": key})
    expect(replay.status_code == 200 and replay.headers.get("Idempotent-Replayed") == "true", replay.headers)
    expect(replay.content == first.content, f"{replay.text} != {first.text}")


@check("51 concurrent async submits against a limit of 50: exactly one 429 with Retry-After")
def concurrency_limit(ctx):
    barrier = threading.Barrier(51)

    def submit(i):
        with requests.Session() as session:
            barrier.wait(timeout=30)
            return session.post(f"{ctx.base}/v1/workflows/run", headers=ctx.headers(ctx.limited), timeout=30,
                                json={"inputs": {"sleep_ms": 20000, "n": i}, "user": "load", "response_mode": "async"})

    with concurrent.futures.ThreadPoolExecutor(max_workers=51) as pool:
        responses = list(pool.map(submit, range(51)))
    codes = sorted(r.status_code for r in responses)
    try:
        expect(codes.count(202) == 50 and codes.count(429) == 1, f"codes {codes}")
        rejected = next(r for r in responses if r.status_code == 429)
        error_body(rejected, 429, "too_many_requests")
        expect(int(rejected.headers["Retry-After"]) >= 1, rejected.headers)
    finally:
        for r in responses:
            if r.status_code == 202:
                requests.post(f"{ctx.base}/v1/workflows/tasks/{r.json()['task_id']}/stop", json={"user": "load"},
                              headers=ctx.headers(ctx.limited), timeout=30)


@check("stop a running run: {\"result\": \"success\"}, the run ends stopped; unknown task and missing user")
def stop(ctx):
    run_id = ctx.run({"steps": 1, "sleep_ms": 20000}, mode="async").json()["workflow_run_id"]
    ctx.poll(run_id, {"running"})
    r = ctx.session.post(f"{ctx.base}/v1/workflows/tasks/{run_id}/stop", json={"user": "alice"}, headers=ctx.headers(), timeout=30)
    expect(r.status_code == 200 and r.json() == {"result": "success"}, f"{r.status_code} {r.text}")
    expect(ctx.poll(run_id, {"stopped", "succeeded", "failed"})["status"] == "stopped", "stopped")
    r = ctx.session.post(f"{ctx.base}/v1/workflows/tasks/nope/stop", json={"user": "alice"}, headers=ctx.headers(), timeout=10)
    expect(r.status_code == 200 and r.json() == {"result": "success"}, r.text)
    r = ctx.session.post(f"{ctx.base}/v1/workflows/tasks/{run_id}/stop", json={}, headers=ctx.headers(), timeout=10)
    error_body(r, 400, "invalid_param")


@check("logs (httpx): paging, total and has_more, status filter, invalid parameters 400")
def logs(ctx):
    with httpx.Client(base_url=ctx.base, headers=ctx.headers(), timeout=10) as client:
        total = client.get("/v1/workflows/logs", params={"limit": 100}).json()["total"]
        expect(total >= 5, f"total {total}")
        seen = []
        page = 1
        while True:
            r = client.get("/v1/workflows/logs", params={"page": page, "limit": 2})
            expect(r.status_code == 200, r.text)
            body = r.json()
            expect(list(body) == ["page", "limit", "total", "has_more", "data"], list(body))
            expect(body["page"] == page and body["limit"] == 2 and body["total"] == total, body)
            expect(body["has_more"] == (total > page * 2), body)
            seen += [entry["id"] for entry in body["data"]]
            if not body["has_more"]:
                break
            page += 1
        expect(len(seen) == total and len(set(seen)) == total, f"{len(seen)} ids for {total}")
        entry = client.get("/v1/workflows/logs", params={"limit": 1}).json()["data"][0]
        expect(set(entry["workflow_run"]) >= {"id", "status", "triggered_from", "error", "elapsed_time", "total_tokens",
                                              "total_steps", "created_at", "finished_at"}, entry)
        expect(entry["created_from"] == "service-api", entry)
        failed = client.get("/v1/workflows/logs", params={"status": "failed", "limit": 100}).json()
        expect(failed["total"] >= 1 and all(e["workflow_run"]["status"] == "failed" for e in failed["data"]), failed)
        stopped = client.get("/v1/workflows/logs", params={"status": "stopped", "keyword": "alice"}).json()
        expect(stopped["total"] >= 1, stopped)
        for params in [{"limit": 0}, {"page": 0}, {"limit": 101}, {"status": "running"}, {"created_at__before": "yesterday"}]:
            error_body(client.get("/v1/workflows/logs", params=params), 400, "invalid_param")


# --- connection behaviour ----------------------------------------------------------------

def raw_request(path):
    return (f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").encode()


def read_until_closed(sock, timeout):
    sock.settimeout(timeout)
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


@check("keep-alive: two pipelined requests on one connection get two responses in order")
def keep_alive(ctx):
    with socket.create_connection((ctx.host, ctx.port), timeout=10) as sock:
        sock.sendall(raw_request("/a") + raw_request("/v1/workflows/logs"))
        data = b""
        sock.settimeout(10)
        while data.count(b"HTTP/1.1 ") < 2 or not data.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            expect(chunk, f"the connection closed after {data[:300]!r}")
            data += chunk
        expect(data.startswith(b"HTTP/1.1 404") and b"HTTP/1.1 401" in data, data[:200])


@check("idle and slow clients time out: silent close when idle, 408 mid-request")
def timeouts(ctx):
    start = time.monotonic()
    with socket.create_connection((ctx.host, ctx.port), timeout=10) as sock:
        sock.sendall(b"GET /v1/workflows/logs HTTP/1.1\r\nHost: x\r\n")  # the head never ends
        expect(read_until_closed(sock, ctx.idle_timeout + 5) == b"", "closed without an answer")
    expect(time.monotonic() - start < ctx.idle_timeout + 4, "closed within the idle timeout")
    with socket.create_connection((ctx.host, ctx.port), timeout=10) as sock:
        # With a good key: the head passes its check and the body is what stalls (a bad key
        # is answered 401 from the head, before the body).
        sock.sendall(b"POST /v1/workflows/run HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Authorization: Bearer {ctx.key}\r\n".encode() + b"Content-Length: 50\r\n\r\n{\"in")
        data = read_until_closed(sock, ctx.idle_timeout + 5)
        expect(data.startswith(b"HTTP/1.1 408") and b'"request_timeout"' in data, data[:200])


CHECKS = [auth, request_errors, too_large, blocking_success, blocking_failure, streaming, streaming_disconnect, async_run,
          get_not_found, idempotency, concurrency_limit, stop, logs, keep_alive, timeouts]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--other-tenant-key", required=True)
    parser.add_argument("--limit-key", required=True)
    parser.add_argument("--revoked-key", required=True)
    parser.add_argument("--body-limit", type=int, default=65536)
    parser.add_argument("--idle-timeout", type=float, default=1.0)
    parser.add_argument("--only", default="")
    args = parser.parse_args()
    ctx = Ctx(args)
    only = [name for name in args.only.split(",") if name]
    for check_fn in CHECKS:
        if only and not any(name in check_fn.check_name for name in only):
            continue
        check_fn(ctx)
    print(f"{RESULTS['passed']} passed, {RESULTS['failed']} failed", flush=True)
    sys.exit(0 if RESULTS["failed"] == 0 else 1)


if __name__ == "__main__":
    main()
