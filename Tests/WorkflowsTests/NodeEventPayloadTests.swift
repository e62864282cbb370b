import Engine
import Foundation
import Testing
@testable import Workflows

@Suite("Node event payloads: the hand-written JSON writer")
struct NodeEventPayloadTests {
    @Test("a node event's hand-written JSON is what JSONEncoder writes with sorted keys, nulls and escapes included")
    func nodeEventPayloadAgreesWithEncoder() throws {
        let payloads = [
            NodeEventPayload(nodeID: "greet", nodeKind: "template", title: "Say \"hi\"\n", index: 1, attempt: 1,
                             status: .succeeded, inputs: .object(["template": .string("Hello, {{inputs.name}}!")]),
                             outputs: .object(["text": .string("Hello, Ada!"), "n": .integer(3), "x": .array([.null, .bool(true)])]),
                             elapsedMS: 12),
            NodeEventPayload(nodeID: "call", nodeKind: "http", title: "", index: 2, attempt: 0, status: .failed,
                             error: "refused: \u{1} ünï", inputsTruncated: true, outputsTruncated: true, willRetry: true),
        ]
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        for payload in payloads {
            #expect(payload.jsonText == String(decoding: try encoder.encode(payload), as: UTF8.self))
            #expect(try NodeEventPayload(json: payload.jsonText) == payload)
        }
    }
}
