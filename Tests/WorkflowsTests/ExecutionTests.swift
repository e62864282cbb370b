import Engine
import Workflows
import Foundation
import Testing

@Suite("Workflows through the Engine on a SQLite store: events, outputs, parallel branches and stop")
struct ExecutionTests {
    /// An Engine running `catalog`'s workflows on a fresh store, shut down afterwards.
    /// `clock` paces the runner's sleep nodes and timeouts (the Engine keeps the system clock).
    private func withEngine<T>(_ catalog: WorkflowCatalog, configuration: WorkflowRunnerConfiguration = WorkflowRunnerConfiguration(),
                               clock: any EngineClock = SystemClock(),
                               _ body: (Engine, SQLiteRunStore) async throws -> T) async throws -> T {
        try await withDataDirectory { directory in
            let store = try makeStore(directory)
            var engineConfiguration = EngineConfiguration()
            engineConfiguration.reaperEnabled = false
            let engine = Engine(store: store, executor: WorkflowRunner(catalog: catalog, configuration: configuration, clock: clock),
                                configuration: engineConfiguration, logger: quietLogger())
            try await engine.start()
            do {
                let result = try await body(engine, store)
                await engine.shutdown()
                return result
            } catch {
                await engine.shutdown(gracePeriod: .milliseconds(100))
                throw error
            }
        }
    }

    private func submit(_ engine: Engine, _ catalog: WorkflowCatalog, _ workflow: String, _ inputs: String) async throws -> RunRecord {
        let request = try catalog.runRequest(tenant: "t1", workflow: workflow, inputsJSON: inputs, user: "u",
                                             trigger: .apiAsync, transport: .grpc)
        return try await engine.submit(request).run
    }

    /// The run's events as (kind, node id, status), node payloads decoded.
    private func timeline(_ store: SQLiteRunStore, _ run: RunRecord) async throws -> [String] {
        try await store.events(runID: run.id, after: 0, limit: 1000).map { event in
            guard event.kind == .nodeStarted || event.kind == .nodeFinished else { return event.kind.rawValue }
            let payload = try NodeEventPayload(json: event.payloadJSON)
            return "\(event.kind.rawValue) \(payload.nodeID) \(payload.status.rawValue)"
        }
    }

