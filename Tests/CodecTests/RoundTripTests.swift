import Codec
import Testing

@Suite("message conversions")
struct RoundTripTests {
    @Test("empty input decodes to the default value of every message")
    func emptyInput() throws {
        #expect(try FlowdV1.Run(serializedBytes: []) == FlowdV1.Run())
        #expect(try FlowdV1.RunEvent(serializedBytes: []) == FlowdV1.RunEvent())
        #expect(try RPCStatus(serializedBytes: []) == RPCStatus(code: .ok))
        #expect(try FlowdV1.RunWorkflowResponse(serializedBytes: []) == FlowdV1.RunWorkflowResponse())
        #expect(FlowdV1.Run().serializedBytes() == [])
    }

    @Test("a NUL inside a Swift string is sent as U+FFFD instead of cutting the string short")
    func nulOnEncode() throws {
        let bytes = FlowdV1.TextChunk(nodeId: "n", text: "a\u{0}b").serializedBytes()
        #expect(try FlowdV1.TextChunk(serializedBytes: bytes).text == "a\u{FFFD}b")
    }

    @Test("encoding carves strings and sub-messages from 4 KiB slabs: pieces across slab ends, one larger than a slab, NULs, empty strings")
    func arenaSlabs() throws {
        // 40 runs of strings from 0 to 1,600 bytes (several slabs, and pieces over a quarter
        // of one that get blocks of their own), plus one of 10,000 bytes.
        let runs = (0..<40).map { index in
            FlowdV1.Run(id: "run-\(index)", workflow: String(repeating: "w", count: index * 40),
                        inputsJson: index % 7 == 0 ? "" : String(repeating: "é", count: index * 20),
                        outputsJson: String(repeating: "x", count: 10_000 * (index == 39 ? 1 : 0)),
                        error: index == 3 ? "a\u{0}b" : "e\(index)", user: String(repeating: "u", count: 1 + index),
                        createdAt: Timestamp(seconds: Int64(index), nanos: 5))
        }
        let response = FlowdV1.ListRunsResponse(runs: runs, nextPageToken: "next")
        let decoded = try FlowdV1.ListRunsResponse(serializedBytes: response.serializedBytes())
        var expected = response
        expected.runs[3].error = "a\u{FFFD}b"
        #expect(decoded == expected)
    }

    @Test("unknown enum values survive a round trip")
    func openEnums() throws {
        let run = FlowdV1.Run(status: .init(rawValue: 42), triggeredFrom: .init(rawValue: -3), transport: .init(rawValue: 9))
        #expect(try FlowdV1.Run(serializedBytes: run.serializedBytes()) == run)
        let request = FlowdV1.ListRunsRequest(statuses: [.init(rawValue: 100), .scheduled])
        #expect(try FlowdV1.ListRunsRequest(serializedBytes: request.serializedBytes()) == request)
        #expect(FlowdV1.RunStatus.partialSucceeded.description == "RUN_STATUS_PARTIAL_SUCCEEDED")
        #expect(HealthV1.ServingStatus(rawValue: 9).description == "9")
    }

    @Test("map entries are encoded in bytewise key order, a prefix before its extensions")
    func mapOrder() throws {
        let info = ErrorInfo(reason: "R", metadata: ["ab": "2", "b": "3", "a": "1"])
        let entries = Wire.field(3, Wire.field(1, "a") + Wire.field(2, "1"))
            + Wire.field(3, Wire.field(1, "ab") + Wire.field(2, "2"))
            + Wire.field(3, Wire.field(1, "b") + Wire.field(2, "3"))
        #expect(info.serializedBytes() == Wire.field(1, "R") + Wire.field(2, "flowd") + entries)
    }

    @Test("of duplicate map keys on the wire, the last one wins")
    func duplicateMapKeys() throws {
        let bytes = Wire.field(3, Wire.field(1, "k") + Wire.field(2, "first"))
            + Wire.field(3, Wire.field(1, "k") + Wire.field(2, "last"))
        #expect(try ErrorInfo(serializedBytes: bytes).metadata == ["k": "last"])
    }

    @Test("retry delays keep seconds and nanos of one sign, to the nanosecond", arguments: [
        Duration.zero, .milliseconds(1500), .milliseconds(-1500), .nanoseconds(1), .nanoseconds(-1), .seconds(-7),
        .seconds(86_400 * 365) + .nanoseconds(999_999_999),
    ])
    func retryDelay(delay: Duration) throws {
        let bytes = RetryInfo(retryDelay: delay).serializedBytes()
        #expect(try RetryInfo(serializedBytes: bytes).retryDelay == delay)
    }

    @Test("an Any with an unknown type, or a known one under another host, is handled by its type name")
    func anyTypes() throws {
        let status = RPCStatus(code: .invalidArgument, details: [
            .other(typeURL: "example.com/acme.Thing", value: [0x08, 0x01]),
            .other(typeURL: "no-slash", value: []),
        ])
        #expect(try RPCStatus(serializedBytes: status.serializedBytes()) == status)

        let info = ErrorInfo(reason: "RUN_NOT_FOUND")
        let foreignHost = Wire.field(3, Wire.field(1, "example.com/google.rpc.ErrorInfo") + Wire.field(2, info.serializedBytes()))
        #expect(try RPCStatus(serializedBytes: foreignHost).details == [.errorInfo(info)])
    }

    @Test("details of a status count toward its nesting depth")
    func detailDepth() throws {
        let status = RPCStatus(code: .invalidArgument, details: [.retryInfo(RetryInfo(retryDelay: .seconds(1)))])
        let bytes = status.serializedBytes()
        // Status(1) > Any(2) > RetryInfo(3) > Duration(4)
        #expect(try RPCStatus(serializedBytes: bytes, limits: DecodingLimits(maxDepth: 4)) == status)
        let error = #expect(throws: CodecError.self) {
            try RPCStatus(serializedBytes: bytes, limits: DecodingLimits(maxDepth: 3))
        }
        #expect(error?.code == .nestingTooDeep)
        #expect(error?.field == "google.rpc.RetryInfo.retry_delay")
    }

    @Test("timestamps convert to and from milliseconds, also before 1970")
    func timestampMilliseconds() {
        #expect(Timestamp(millisecondsSince1970: 1_500) == Timestamp(seconds: 1, nanos: 500_000_000))
        #expect(Timestamp(millisecondsSince1970: -1_500) == Timestamp(seconds: -2, nanos: 500_000_000))
        #expect(Timestamp(millisecondsSince1970: -1_500).millisecondsSince1970 == -1_500)
        #expect(Timestamp(seconds: 1, nanos: 999_999).millisecondsSince1970 == 1_000)
        #expect(Timestamp(seconds: 1) < Timestamp(seconds: 1, nanos: 1))
    }
}
