public import NIOCore

/// Everything that shapes the server's network behaviour, with defaults that suit a gRPC
/// service on a 2-core machine (DESIGN.md "Operating it"; hardening.md 1.3).
public struct ServerConfiguration: Sendable {
    /// Address to listen on; loopback by default.
    public var host: String = "127.0.0.1"
    /// Port to listen on; 0 picks a free port (see `GRPCServer.localAddress`).
    public var port: Int = 50051
    /// TLS on the same port (ALPN `h2` or `http/1.1`); cleartext connections are still served.
    /// nil: cleartext only.
    public var tls: ServerTLSFiles?
    /// Event-loop threads; each connection stays on one.
    public var eventLoopThreads: Int = System.coreCount

    /// Largest request message accepted (gRPC's de-facto default); larger is RESOURCE_EXHAUSTED.
    public var maxReceiveMessageSize: Int = 4 * 1024 * 1024
    /// SETTINGS_MAX_CONCURRENT_STREAMS (nghttp2 advertises no limit unless told).
    public var maxConcurrentStreams: Int = 100
    /// Handlers that may run at once per connection, counting those whose stream was already
    /// reset (Rapid Reset frees stream slots while work continues). Beyond it: REFUSED_STREAM.
    public var maxRunningHandlersPerConnection: Int = 100
    /// Run each call's handler task on its connection's event loop rather than the global
    /// executor: fewer thread hops per call. Handlers only await the engine, never block.
    /// Unary handlers that answer at once (`RPCRouter.registerImmediateUnary`, `atOnce`) run
    /// on the loop without a task only when this is on; otherwise they take the task too.
    public var handlersOnEventLoop: Bool = true
    /// SETTINGS_MAX_HEADER_LIST_SIZE, also enforced on input (nghttp2 only advertises it).
    public var maxHeaderListSize: Int = 16 * 1024
    /// Most header fields accepted in one request.
    public var maxHeaderFields: Int = 100
    /// SETTINGS_INITIAL_WINDOW_SIZE: the per-stream receive window.
    public var initialStreamWindowSize: Int = 1 << 20
    /// The connection-level receive window.
    public var connectionWindowSize: Int = 1 << 20
    /// A streaming handler's `write` waits while more than this many bytes of its stream
    /// are queued (the peer reads slower than the handler produces).
    public var streamWriteHighWaterMark: Int = 256 * 1024
    /// Waiting writers resume once the queue has drained below this.
    public var streamWriteLowWaterMark: Int = 64 * 1024
    /// Request messages of a bidirectional-streaming call (server reflection) that may wait
    /// for its handler to read them; one more ends the call with RESOURCE_EXHAUSTED.
    public var maxBufferedRequestMessages: Int = 32

    /// Request bytes one connection may hold before they reach a handler (partial messages,
    /// unread streaming messages, REST bodies over h2c). A stream that would go over is
    /// answered RESOURCE_EXHAUSTED (413 for REST); the connection goes on. Raised to
    /// `maxReceiveMessageSize + 5` when smaller, so one largest message always fits.
    public var maxBufferedRequestBytesPerConnection: Int = 16 * 1024 * 1024
    /// The same, over all connections of the server together.
    public var maxBufferedRequestBytes: Int = 256 * 1024 * 1024
    /// Largest response message a handler may send; a larger one ends the call with
    /// RESOURCE_EXHAUSTED instead (gRPC's send limit, which grpc-go leaves unbounded).
    public var maxSendMessageSize: Int = 16 * 1024 * 1024
    /// `grpc-message` is cut to this many bytes (before percent-encoding) so that the
    /// trailers always fit in one header block whatever text an error echoes.
    public var maxStatusMessageBytes: Int = 1024
    /// A client's `grpc-timeout` above this is lowered to it (the deadline timer stays sane
    /// whatever the header says: `99999999H` is eleven thousand years).
    public var maxGRPCTimeout: TimeAmount = .hours(24)

    /// Connections open at once; one more is closed as soon as it is accepted.
    public var maxConnections: Int = 1024
    /// Connections open at once from one source address (IP, port ignored).
    public var maxConnectionsPerAddress: Int = 64

    /// A connection that has not sent its preface and SETTINGS within this time is closed.
    public var handshakeTimeout: TimeAmount = .seconds(10)
    /// A connection with no open call for this long is sent GOAWAY.
    public var idleTimeout: TimeAmount = .minutes(5)
    /// How long graceful shutdown waits for in-flight calls before closing connections.
    public var gracefulShutdownTimeout: TimeAmount = .seconds(30)
    /// A stream whose request is still open and that moved no byte either way for this long
    /// is reset (RST_STREAM CANCEL, the call ends CANCELLED); Envoy's `stream_idle_timeout`.
    public var streamIdleTimeout: TimeAmount = .seconds(60)
    /// A stream with response bytes waiting for a flow-control window that the peer has not
    /// opened for this long is reset (CANCEL); a connection whose socket stayed unwritable this
    /// long is closed.
    public var writeStallTimeout: TimeAmount = .seconds(30)
    /// A connection older than this (plus or minus 10 %, so that connections opened together
    /// do not all go at once) is drained: GOAWAY, in-flight calls get `gracefulShutdownTimeout`
    /// to finish. Clients reconnect (grpc-go's `MaxConnectionAge`).
    public var maxConnectionAge: TimeAmount = .hours(2)

    /// Received RST_STREAM token bucket (nghttp2's Rapid Reset defence): burst and refill per second.
    public var resetStreamBurst: Int = 200
    public var resetStreamRatePerSecond: Int = 20
    /// Window over which the flood counters below are measured.
    public var abuseWindow: TimeAmount = .seconds(10)
    /// PING frames accepted per window (grpcio sends BDP pings while receiving data).
    public var maxPingsPerWindow: Int = 200
    /// Non-ACK SETTINGS frames accepted per window.
    public var maxSettingsPerWindow: Int = 20
    /// Consecutive empty DATA frames without END_STREAM accepted.
    public var maxConsecutiveEmptyFrames: Int = 10
    /// Invalid frames (stream resets by nghttp2) accepted per window.
    public var maxInvalidFramesPerWindow: Int = 100
    /// Empty DATA frames without END_STREAM accepted per window, whatever comes between them.
    public var maxEmptyFramesPerWindow: Int = 100
    /// Premature resets: once a connection has opened this many streams, GOAWAY when more
    /// than half of them were reset by the peer within `prematureResetLifetime` of opening
    /// (Envoy's overload rule against Rapid Reset and its kin).
    public var prematureResetMinStreams: Int = 100
    public var prematureResetLifetime: TimeAmount = .seconds(1)
    /// Frames queued inside nghttp2 (ACKs, RST_STREAMs, headers); more means the peer does not
    /// read while it makes the server write, and the connection is closed.
    public var maxOutboundQueueFrames: Int = 2000

    public init() {}

    /// A duration of `seconds` (fractions allowed) for the time fields above.
    public static func duration(seconds: Double) -> TimeAmount {
        .nanoseconds(Int64(seconds * 1_000_000_000))
    }
}
