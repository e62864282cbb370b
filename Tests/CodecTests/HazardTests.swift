import Codec
import Testing

/// The error that decoding `bytes` as `M` throws, or nil when it decodes.
private func decodingError<M: ProtoMessage>(
    _ type: M.Type, _ bytes: [UInt8], limits: DecodingLimits = DecodingLimits()
) -> CodecError? {
    do {
        _ = try M(serializedBytes: bytes, limits: limits)
        return nil
    } catch {
        return error
    }
}

/// RunEvent{run_finished{run{created_at{<innermost>}}}}: four levels of real message types.
private func runFinishedEvent(createdAt innermost: [UInt8] = []) -> [UInt8] {
    Wire.field(14, Wire.field(1, Wire.field(11, innermost)))
}

@Suite("protobuf-c hazards on hostile input")
struct HazardTests {
    @Test("invalid UTF-8 in RunWorkflowRequest.user is rejected with the field's path")
    func invalidUTF8() throws {
        let bytes = Wire.field(1, "greeting") + Wire.field(4, [0x75, 0xC3, 0x28])
        let error = try #require(decodingError(FlowdV1.RunWorkflowRequest.self, bytes))
        #expect(error.code == .invalidUTF8)
        #expect(error.field == "flowd.v1.RunWorkflowRequest.user")
    }

    @Test("every kind of ill-formed UTF-8 is rejected", arguments: [
        [0x80],                    // lone continuation byte
        [0xC0, 0xAF],              // overlong "/"
        [0xE0, 0x80, 0xAF],        // overlong, 3 bytes
        [0xED, 0xA0, 0x80],        // UTF-16 surrogate
        [0xF4, 0x90, 0x80, 0x80],  // above U+10FFFF
        [0xF5, 0x80, 0x80, 0x80],  // invalid lead byte
        [0xE2, 0x82],              // truncated sequence
        [0xE2, 0x28, 0xA1],        // bad continuation byte
        [0xFF],
    ] as [[UInt8]])
    func illFormedUTF8(text: [UInt8]) throws {
        let error = try #require(decodingError(FlowdV1.GetRunRequest.self, Wire.field(1, text)))
        #expect(error.code == .invalidUTF8)
        #expect(error.field == "flowd.v1.GetRunRequest.run_id")
    }

    @Test("well-formed UTF-8 up to four bytes decodes unchanged")
    func wellFormedUTF8() throws {
        let text = "a\u{7F}é☺\u{FFFD}😈\u{10FFFF}"
        let request = try FlowdV1.GetRunRequest(serializedBytes: Wire.field(1, text))
        #expect(request.runId == text)
    }

    @Test("a NUL byte in RunWorkflowRequest.workflow is rejected instead of truncating the string")
    func embeddedNUL() throws {
        let bytes = Wire.field(1, [0x61, 0x64, 0x00, 0x6D, 0x6E])
        let error = try #require(decodingError(FlowdV1.RunWorkflowRequest.self, bytes))
        #expect(error.code == .embeddedNUL)
        #expect(error.field == "flowd.v1.RunWorkflowRequest.workflow")
    }

    @Test("string hazards inside sub-messages, map entries and Any are named by their full path")
    func nestedPaths() throws {
        let inRun = runFinishedEvent(createdAt: []) + Wire.field(14, Wire.field(1, Wire.field(10, [0xC3])))
        var error = try #require(decodingError(FlowdV1.RunEvent.self, inRun))
        #expect(error.code == .invalidUTF8)
        #expect(error.field == "flowd.v1.RunEvent.run_finished.run.user")

        let badTypeURL = Wire.field(1, varint: 3) + Wire.field(3, Wire.field(1, [0x74, 0x00]))
        error = try #require(decodingError(RPCStatus.self, badTypeURL))
        #expect(error.code == .embeddedNUL)
        #expect(error.field == "google.rpc.Status.details.type_url")

        let badMapValue = Wire.field(3, Wire.field(1, "tenant") + Wire.field(2, [0xE2, 0x82]))
        error = try #require(decodingError(ErrorInfo.self, badMapValue))
        #expect(error.code == .invalidUTF8)
        #expect(error.field == "google.rpc.ErrorInfo.metadata.value")

        let detail = Wire.field(1, "type.googleapis.com/google.rpc.ErrorInfo") + Wire.field(2, Wire.field(1, [0x00]))
        error = try #require(decodingError(RPCStatus.self, Wire.field(3, detail)))
        #expect(error.code == .embeddedNUL)
        #expect(error.field == "google.rpc.ErrorInfo.reason")
        #expect(error.message.hasPrefix("google.rpc.Status.details[0]"))
    }

