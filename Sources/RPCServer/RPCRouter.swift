public import Codec
import InputParsing
public import Engine

/// A service that registers its methods with a router (the shape of grpc-swift-2's
/// `RegistrableRPCService`).
public protocol RegistrableRPCService: Sendable {
    func registerMethods(with router: inout RPCRouter)
}

/// A verdict on a call's credentials reached without waiting, or `undecided`.
public enum CredentialVerdict: Sendable {
    case admit
    /// Admit, with the key the credentials name: the call's handler finds it in
    /// `ServerContext.authenticatedKey` and need not check the credentials again.
    case authenticated(APIKeyRecord)
    case refuse(RPCError)
    case undecided
}

/// Maps `/service/method` paths to handlers.
public struct RPCRouter: Sendable {
    private(set) var handlers: [String: RPCHandler] = [:] {
        didSet { routeTable = RouteTable(handlers: handlers, services: services) }
    }
    private(set) var services: Set<String> = [] {
        didSet { routeTable = RouteTable(handlers: handlers, services: services) }
    }
    /// What connections look a request's `:path` up in (see `RouteTable`).
    private(set) var routeTable = RouteTable(handlers: [:], services: [])
    /// Services whose every method needs `authorization: Bearer <token>`, with the error a
    /// call without one gets: the connection answers it from the headers, before it buffers
    /// the request body.
    private(set) var credentialRequirements: [String: RPCError] = [:]
    /// Checks of the presented `authorization` value, by service: the connection asks before it
    /// reads the body and answers the error returned (nil admits the call).
    private(set) var credentialVerifiers: [String: @Sendable (String?) async -> RPCError?] = [:]
    /// The same checks when they can answer at once (asked first; `.undecided` falls back).
    private(set) var immediateCredentialVerifiers: [String: @Sendable (String?) -> CredentialVerdict] = [:]

    public init() {}

    /// Registers a unary method.
    public mutating func registerUnary<Request: ProtoMessage, Response: ProtoMessage>(
        _ descriptor: MethodDescriptor,
        request: Request.Type = Request.self,
        response: Response.Type = Response.self,
        handler: @escaping @Sendable (Request, ServerContext) async throws -> ServerResponse<Response>
    ) {
        register(descriptor, kind: .unary) { input, context, limits, _ in
            let request = try Request(serializedBytes: input.takeSingle(), limits: limits)
            return HandlerResult(try await handler(request, context))
        }
    }

    /// Registers a unary method whose handler answers without suspending. The connection runs
    /// it on its event loop as soon as the request is complete, without a task or a hop
    /// (`Health/Check`: a sixth of the call's instructions). The handler must not block.
    public mutating func registerImmediateUnary<Request: ProtoMessage, Response: ProtoMessage>(
        _ descriptor: MethodDescriptor,
        request: Request.Type = Request.self,
        response: Response.Type = Response.self,
        handler: @escaping @Sendable (Request, ServerContext) throws -> ServerResponse<Response>
    ) {
        registerUnary(descriptor, atOnce: { request, context, _ in try handler(request, context) }, handler: handler)
    }

    /// Registers a unary method that can often answer without suspending: `atOnce` runs first,
    /// on the connection's event loop (it must not block); when it returns nil, `handler` runs
    /// in a task with the same request. Reads `atOnce` makes through the `ReadBatch` share one
    /// read transaction with the other calls answered from the same read of the socket.
    public mutating func registerUnary<Request: ProtoMessage, Response: ProtoMessage>(
        _ descriptor: MethodDescriptor,
        request: Request.Type = Request.self,
        response: Response.Type = Response.self,
        atOnce: @escaping @Sendable (Request, ServerContext, ReadBatch) throws -> ServerResponse<Response>?,
        handler: @escaping @Sendable (Request, ServerContext) async throws -> ServerResponse<Response>
    ) {
        let immediate: RPCHandler.Immediate = { input, context, limits, batch in
            let request = try Request(serializedBytes: input.takeSingle(), limits: limits)
            if let response = try atOnce(request, context, batch) { return .ended(RPCHandler.ending(HandlerResult(response))) }
            return .later { _ in HandlerResult(try await handler(request, context)) }
        }
        register(descriptor, kind: .unary, immediate: immediate) { input, context, limits, _ in
            let request = try Request(serializedBytes: input.takeSingle(), limits: limits)
            return HandlerResult(try await handler(request, context))
        }
    }

