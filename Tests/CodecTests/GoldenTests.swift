import Codec
import Foundation
import Testing

/// Encodings made by the official Python protobuf runtime (tools/golden/make-golden.py).
private enum Golden {
    struct Document: Decodable {
        struct Vector: Decodable {
            var message: String
            var hex: String
        }

        var generator: String
        var vectors: [String: Vector]
    }

    static let document: Document = {
        let url = Bundle.module.url(forResource: "vectors", withExtension: "json", subdirectory: "Golden")!
        return try! JSONDecoder().decode(Document.self, from: Data(contentsOf: url))
    }()

    static func bytes(_ name: String) throws -> [UInt8] {
        [UInt8](hex: try #require(document.vectors[name], "no golden vector \(name)").hex)
    }
}

/// One golden vector and the Swift value that must encode to the same bytes.
struct GoldenCase: Sendable, CustomTestStringConvertible {
    let name: String
    let check: @Sendable () throws -> Void

    init<M: ProtoMessage & Equatable>(_ name: String, _ value: M) {
        self.name = name
        check = {
            let expected = try Golden.bytes(name)
            #expect(value.serializedBytes().hex == expected.hex, "encoding of \(name)")
            #expect(try M(serializedBytes: expected) == value, "decoding of \(name)")
        }
    }