    @Test("hello: the events in order, the greeting as output, one step per node, the version recorded")
    func hello() async throws {
        let catalog = try WorkflowCatalog.load(directory: examplesDirectory)
        try await withEngine(catalog) { engine, store in
            let run = try await submit(engine, catalog, "hello", #"{"name": "Ada"}"#)
            let final = try await engine.waitForCompletion(id: run.id, tenant: "t1")
            #expect(final.state == .succeeded)
            #expect(final.outputsJSON == #"{"greeting":"Hello, Ada!"}"#)
            #expect(final.workflowVersion == "1")
            #expect(final.totalSteps == 2)
            #expect(try await timeline(store, run) == [
                "run_started",
                "node_started greet running", "node_finished greet succeeded",
                "node_started done running", "node_finished done succeeded",
                "run_finished",
            ])
            let events = try await store.events(runID: run.id, after: 0, limit: 100)
            let greet = try NodeEventPayload(json: events[2].payloadJSON)
            #expect(greet.title == "Compose the greeting")
            #expect(greet.nodeKind == "template")
            #expect(greet.index == 1)
            #expect(greet.attempt == 1)
            #expect(greet.outputs == ["text": "Hello, Ada!"])
            #expect(greet.elapsedMS != nil)
            #expect(greet.error == nil)
            // The payload always carries every field.
            let raw = try JSONValue(parsing: events[2].payloadJSON).objectValue ?? [:]
            #expect(Set(raw.keys) == ["node_id", "node_kind", "title", "index", "attempt", "status", "inputs", "outputs", "error",
                                      "elapsed_ms", "inputs_truncated", "outputs_truncated", "will_retry"])
        }
    }

    @Test("branch: the untaken branch is recorded as skipped, both ways")
    func branch() async throws {
        let catalog = try WorkflowCatalog.load(directory: examplesDirectory)
        try await withEngine(catalog) { engine, store in
            let small = try await submit(engine, catalog, "branch", #"{"n": 3}"#)
            let smallFinal = try await engine.waitForCompletion(id: small.id, tenant: "t1")
            #expect(smallFinal.state == .succeeded)
            #expect(try JSONValue(parsing: smallFinal.outputsJSON ?? "") == ["verdict": "3 is small", "branch": "else"])
            #expect(try await timeline(store, small) == [
                "run_started",
                "node_started check running", "node_finished check succeeded",
                "node_finished big skipped",
                "node_started small running", "node_finished small succeeded",
                "node_started done running", "node_finished done succeeded",
                "run_finished",
            ])
            #expect(smallFinal.totalSteps == 3)

            let big = try await submit(engine, catalog, "branch", #"{"n": 12.5}"#)
            let bigFinal = try await engine.waitForCompletion(id: big.id, tenant: "t1")
            #expect(try JSONValue(parsing: bigFinal.outputsJSON ?? "") == ["verdict": "12.5 is big", "branch": "then"])
            #expect(try await timeline(store, big).contains("node_finished small skipped"))
        }
    }

    @Test("call-service: the example calls a loopback service and returns its JSON answer")
    func callService() async throws {
        let server = try await LoopbackHTTPServer.start { request in
            .json(#"{"reply": "got \#(request.method) \#(request.body.replacingOccurrences(of: "\"", with: "'"))"}"#)
        }
        defer { Task { await server.shutdown() } }
        let catalog = try WorkflowCatalog.load(directory: examplesDirectory)
        try await withEngine(catalog, configuration: .loopbackAllowed) { engine, _ in
            let run = try await submit(engine, catalog, "call-service", #"{"url": "\#(server.baseURL)/echo", "message": "hi"}"#)
            let final = try await engine.waitForCompletion(id: run.id, tenant: "t1")
            #expect(final.state == .succeeded, "\(final.error ?? "")")
            #expect(try JSONValue(parsing: final.outputsJSON ?? "") == ["status": 200, "reply": ["reply": "got POST {'message':'hi'}"]])
        }
    }

    @Test("slow: four sleeps in a row add up to the requested seconds and end with done: true")
    func slow() async throws {
        let catalog = try WorkflowCatalog.load(directory: examplesDirectory)
        try await withEngine(catalog) { engine, store in
            let run = try await submit(engine, catalog, "slow", #"{"seconds": 0.8}"#)
            let final = try await engine.waitForCompletion(id: run.id, tenant: "t1")
            #expect(final.outputsJSON == #"{"done":true}"#)
            let elapsed = final.elapsedMilliseconds(now: Date())
            // Not faster than its sleeps; no upper bound on a busy machine (the events show 4 sleeps).
            #expect(elapsed >= 800, "\(elapsed) ms")
            let sleeps = try await store.events(runID: run.id, after: 0, limit: 100)
                .compactMap { try? NodeEventPayload(json: $0.payloadJSON) }
                .filter { $0.nodeKind == "sleep" && $0.status == .succeeded }
            #expect(sleeps.map { $0.inputs } == Array(repeating: ["seconds": 0.2], count: 4))
        }
    }

    @Test("slow: a watcher sees the first sleep start; a stop ends the run at once, the sleep recorded as stopped",
          .timeLimit(.minutes(1)))
    func stopDuringSleep() async throws {
        let catalog = try WorkflowCatalog.load(directory: examplesDirectory)
        // A clock that never moves: only the stop can end the sleep.
        try await withEngine(catalog, clock: ManualClock()) { engine, store in
            let run = try await submit(engine, catalog, "slow", "{}")
            for try await event in try await engine.watch(id: run.id, tenant: "t1", after: 0) where event.kind == .nodeStarted {
                break
            }
            let stopped = try await engine.stop(id: run.id, tenant: "t1")
            #expect(stopped.state == .stopped)
            #expect(try await timeline(store, run) == [
                "run_started", "node_started first_quarter running", "node_finished first_quarter stopped", "run_finished",
            ])
        }
    }

    @Test("two 1 s sleeps without dependencies run at the same time (both start before either finishes); chained, the second starts after the first finished")
    func parallel() async throws {
        let catalog = try loadCatalog([
            "parallel.yaml": """
                name: parallel
                nodes:
                  - { id: left, kind: sleep, config: { seconds: 1 } }
                  - { id: right, kind: sleep, config: { seconds: 1 } }
                  - { id: done, kind: end, needs: [left, right], config: { outputs: { ok: true } } }
                """,
            "chained.yaml": """
                name: chained
                nodes:
                  - { id: left, kind: sleep, config: { seconds: 1 } }
                  - { id: right, kind: sleep, needs: left, config: { seconds: 1 } }
                  - { id: done, kind: end, needs: right, config: { outputs: { ok: true } } }
                """,
        ])
        /// A sleep node as the run's stored events tell it: the sequence numbers of its
        /// `node_started` and `node_finished` events, and the time it reported.
        struct SleepNode: CustomStringConvertible {
            let started: Int64
            let finished: Int64
            let elapsedMS: Int64
            var description: String { "started #\(started), finished #\(finished), \(elapsedMS) ms" }
        }
        try await withEngine(catalog) { engine, store in
            func run(_ workflow: String) async throws -> (run: RunRecord, left: SleepNode, right: SleepNode) {
                let submitted = try await submit(engine, catalog, workflow, "{}")
                let final = try await engine.waitForCompletion(id: submitted.id, tenant: "t1")
                #expect(final.state == .succeeded)
                var started: [String: Int64] = [:]
                var finished: [String: Int64] = [:]
                var elapsed: [String: Int64] = [:]
                for event in try await store.events(runID: submitted.id, after: 0, limit: 100)
                where event.kind == .nodeStarted || event.kind == .nodeFinished {
                    let payload = try NodeEventPayload(json: event.payloadJSON)
                    if event.kind == .nodeStarted {
                        started[payload.nodeID] = event.sequence
                    } else {
                        finished[payload.nodeID] = event.sequence
                        elapsed[payload.nodeID] = payload.elapsedMS
                    }
                }
                func node(_ id: String) throws -> SleepNode {
                    SleepNode(started: try #require(started[id], "no node_started for \(id)"),
                              finished: try #require(finished[id], "no node_finished for \(id)"),
                              elapsedMS: try #require(elapsed[id], "no elapsed_ms for \(id)"))
                }
                return (final, try node("left"), try node("right"))
            }

            // Parallel: events get their sequence numbers in the order they are stored, and a
            // node stores node_started before it sleeps and node_finished after, so both
            // node_started events before either node_finished means both sleeps were in flight
            // at the same time. A runner doing one node at a time could not produce this order.
            let parallel = try await run("parallel")
            let (left, right) = (parallel.left, parallel.right)
            #expect(max(left.started, right.started) < min(left.finished, right.finished),
                    "the sleeps did not overlap: left \(left); right \(right)")

            // Chained: the second sleep starts only after the first finished.
            let chained = try await run("chained")
            let (first, second) = (chained.left, chained.right)
            #expect(second.started > first.finished, "left \(first); right \(second)")

            // Lower bounds only (they hold however busy the machine is): a 1 s sleep takes at
            // least 1 s, and two of them one after the other at least 2 s of run time.
            for node in [left, right, first, second] { #expect(node.elapsedMS >= 1000, "\(node)") }
            let chainedRun = chained.run.elapsedMilliseconds(now: Date())
            #expect(chainedRun >= 2000, "chained run took \(chainedRun) ms")
            print("parallel: run \(parallel.run.elapsedMilliseconds(now: Date())) ms, left \(left), right \(right); "
                  + "chained: run \(chainedRun) ms, left \(first), right \(second)")
        }
    }

    @Test("stop during a long exec node: the child process is gone and the run is stopped", .timeLimit(.minutes(1)))
    func stopDuringExec() async throws {
        let script = try Script("echo $$ > \"$1\"\nexec sleep 3600")
        defer { script.remove() }
        let fifo = script.file("ready")
        #expect(mkfifo(fifo, 0o600) == 0)
        let catalog = try loadCatalog(["long.yaml": """
            name: long
            nodes:
              - { id: work, kind: exec, config: { program: \(script.path), args: ["\(fifo)"] } }
              - { id: done, kind: end, needs: work, config: { outputs: {} } }
            """])
        var configuration = WorkflowRunnerConfiguration()
        configuration.allowedPrograms = [script.path]
        try await withEngine(catalog, configuration: configuration) { engine, store in
            // Should the child never come, opening the write end releases the reader.
            defer { close(open(fifo, O_WRONLY | O_NONBLOCK)) }
            async let reader = readPID(fromFIFO: fifo)
            let run = try await submit(engine, catalog, "long", "{}")
            // The child writes its pid into the FIFO: it is running.
            let pid = try #require(await reader)
            #expect(processExists(pid))

            let stopped = try await engine.stop(id: run.id, tenant: "t1")
            #expect(stopped.state == .stopped)
            // The child would sleep for an hour: only the stop's kill can have ended it.
            #expect(!processExists(pid), "the child \(pid) outlived the stop")

            let timeline = try await timeline(store, run)
            #expect(timeline == ["run_started", "node_started work running", "node_finished work stopped", "run_finished"])
        }
    }
}