    /// Registers a server-streaming method.
    public mutating func registerServerStreaming<Request: ProtoMessage, Response: ProtoMessage>(
        _ descriptor: MethodDescriptor,
        request: Request.Type = Request.self,
        response: Response.Type = Response.self,
        handler: @escaping @Sendable (Request, ServerContext) async throws -> StreamingServerResponse<Response>
    ) {
        register(descriptor, kind: .serverStreaming) { input, context, limits, sink in
            // The request's bytes are released here, not when a long stream ends.
            let request = try Request(serializedBytes: input.takeSingle(), limits: limits)
            let response = try await handler(request, context)
            try await sink.sendHeaders(response.metadata)
            return HandlerResult(unaryResponse: nil, trailingMetadata: try await response.producer(RPCWriter(sink: sink)))
        }
    }

    /// Registers a bidirectional-streaming method: `handler` reads the request messages as
    /// they arrive and writes responses meanwhile.
    public mutating func registerBidirectionalStreaming<Request: ProtoMessage, Response: ProtoMessage>(
        _ descriptor: MethodDescriptor,
        request: Request.Type = Request.self,
        response: Response.Type = Response.self,
        handler: @escaping @Sendable (RPCRequestStream<Request>, RPCWriter<Response>, ServerContext) async throws -> Metadata
    ) {
        register(descriptor, kind: .bidirectionalStreaming) { input, context, limits, sink in
            let (messages, taken) = input.stream
            let requests = RPCRequestStream<Request>(messages: messages, taken: taken, limits: limits)
            let trailers = try await handler(requests, RPCWriter(sink: sink), context)
            return HandlerResult(unaryResponse: nil, trailingMetadata: trailers)
        }
    }

    private mutating func register(
        _ descriptor: MethodDescriptor, kind: RPCHandler.Kind, immediate: RPCHandler.Immediate? = nil,
        body: @escaping @Sendable (RequestInput, ServerContext, DecodingLimits, any ResponseSink) async throws -> HandlerResult
    ) {
        handlers[descriptor.path] = RPCHandler(descriptor: descriptor, kind: kind, immediate: immediate, body: body)
        services.insert(descriptor.service)
    }

    /// Calls of `service` without a `Bearer` authorization header are answered `error` from
    /// their headers (the service's own check would answer the same after the body).
    /// With `verify`, a call that has one is answered its error before the body is read;
    /// `verifyAtOnce` answers without a task when it can (a cached key), `.undecided` otherwise.
    public mutating func requireBearerCredentials(service: String, otherwise error: RPCError,
                                                  verifyAtOnce: (@Sendable (String?) -> CredentialVerdict)? = nil,
                                                  verifiedBy verify: (@Sendable (String?) async -> RPCError?)? = nil) {
        credentialRequirements[service] = error
        credentialVerifiers[service] = verify
        immediateCredentialVerifiers[service] = verifyAtOnce
    }

    /// True when `authorization` is `Bearer <token>` as the `Authenticator` reads it
    /// (`BearerCredentials.parse`): scheme case-insensitive, a token that is not only blanks.
    static func hasBearerCredentials(_ authorization: String?) -> Bool {
        if case .success = BearerCredentials.parse(authorization) { return true }
        return false
    }

    /// Gives every registered method its metrics.
    mutating func instrument(_ metrics: TransportMetrics) {
        for (path, handler) in handlers {
            let service = handler.descriptor.service
            let credentials = credentialRequirements[service].map {
                CredentialRules(missing: $0, verify: credentialVerifiers[service],
                                verifyAtOnce: immediateCredentialVerifiers[service])
            }
            handlers[path] = handler.instrumented(metrics: metrics.method(path), credentials: credentials)
        }
    }