    @Test("nesting deeper than maxDepth is rejected at the first field too deep")
    func nestingTooDeep() throws {
        let bytes = runFinishedEvent()  // RunEvent(1) > RunFinished(2) > Run(3) > Timestamp(4)
        var error = try #require(decodingError(FlowdV1.RunEvent.self, bytes, limits: DecodingLimits(maxDepth: 2)))
        #expect(error.code == .nestingTooDeep)
        #expect(error.field == "flowd.v1.RunEvent.run_finished.run")

        error = try #require(decodingError(FlowdV1.RunEvent.self, bytes, limits: DecodingLimits(maxDepth: 3)))
        #expect(error.code == .nestingTooDeep)
        #expect(error.field == "flowd.v1.RunEvent.run_finished.run.created_at")

        let event = try FlowdV1.RunEvent(serializedBytes: bytes, limits: DecodingLimits(maxDepth: 4))
        #expect(event.event == .runFinished(FlowdV1.RunFinished(run: FlowdV1.Run(createdAt: Timestamp(seconds: 0)))))
    }

    @Test("a 10,000-deep blob below real message fields is rejected or skipped without recursion")
    func tenThousandDeep() throws {
        // Deep nesting through Timestamp.seconds, a known int64 field: wrong wire type.
        let throughKnownField = runFinishedEvent(createdAt: Wire.nested(1, depth: 10_000))
        var error = try #require(decodingError(FlowdV1.RunEvent.self, throughKnownField))
        #expect(error.code == .malformed)
        #expect(error.field == "flowd.v1.RunEvent.run_finished.run.created_at.seconds")

        // The same depth under a small limit stops at the limit, not at the bottom.
        error = try #require(decodingError(FlowdV1.RunEvent.self, throughKnownField, limits: DecodingLimits(maxDepth: 2)))
        #expect(error.code == .nestingTooDeep)

        // Through an unknown field the blob is opaque bytes to both the check and protobuf-c.
        let throughUnknownField = runFinishedEvent(createdAt: Wire.nested(99, depth: 10_000))
        #expect(throughUnknownField.count > 40_000)
        let event = try FlowdV1.RunEvent(serializedBytes: throughUnknownField)
        #expect(event.event == .runFinished(FlowdV1.RunFinished(run: FlowdV1.Run(createdAt: Timestamp(seconds: 0)))))
    }

    @Test("1 MiB of empty ListRunsResponse.runs entries exceeds the allocation budget")
    func allocationAmplification() throws {
        let hostile = Array([[UInt8]](repeating: [0x0A, 0x00], count: 1 << 19).joined())
        #expect(hostile.count == 1 << 20)
        let error = try #require(decodingError(FlowdV1.ListRunsResponse.self, hostile))
        #expect(error.code == .allocationBudgetExceeded)
        #expect(error.field == "flowd.v1.ListRunsResponse")
    }

    @Test("the same shape at a small size decodes")
    func smallRepeatedEntries() throws {
        let bytes = Array([[UInt8]](repeating: [0x0A, 0x00], count: 10).joined())
        let response = try FlowdV1.ListRunsResponse(serializedBytes: bytes)
        #expect(response.runs == Array(repeating: FlowdV1.Run(), count: 10))
    }

    @Test("a full page of realistic runs stays within the default budget")
    func realisticPage() throws {
        let run = FlowdV1.Run(
            id: "0b7c2a6e-3f4d-4d1e-9c51-6a0e2f1b8d47", workflow: "support-triage", workflowVersion: "v12",
            status: .succeeded, inputsJson: #"{"ticket":"T-1"}"#, outputsJson: #"{"label":"billing"}"#,
            triggeredFrom: .apiAsync, transport: .grpc, user: "u-1",
            createdAt: Timestamp(seconds: 1_700_000_000), startedAt: Timestamp(seconds: 1_700_000_001),
            finishedAt: Timestamp(seconds: 1_700_000_002), elapsedMs: 900, totalSteps: 3, attempt: 1, lastSequence: 8)
        let page = FlowdV1.ListRunsResponse(runs: Array(repeating: run, count: 100), nextPageToken: "next")
        #expect(try FlowdV1.ListRunsResponse(serializedBytes: page.serializedBytes()) == page)
    }

