import Engine
import Foundation
import InMemoryTracing
import Testing
import Tracing
import Workflows

@Suite("Trace context: a run's trace reaches the services its http nodes call, and its spans")
struct TraceContextTests {
    static let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

    /// Two calls in a row; the second's definition sets a `traceparent` of its own, which gives way.
    static let catalog = try! loadCatalog(["traced.yaml": """
        name: traced
        inputs: { url: string }
        nodes:
          - { id: first, kind: http, config: { url: "{{inputs.url}}/a" } }
          - id: second
            kind: http
            needs: first
            config:
              url: "{{inputs.url}}/b"
              headers: { traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", x-other: kept }
          - { id: done, kind: end, needs: second, config: { outputs: {} } }
        """])

    /// Runs `traced` through an Engine on a fresh SQLite store (the runner's `execute`, as in
    /// production), with `traceContext` as the submission's; the requests the loopback service saw.
    private func execute(traceContext: RunTraceContext?) async throws -> (RunRecord, [RecordedRequest]) {
        let server = try await LoopbackHTTPServer.start { _ in .json("{}") }
        defer { Task { await server.shutdown() } }
        return try await withDataDirectory { directory in
            let store = try makeStore(directory)
            var engineConfiguration = EngineConfiguration()
            engineConfiguration.reaperEnabled = false
            let engine = Engine(store: store, executor: WorkflowRunner(catalog: Self.catalog, configuration: .loopbackAllowed),
                                configuration: engineConfiguration, logger: quietLogger())
            try await engine.start()
            do {
                var request = try Self.catalog.runRequest(tenant: "t1", workflow: "traced",
                                                          inputsJSON: #"{"url": "\#(server.baseURL)"}"#, user: "u",
                                                          trigger: .apiAsync, transport: .grpc)
                request.traceContext = traceContext
                let run = try await engine.submit(request).run
                let final = try await engine.waitForCompletion(id: run.id, tenant: "t1")
                await engine.shutdown()
                return (final, server.requests)
            } catch {
                await engine.shutdown(gracePeriod: .milliseconds(100))
                throw error
            }
        }
    }

    /// The parts of a `traceparent` the service received.
    private func parts(_ request: RecordedRequest) throws -> (traceID: String, parentID: String, flags: String) {
        let value = try #require(request.headers["traceparent"], "no traceparent on \(request.uri)")
        #expect(RunTraceContext(traceParent: value) != nil, "invalid traceparent \(value)")
        let fields = value.split(separator: "-").map(String.init)
        try #require(fields.count == 4 && fields[0] == "00")
        return (fields[1], fields[2], fields[3])
    }

    @Test("each call carries the caller's trace id and flags with a new parent id, and its tracestate")
    func continued() async throws {
        let caller = try #require(RunTraceContext(traceParent: Self.caller, traceState: "rojo=00f067aa0ba902b7"))
        let (run, requests) = try await execute(traceContext: caller)
        #expect(run.state == .succeeded, "\(run.error ?? "")")
        #expect(run.traceContext == caller)
        try #require(requests.count == 2)
        let (a, b) = (try parts(requests[0]), try parts(requests[1]))
        #expect(a.traceID == "4bf92f3577b34da6a3ce929d0e0e4736")
        #expect(b.traceID == "4bf92f3577b34da6a3ce929d0e0e4736")
        #expect(a.flags == "01" && b.flags == "01")
        #expect(Set([a.parentID, b.parentID, "00f067aa0ba902b7"]).count == 3)
        #expect(requests.allSatisfy { $0.headers["tracestate"] == "rojo=00f067aa0ba902b7" })
        #expect(requests[1].headers["x-other"] == "kept")
    }

    @Test("a run submitted without a trace context still sends a valid traceparent, one new trace id for all its calls")
    func fresh() async throws {
        let (run, requests) = try await execute(traceContext: nil)
        #expect(run.state == .succeeded, "\(run.error ?? "")")
        #expect(run.traceContext == nil)
        try #require(requests.count == 2)
        let (a, b) = (try parts(requests[0]), try parts(requests[1]))
        #expect(a.traceID == b.traceID)
        #expect(a.traceID != "0af7651916cd43dd8448eb211c80319c")
        #expect(a.parentID != b.parentID)
        #expect(requests.allSatisfy { $0.headers["tracestate"] == nil })
    }

    @Test("with a tracer installed, the run is a span and each node attempt a child span, with their attributes")
    func spans() async throws {
        let tracer = InMemoryTracer()
        // The Engine's tasks, created while it starts, inherit the task's tracer.
        let (run, requests) = try await withTracer(tracer) { () async throws -> (RunRecord, [RecordedRequest]) in
            try await execute(traceContext: RunTraceContext(traceParent: Self.caller))
        }
        #expect(run.state == .succeeded)
        let spans = tracer.finishedSpans
        let runSpan = try #require(spans.first { $0.operationName == "workflow traced" })
        #expect(runSpan.attributes["flowd.run.id"]?.toSpanAttribute() == .string(run.id))
        #expect(runSpan.attributes["flowd.workflow"]?.toSpanAttribute() == .string("traced"))
        #expect(runSpan.attributes["flowd.tenant"]?.toSpanAttribute() == .string("t1"))
        #expect(runSpan.attributes["flowd.run.status"]?.toSpanAttribute() == .string("succeeded"))
        let nodeSpans = spans.filter { $0.operationName.hasPrefix("node ") }
        #expect(nodeSpans.map(\.operationName).sorted() == ["node done", "node first", "node second"])
        for span in nodeSpans {
            #expect(span.parentSpanID == runSpan.spanID)
            #expect(span.traceID == runSpan.traceID)
            #expect(span.attributes["flowd.node.status"]?.toSpanAttribute() == .string("succeeded"))
        }
        #expect(nodeSpans.first { $0.operationName == "node first" }?.attributes["flowd.node.kind"]?.toSpanAttribute() == .string("http"))
        // This tracer propagates no W3C header: the calls still carry the run's trace id.
        #expect(try requests.map { try parts($0).traceID } == ["4bf92f3577b34da6a3ce929d0e0e4736", "4bf92f3577b34da6a3ce929d0e0e4736"])
    }
}
