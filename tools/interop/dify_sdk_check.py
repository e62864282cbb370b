#!/usr/bin/env python3
"""An unmodified Dify client against flowd's REST shim (issue 14): PyPI's `dify-client-python`
(its `Client` and `AsyncClient`, pydantic models and error classes, as a Dify caller uses them)
and plain `requests` for the routes the SDK has no method for (`/parameters`, `/info`, logs).

The server runs the workflows of Tests/RPCServerTests/REST/DifyCompatibilityTests.swift:
`form` (name, count, ratio, loud, extra), `branch` (n; a condition with a branch not taken) and
`flaky` (an exec node that fails, retried twice). `--keys` maps each to an API key.
Prints PASS/FAIL lines and "N passed, M failed"; exits 0 only when everything passed.
"""
import argparse
import asyncio
import json
import sys
import time

import requests
from dify_client import AsyncClient, Client, errors, models

from checklib import Report, one_line

DEADLINE = time.monotonic() + 120


def expect(condition, message):
    if not condition:
        raise AssertionError(message)


class Ctx:
    def __init__(self, args):
        self.base = f"http://{args.target}/v1"
        self.keys = json.loads(args.keys)

    def client(self, workflow):
        return Client(api_key=self.keys[workflow], api_base=self.base)

    def get(self, path, workflow="form", **params):
        return requests.get(f"{self.base}{path}", params=params,
                            headers={"Authorization": f"Bearer {self.keys[workflow]}"}, timeout=30)


CHECKS = []


def field(data, name):
    """A field of an event's `data`: the SDK's pydantic union yields a model or, where its
    strict first pass prefers it (enum-typed fields), a plain dict; it does so for Dify too."""
    return data.get(name) if isinstance(data, dict) else getattr(data, name, None)


def check(name):
    def wrap(fn):
        CHECKS.append((name, fn))
        return fn
    return wrap


def form_inputs(form):
    """What a generic Dify front end sends: a value for every form entry, numbers as typed text."""
    inputs = {}
    for entry in form:
        (kind, field), = entry.items()
        sample = {"text-input": "Ada", "number": "3", "checkbox": True, "json_object": {"k": 1}}[kind]
        inputs[field["variable"]] = sample
    return inputs


@check("GET /parameters (requests): a user_input_form a client can build its form from; /info names the app")
def parameters(ctx):
    r = ctx.get("/parameters")
    expect(r.status_code == 200 and r.headers["Content-Type"] == "application/json", f"{r.status_code} {r.headers}")
    body = r.json()
    form = body["user_input_form"]
    expect(sorted(list(entry)[0] for entry in form) == ["checkbox", "json_object", "number", "number", "text-input"], form)
    for entry in form:
        (kind, field), = entry.items()
        expect({"label", "variable", "required", "default"} <= set(field), field)
    expect(body["file_upload"]["image"]["enabled"] is False and body["speech_to_text"] == {"enabled": False}, body)
    ctx.form = form
    info = ctx.get("/info").json()
    expect(info["mode"] == "workflow" and info["name"] == "form" and info["tags"] == [], info)
    return f"{len(form)} inputs: {[f[list(f)[0]]['variable'] for f in form]}"


@check("blocking (SDK): inputs built from /parameters plus undeclared keys, numbers as text; a WorkflowsRunResponse")
def blocking(ctx):
    inputs = form_inputs(getattr(ctx, "form", []) or ctx.get("/parameters").json()["user_input_form"])
    inputs.update({"ratio": "2.5", "sys_locale": "fr", "another_apps_variable": 1})
    response = ctx.client("form").run_workflows(models.WorkflowsRunRequest(
        inputs=inputs, response_mode=models.ResponseMode.BLOCKING, user="sdk-user"))
    expect(isinstance(response, models.WorkflowsRunResponse), type(response))
    data = response.data
    expect(data.status == models.WorkflowStatus.SUCCEEDED, data)
    expect(data.outputs == {"greeting": "Hello, Ada!"}, data.outputs)
    expect(response.task_id and response.workflow_run_id == data.id, response)
    run = ctx.get(f"/workflows/run/{data.id}").json()
    stored = json.loads(run["inputs"])
    expect(stored == {"name": "Ada", "count": 3, "ratio": 2.5, "loud": True, "extra": {"k": 1}}, stored)
    return f"run {data.id} {data.status} in {data.elapsed_time}s, stored inputs {stored}"


@check("streaming (SDK): every event parses into the SDK's models, to workflow_finished; no skipped node")
def streaming(ctx):
    events = list(ctx.client("branch").run_workflows(models.WorkflowsRunRequest(
        inputs={"n": "12"}, response_mode=models.ResponseMode.STREAMING, user="sdk-user")))
    names = [str(e.event) for e in events]
    expect(names[0] == "workflow_started" and names[-1] == "workflow_finished", names)
    finished = [e.data for e in events if e.event == models.StreamEvent.NODE_FINISHED]
    expect([field(d, "node_id") for d in finished] == ["check", "big", "done"], finished)
    expect(all(field(d, "status") == "succeeded" for d in finished), finished)
    started = [field(e.data, "node_id") for e in events if e.event == models.StreamEvent.NODE_STARTED]
    expect(started == ["check", "big", "done"], started)
    last = events[-1].data
    expect(field(last, "status") == "succeeded" and field(last, "outputs") == {"verdict": "big"}, last)
    return " ".join(names)


