import Codec

/// libFuzzer target (tools/fuzz.sh): untrusted request bytes through the Codec's checks and
/// protobuf-c (`init(serializedBytes:limits:)`: wire pre-validation, budgeted unpack,
/// conversion), for every request type the server decodes, and a decoded message re-encoded
/// must decode to the same value.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzProto(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let limits = DecodingLimits()
    if let request = try? FlowdV1.RunWorkflowRequest(serializedBytes: bytes, limits: limits) {
        precondition((try? FlowdV1.RunWorkflowRequest(serializedBytes: request.serializedBytes(), limits: limits)) == request,
                     "RunWorkflowRequest does not round-trip")
    }
    _ = try? FlowdV1.GetRunRequest(serializedBytes: bytes, limits: limits)
    _ = try? FlowdV1.WatchRunRequest(serializedBytes: bytes, limits: limits)
    _ = try? FlowdV1.StopRunRequest(serializedBytes: bytes, limits: limits)
    _ = try? FlowdV1.ListRunsRequest(serializedBytes: bytes, limits: limits)
    _ = try? FlowdV1.RunEvent(serializedBytes: bytes, limits: limits)
    _ = try? HealthV1.CheckRequest(serializedBytes: bytes, limits: limits)
    _ = try? RPCStatus(serializedBytes: bytes)
    return 0
}