    /// Registers every method of `service`.
    public mutating func register(_ service: some RegistrableRPCService) {
        service.registerMethods(with: &self)
    }

    /// Why a request's `:path` reached no method (`RouteTable.miss`).
    enum Miss {
        case unknownMethod
        case unknownService(String)
        case malformedPath
    }
}

/// The routed methods as a connection needs them, immutable once the server starts: a class,
/// so that a look-up copies nothing (through the `RPCRouter` struct, a look-up copied the
/// router and retained each of its tables, shared by every connection and event loop). The
/// paths are one byte array compared length first (`memcmp`): for a few dozen methods, less
/// than making the request's path a String and hashing it.
final class RouteTable: Sendable {
    private let bytes: [UInt8]
    /// Each path's place in `bytes` and its `tail` (`Self.tail`): a path is compared whole only
    /// when its length and tail match (methods of one service share most of their bytes).
    private let spans: [(start: Int, count: Int, tail: UInt64)]
    private let handlers: [RPCHandler]
    private let services: Set<String>

    init(handlers: [String: RPCHandler], services: Set<String>) {
        var bytes: [UInt8] = []
        var spans: [(start: Int, count: Int, tail: UInt64)] = []
        var list: [RPCHandler] = []
        for (path, handler) in handlers {
            let utf8 = Array(path.utf8)
            spans.append((bytes.count, utf8.count, utf8.withUnsafeBytes(Self.tail)))
            bytes.append(contentsOf: utf8)
            list.append(handler)
        }
        self.bytes = bytes
        self.spans = spans
        self.handlers = list
        self.services = services
    }

    /// Up to the last 8 bytes of a path, as one integer.
    private static func tail(_ path: UnsafeRawBufferPointer) -> UInt64 {
        if path.count >= 8 { return path.loadUnaligned(fromByteOffset: path.count - 8, as: UInt64.self) }
        var tail: UInt64 = 0
        for byte in path { tail = tail << 8 | UInt64(byte) }
        return tail
    }

    /// The method for a request's `:path` bytes; nil when none (`miss` says why).
    func handler(for path: UnsafeRawBufferPointer) -> RPCHandler? {
        let tail = Self.tail(path)
        let found: Int? = bytes.withUnsafeBytes { all in
            for index in spans.indices where spans[index].count == path.count && spans[index].tail == tail {
                let span = spans[index]
                if UnsafeRawBufferPointer(rebasing: all[span.start..<span.start + span.count]).equals(path) { return index }
            }
            return nil
        }
        return found.map { handlers[$0] }
    }

    /// Why `handler(for: path)` found no method (asked only then: the answer names the path).
    func miss(_ path: UnsafeRawBufferPointer) -> RPCRouter.Miss {
        let text = String(decoding: path, as: UTF8.self)
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0].isEmpty, !parts[1].isEmpty, !parts[2].isEmpty else {
            return .malformedPath
        }
        return services.contains(String(parts[1])) ? .unknownMethod : .unknownService(String(parts[1]))
    }
}

/// A service's credential rules (`RPCRouter.requireBearerCredentials`), as a call applies them.
/// A class: a call reads it several times, and a struct of an error and two closures was
/// copied (retained) at each read.
final class CredentialRules: Sendable {
    /// Answered when the call carries no bearer credentials at all.
    let missing: RPCError
    /// Checks the key off the event loop; nil admits.
    let verify: (@Sendable (String?) async -> RPCError?)?
    /// Checks the key from memory on the event loop, when it can.
    let verifyAtOnce: (@Sendable (String?) -> CredentialVerdict)?

    init(missing: RPCError, verify: (@Sendable (String?) async -> RPCError?)?,
         verifyAtOnce: (@Sendable (String?) -> CredentialVerdict)?) {
        self.missing = missing
        self.verify = verify
        self.verifyAtOnce = verifyAtOnce
    }
}