    @Test("a budget that is too small is reported as such, not as malformed input")
    func budgetNotMalformed() throws {
        let bytes = FlowdV1.RunWorkflowRequest(workflow: "w", inputsJson: String(repeating: "x", count: 1000)).serializedBytes()
        let tight = DecodingLimits(allocationBudgetBase: 64, allocationBudgetPerInputByte: 0)
        let error = try #require(decodingError(FlowdV1.RunWorkflowRequest.self, bytes, limits: tight))
        #expect(error.code == .allocationBudgetExceeded)
    }

    @Test("truncated input is malformed", arguments: [
        [0x0A, 0x05, 0x61, 0x62],  // length 5, two bytes present
        [0x08],                    // key without its value
        [0x10, 0x80],              // unterminated varint
        [0x0A],                    // key without its length
        [0x0A, 0x80],              // unterminated length
    ] as [[UInt8]])
    func truncated(bytes: [UInt8]) throws {
        let error = try #require(decodingError(FlowdV1.WatchRunRequest.self, bytes))
        #expect(error.code == .malformed)
    }

    @Test("every cut of a valid message either decodes or is malformed, never anything else")
    func everyTruncation() throws {
        let full = FlowdV1.RunEvent(runId: "r", sequence: 3, time: Timestamp(seconds: 5, nanos: 6),
                                    event: .textChunk(FlowdV1.TextChunk(nodeId: "n", text: "☺"))).serializedBytes()
        for cut in 0..<full.count {
            if let error = decodingError(FlowdV1.RunEvent.self, Array(full[..<cut])) {
                #expect(error.code == .malformed, "cut at \(cut)")
            }
        }
    }

    @Test("group and undefined wire types are malformed, also in unknown fields", arguments: [
        Wire.key(1, 3), Wire.key(1, 4), Wire.key(99, 3) + Wire.key(99, 4), Wire.key(2, 6), Wire.key(2, 7),
    ])
    func groups(bytes: [UInt8]) throws {
        let error = try #require(decodingError(FlowdV1.GetRunRequest.self, bytes))
        #expect(error.code == .malformed)
    }

    @Test("other framing faults are malformed")
    func otherFaults() throws {
        var error = try #require(decodingError(FlowdV1.GetRunRequest.self, Wire.field(0, "x")))
        #expect(error.code == .malformed)  // field number 0

        error = try #require(decodingError(FlowdV1.WatchRunRequest.self, [0x10] + [UInt8](repeating: 0xFF, count: 10) + [0x01]))
        #expect(error.code == .malformed)  // 11-byte varint

        error = try #require(decodingError(FlowdV1.WatchRunRequest.self, Wire.field(2, [0x01])))
        #expect(error.code == .malformed)  // after_sequence sent length-delimited
        #expect(error.field == "flowd.v1.WatchRunRequest.after_sequence")

        error = try #require(decodingError(FlowdV1.RunWorkflowResponse.self, Wire.field(1, varint: 1)))
        #expect(error.code == .malformed)  // a message field sent as a varint
        #expect(error.field == "flowd.v1.RunWorkflowResponse.run")

        // A broken packed array passes the check (packed contents are protobuf-c's job) and
        // protobuf-c's refusal is reported as malformed.
        error = try #require(decodingError(FlowdV1.ListRunsRequest.self, Wire.field(3, [0x01, 0x80])))
        #expect(error.code == .malformed)
    }

    @Test("unknown fields are skipped without looking inside them")
    func unknownFields() throws {
        let bytes = Wire.field(99, varint: 7) + Wire.field(1, "run-1") + Wire.field(100, [0x00, 0xC3, 0x28])
            + Wire.key(101, 1) + [UInt8](repeating: 1, count: 8) + Wire.key(102, 5) + [1, 2, 3, 4]
        #expect(try FlowdV1.GetRunRequest(serializedBytes: bytes) == FlowdV1.GetRunRequest(runId: "run-1"))
    }
}
