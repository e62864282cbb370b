import Foundation

/// How a run was submitted (the trigger audit). Recorded once, never changed.
public enum Trigger: String, Sendable, Codable, CaseIterable {
    case apiAsync = "api-async"
    case apiBlocking = "api-blocking"
    case apiStreaming = "api-streaming"
}

/// The protocol a run was submitted over.
public enum Transport: String, Sendable, Codable, CaseIterable {
    case grpc
    case rest
}

/// A workflow run as stored.
///
/// Times are whole milliseconds since 1970 (`Date` values are truncated to milliseconds when
/// stored, so what is read back equals what was written).
public struct RunRecord: Sendable, Equatable, Codable {
    public var id: String
    public var tenant: String
    public var workflow: String
    public var workflowVersion: String
    public var state: RunState
    /// The submitted inputs, a JSON object as text.
    public var inputsJSON: String
    /// The outputs, a JSON object as text; nil until the run has outputs.
    public var outputsJSON: String?
    public var error: String?
    public var trigger: Trigger
    public var transport: Transport
    public var user: String
    public var idempotencyKey: String?
    public var createdAt: Date
    public var startedAt: Date?
    public var finishedAt: Date?
    /// Incremented by every claim; every write by a worker is a compare-and-set on it.
    public var attempt: Int
    /// The sequence number of the last stored event (0 before the first).
    public var lastSequence: Int64
    public var totalSteps: Int
    public var totalTokens: Int64
    /// The worker holding the run while it is `running`.
    public var leaseOwner: String?
    public var leaseExpiresAt: Date?
    /// Last time the run showed progress (claim, event, lease renewal does not count).
    public var lastProgressAt: Date?
    /// Set by a stop request on a running run; the worker ends the run `stopped`.
    public var stopRequested: Bool
    /// The caller's W3C trace context, when the submission carried a valid one.
    public var traceContext: RunTraceContext?

    public init(
        id: String, tenant: String, workflow: String, workflowVersion: String, state: RunState,
        inputsJSON: String, outputsJSON: String? = nil, error: String? = nil, trigger: Trigger,
        transport: Transport, user: String, idempotencyKey: String? = nil, createdAt: Date,
        startedAt: Date? = nil, finishedAt: Date? = nil, attempt: Int = 0, lastSequence: Int64 = 0,
        totalSteps: Int = 0, totalTokens: Int64 = 0, leaseOwner: String? = nil, leaseExpiresAt: Date? = nil,
        lastProgressAt: Date? = nil, stopRequested: Bool = false, traceContext: RunTraceContext? = nil
    ) {
        self.id = id
        self.tenant = tenant
        self.workflow = workflow
        self.workflowVersion = workflowVersion
        self.state = state
        self.inputsJSON = inputsJSON
        self.outputsJSON = outputsJSON
        self.error = error
        self.trigger = trigger
        self.transport = transport
        self.user = user
        self.idempotencyKey = idempotencyKey
        self.createdAt = createdAt
        self.startedAt = startedAt
        self.finishedAt = finishedAt
        self.attempt = attempt
        self.lastSequence = lastSequence
        self.totalSteps = totalSteps
        self.totalTokens = totalTokens
        self.leaseOwner = leaseOwner
        self.leaseExpiresAt = leaseExpiresAt
        self.lastProgressAt = lastProgressAt
        self.stopRequested = stopRequested
        self.traceContext = traceContext
    }

    /// Run time in milliseconds: from start to finish (or to `now` while running).
    public func elapsedMilliseconds(now: Date) -> Int64 {
        guard let startedAt else { return 0 }
        let end = finishedAt ?? now
        return max(0, Int64((end.timeIntervalSince(startedAt) * 1000).rounded()))
    }
}

/// What a run event says. The payload of node events is the executor's business; the Engine
/// only orders, stores and delivers them.
public enum RunEventKind: String, Sendable, Codable, CaseIterable {
    case runStarted = "run_started"
    case nodeStarted = "node_started"
    case nodeFinished = "node_finished"
    case textChunk = "text_chunk"
    case runFinished = "run_finished"
}

/// One entry of a run's append-only event log.
public struct RunEvent: Sendable, Equatable, Codable {
    public var runID: String
    /// 1, 2, 3, ... per run, without gaps.
    public var sequence: Int64
    public var time: Date
    public var kind: RunEventKind
    /// JSON text. For `run_started` and `run_finished` it is the run record at that moment
    /// (`RunRecord` encoded with `RunRecord.jsonEncoder`); for node events, what the executor gave.
    public var payloadJSON: String

    public init(runID: String, sequence: Int64, time: Date, kind: RunEventKind, payloadJSON: String) {
        self.runID = runID
        self.sequence = sequence
        self.time = time
        self.kind = kind
        self.payloadJSON = payloadJSON
    }

    public var isTerminal: Bool { kind == .runFinished }
}

extension RunEvent {
    /// A stored run event with its run's inputs and outputs put back in place of the empty
    /// strings that `RunRecord.storedJSONPayload()` left (payloads stored before there were
    /// placeholders, and node events, are returned unchanged).
    ///
    /// In JSON text a raw `"` is always structural (inside strings it is escaped), and a key
    /// is the only thing that can follow `,"` with `name":`; so the first `,"inputsJSON":""`
    /// is that key of the top-level object (which starts with `attempt`, never with it).
    package func restoringData(inputsJSON: String, outputsJSON: String?) -> RunEvent {
        guard kind == .runStarted || kind == .runFinished else { return self }
        var payload = Array(payloadJSON.utf8)
        Self.fill(&payload, key: Self.inputsPlaceholder, with: inputsJSON)
        if let outputsJSON { Self.fill(&payload, key: Self.outputsPlaceholder, with: outputsJSON) }
        var restored = self
        restored.payloadJSON = String(decoding: payload, as: UTF8.self)
        return restored
    }