/// What a successful handler produced besides streamed messages.
struct HandlerResult: Sendable {
    var unaryResponse: UnaryResponse?
    var trailingMetadata: Metadata

    init(unaryResponse: UnaryResponse?, trailingMetadata: Metadata) {
        self.unaryResponse = unaryResponse
        self.trailingMetadata = trailingMetadata
    }

    /// A unary handler's response, serialized.
    init<Message: ProtoMessage>(_ response: ServerResponse<Message>) {
        self.init(unaryResponse: UnaryResponse(metadata: response.metadata, message: response.message.serializedBytes()),
                  trailingMetadata: response.trailingMetadata)
    }
}

/// The request side of a call as its handler gets it.
enum RequestInput: Sendable {
    /// The one message of a unary or server-streaming call, as a handler run at once gets it
    /// (nothing keeps the input after the call; no object to allocate).
    case bytes([UInt8])
    /// The one message of a unary or server-streaming call, for a task (see `RequestMessage`).
    case single(RequestMessage)
    /// The messages of a bidirectional-streaming call, as they arrive; `taken` is told the
    /// size of each message the handler takes (the connection stops counting it then).
    /// (`indirect`: boxed, so that the input of every unary call is small to copy.)
    indirect case stream(AsyncThrowingStream<[UInt8], any Error>, taken: @Sendable (Int) -> Void)

    /// The single message's bytes; they are no longer held by the input afterwards.
    func takeSingle() -> [UInt8] {
        switch self {
        case .bytes(let bytes): bytes
        case .single(let message): message.take()
        case .stream: []
        }
    }

    /// This input for a task: its single message in a `RequestMessage`, which the handler
    /// empties when it decodes it.
    var forTask: RequestInput {
        if case .bytes(let bytes) = self { return .single(RequestMessage(bytes)) }
        return self
    }

    var stream: (AsyncThrowingStream<[UInt8], any Error>, taken: @Sendable (Int) -> Void) {
        if case .stream(let messages, let taken) = self { return (messages, taken) }
        return (AsyncThrowingStream { $0.finish() }, { _ in })
    }
}

/// A request message handed to a handler, which takes its bytes once to decode them, so that
/// a long-running call does not keep the encoded request alive.
final class RequestMessage: @unchecked Sendable {
    // Read once, by the one task that runs the handler.
    private var bytes: [UInt8]?

    init(_ bytes: [UInt8]) {
        self.bytes = bytes
    }

    func take() -> [UInt8] {
        defer { bytes = nil }
        return bytes ?? []
    }
}

/// A registered method with its types erased: decode, run, encode.
///
/// A class: a call holds its method from the headers to the status, and a struct of closures,
/// strings and references was retained field by field on every copy.
final class RPCHandler: Sendable {
    enum Kind: Sendable { case unary, serverStreaming, bidirectionalStreaming }
    /// The method it serves (a call's context gets it without parsing the path again).
    let descriptor: MethodDescriptor
    let kind: Kind
    /// Set by the server (`RPCRouter.instrument`).
    let metrics: MethodMetrics?
    /// The service's credential rules, set with `metrics` (a call needs no look-up by service).
    let credentials: CredentialRules?
    typealias Immediate = @Sendable (RequestInput, ServerContext, DecodingLimits, ReadBatch) throws -> Started
    /// How a call started on the caller's thread goes on: ended (answered or failed), or left
    /// to a task for the rest.
    enum Started {
        case ended(Ending)
        case later(@Sendable (any ResponseSink) async throws -> HandlerResult)
    }
    /// The unary method's first step on the connection's event loop (`registerUnary(atOnce:)`);
    /// `body` runs the whole method in a task.
    let immediate: Immediate?
    /// Runs the method.
    let body: @Sendable (RequestInput, ServerContext, DecodingLimits, any ResponseSink) async throws -> HandlerResult

    /// How a call ends: the unary response, if any, its status and trailing metadata.
    typealias Ending = (response: UnaryResponse?, status: RPCStatus, metadata: Metadata)

