import Codec

/// libFuzzer target (tools/fuzz.sh): the gRPC message deframer fed in two pieces split at a
/// byte chosen by the input, and grpc-message percent-decoding and encoding. Invariants: the
/// two ways of feeding the bytes yield the same messages; no message exceeds the limit;
/// `wholeMessage` agrees with the deframer (its message when the bytes are one whole message,
/// its failure when they fail); decoding then encoding then decoding is stable.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzFraming(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    guard let first = bytes.first else { return 0 }
    let input = Array(bytes.dropFirst())
    let limit = 1 << 16

    func deframe(splitAt split: Int) -> ([[UInt8]], Bool) {
        var deframer = GRPCMessageDeframer(maxMessageSize: limit)
        var messages: [[UInt8]] = []
        var failed = false
        for part in [input[..<split], input[split...]] {
            do {
                try Array(part).withUnsafeBytes { try deframer.append($0) }
            } catch {
                failed = true
            }
            while let message = deframer.next() { messages.append(message) }
        }
        return (messages, failed)
    }
    let split = input.isEmpty ? 0 : Int(first) % (input.count + 1)
    let (whole, wholeFailed) = deframe(splitAt: input.count)
    let (pieces, piecesFailed) = deframe(splitAt: split)
    precondition(whole == pieces && wholeFailed == piecesFailed, "deframing depends on how the bytes were split")
    precondition(whole.allSatisfy { $0.count <= limit }, "a message over the limit was delivered")
    do {
        if let message = try input.withUnsafeBytes({ try GRPCMessageDeframer.wholeMessage($0, maxMessageSize: limit) }) {
            precondition(!wholeFailed && whole == [message], "wholeMessage disagrees with the deframer")
        }
    } catch {
        precondition(wholeFailed, "wholeMessage failed where the deframer did not")
    }

    let decoded = GRPCStatusMessage.percentDecode(input)
    let again = GRPCStatusMessage.percentDecode(Array(GRPCStatusMessage.percentEncode(decoded).utf8))
    precondition(again == decoded, "percent-encoding does not round-trip")
    return 0
}
