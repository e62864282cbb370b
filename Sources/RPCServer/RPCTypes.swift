public import Codec
public import NIOCore
public import Engine

/// Names one RPC method: `/service/method` on the wire.
public struct MethodDescriptor: Sendable, Hashable, CustomStringConvertible {
    /// Fully qualified service name, e.g. `grpc.health.v1.Health`.
    public var service: String
    /// Method name, e.g. `Check`.
    public var method: String

    public init(service: String, method: String) {
        self.service = service
        self.method = method
    }

    /// The HTTP/2 `:path` of the method.
    public var path: String { "/\(service)/\(method)" }
    public var description: String { path }
}

/// What a handler knows about its call besides the request message.
///
/// A view of the call's fields, which the connection keeps in one object (`CallFields`): a
/// context is handed to the handler and into its task by reference (as five stored fields, a
/// copy retained two strings, an array and a key, and the connection made three copies a call).
public struct ServerContext: Sendable {
    let fields: CallFields

    init(fields: CallFields) {
        self.fields = fields
    }

    public init(descriptor: MethodDescriptor, metadata: Metadata, deadline: NIODeadline?, peer: String,
                authenticatedKey: APIKeyRecord? = nil) {
        fields = CallFields(descriptor: descriptor, metadata: .parsed(metadata), deadline: deadline, peer: peer,
                            authenticatedKey: authenticatedKey.map(AuthenticatedKey.init))
    }

    public var descriptor: MethodDescriptor { fields.descriptor }
    /// Request metadata (reserved headers removed). Made at each read from the request's
    /// header bytes: a handler that reads several keys reads this once.
    public var metadata: Metadata {
        switch fields.metadata {
        case .parsed(let metadata): metadata
        case .requestBlock(let bytes): Metadata(requestBlockBytes: bytes)
        }
    }
    /// When the client stops waiting (from `grpc-timeout`); nil means no deadline.
    public var deadline: NIODeadline? { fields.deadline }
    /// The remote address, for logs.
    public var peer: String { fields.peer }
    /// The API key the transport already verified from this call's `authorization` header
    /// (`CredentialVerdict.authenticated`); nil when it did not.
    public var authenticatedKey: APIKeyRecord? { fields.authenticatedKey?.record }
}

/// A key verified from a call's headers, boxed: most calls have none, and an optional record
/// inline (five fields) was copied and destroyed through value witnesses for each of them.
final class AuthenticatedKey: Sendable {
    let record: APIKeyRecord

    init(_ record: APIKeyRecord) {
        self.record = record
    }
}

/// A call's fields as its handler sees them (`ServerContext`). Immutable; the connection's
/// per-call record (`GRPCConnectionHandler.CallInfo`) extends it, so that a call costs one
/// object for both.
class CallFields: @unchecked Sendable {
    // @unchecked: every stored property is a `let` of a Sendable type; a subclass adds only
    // `let`s of Sendable types too.
    let descriptor: MethodDescriptor
    let metadata: MetadataSource
    let deadline: NIODeadline?
    let peer: String
    let authenticatedKey: AuthenticatedKey?

    /// A call's metadata: made by whoever built the context, or still the bytes of the
    /// request's header block (parsed when a handler asks; most never do).
    enum MetadataSource: Sendable {
        case parsed(Metadata)
        case requestBlock([UInt8])
    }

    init(descriptor: MethodDescriptor, metadata: MetadataSource, deadline: NIODeadline?, peer: String,
         authenticatedKey: AuthenticatedKey?) {
        self.descriptor = descriptor
        self.metadata = metadata
        self.deadline = deadline
        self.peer = peer
        self.authenticatedKey = authenticatedKey
    }
}

/// An error a handler throws to end its call with a status other than OK.
///
/// `details` travel in `grpc-status-details-bin` as a `google.rpc.Status` (AIP-193);
/// `metadata` is sent in the trailers.
public struct RPCError: Error, Sendable, CustomStringConvertible {
    public var code: StatusCode
    public var message: String
    public var details: [ErrorDetail]
    public var metadata: Metadata
    public var cause: (any Error & Sendable)?

    public init(code: StatusCode, message: String, details: [ErrorDetail] = [], metadata: Metadata = Metadata(),
                cause: (any Error & Sendable)? = nil) {
        self.code = code
        self.message = message
        self.details = details
        self.metadata = metadata
        self.cause = cause
    }

    public var description: String { "\(code): \(message)" }
}

/// A unary response: one message plus initial and trailing metadata.
public struct ServerResponse<Message: ProtoMessage>: Sendable {
    public var message: Message
    public var metadata: Metadata
    public var trailingMetadata: Metadata

    public init(message: Message, metadata: Metadata = Metadata(), trailingMetadata: Metadata = Metadata()) {
        self.message = message
        self.metadata = metadata
        self.trailingMetadata = trailingMetadata
    }
}

/// A server-streaming response: initial metadata, then whatever `producer` writes; the
/// metadata it returns is sent in the trailers.
public struct StreamingServerResponse<Message: ProtoMessage>: Sendable {
    public var metadata: Metadata
    public var producer: @Sendable (RPCWriter<Message>) async throws -> Metadata

    public init(metadata: Metadata = Metadata(),
                producer: @escaping @Sendable (RPCWriter<Message>) async throws -> Metadata) {
        self.metadata = metadata
        self.producer = producer
    }
}

/// Writes response messages of a server-streaming call. `write` returns once the message is
/// queued within the stream's buffer limit, so a slow reader slows the producer down instead
/// of growing memory. It throws when the call is gone (cancelled, reset, deadline).
public struct RPCWriter<Message: ProtoMessage>: Sendable {
    let sink: any ResponseSink

    public func write(_ message: Message) async throws {
        try await sink.sendMessage(message.serializedBytes())
    }

    /// Writes a message already serialized (from `Message.serializedBytes()`): a caller that
    /// builds the message in a synchronous function keeps it out of its async frame, which
    /// lives as long as the call (a watcher's frame is most of what a watcher costs).
    func write(serialized bytes: [UInt8]) async throws {
        try await sink.sendMessage(bytes)
    }
}

/// Where a running handler sends its response; implemented by the connection.
protocol ResponseSink: Sendable {
    /// Sends the response headers with `metadata` (at most once; implied by the first message).
    func sendHeaders(_ metadata: Metadata) async throws
    /// Sends one serialized message; suspends while the stream's buffer is full.
    func sendMessage(_ bytes: [UInt8]) async throws
    /// Ends the call with `status` and trailing `metadata`; a unary call's response travels
    /// here too, so that it costs one hop to the event loop.
    func finish(response: UnaryResponse?, status: RPCStatus, metadata: Metadata)
}

/// The serialized response of a unary call.
struct UnaryResponse: Sendable {
    var metadata: Metadata
    var message: [UInt8]
}
