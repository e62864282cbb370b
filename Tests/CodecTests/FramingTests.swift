import Codec
import Testing

extension GRPCMessageDeframer {
    /// Feeds `bytes` and returns the messages completed so far.
    fileprivate mutating func feed(_ bytes: some Collection<UInt8>) throws -> [[UInt8]] {
        try Array(bytes).withUnsafeBytes { try append($0) }
        var messages: [[UInt8]] = []
        while let message = next() { messages.append(message) }
        return messages
    }
}

@Suite("gRPC length-prefixed framing")
struct FramingTests {
    static let messages: [[UInt8]] = [Array("first".utf8), [], Array(repeating: 0xAB, count: 300), [0x00]]
    static let stream: [UInt8] = messages.reduce(into: []) { GRPCFraming.appendFrame($1, to: &$0) }

    @Test("a frame is the flag byte, the big-endian length, then the message")
    func frameLayout() {
        #expect(GRPCFraming.frame([0x0A, 0x01, 0x61]) == [0x00, 0x00, 0x00, 0x00, 0x03, 0x0A, 0x01, 0x61])
        #expect(GRPCFraming.frame([]) == [0, 0, 0, 0, 0])
    }

    @Test("splitting the stream at any byte boundary yields the same messages")
    func everySplit() throws {
        for split in 0...Self.stream.count {
            var deframer = GRPCMessageDeframer(maxMessageSize: 1024)
            let messages = try deframer.feed(Self.stream[..<split]) + deframer.feed(Self.stream[split...])
            #expect(messages == Self.messages, "split at \(split)")
            #expect(!deframer.hasPartialMessage)
        }
    }

    @Test("feeding one byte at a time yields the same messages")
    func byteByByte() throws {
        var deframer = GRPCMessageDeframer(maxMessageSize: 1024)
        var messages: [[UInt8]] = []
        for byte in Self.stream {
            messages += try deframer.feed([byte])
        }
        #expect(messages == Self.messages)
    }

    @Test("several messages in one chunk are all delivered, in order")
    func severalInOneChunk() throws {
        var deframer = GRPCMessageDeframer(maxMessageSize: 1024)
        try Self.stream.withUnsafeBytes { try deframer.append($0) }
        #expect(deframer.completeMessageCount == Self.messages.count)
        #expect(try deframer.feed([]) == Self.messages)
    }

    @Test("messages taken while others arrive come out in arrival order")
    func takenWhileArriving() throws {
        var deframer = GRPCMessageDeframer(maxMessageSize: 1024)
        let frames = Self.messages.map { GRPCFraming.frame($0) }
        try (frames[0] + frames[1]).withUnsafeBytes { try deframer.append($0) }
        #expect(deframer.next() == Self.messages[0])
        try (frames[2] + frames[3].prefix(2)).withUnsafeBytes { try deframer.append($0) }
        #expect(deframer.completeMessageCount == 2)
        #expect(deframer.next() == Self.messages[1])
        #expect(try deframer.feed(frames[3].dropFirst(2)) == [Self.messages[2], Self.messages[3]])
        #expect(deframer.next() == nil && deframer.completeMessageCount == 0)
    }

    @Test("a zero-length message is delivered as soon as its prefix is complete")
    func zeroLength() throws {
        var deframer = GRPCMessageDeframer(maxMessageSize: 0)
        #expect(try deframer.feed([0, 0, 0]) == [])
        #expect(deframer.hasPartialMessage)
        #expect(try deframer.feed([0, 0]) == [[]])
        #expect(!deframer.hasPartialMessage)
    }

    @Test("an oversize length prefix is rejected before any of the body arrives")
    func oversizePrefix() throws {
        var deframer = GRPCMessageDeframer(maxMessageSize: 16)
        let error = #expect(throws: CodecError.self) { try deframer.feed([0x00, 0x00, 0x00, 0x00, 0x11]) }
        #expect(error?.code == .messageTooLarge)
        // Failed for good: later bytes, even a valid frame, are ignored.
        #expect(try deframer.feed(GRPCFraming.frame([1, 2, 3])) == [])

        var exact = GRPCMessageDeframer(maxMessageSize: 16)
        #expect(try exact.feed(GRPCFraming.frame(Array(repeating: 7, count: 16))) == [Array(repeating: 7, count: 16)])

        var huge = GRPCMessageDeframer(maxMessageSize: 4 << 20)
        let hugeError = #expect(throws: CodecError.self) { try huge.feed([0x00, 0xFF, 0xFF, 0xFF, 0xFF]) }
        #expect(hugeError?.code == .messageTooLarge)
    }

