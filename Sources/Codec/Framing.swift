/// gRPC's length-prefixed message framing:
/// `compressed-flag (1 byte) | length (4 bytes, big-endian) | message`.
public enum GRPCFraming {
    /// Size of the prefix in front of every message.
    public static let prefixLength = 5

    /// Appends `message` with its prefix (uncompressed) to `buffer`.
    public static func appendFrame(_ message: [UInt8], to buffer: inout [UInt8]) {
        buffer.reserveCapacity(buffer.count + prefixLength + message.count)
        withPrefix(forLength: message.count) { buffer.append(contentsOf: $0) }
        buffer.append(contentsOf: message)
    }

    /// Runs `body` with the prefix (uncompressed) of a message of `count` bytes, for callers
    /// that write the message into a buffer of their own. (Inlinable: the server calls it for
    /// every response message, and unspecialised it cost 140 instructions.)
    @inlinable
    public static func withPrefix<R>(forLength count: Int, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        precondition(count <= Int(UInt32.max), "gRPC message longer than 4 GiB")
        let length = UInt32(count)
        var prefix = (UInt8(0), UInt8(truncatingIfNeeded: length >> 24), UInt8(truncatingIfNeeded: length >> 16),
                      UInt8(truncatingIfNeeded: length >> 8), UInt8(truncatingIfNeeded: length))
        return try withUnsafeBytes(of: &prefix) { try body($0) }
    }

    /// `message` with its prefix.
    public static func frame(_ message: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        appendFrame(message, to: &out)
        return out
    }
}

/// Reassembles gRPC messages from arbitrarily split bytes (DATA frame boundaries have no
/// relation to message boundaries).
///
/// The length prefix is checked as soon as it is complete, before any of the body is
/// buffered, so a lying prefix costs nothing: at most `maxMessageSize + 5` bytes are ever held.
/// After an error the deframer stays failed and ignores further input.
public struct GRPCMessageDeframer: Sendable {
    /// Largest message accepted, in bytes.
    public let maxMessageSize: Int

    private var pending: [UInt8] = []      // bytes of the message being assembled (prefix included)
    private var expectedBodyLength: Int?   // known once the prefix is complete
    /// The oldest complete message, inline: a unary request is one message, and a queue of one
    /// was an allocation per call.
    private var first: [UInt8]?
    private var complete: [[UInt8]] = []   // complete messages after `first`
    private var completeHead = 0
    private var failed = false

    public init(maxMessageSize: Int) {
        precondition(maxMessageSize >= 0)
        self.maxMessageSize = maxMessageSize
    }

    /// True when some bytes of an unfinished message are buffered.
    public var hasPartialMessage: Bool { !pending.isEmpty }

    /// Number of complete messages waiting in `next()`.
    public var completeMessageCount: Int { (first == nil ? 0 : 1) + complete.count - completeHead }

    /// Feeds bytes; completed messages become available through `next()`.
    public mutating func append(_ bytes: UnsafeRawBufferPointer) throws(CodecError) {
        guard !failed else { return }
        var rest = bytes[...]
        while !rest.isEmpty {
            if pending.isEmpty, expectedBodyLength == nil {
                // A whole message at hand is read in place and copied once into its message
                // (no assembly buffer).
                let leading: (message: [UInt8], size: Int)?
                do {
                    leading = try Self.leadingMessage(rest, maxMessageSize: maxMessageSize)
                } catch {
                    failed = true
                    throw error
                }
                if let leading {
                    enqueue(leading.message)
                    rest = rest.dropFirst(leading.size)
                    continue
                }
            }
            if let bodyLength = expectedBodyLength {
                let need = GRPCFraming.prefixLength + bodyLength - pending.count
                let take = min(need, rest.count)
                pending.append(contentsOf: rest.prefix(take))
                rest = rest.dropFirst(take)
                if pending.count == GRPCFraming.prefixLength + bodyLength {
                    // The buffer itself becomes the message (moved, not copied): a large
                    // message never exists twice, and the deframer keeps no large buffer.
                    var message = pending
                    pending = []
                    message.removeFirst(GRPCFraming.prefixLength)
                    enqueue(message)
                    expectedBodyLength = nil
                }
            } else {
                let take = min(GRPCFraming.prefixLength - pending.count, rest.count)
                pending.append(contentsOf: rest.prefix(take))
                rest = rest.dropFirst(take)
                if pending.count == GRPCFraming.prefixLength {
                    try readPrefix()
                }
            }
        }
    }

