/// An error raised while decoding or encoding wire data.
///
/// `code` says what went wrong in a way callers can switch on (the transport maps it to a
/// gRPC status in one place); `message` is for humans; `field` names the offending field
/// as a dotted path from the top-level message when one is known.
public struct CodecError: Error, Sendable, CustomStringConvertible {
    /// What went wrong. Extensible: new codes can be added without breaking callers.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let name: String
        private init(_ name: String) { self.name = name }
        public var description: String { name }

        /// The bytes are not a valid protobuf encoding of the expected message.
        public static let malformed = Code("malformed")
        /// A `string` field holds bytes that are not UTF-8.
        public static let invalidUTF8 = Code("invalidUTF8")
        /// A `string` field holds a NUL byte (protobuf-c would silently truncate it).
        public static let embeddedNUL = Code("embeddedNUL")
        /// Sub-messages are nested deeper than `DecodingLimits.maxDepth`.
        public static let nestingTooDeep = Code("nestingTooDeep")
        /// Unpacking would allocate more than the allocation budget.
        public static let allocationBudgetExceeded = Code("allocationBudgetExceeded")
        /// A gRPC length prefix announces more than the maximum message size.
        public static let messageTooLarge = Code("messageTooLarge")
        /// A gRPC message has the compressed flag set, but no compression was negotiated.
        public static let compressedMessage = Code("compressedMessage")
    }

    public var code: Code
    public var message: String
    /// Dotted path of the offending field, e.g. `flowd.v1.RunWorkflowRequest.user`.
    public var field: String?
    /// The underlying error, if any.
    public var cause: (any Error & Sendable)?

    public init(code: Code, message: String, field: String? = nil, cause: (any Error & Sendable)? = nil) {
        self.code = code
        self.message = message
        self.field = field
        self.cause = cause
    }

    public var description: String {
        var text = "\(code): \(message)"
        if let field { text += " (field \(field))" }
        if let cause { text += " (cause: \(cause))" }
        return text
    }
}

/// Bounds that protect the decoder from hostile input (DESIGN.md, "protobuf-c on untrusted input").
public struct DecodingLimits: Sendable, Hashable {
    /// Deepest allowed nesting of sub-messages; the top-level message is depth 1.
    public var maxDepth: Int
    /// Bytes protobuf-c may allocate for any message, whatever its size.
    public var allocationBudgetBase: Int
    /// Extra bytes protobuf-c may allocate per byte of input.
    public var allocationBudgetPerInputByte: Int

    public init(maxDepth: Int = 32, allocationBudgetBase: Int = 64 * 1024, allocationBudgetPerInputByte: Int = 8) {
        self.maxDepth = maxDepth
        self.allocationBudgetBase = allocationBudgetBase
        self.allocationBudgetPerInputByte = allocationBudgetPerInputByte
    }

    /// The allocation budget for an input of `inputSize` bytes.
    public func allocationBudget(forInputSize inputSize: Int) -> Int {
        allocationBudgetBase + allocationBudgetPerInputByte * inputSize
    }
}

/// A protobuf message with a Swift value type and a protobuf-c encoding.
public protocol ProtoMessage: Sendable {
    /// Decodes `bytes`, rejecting invalid UTF-8, embedded NULs, excessive nesting and
    /// allocation amplification before anything reaches the caller.
    init(serializedBytes bytes: [UInt8], limits: DecodingLimits) throws(CodecError)
    /// The protobuf encoding of the message.
    func serializedBytes() -> [UInt8]
}

extension ProtoMessage {
    /// Decodes `bytes` with the default limits.
    public init(serializedBytes bytes: [UInt8]) throws(CodecError) {
        try self.init(serializedBytes: bytes, limits: DecodingLimits())
    }
}