    @Test("a message with the compressed flag set is rejected")
    func compressedFlag() throws {
        var deframer = GRPCMessageDeframer(maxMessageSize: 1024)
        let error = #expect(throws: CodecError.self) { try deframer.feed([0x01, 0x00, 0x00, 0x00, 0x01, 0x61]) }
        #expect(error?.code == .compressedMessage)
    }

    @Test("a flag byte other than 0 or 1 is malformed")
    func badFlag() throws {
        var deframer = GRPCMessageDeframer(maxMessageSize: 1024)
        let error = #expect(throws: CodecError.self) { try deframer.feed([0x02, 0x00, 0x00, 0x00, 0x00]) }
        #expect(error?.code == .malformed)
    }

    @Test("wholeMessage takes exactly one whole framed message, checked as a deframer checks it, and nothing else")
    func wholeMessage() throws {
        func whole(_ bytes: [UInt8], max: Int = 1024) throws -> [UInt8]? {
            try bytes.withUnsafeBytes { try GRPCMessageDeframer.wholeMessage($0, maxMessageSize: max) }
        }
        #expect(try whole(GRPCFraming.frame([1, 2, 3])) == [1, 2, 3])
        #expect(try whole(GRPCFraming.frame([])) == [])
        #expect(try whole(Array(GRPCFraming.frame([1, 2, 3]).dropLast())) == nil)  // split: for a deframer
        #expect(try whole(GRPCFraming.frame([1]) + GRPCFraming.frame([2])) == nil)  // two messages
        #expect(try whole([0, 0, 0]) == nil)
        let compressed = #expect(throws: CodecError.self) { try whole([0x01, 0x00, 0x00, 0x00, 0x01, 0x61]) }
        #expect(compressed?.code == .compressedMessage)
        let flag = #expect(throws: CodecError.self) { try whole([0x02, 0x00, 0x00, 0x00, 0x00]) }
        #expect(flag?.code == .malformed)
        let large = #expect(throws: CodecError.self) { try whole(GRPCFraming.frame([UInt8](repeating: 7, count: 11)), max: 10) }
        #expect(large?.code == .messageTooLarge)
    }
}

@Suite("grpc-message percent-encoding")
struct StatusMessageTests {
    @Test("whitespace, BMP and non-BMP characters survive a round trip, encoded as grpc-go does")
    func roundTrip() {
        let message = "\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n"
        let encoded = GRPCStatusMessage.percentEncode(message)
        #expect(encoded == "%09%0Atest with whitespace%0D%0Aand Unicode BMP %E2%98%BA and non-BMP %F0%9F%98%88%09%0A")
        #expect(GRPCStatusMessage.percentDecode(Array(encoded.utf8)) == message)
    }

    @Test("printable ASCII passes through, and % itself is escaped")
    func plain() {
        #expect(GRPCStatusMessage.percentEncode("run not found") == "run not found")
        #expect(GRPCStatusMessage.percentEncode("100%") == "100%25")
        #expect(GRPCStatusMessage.percentDecode(Array("100%25".utf8)) == "100%")
    }

    @Test("bad escapes decode without failing and are kept as they are", arguments: [
        ("%", "%"), ("%G1", "%G1"), ("%4", "%4"), ("a%4g", "a%4g"), ("%%41", "%A"), ("%e2%98%ba", "☺"),
    ])
    func badEscapes(encoded: String, decoded: String) {
        #expect(GRPCStatusMessage.percentDecode(Array(encoded.utf8)) == decoded)
    }

    @Test("escapes that decode to invalid UTF-8 are repaired, not rejected")
    func invalidUTF8() {
        #expect(GRPCStatusMessage.percentDecode(Array("a%FFb".utf8)) == "a\u{FFFD}b")
    }
}
