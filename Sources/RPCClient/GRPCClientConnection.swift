import Codec
import NIOCore
import NIOPosix

/// Limits and timeouts of a client connection.
public struct GRPCClientConfiguration: Sendable {
    /// How long establishing the TCP connection may take. Default 10 s.
    public var connectTimeout: Duration = .seconds(10)
    /// Largest response message accepted; a bigger one fails the call with RESOURCE_EXHAUSTED.
    /// Default 4 MiB (gRPC's default).
    public var maxResponseMessageSize = 4 * 1024 * 1024
    /// Largest response header block (sum of `name + value + 32`). Default 64 KiB.
    public var maxResponseHeaderListSize: UInt32 = 64 * 1024
    /// Per-stream HTTP/2 receive window. Default 1 MiB.
    public var initialWindowSize: UInt32 = 1024 * 1024
    /// Sent as `user-agent`.
    public var userAgent = "flowd-cli"

    public init() {}
}

/// A gRPC client connection (cleartext HTTP/2 with prior knowledge) over an nghttp2 client
/// session on SwiftNIO. Calls are multiplexed on the one connection; a lost connection fails
/// the calls on it with UNAVAILABLE, and a new connection has to be made.
public final class GRPCClientConnection: Sendable {
    private let channel: any Channel
    private let handler: NIOLoopBound<ClientConnectionHandler>

    private init(channel: any Channel, handler: NIOLoopBound<ClientConnectionHandler>) {
        self.channel = channel
        self.handler = handler
    }

    /// Connects to `host:port`. Throws `GRPCCallError` with UNAVAILABLE when the server cannot
    /// be reached.
    public static func connect(host: String, port: Int, configuration: GRPCClientConfiguration = .init(),
                               group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton)
        async throws(GRPCCallError) -> GRPCClientConnection {
        let authority = host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        let bootstrap = ClientBootstrap(group: group)
            .connectTimeout(TimeAmount(configuration.connectTimeout))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        ClientConnectionHandler(configuration: configuration, authority: authority))
                }
            }
        do {
            let channel = try await bootstrap.connect(host: host, port: port).get()
            let handler = try await channel.eventLoop.submit {
                NIOLoopBound(try channel.pipeline.syncOperations.handler(type: ClientConnectionHandler.self),
                             eventLoop: channel.eventLoop)
            }.get()
            return GRPCClientConnection(channel: channel, handler: handler)
        } catch {
            throw GRPCCallError(code: .unavailable, message: "cannot connect to \(authority)", cause: error)
        }
    }

    /// Sends GOAWAY and closes the connection.
    public func close() async {
        let handler = self.handler
        try? await channel.eventLoop.submit { handler.value.close() }.get()
        try? await channel.closeFuture.get()
    }

    /// A unary call. Throws `GRPCCallError` (also for a response that does not decode).
    public func unary<Request: ProtoMessage, Response: ProtoMessage>(
        _ path: String, _ request: Request, metadata: [(name: String, value: String)] = [],
        timeout: Duration? = nil, as: Response.Type = Response.self
    ) async throws(GRPCCallError) -> Response {
        var response: Response?
        do {
            for try await message in start(path, request, metadata: metadata, timeout: timeout) {
                guard response == nil else {
                    throw GRPCCallError(code: .internalError, message: "more than one response message to a unary call")
                }
                response = try Self.decode(message, as: Response.self)
            }
        } catch let error as GRPCCallError {
            throw error
        } catch {
            throw GRPCCallError(code: .unknown, message: "\(error)")
        }
        guard let response else {
            throw GRPCCallError(code: .internalError, message: "no response message to a unary call")
        }
        return response
    }

    /// A server-streaming call: the response messages, then the end of the sequence (OK) or a
    /// thrown `GRPCCallError`. Ending the iteration early (or cancelling the task) resets the stream.
    public func serverStreaming<Request: ProtoMessage, Response: ProtoMessage>(
        _ path: String, _ request: Request, metadata: [(name: String, value: String)] = [],
        timeout: Duration? = nil, as: Response.Type = Response.self
    ) -> AsyncThrowingMapSequence<AsyncThrowingStream<[UInt8], any Error>, Response> {
        start(path, request, metadata: metadata, timeout: timeout).map { message in
            try Self.decode(message, as: Response.self)
        }
    }

    private func start<Request: ProtoMessage>(
        _ path: String, _ request: Request, metadata: [(name: String, value: String)], timeout: Duration?
    ) -> AsyncThrowingStream<[UInt8], any Error> {
        let (stream, sink) = AsyncThrowingStream<[UInt8], any Error>.makeStream()
        let call = ClientCallRequest(path: path, metadata: metadata, timeout: timeout,
                                     framedRequest: GRPCFraming.frame(request.serializedBytes()), sink: sink)
        let handler = self.handler
        channel.eventLoop.execute { handler.value.startCall(call) }
        return stream
    }

    private static func decode<Response: ProtoMessage>(_ message: [UInt8], as: Response.Type) throws(GRPCCallError) -> Response {
        do {
            return try Response(serializedBytes: message)
        } catch {
            throw GRPCCallError(code: .internalError, message: "cannot decode the response: \(error.message)", cause: error)
        }
    }
}
