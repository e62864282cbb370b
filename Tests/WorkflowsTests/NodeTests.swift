import Engine
import Workflows
import Foundation
import Synchronization
import Testing

@Suite("Workflow nodes against real templates, a loopback HTTP server and real child processes")
struct NodeTests {
    @Test("template: inputs, sections over arrays, objects as JSON, earlier outputs, and no HTML escaping")
    func template() async throws {
        let log = EventLog()
        let result = try await runWorkflow("""
            name: t
            inputs: { who: string, items: array, meta: object }
            nodes:
              - id: list
                kind: template
                config:
                  template: "{{#inputs.items}}{{name}}={{size}};{{/inputs.items}} {{inputs.meta}} <{{inputs.who}}>"
              - id: wrap
                kind: template
                needs: list
                config: { template: "[{{list.text}}]" }
              - { id: done, kind: end, needs: wrap, config: { outputs: { text: "{{wrap.text}}", raw: "{{inputs.meta}}" } } }
            """, inputs: #"{"who": "A & B", "items": [{"name": "a", "size": 1}, {"name": "b", "size": 2.5}], "meta": {"k": [1, "x"]}}"#,
            log: log)
        #expect(result.state == .succeeded)
        let out = try outputs(result)
        #expect(out["text"] == #"[a=1;b=2.5; {"k":[1,"x"]} <A & B>]"#)
        // A lone reference keeps the value's JSON type.
        #expect(out["raw"] == ["k": [1, "x"]])
        #expect(try log.finished("list")?.inputs == ["template": "{{#inputs.items}}{{name}}={{size}};{{/inputs.items}} {{inputs.meta}} <{{inputs.who}}>"])
    }