    private mutating func enqueue(_ message: [UInt8]) {
        if first == nil && completeHead == complete.count {
            first = message
        } else {
            complete.append(message)
        }
    }

    private mutating func readPrefix() throws(CodecError) {
        let length = Self.declaredLength(pending)
        try checkPrefix(flag: pending[0], length: length)
        if length == 0 {
            enqueue([])
            pending.removeAll(keepingCapacity: true)
        } else {
            expectedBodyLength = length
            // Capacity grows with the bytes that arrive, not with what the prefix claims.
            pending.reserveCapacity(GRPCFraming.prefixLength + min(length, 1 << 16))
        }
    }

    /// The message length a prefix declares (its bytes 1-4, big-endian).
    private static func declaredLength<Bytes: Collection<UInt8>>(_ prefix: Bytes) -> Int where Bytes.Index == Int {
        let start = prefix.startIndex
        return Int(prefix[start + 1]) << 24 | Int(prefix[start + 2]) << 16 | Int(prefix[start + 3]) << 8 | Int(prefix[start + 4])
    }

    /// Rejects a compressed or oversized message (the deframer then fails for good).
    private mutating func checkPrefix(flag: UInt8, length: Int) throws(CodecError) {
        if let error = Self.prefixError(flag: flag, length: length, maxMessageSize: maxMessageSize) {
            failed = true
            throw error
        }
    }

    private static func prefixError(flag: UInt8, length: Int, maxMessageSize: Int) -> CodecError? {
        if flag == 1 {
            return CodecError(code: .compressedMessage,
                              message: "compressed message received but no grpc-encoding was negotiated")
        }
        if flag != 0 {
            return CodecError(code: .malformed, message: "invalid compressed-flag byte \(flag) in message prefix")
        }
        if length > maxMessageSize {
            return CodecError(code: .messageTooLarge,
                              message: "message of \(length) bytes exceeds the limit of \(maxMessageSize) bytes")
        }
        return nil
    }

    /// The message when `bytes` are exactly one whole framed message (what a unary request's
    /// one DATA frame nearly always holds); nil when they are anything else (feed them to a
    /// deframer then). Throws where `append` would: a whole first message with a refused prefix.
    /// No deframer is made for the common case.
    public static func wholeMessage(_ bytes: UnsafeRawBufferPointer, maxMessageSize: Int) throws(CodecError) -> [UInt8]? {
        guard let leading = try leadingMessage(bytes[...], maxMessageSize: maxMessageSize),
              leading.size == bytes.count else { return nil }
        return leading.message
    }

    /// The message framed at the start of `bytes` when it is there whole, and how many bytes it
    /// took (prefix included); nil when `bytes` end inside it. Throws what its prefix is refused
    /// for (`append` checks a prefix it cannot complete yet once it can).
    private static func leadingMessage(_ bytes: Slice<UnsafeRawBufferPointer>,
                                       maxMessageSize: Int) throws(CodecError) -> (message: [UInt8], size: Int)? {
        guard bytes.count >= GRPCFraming.prefixLength else { return nil }
        let length = declaredLength(bytes)
        guard bytes.count - GRPCFraming.prefixLength >= length else { return nil }
        if let error = prefixError(flag: bytes[bytes.startIndex], length: length, maxMessageSize: maxMessageSize) {
            throw error
        }
        let body = bytes.startIndex + GRPCFraming.prefixLength
        return (length == 0 ? [] : Array(bytes[body..<body + length]), GRPCFraming.prefixLength + length)
    }

    /// The next complete message, or nil when none is complete yet.
    public mutating func next() -> [UInt8]? {
        if let message = first {
            first = nil
            return message
        }
        guard completeHead < complete.count else { return nil }
        let message = complete[completeHead]
        completeHead += 1
        if completeHead == complete.count {
            complete.removeAll(keepingCapacity: true)
            completeHead = 0
        }
        return message
    }
}