    var testDescription: String { name }
}

private let fullRun = FlowdV1.Run(
    id: "run-0001", workflow: "greeting", workflowVersion: "v3", status: .succeeded,
    inputsJson: #"{"name":"Zoë"}"#, outputsJson: #"{"text":"Hello, Zoë 😈"}"#, error: "",
    triggeredFrom: .apiStreaming, transport: .grpc, user: "user-☺",
    createdAt: Timestamp(seconds: 1_700_000_000, nanos: 123_000_000), startedAt: Timestamp(seconds: 1_700_000_001, nanos: 5),
    finishedAt: Timestamp(seconds: 1_700_000_002, nanos: 999_999_999), elapsedMs: 1877, totalSteps: 4, attempt: 2,
    lastSequence: 9, totalTokens: 1_234_567_890_123)

private let failedRun = FlowdV1.Run(
    id: "run-0002", workflow: "greeting", status: .failed, inputsJson: "{}", error: "node llm-1 failed: timeout",
    triggeredFrom: .apiAsync, transport: .rest, user: "bob", createdAt: Timestamp(seconds: 0), elapsedMs: -1,
    attempt: 1)

private let debugInfo: [UInt8] = Wire.field(1, "a") + Wire.field(1, "b") + Wire.field(2, "opaque to flowd")

let goldenCases: [GoldenCase] = [
    GoldenCase("health_check_request", HealthV1.CheckRequest(service: "flowd.v1.Workflows")),
    GoldenCase("health_check_request_empty", HealthV1.CheckRequest()),
    GoldenCase("health_check_response_serving", HealthV1.CheckResponse(status: .serving)),
    GoldenCase("health_check_response_unknown_enum_value", HealthV1.CheckResponse(status: .init(rawValue: 7))),
    GoldenCase("rpc_status_all_details", RPCStatus(
        code: .resourceExhausted, message: "tenant acme is over its limit ☺",
        details: [
            .errorInfo(ErrorInfo(reason: "TENANT_CONCURRENCY_LIMIT", domain: "flowd", metadata: ["tenant": "acme"])),
            .retryInfo(RetryInfo(retryDelay: .milliseconds(1500))),
            .quotaFailure(QuotaFailure(violations: [
                .init(subject: "tenant:acme", description: "4 of 4 concurrent runs in use"),
            ])),
            .badRequest(BadRequest(fieldViolations: [
                .init(field: "inputs_json", description: "not a JSON object", reason: "INVALID_JSON"),
                .init(field: "idempotency_key", description: "longer than 255 bytes"),
            ])),
            .other(typeURL: "type.googleapis.com/google.rpc.DebugInfo", value: debugInfo),
        ])),
    GoldenCase("rpc_status_code_only", RPCStatus(code: .notFound)),
    GoldenCase("error_info_sorted_metadata", ErrorInfo(
        reason: "IDEMPOTENCY_KEY_REUSED", domain: "flowd",
        metadata: ["run_id": "run-0001", "b": "2", "a": "1", "é": "accent"])),
    GoldenCase("retry_info_negative", RetryInfo(retryDelay: .milliseconds(-1500))),
    GoldenCase("run_workflow_request_unicode", FlowdV1.RunWorkflowRequest(
        workflow: "greeting", inputsJson: #"{"name":"Zoë 😈","note":"tab\there"}"#, responseMode: .async,
        user: "user-☺", idempotencyKey: "key-1")),
    GoldenCase("run_workflow_response", FlowdV1.RunWorkflowResponse(run: fullRun, created: true)),
    GoldenCase("run_full", fullRun),
    GoldenCase("run_event_run_started", FlowdV1.RunEvent(
        runId: "run-0001", sequence: 1, time: Timestamp(seconds: 1_700_000_001),
        event: .runStarted(FlowdV1.RunStarted(run: FlowdV1.Run(id: "run-0001", status: .running))))),
    GoldenCase("run_event_node_started", FlowdV1.RunEvent(
        runId: "run-0001", sequence: 2, time: Timestamp(seconds: 1_700_000_001, nanos: 10),
        event: .nodeStarted(FlowdV1.NodeStarted(
            nodeId: "llm-1", nodeKind: "llm", title: "Say hello", index: 1, inputsJson: #"{"prompt":"hi"}"#,
            inputsTruncated: true)))),
    GoldenCase("run_event_node_finished", FlowdV1.RunEvent(
        runId: "run-0001", sequence: 3, time: Timestamp(seconds: 1_700_000_002),
        event: .nodeFinished(FlowdV1.NodeFinished(
            nodeId: "llm-1", nodeKind: "llm", title: "Say hello", index: 1, status: .succeeded,
            inputsJson: #"{"prompt":"hi"}"#, outputsJson: #"{"text":"hello"}"#, elapsedMs: 250,
            outputsTruncated: true, attempt: 1)))),
    GoldenCase("run_event_text_chunk", FlowdV1.RunEvent(
        runId: "run-0001", sequence: 4, event: .textChunk(FlowdV1.TextChunk(nodeId: "llm-1", text: "Hel😈lo")))),
    GoldenCase("run_event_run_finished", FlowdV1.RunEvent(
        runId: "run-0001", sequence: 9, time: Timestamp(seconds: 1_700_000_002, nanos: 999_999_999),
        event: .runFinished(FlowdV1.RunFinished(run: fullRun)))),
    GoldenCase("run_event_heartbeat", FlowdV1.RunEvent(
        runId: "run-0001", sequence: 9, time: Timestamp(seconds: 1_700_000_010), event: .heartbeat)),
    GoldenCase("get_run_request", FlowdV1.GetRunRequest(runId: "run-0001")),
    GoldenCase("watch_run_request", FlowdV1.WatchRunRequest(runId: "run-0001", afterSequence: 4)),
    GoldenCase("stop_run_request", FlowdV1.StopRunRequest(runId: "run-0001", user: "user-☺")),
    GoldenCase("list_runs_request", FlowdV1.ListRunsRequest(
        pageSize: 50, pageToken: "cGFnZS0y", statuses: [.running, .failed, .partialSucceeded], workflow: "greeting",
        user: "bob")),
    GoldenCase("list_runs_response", FlowdV1.ListRunsResponse(runs: [fullRun, failedRun], nextPageToken: "cGFnZS0z")),
]

@Suite("golden vectors from the official protobuf runtime")
struct GoldenTests {
    @Test("Swift encodes each message to the Python bytes and decodes them back", arguments: goldenCases)
    func vector(_ golden: GoldenCase) throws {
        try golden.check()
    }

    @Test("every golden vector has a Swift counterpart and the other way round")
    func coverage() {
        #expect(Set(Golden.document.vectors.keys) == Set(goldenCases.map(\.name)))
        #expect(Golden.document.generator.hasPrefix("tools/golden/make-golden.py"))
    }
}
