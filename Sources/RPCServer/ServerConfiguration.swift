public import NIOCore

/// Everything that shapes the server's network behaviour, with defaults that suit a gRPC
/// service on a 2-core machine (DESIGN.md "Operating it"; hardening.md 1.3).
public struct ServerConfiguration: Sendable {
    /// Address to listen on; loopback by default.
    public var host: String = "127.0.0.1"
    /// Port to listen on; 0 picks a free port (see `GRPCServer.localAddress`).
    public var port: Int = 50051
    /// Event-loop threads; each connection stays on one.
    public var eventLoopThreads: Int = System.coreCount

    /// Largest request message accepted (gRPC's de-facto default); larger is RESOURCE_EXHAUSTED.
    public var maxReceiveMessageSize: Int = 4 * 1024 * 1024
    /// SETTINGS_MAX_CONCURRENT_STREAMS (nghttp2 advertises no limit unless told).
    public var maxConcurrentStreams: Int = 100
    /// Handlers that may run at once per connection, counting those whose stream was already
    /// reset (Rapid Reset frees stream slots while work continues). Beyond it: REFUSED_STREAM.
    public var maxRunningHandlersPerConnection: Int = 200
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

    /// A connection that has not sent its preface and SETTINGS within this time is closed.
    public var handshakeTimeout: TimeAmount = .seconds(10)
    /// A connection with no open call for this long is sent GOAWAY.
    public var idleTimeout: TimeAmount = .minutes(5)
    /// How long graceful shutdown waits for in-flight calls before closing connections.
    public var gracefulShutdownTimeout: TimeAmount = .seconds(30)

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

    public init() {}
}
