import Engine
import Foundation

/// Where a node stands, as its events say.
public enum NodeStatus: String, Sendable, Codable, CaseIterable {
    case running, succeeded, failed, skipped, stopped
}

/// The payload of `node_started` and `node_finished` events (JSON, snake_case keys; absent
/// values are `null`).
public struct NodeEventPayload: Sendable, Equatable, Codable {
    public var nodeID: String
    public var nodeKind: String
    public var title: String
    /// The order in which the run reached the node (1, 2, ...); retries keep it.
    public var index: Int
    /// 1 for the first try, 2 for the first retry, ...; 0 for a skipped node.
    public var attempt: Int
    public var status: NodeStatus
    /// What the node worked on (rendered URL, body, program input, ...).
    public var inputs: JSONValue?
    public var outputs: JSONValue?
    public var error: String?
    public var elapsedMS: Int64?
    /// The value was longer than the configured limit: it is the start of its JSON text.
    public var inputsTruncated: Bool
    public var outputsTruncated: Bool
    /// On a failed attempt: another attempt follows.
    public var willRetry: Bool

    public init(nodeID: String, nodeKind: String, title: String, index: Int, attempt: Int, status: NodeStatus,
                inputs: JSONValue? = nil, outputs: JSONValue? = nil, error: String? = nil, elapsedMS: Int64? = nil,
                inputsTruncated: Bool = false, outputsTruncated: Bool = false, willRetry: Bool = false) {
        self.nodeID = nodeID
        self.nodeKind = nodeKind
        self.title = title
        self.index = index
        self.attempt = attempt
        self.status = status
        self.inputs = inputs
        self.outputs = outputs
        self.error = error
        self.elapsedMS = elapsedMS
        self.inputsTruncated = inputsTruncated
        self.outputsTruncated = outputsTruncated
        self.willRetry = willRetry
    }

    enum CodingKeys: String, CodingKey {
        case nodeID = "node_id", nodeKind = "node_kind", title, index, attempt, status, inputs, outputs, error
        case elapsedMS = "elapsed_ms", inputsTruncated = "inputs_truncated", outputsTruncated = "outputs_truncated"
        case willRetry = "will_retry"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        nodeID = try container.decode(String.self, forKey: .nodeID)
        nodeKind = try container.decode(String.self, forKey: .nodeKind)
        title = try container.decode(String.self, forKey: .title)
        index = try container.decode(Int.self, forKey: .index)
        attempt = try container.decode(Int.self, forKey: .attempt)
        status = try container.decode(NodeStatus.self, forKey: .status)
        inputs = try container.decodeIfPresent(JSONValue.self, forKey: .inputs).flatMap { $0 == .null ? nil : $0 }
        outputs = try container.decodeIfPresent(JSONValue.self, forKey: .outputs).flatMap { $0 == .null ? nil : $0 }
        error = try container.decodeIfPresent(String.self, forKey: .error)
        elapsedMS = try container.decodeIfPresent(Int64.self, forKey: .elapsedMS)
        inputsTruncated = try container.decodeIfPresent(Bool.self, forKey: .inputsTruncated) ?? false
        outputsTruncated = try container.decodeIfPresent(Bool.self, forKey: .outputsTruncated) ?? false
        willRetry = try container.decodeIfPresent(Bool.self, forKey: .willRetry) ?? false
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(nodeID, forKey: .nodeID)
        try container.encode(nodeKind, forKey: .nodeKind)
        try container.encode(title, forKey: .title)
        try container.encode(index, forKey: .index)
        try container.encode(attempt, forKey: .attempt)
        try container.encode(status, forKey: .status)
        try container.encode(inputs ?? .null, forKey: .inputs)
        try container.encode(outputs ?? .null, forKey: .outputs)
        try container.encode(error, forKey: .error)
        try container.encode(elapsedMS, forKey: .elapsedMS)
        try container.encode(inputsTruncated, forKey: .inputsTruncated)
        try container.encode(outputsTruncated, forKey: .outputsTruncated)
        try container.encode(willRetry, forKey: .willRetry)
    }

    /// Decodes an event's `payloadJSON`.
    public init(json: String) throws {
        self = try JSONDecoder().decode(Self.self, from: Data(json.utf8))
    }

    /// JSON text with sorted keys (what `encode(to:)` writes, without JSONEncoder's cost:
    /// every node event of every run goes through here). Written field by field, in the keys'
    /// sorted order, without building a dictionary to sort.
    public var jsonText: String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(256)
        func key(_ name: StaticString) {
            bytes.append(bytes.isEmpty ? UInt8(ascii: "{") : UInt8(ascii: ","))
            bytes.append(UInt8(ascii: "\""))
            name.withUTF8Buffer { bytes.append(contentsOf: $0) }
            bytes.append(UInt8(ascii: "\""))
            bytes.append(UInt8(ascii: ":"))
        }
        func value(_ value: JSONValue) { JSONText.write(value, into: &bytes) }
        key("attempt"); value(.integer(Int64(attempt)))
        key("elapsed_ms"); value(elapsedMS.map(JSONValue.integer) ?? .null)
        key("error"); value(error.map(JSONValue.string) ?? .null)
        key("index"); value(.integer(Int64(index)))
        key("inputs"); value(inputs ?? .null)
        key("inputs_truncated"); value(.bool(inputsTruncated))
        key("node_id"); value(.string(nodeID))
        key("node_kind"); value(.string(nodeKind))
        key("outputs"); value(outputs ?? .null)
        key("outputs_truncated"); value(.bool(outputsTruncated))
        key("status"); value(.string(status.rawValue))
        key("title"); value(.string(title))
        key("will_retry"); value(.bool(willRetry))
        bytes.append(UInt8(ascii: "}"))
        return String(decoding: bytes, as: UTF8.self)
    }

    /// `value`, or the start of its JSON text when that is longer than `limit` bytes.
    static func bounded(_ value: JSONValue?, limit: Int) -> (JSONValue?, truncated: Bool) {
        guard let value else { return (nil, false) }
        // Measured without writing: most values fit, and are written once, into the event.
        guard JSONText.length(of: value, stoppingPast: limit) > limit else { return (value, false) }
        let text = value.jsonText
        // Cut before a character that would be split.
        var bytes = Array(text.utf8.prefix(limit))
        while let last = bytes.last, last & 0xC0 == 0x80 { bytes.removeLast() }
        if let last = bytes.last, last >= 0xC0 { bytes.removeLast() }
        return (.string(String(decoding: bytes, as: UTF8.self)), true)
    }
}