    private static let inputsPlaceholder = Array(#","inputsJSON":"""#.utf8)
    private static let outputsPlaceholder = Array(#","outputsJSON":"""#.utf8)

    private static func fill(_ payload: inout [UInt8], key placeholder: [UInt8], with value: String) {
        guard let start = payload.firstRange(of: placeholder)?.lowerBound else { return }
        var string: [UInt8] = []
        JSONText.writeString(value, into: &string)
        // Replace the closing `""` of the placeholder by the value's JSON string.
        payload.replaceSubrange((start + placeholder.count - 2)..<(start + placeholder.count), with: string)
    }
}

/// An event that has not been given its sequence number yet.
public struct NewEvent: Sendable, Equatable {
    public var kind: RunEventKind
    public var payloadJSON: String

    public init(kind: RunEventKind, payloadJSON: String) {
        self.kind = kind
        self.payloadJSON = payloadJSON
    }
}

extension RunRecord {
    /// The encoder used for run payloads in events (stable key order, millisecond dates).
    public static var jsonEncoder: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.dateEncodingStrategy = .millisecondsSince1970
        return encoder
    }

    public static var jsonDecoder: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .millisecondsSince1970
        return decoder
    }

    /// This record as event payload JSON: what `jsonEncoder` would write (keys sorted, times
    /// as milliseconds, absent optionals left out), written directly because it is on the hot
    /// path of every claim and finish.
    public func jsonPayload() -> String { jsonPayload(withData: true) }

    /// The payload of a `run_started` / `run_finished` event as a store keeps it: the inputs
    /// and the outputs are the run row's, so the stored payload holds `""` in their place (the
    /// outputs key only when there are outputs) and `RunEvent.restoringData` puts them back on
    /// read. Inputs are stored once, not three times.
    package func storedJSONPayload() -> String { jsonPayload(withData: false) }

    private func jsonPayload(withData: Bool) -> String {
        var json = JSONWriter()
        json.beginObject()
        json.field("attempt", Int64(attempt))
        json.field("createdAt", createdAt)
        json.field("error", error)
        json.field("finishedAt", finishedAt)
        json.field("id", id)
        json.field("idempotencyKey", idempotencyKey)
        json.field("inputsJSON", withData ? inputsJSON : "")
        json.field("lastProgressAt", lastProgressAt)
        json.field("lastSequence", lastSequence)
        json.field("leaseExpiresAt", leaseExpiresAt)
        json.field("leaseOwner", leaseOwner)
        json.field("outputsJSON", withData ? outputsJSON : outputsJSON.map { _ in "" })
        json.field("startedAt", startedAt)
        json.field("state", state.rawValue)
        json.field("stopRequested", stopRequested)
        json.field("tenant", tenant)
        json.field("totalSteps", Int64(totalSteps))
        json.field("totalTokens", totalTokens)
        json.field("traceContext", traceContext?.storedText)
        json.field("transport", transport.rawValue)
        json.field("trigger", trigger.rawValue)
        json.field("user", user)
        json.field("workflow", workflow)
        json.field("workflowVersion", workflowVersion)
        json.endObject()
        return json.text
    }
}

/// Writes compact JSON into a byte buffer: objects of strings, integers, booleans and
/// millisecond times. Fields must be written in the order wanted (sorted, for payloads).
struct JSONWriter {
    private var bytes: [UInt8] = []
    private var needsComma = false

    init() { bytes.reserveCapacity(512) }

    var text: String { String(decoding: bytes, as: UTF8.self) }

    mutating func beginObject() {
        bytes.append(UInt8(ascii: "{"))
        needsComma = false
    }

    mutating func endObject() { bytes.append(UInt8(ascii: "}")) }

    mutating func field(_ name: StaticString, _ value: String?) {
        guard let value else { return }
        key(name)
        string(value)
    }

    mutating func field(_ name: StaticString, _ value: Int64) {
        key(name)
        bytes.append(contentsOf: String(value).utf8)
    }

    mutating func field(_ name: StaticString, _ value: Bool) {
        key(name)
        bytes.append(contentsOf: (value ? "true" : "false").utf8)
    }

    /// A time as whole milliseconds since 1970 (as `.millisecondsSince1970` decodes it).
    mutating func field(_ name: StaticString, _ value: Date?) {
        guard let value else { return }
        key(name)
        let milliseconds = (value.timeIntervalSince1970 * 1000).rounded()
        bytes.append(contentsOf: String(Int64(milliseconds)).utf8)
    }

    private mutating func key(_ name: StaticString) {
        if needsComma { bytes.append(UInt8(ascii: ",")) }
        needsComma = true
        bytes.append(UInt8(ascii: "\""))
        name.withUTF8Buffer { bytes.append(contentsOf: $0) }
        bytes.append(UInt8(ascii: "\""))
        bytes.append(UInt8(ascii: ":"))
    }

    private mutating func string(_ value: String) {
        JSONText.writeString(value, into: &bytes)
    }
}