@check("streaming (SDK) of a retried node: one node_started, node_retry with retry_index 1 and 2, then failed")
def retries(ctx):
    events = list(ctx.client("flaky").run_workflows(models.WorkflowsRunRequest(
        inputs={}, response_mode=models.ResponseMode.STREAMING, user="sdk-user")))
    names = [str(e.event) for e in events]
    expect(names == ["workflow_started", "node_started", "node_retry", "node_retry", "node_finished",
                     "workflow_finished"], names)
    expect(field(events[-1].data, "status") == "failed", events[-1].data)
    # The SDK's union reads node_retry's data as NodeStartedData, which drops retry_index (so it
    # does with Dify's own node_retry); the raw stream carries it.
    r = requests.post(f"{ctx.base}/workflows/run", stream=True, timeout=30,
                      headers={"Authorization": f"Bearer {ctx.keys['flaky']}"},
                      json={"inputs": {}, "response_mode": "streaming", "user": "sdk-user"})
    raw = [json.loads(line[6:]) for line in r.iter_lines(decode_unicode=True) if line.startswith("data: ")]
    retry = [e["data"] for e in raw if e["event"] == "node_retry"]
    expect([d["retry_index"] for d in retry] == [1, 2] and all(d["status"] == "retry" for d in retry), retry)
    return " ".join(names) + f"; retry_index {[d['retry_index'] for d in retry]}"


@check("streaming (SDK's AsyncClient) to the end")
def streaming_async(ctx):
    async def run():
        client = AsyncClient(api_key=ctx.keys["form"], api_base=ctx.base)
        stream = await client.arun_workflows(models.WorkflowsRunRequest(
            inputs={"name": "Bo"}, response_mode=models.ResponseMode.STREAMING, user="sdk-async"))
        return [e async for e in stream]
    events = asyncio.run(run())
    expect(str(events[-1].event) == "workflow_finished", [str(e.event) for e in events])
    expect(field(events[-1].data, "outputs") == {"greeting": "Hello, Bo!"}, events[-1].data)
    return f"{len(events)} events"


@check("errors the SDK maps: 401 DifyAPIError, invalid number DifyInvalidParam, unknown run DifyResourceNotFound")
def error_paths(ctx):
    bad = Client(api_key="flowd_000000000000_" + "0" * 64, api_base=ctx.base)
    try:
        bad.run_workflows(models.WorkflowsRunRequest(inputs={}, response_mode=models.ResponseMode.BLOCKING, user="u"))
        raise AssertionError("no error for an unknown key")
    except errors.DifyAPIError as error:
        expect(error.status == 401 and error.code == "unauthorized" and error.message == "Access token is invalid",
               vars(error))
    try:
        events = list(ctx.client("form").run_workflows(models.WorkflowsRunRequest(
            inputs={"name": "Ada", "ratio": "many"}, response_mode=models.ResponseMode.STREAMING, user="u")))
        raise AssertionError(f"no error for a bad number: {events}")
    except errors.DifyInvalidParam as error:
        expect(error.status == 400 and error.message == "ratio in input form must be a valid number", vars(error))
    try:
        ctx.client("form").request(f"{ctx.base}/workflows/run/00000000-0000-0000-0000-000000000000", "GET")
        raise AssertionError("no error for an unknown run")
    except errors.DifyResourceNotFound as error:
        expect(error.code == "not_found", vars(error))
    stopped = ctx.client("form").stop_workflows("00000000-0000-0000-0000-000000000000", models.StopRequest(user="u"))
    expect(stopped.result == "success", stopped)
    return "401, 400 invalid_param, 404 not_found, stop of an unknown task success"


@check("requests: CORS preflight as Dify, logs filtered by end-user session and by a plain date")
def cors_and_logs(ctx):
    r = requests.options(f"{ctx.base}/workflows/run", timeout=10, headers={
        "Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    expect(r.status_code == 200, f"{r.status_code} {r.text}")
    expect(r.headers["Access-Control-Allow-Origin"] == "http://localhost:3000", r.headers)
    expect(r.headers["Access-Control-Allow-Headers"] == "authorization, content-type", r.headers)
    expect("POST" in r.headers["Access-Control-Allow-Methods"], r.headers)
    mine = ctx.get("/workflows/logs", created_by_end_user_session_id="sdk-user").json()
    expect(mine["total"] >= 1 and all(e["created_by_end_user"]["session_id"] == "sdk-user" for e in mine["data"]), mine)
    everyone = ctx.get("/workflows/logs").json()
    expect(everyone["total"] > mine["total"], (everyone["total"], mine["total"]))
    expect(ctx.get("/workflows/logs", created_at__after="2000-01-01").json()["total"] == everyone["total"], "plain date")
    expect(ctx.get("/workflows/logs", created_by_account="owner@example.com").json()["total"] == 0, "account filter")
    return f"{mine['total']} of {everyone['total']} runs are sdk-user's"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", required=True)
    ap.add_argument("--keys", required=True, help='JSON: {"form": KEY, "branch": KEY, "flaky": KEY}')
    args = ap.parse_args()
    ctx = Ctx(args)
    report = Report()
    for name, fn in CHECKS:
        if time.monotonic() > DEADLINE:
            report.record(False, name, "suite deadline exceeded")
            continue
        try:
            report.record(True, name, fn(ctx) or "")
        except Exception as error:  # noqa: BLE001 - every failure is reported
            report.record(False, name, one_line(repr(error)))
    sys.exit(report.close())


if __name__ == "__main__":
    main()