    init(descriptor: MethodDescriptor, kind: Kind, metrics: MethodMetrics? = nil, credentials: CredentialRules? = nil,
         immediate: Immediate?,
         body: @escaping @Sendable (RequestInput, ServerContext, DecodingLimits, any ResponseSink) async throws -> HandlerResult) {
        self.descriptor = descriptor
        self.kind = kind
        self.metrics = metrics
        self.credentials = credentials
        self.immediate = immediate
        self.body = body
    }

    /// This method with its metrics and its service's credential rules.
    func instrumented(metrics: MethodMetrics, credentials: CredentialRules?) -> RPCHandler {
        RPCHandler(descriptor: descriptor, kind: kind, metrics: metrics, credentials: credentials,
                   immediate: immediate, body: body)
    }

    /// Runs the handler to completion and always finishes the call through `sink`.
    func run(request: RequestInput, context: ServerContext, limits: DecodingLimits, sink: any ResponseSink) async {
        await Self.complete({ sink in try await body(request, context, limits, sink) }, sink: sink)
    }

    /// Runs what `runImmediately` left to a task to completion; finishes the call through `sink`.
    static func complete(_ rest: @Sendable (any ResponseSink) async throws -> HandlerResult, sink: any ResponseSink) async {
        let ending: Ending
        do {
            ending = Self.ending(try await rest(sink))
        } catch {
            ending = Self.ending(error)
        }
        sink.finish(response: ending.response, status: ending.status, metadata: ending.metadata)
    }

    /// Runs `immediate` (which must be set) on the caller's thread.
    func runImmediately(request: RequestInput, context: ServerContext, limits: DecodingLimits, batch: ReadBatch) -> Started {
        do {
            return try immediate!(request, context, limits, batch)
        } catch {
            return .ended(Self.ending(error))
        }
    }

    static func ending(_ result: HandlerResult) -> Ending {
        (result.unaryResponse, RPCStatus(code: .ok, message: ""), result.trailingMetadata)
    }

    private static func ending(_ error: any Error) -> Ending {
        let (status, metadata) = status(for: error)
        return (nil, status, metadata)
    }

    /// The status a call ends with when its handler throws `error` (the single mapping point).
    static func status(for error: any Error) -> (RPCStatus, Metadata) {
        switch error {
        case let error as RPCError:
            return (RPCStatus(code: error.code, message: error.message, details: error.details), error.metadata)
        case let error as CodecError:
            let code: StatusCode
            switch error.code {
            case .invalidUTF8, .embeddedNUL, .nestingTooDeep: code = .invalidArgument
            case .allocationBudgetExceeded, .messageTooLarge: code = .resourceExhausted
            default: code = .internalError
            }
            var message = "request could not be decoded: \(error.message)"
            if let field = error.field { message += " (field \(field))" }
            return (RPCStatus(code: code, message: message), Metadata())
        case is CancellationError:
            return (RPCStatus(code: .cancelled, message: "the call was cancelled"), Metadata())
        default:
            return (RPCStatus(code: .unknown, message: "the handler failed unexpectedly"), Metadata())
        }
    }
}

/// The request messages of a bidirectional-streaming call, decoded one by one as they arrive;
/// iteration throws the call's error when the request stream breaks (a bad or oversized
/// message, too many unread messages).
public struct RPCRequestStream<Message: ProtoMessage>: AsyncSequence, Sendable {
    public typealias Element = Message
    let messages: AsyncThrowingStream<[UInt8], any Error>
    let taken: @Sendable (Int) -> Void
    let limits: DecodingLimits

    public struct AsyncIterator: AsyncIteratorProtocol {
        var base: AsyncThrowingStream<[UInt8], any Error>.AsyncIterator
        let taken: @Sendable (Int) -> Void
        let limits: DecodingLimits

        public mutating func next() async throws -> Message? {
            guard let bytes = try await base.next() else { return nil }
            taken(bytes.count)
            return try Message(serializedBytes: bytes, limits: limits)
        }
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(base: messages.makeAsyncIterator(), taken: taken, limits: limits)
    }
}