    @Test("http: the rendered method, headers and JSON body reach the server; a JSON answer becomes structured outputs")
    func httpJSON() async throws {
        let server = try await LoopbackHTTPServer.start { request in
            .json(#"{"path": "\#(request.uri)", "echo": \#(request.body), "items": [1, 2, 3]}"#)
        }
        defer { Task { await server.shutdown() } }
        let log = EventLog()
        let result = try await runWorkflow("""
            name: h
            inputs: { base: string, who: string }
            nodes:
              - id: call
                kind: http
                config:
                  method: put
                  url: "{{inputs.base}}/users/{{inputs.who}}"
                  headers: { x-trace: "trace-{{inputs.who}}", authorization: "Bearer secret" }
                  body: { name: "{{inputs.who}}", tags: ["a", "{{inputs.who}}"] }
              - id: done
                kind: end
                needs: call
                config: { outputs: { status: "{{call.status}}", second: "{{call.body.items.1}}", echo: "{{call.body.echo}}" } }
            """, inputs: #"{"base": "\#(server.baseURL)", "who": "ada"}"#, configuration: .loopbackAllowed, log: log)
        #expect(result.state == .succeeded, "\(result)")
        let request = try #require(server.requests.first)
        #expect(request.method == "PUT")
        #expect(request.uri == "/users/ada")
        #expect(request.headers["x-trace"] == "trace-ada")
        #expect(request.headers["content-type"] == "application/json")
        #expect(try JSONValue(parsing: request.body) == ["name": "ada", "tags": ["a", "ada"]])
        #expect(try outputs(result) == ["status": 200, "second": 2, "echo": ["name": "ada", "tags": ["a", "ada"]]])
        let finished = try #require(try log.finished("call"))
        #expect(finished.outputs?.value(at: ["body", "path"]) == "/users/ada")
        #expect(finished.inputs?.value(at: ["headers", "authorization"]) == "[redacted]")
    }

    @Test("http: a 500 answer fails the node and the run, naming the status")
    func httpStatus() async throws {
        let server = try await LoopbackHTTPServer.start { _ in .text("database down", status: 500) }
        defer { Task { await server.shutdown() } }
        let log = EventLog()
        let result = try await runWorkflow("""
            name: h
            inputs: { url: string }
            nodes:
              - { id: call, kind: http, config: { url: "{{inputs.url}}" } }
              - { id: done, kind: end, needs: call, config: { outputs: {} } }
            """, inputs: #"{"url": "\#(server.baseURL)/x"}"#, configuration: .loopbackAllowed, log: log)
        #expect(result.state == .failed)
        #expect(result.error == "node 'call' failed: GET \(server.baseURL)/x answered HTTP 500 Internal Server Error: database down")
        let finished = try #require(try log.finished("call"))
        #expect(finished.status == .failed)
        #expect(finished.error?.contains("HTTP 500") == true)
        // The run stopped at the failure: the end node never started.
        #expect(try log.payloads().allSatisfy { $0.nodeID == "call" })
    }

    @Test("http: a server that never answers fails the node at its timeout", .timeLimit(.minutes(1)))
    func httpTimeout() async throws {
        let arrived = Counter()
        let server = try await LoopbackHTTPServer.start { _ in
            arrived.increment()
            return nil
        }
        defer { Task { await server.shutdown() } }
        let log = EventLog()
        let clock = ManualClock()
        let run = Task {
            try await runWorkflow("""
                name: h
                inputs: { url: string }
                nodes:
                  - { id: call, kind: http, timeout: 300ms, config: { url: "{{inputs.url}}" } }
                  - { id: done, kind: end, needs: call, config: { outputs: {} } }
                """, inputs: #"{"url": "\#(server.baseURL)/slow"}"#, configuration: .loopbackAllowed, log: log, clock: clock)
        }
        // The call is at the server and the node's timeout is armed; the server never answers,
        // so only the timeout, once the clock reaches it, can end the call.
        await arrived.wait(untilAtLeast: 1)
        await clock.waitForSleepers(atLeast: 1)
        clock.advance(by: .milliseconds(300))
        let result = try await run.value
        #expect(result.state == .failed)
        #expect(result.error?.contains("timed out after 300 ms") == true, "\(result.error ?? "")")
        #expect(server.requests.count == 1)
        #expect(try log.finished("call")?.status == .failed)
    }

    @Test("http: cancelling the run abandons a call in flight at once and records the node as stopped", .timeLimit(.minutes(1)))
    func httpCancelled() async throws {
        let arrived = Counter()
        let server = try await LoopbackHTTPServer.start { _ in
            arrived.increment()
            return nil
        }
        defer { Task { await server.shutdown() } }
        let log = EventLog()
        let run = Task {
            try await runWorkflow("""
                name: h
                inputs: { url: string }
                nodes:
                  - { id: call, kind: http, config: { url: "{{inputs.url}}" } }
                  - { id: done, kind: end, needs: call, config: { outputs: {} } }
                """, inputs: #"{"url": "\#(server.baseURL)"}"#, configuration: .loopbackAllowed, log: log)
        }
        await arrived.wait(untilAtLeast: 1)
        run.cancel()
        // The server never answers (and the call has no timeout): only the cancellation can end it.
        await #expect(throws: CancellationError.self) { try await run.value }
        #expect(try log.finished("call")?.status == .stopped)
    }

    @Test("retries: two 503 answers then a 200 succeed on the third attempt, each attempt in the events")
    func retries() async throws {
        let calls = Mutex(0)
        let server = try await LoopbackHTTPServer.start { _ in
            let call = calls.withLock { count in
                count += 1
                return count
            }
            return call < 3 ? .text("busy", status: 503) : .json(#"{"ok": true}"#)
        }
        defer { Task { await server.shutdown() } }
        let log = EventLog()
        let result = try await runWorkflow("""
            name: h
            inputs: { url: string }
            nodes:
              - { id: call, kind: http, retries: 3, retry_backoff: 10ms, config: { url: "{{inputs.url}}" } }
              - { id: done, kind: end, needs: call, config: { outputs: { ok: "{{call.body.ok}}" } } }
            """, inputs: #"{"url": "\#(server.baseURL)"}"#, configuration: .loopbackAllowed, log: log)
        #expect(result.state == .succeeded)
        #expect(try outputs(result) == ["ok": true])
        let call = try log.payloads().filter { $0.nodeID == "call" }
        #expect(call.map(\.status) == [.running, .failed, .running, .failed, .running, .succeeded])
        #expect(call.map(\.attempt) == [1, 1, 2, 2, 3, 3])
        #expect(call.filter { $0.status == .failed }.allSatisfy { $0.willRetry && $0.error?.contains("HTTP 503") == true })
        #expect(Set(call.map(\.index)) == [1])
        // One step per finished node, not per attempt.
        #expect(log.steps == 2)
    }

    @Test("exec: the node's input goes to stdin as JSON, the program's JSON stdout becomes the outputs")
    func exec() async throws {
        let script = try Script(#"""
            read -r line
            printf '{"received": %s, "argument": "%s", "path": "%s"}\n' "$line" "$1" "$PATH"
            """#)
        defer { script.remove() }
        var configuration = WorkflowRunnerConfiguration()
        configuration.allowedPrograms = [script.path]
        configuration.programEnvironment = ["PATH": "/usr/bin:/bin"]
        let result = try await runWorkflow("""
            name: e
            inputs: { n: integer }
            nodes:
              - id: greet
                kind: template
                config: { template: "hi {{inputs.n}}" }
              - id: run
                kind: exec
                needs: greet
                config:
                  program: \(script.path)
                  args: ["n={{inputs.n}}"]
              - id: shaped
                kind: exec
                needs: run
                config:
                  program: \(script.path)
                  input: { value: "{{run.received.greet.text}}" }
              - { id: done, kind: end, needs: [run, shaped], config: { outputs: { first: "{{run}}", second: "{{shaped.received}}" } } }
            """, inputs: #"{"n": 5}"#, configuration: configuration)
        #expect(result.state == .succeeded, "\(result)")
        let out = try outputs(result)
        // Without `input`, stdin holds the run's inputs and the outputs of the nodes it needs.
        #expect(out["first"] == ["received": ["inputs": ["n": 5], "greet": ["text": "hi 5"]], "argument": "n=5", "path": "/usr/bin:/bin"])
        #expect(out["second"] == ["value": "hi 5"])
    }

    @Test("exec: a program not on the allow-list is refused without retrying, a failing one reports status and stderr")
    func execRefused() async throws {
        let script = try Script("echo 'no such thing' >&2\nexit 3")
        defer { script.remove() }
        let log = EventLog()
        let refused = try await runWorkflow("""
            name: e
            nodes:
              - { id: run, kind: exec, retries: 3, retry_backoff: 10ms, config: { program: \(script.path) } }
              - { id: done, kind: end, needs: run, config: { outputs: {} } }
            """, log: log)
        #expect(refused.state == .failed)
        #expect(refused.error == "node 'run' failed: program \(script.path) is not on the allow-list of this server")
        #expect(try log.payloads().filter { $0.status == .running }.count == 1)

        var configuration = WorkflowRunnerConfiguration()
        configuration.allowedPrograms = [script.path]
        let failing = try await runWorkflow("""
            name: e
            nodes:
              - { id: run, kind: exec, config: { program: \(script.path) } }
              - { id: done, kind: end, needs: run, config: { outputs: {} } }
            """, configuration: configuration)
        #expect(failing.error == "node 'run' failed: \(script.path) exited with status 3: no such thing")
    }

    @Test("exec: a program past its timeout is killed, and the node fails once it is gone", .timeLimit(.minutes(1)))
    func execTimeout() async throws {
        let script = try Script("echo $$ > \"$1\"\nexec sleep 3600")
        defer { script.remove() }
        let fifo = script.file("ready")
        #expect(mkfifo(fifo, 0o600) == 0)
        var configuration = WorkflowRunnerConfiguration()
        configuration.allowedPrograms = [script.path]
        let clock = ManualClock()
        // Should the child never come, opening the write end releases the reader.
        defer { close(open(fifo, O_WRONLY | O_NONBLOCK)) }
        async let reader = readPID(fromFIFO: fifo)
        let run = Task {
            try await runWorkflow("""
                name: e
                nodes:
                  - { id: run, kind: exec, timeout: 1s, config: { program: \(script.path), args: ["\(fifo)"] } }
                  - { id: done, kind: end, needs: run, config: { outputs: {} } }
                """, configuration: configuration, clock: clock)
        }
        // The child runs (it would sleep for an hour) and the timeout is armed: only the
        // timeout, once the clock reaches it, can end the node.
        let pid = try #require(await reader)
        await clock.waitForSleepers(atLeast: 1)
        clock.advance(by: .seconds(1))
        let result = try await run.value
        #expect(result.error == "node 'run' failed: timed out after 1 s")
        #expect(!processExists(pid), "the child \(pid) outlived its node")
    }

    @Test("condition operators compare numbers, numeric text, strings, arrays and objects", arguments: [
        ("3", ">=", "2", true), ("2", ">=", "2", true), ("1.5", "<", "2", true), ("\"10\"", ">", "9", true),
        ("\"b\"", ">", "\"a\"", true), ("3", "==", "3.0", true), ("\"3\"", "==", "3", true), ("true", "==", "\"true\"", true),
        ("\"x\"", "!=", "\"y\"", true), ("[1, 2]", "contains", "2", true), ("\"hello\"", "contains", "\"ell\"", true),
        ("{\"k\": 1}", "contains", "\"k\"", true), ("[1, 2]", "contains", "3", false), ("1", "<=", "0", false),
    ])
    func condition(left: String, op: String, right: String, expected: Bool) async throws {
        let result = try await runWorkflow("""
            name: c
            nodes:
              - { id: check, kind: condition, config: { left: \(left), op: "\(op)", right: \(right), then: "yes", else: "no" } }
              - { id: "yes", kind: template, config: { template: "yes" } }
              - { id: "no", kind: template, config: { template: "no" } }
              - { id: done, kind: end, needs: ["yes", "no"], config: { outputs: { answer: "{{yes.text}}{{no.text}}" } } }
            """)
        #expect(try outputs(result)["answer"] == .string(expected ? "yes" : "no"))
    }

    @Test("condition: values that cannot be ordered fail the node")
    func conditionTypes() async throws {
        let result = try await runWorkflow("""
            name: c
            nodes:
              - { id: check, kind: condition, config: { left: true, op: "<", right: [1], then: done } }
              - { id: done, kind: end, config: { outputs: {} } }
            """)
        #expect(result.error == "node 'check' failed: cannot order boolean true and array [1]")
    }

    @Test("on_error continue: the failure is recorded, dependents see it, and the run ends partial-succeeded")
    func continueOnError() async throws {
        let log = EventLog()
        let result = try await runWorkflow("""
            name: c
            nodes:
              - { id: risky, kind: exec, on_error: continue, config: { program: /bin/false } }
              - { id: fine, kind: template, config: { template: ok } }
              - { id: done, kind: end, needs: [risky, fine], config: { outputs: { fine: "{{fine.text}}", problem: "{{risky.error}}" } } }
            """, log: log)
        #expect(result.state == .partialSucceeded)
        #expect(result.error == "failed and continued: 'risky'")
        #expect(try outputs(result) == ["fine": "ok", "problem": "program /bin/false is not on the allow-list of this server"])
        #expect(try log.finished("risky")?.status == .failed)
        #expect(try log.finished("done")?.status == .succeeded)
    }

    @Test("a failing node cancels its running siblings, which are recorded as stopped with the reason", .timeLimit(.minutes(1)))
    func failCancelsSiblings() async throws {
        let log = EventLog()
        // A clock that never moves: only the cancellation can end the nap.
        let result = try await runWorkflow("""
            name: c
            nodes:
              - { id: nap, kind: sleep, config: { seconds: 30 } }
              - { id: broken, kind: exec, config: { program: /bin/false } }
              - { id: done, kind: end, needs: [nap, broken], config: { outputs: {} } }
            """, log: log, clock: ManualClock())
        #expect(result.state == .failed)
        let nap = try #require(try log.finished("nap"))
        #expect(nap.status == .stopped)
        #expect(nap.error == "cancelled because node 'broken' failed: program /bin/false is not on the allow-list of this server")
    }

    @Test("large inputs and outputs are truncated in events with a flag; the run's outputs stay whole")
    func truncation() async throws {
        var configuration = WorkflowRunnerConfiguration()
        configuration.eventValueLimit = 100
        let log = EventLog()
        let long = String(repeating: "é", count: 300)
        let result = try await runWorkflow("""
            name: c
            inputs: { text: string }
            nodes:
              - { id: echo, kind: template, config: { template: "{{inputs.text}}" } }
              - { id: done, kind: end, needs: echo, config: { outputs: { text: "{{echo.text}}" } } }
            """, inputs: #"{"text": "\#(long)"}"#, configuration: configuration, log: log)
        #expect(try outputs(result)["text"] == .string(long))
        let echo = try #require(try log.finished("echo"))
        #expect(echo.outputsTruncated)
        #expect(!echo.inputsTruncated)
        let shown = try #require(echo.outputs?.stringValue)
        #expect(shown.utf8.count <= 100 && shown.hasPrefix(#"{"text":"éé"#))
    }
}
