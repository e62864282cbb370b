import W3CTraceContext

/// The W3C trace context a run was submitted with (the caller's `traceparent`, and its
/// `tracestate` when it sent one), recorded with the run so that the run's spans and the calls
/// its nodes make continue the caller's trace.
///
/// Only valid values are kept: version `00`, lowercase hex, trace id and span id not all zero
/// (W3C Trace Context level 1). Anything else is ignored, never an error: a submission with a
/// malformed `traceparent` runs as if it had none. A `tracestate` that is malformed or longer
/// than `maxTraceStateBytes` is dropped and the `traceparent` kept, as the W3C rules allow.
public struct RunTraceContext: Sendable, Hashable {
    /// The `traceparent` value, canonical: `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`.
    public var traceParent: String
    /// The `tracestate` value, as the W3C list renders it (`vendor=value, ...`); nil when absent.
    public var traceState: String?

    /// The longest `tracestate` kept, in bytes: the 512 characters W3C asks every vendor to
    /// propagate. A longer one is dropped (the `traceparent` stays).
    public static let maxTraceStateBytes = 512
    /// A `traceparent` of version 00 is exactly this long.
    static let traceParentBytes = 55

    /// The trace context of header values as received: `traceParents` every `traceparent`
    /// value (more than one is invalid), `traceStates` every `tracestate` value (joined with
    /// commas, as HTTP joins repeated headers). Nil when there is no valid `traceparent`.
    public init?(traceParents: [String], traceStates: [String] = []) {
        guard traceParents.count == 1, let value = traceParents.first,
              value.utf8.count == Self.traceParentBytes,
              let parsed = try? TraceContext(traceParentHeaderValue: value) else { return nil }
        traceParent = parsed.traceParentHeaderValue
        let joined = traceStates.joined(separator: ",")
        if joined.isEmpty || joined.utf8.count > Self.maxTraceStateBytes {
            traceState = nil
        } else if let state = try? TraceContext(traceParentHeaderValue: value, traceStateHeaderValue: joined) {
            traceState = state.traceStateHeaderValue
        } else {
            traceState = nil
        }
    }

    /// A single `traceparent` (and `tracestate`) value; nil unless valid.
    public init?(traceParent: String?, traceState: String? = nil) {
        guard let traceParent else { return nil }
        self.init(traceParents: [traceParent], traceStates: traceState.map { [$0] } ?? [])
    }

    /// A new trace: random trace id and parent id, flagged sampled (the callee may record it).
    public static func fresh() -> RunTraceContext {
        let context = TraceContext(traceID: .random(), spanID: .random(), flags: .sampled, state: TraceState())
        return RunTraceContext(validated: context.traceParentHeaderValue, traceState: nil)
    }

    private init(validated traceParent: String, traceState: String?) {
        self.traceParent = traceParent
        self.traceState = traceState
    }

    /// The 32 lowercase hex digits of the trace id.
    public var traceID: String {
        let bytes = Array(traceParent.utf8)
        return String(decoding: bytes[3..<35], as: UTF8.self)
    }

    /// The 2 hex digits of the trace flags.
    public var flags: String {
        let bytes = Array(traceParent.utf8)
        return String(decoding: bytes[53..<55], as: UTF8.self)
    }

    /// The same trace and flags with `spanID` (16 lowercase hex digits) as parent id: the
    /// `traceparent` of a call made from that span.
    public func traceParent(parentID spanID: String) -> String {
        "00-\(traceID)-\(spanID)-\(flags)"
    }

    /// `traceParent(parentID:)` with a random span id (no tracer: each call is its own span).
    public func childTraceParent() -> String {
        traceParent(parentID: SpanID.random().description)
    }

    /// The `traceparent` and, when present, `tracestate` header fields.
    public var headers: [(name: String, value: String)] {
        [("traceparent", traceParent)] + (traceState.map { [("tracestate", $0)] } ?? [])
    }

    // MARK: Storage

    /// How a store keeps it in one text column: the `traceparent`, then a newline and the
    /// `tracestate` when there is one (neither value can contain a newline).
    public var storedText: String {
        traceState.map { "\(traceParent)\n\($0)" } ?? traceParent
    }

    /// A value of `storedText` read back (written by this type, so not checked again).
    public init(storedText: String) {
        let parts = storedText.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false)
        self.init(validated: String(parts[0]), traceState: parts.count > 1 ? String(parts[1]) : nil)
    }
}

/// Encoded as its `storedText` (run payloads in events).
extension RunTraceContext: Codable {
    public init(from decoder: any Decoder) throws {
        self.init(storedText: try decoder.singleValueContainer().decode(String.self))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(storedText)
    }
}
