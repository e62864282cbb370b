import CoreMetrics
public import Logging
public import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOTLS
import Synchronization

/// A gRPC server over cleartext HTTP/2 (h2c with prior knowledge) on nghttp2, and HTTP/1.1
/// (the REST shim) on the same port: the first bytes of a connection choose.
///
/// ```swift
/// let server = GRPCServer(configuration: config, services: [HealthService()], logger: logger)
/// let address = try await server.start()
/// try await server.run()            // returns after shutDownGracefully() has drained
/// ```
public final class GRPCServer: Sendable {
    public let configuration: ServerConfiguration
    private let router: RPCRouter
    private let http: any HTTPRequestHandling
    private let httpConfiguration: HTTP1Configuration
    private let logger: Logger
    private let metrics: TransportMetrics
    private let group: MultiThreadedEventLoopGroup
    private let state = Mutex(State())
    /// Request bytes buffered by all connections together.
    let requestBudget: RequestBufferBudget

    private struct State {
        var listener: (any Channel)?
        var connections: [ObjectIdentifier: any Channel] = [:]
        var shuttingDown = false
        var limits = ConnectionLimits(maxTotal: 0, maxPerAddress: 0)
        var tls: TLSContextStore?
    }

    /// `http` answers HTTP/1.1 requests (by default everything is 404). With `metrics`, the
    /// server records its calls, requests and connections there and answers `GET /metrics`;
    /// without, it records them with `MetricsSystem.factory` and `/metrics` is the REST shim's
    /// (404). `afterRequestBurst` runs when the connections' buffered request bytes drop back
    /// to zero after a burst of at least 8 MiB, on that event loop once its current task is over
    /// (flowd returns freed memory to the system there).
    public init(configuration: ServerConfiguration, services: [any RegistrableRPCService],
                http: (any HTTPRequestHandling)? = nil, httpConfiguration: HTTP1Configuration = HTTP1Configuration(),
                metrics: ServerMetrics? = nil, logger: Logger,
                afterRequestBurst: (@Sendable () -> Void)? = nil) {
        self.configuration = configuration
        let transportMetrics = TransportMetrics(factory: metrics?.factory ?? MetricsSystem.factory,
                                                durations: metrics?.requestDurations)
        self.metrics = transportMetrics
        self.http = MetricsHTTPHandler(inner: http ?? NotFoundHandler(), metrics: transportMetrics, endpoint: metrics)
        self.httpConfiguration = httpConfiguration
        var router = RPCRouter()
        for service in services { service.registerMethods(with: &router) }
        router.instrument(transportMetrics)
        self.router = router
        self.logger = logger
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, configuration.eventLoopThreads))
        // Run after the event loop task that emptied the budget, once that task has dropped
        // every buffer it still held.
        let afterBurst: (@Sendable () -> Void)? = afterRequestBurst.map { action in
            { @Sendable in
                if let loop = MultiThreadedEventLoopGroup.currentEventLoop { loop.execute(action) } else { action() }
            }
        }
        self.requestBudget = RequestBufferBudget(limit: configuration.maxBufferedRequestBytes, afterBurst: afterBurst)
        state.withLock {
            $0.limits = ConnectionLimits(maxTotal: configuration.maxConnections,
                                         maxPerAddress: configuration.maxConnectionsPerAddress)
        }
    }

    /// The last reference may go on any thread, one of the group's own loops included: the
    /// group is shut down without waiting (a blocking shutdown there would deadlock, and on a
    /// task thread it would hold up other tasks).
    deinit {
        group.shutdownGracefully { _ in }
    }

    /// Binds the listening socket and returns its address (useful with port 0).
    @discardableResult
    public func start() async throws -> SocketAddress {
        let configuration = self.configuration
        let router = self.router
        let logger = self.logger
        let http = self.http
        let httpConfiguration = self.httpConfiguration
        let metrics = self.metrics
        var tlsStore: TLSContextStore?
        if let files = configuration.tls {
            tlsStore = try TLSContextStore(files: files)
        }
        state.withLock { $0.tls = tlsStore }
        let installer = PipelineInstaller(
            configuration: configuration, router: router, logger: logger, http: http,
            httpConfiguration: httpConfiguration, metrics: metrics, budget: requestBudget, tls: tlsStore)
        let tlsEnabled = tlsStore != nil
        let listener = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelInitializer { [weak self] channel in
                guard let self else { return channel.close() }
                switch self.track(channel) {
                case .accepted:
                    break
                case .shuttingDown:
                    metrics.connectionClosed(.refused, wasOpen: false)
                    return channel.close()
                case .overLimit:
                    metrics.connectionClosed(.overLimit, wasOpen: false)
                    return channel.close()
                }
                let closeNote = ConnectionCloseNote(nil, eventLoop: channel.eventLoop)
                metrics.connectionOpened()
                channel.closeFuture.whenComplete { _ in metrics.connectionClosed(closeNote.value ?? .peer) }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(installer.sniffer(closeNote: closeNote, tls: tlsEnabled))
                }
            }
            .bind(host: configuration.host, port: configuration.port)
            .get()
        state.withLock { $0.listener = listener }
        guard let address = listener.localAddress else { throw ServerError.notBound }
        logger.info("listening", metadata: ["address": "\(address)"])
        return address
    }

    /// The bound address, once started.
    public var localAddress: SocketAddress? {
        state.withLock { $0.listener?.localAddress }
    }

    /// Waits until the listener has closed and every connection has drained.
    public func run() async throws {
        guard let listener = state.withLock({ $0.listener }) else { throw ServerError.notBound }
        try await listener.closeFuture.get()
        while let connection = state.withLock({ $0.connections.values.first }) {
            try? await connection.closeFuture.get()
        }
        logger.info("stopped")
    }

    /// Stops accepting connections and asks every connection to drain: GOAWAY, in-flight calls
    /// finish (up to `gracefulShutdownTimeout`), then the connections close.
    public func beginGracefulShutdown() {
        let (listener, connections) = state.withLock { state in
            state.shuttingDown = true
            return (state.listener, Array(state.connections.values))
        }
        logger.info("shutting down gracefully", metadata: ["connections": "\(connections.count)"])
        listener?.close(promise: nil)
        for connection in connections {
            connection.pipeline.fireUserInboundEventTriggered(GracefulShutdownEvent())
        }
    }

    /// Shuts down gracefully and waits for the end.
    public func shutDownGracefully() async {
        beginGracefulShutdown()
        try? await run()
    }

    private enum Admission { case accepted, shuttingDown, overLimit }

    private func track(_ channel: any Channel) -> Admission {
        let id = ObjectIdentifier(channel)
        let address = ConnectionLimits.addressKey(channel.remoteAddress)
        let admission = state.withLock { state -> Admission in
            guard !state.shuttingDown else { return .shuttingDown }
            guard state.limits.open(address: address) else { return .overLimit }
            state.connections[id] = channel
            return .accepted
        }
        switch admission {
        case .accepted:
            channel.closeFuture.whenComplete { [weak self] _ in
                self?.state.withLock { state in
                    state.connections.removeValue(forKey: id)
                    state.limits.close(address: address)
                }
            }
        case .overLimit:
            logger.info("refusing a connection over the connection limits", metadata: ["peer": "\(address)"])
        case .shuttingDown:
            break
        }
        return admission
    }

    /// Reads the certificate and key files again (SIGHUP); on failure the current ones stay.
    public func reloadTLS() throws {
        guard let store = state.withLock({ $0.tls }) else { return }
        try store.reload()
        logger.info("TLS certificate reloaded", metadata: ["certificate": "\(store.files.certificateChainPath)"])
    }

    enum ServerError: Error {
        case notBound
    }
}

/// Builds each connection's pipeline once its first bytes told the protocol: TLS (then ALPN
/// `h2` or `http/1.1`, or the cleartext sniffer again inside TLS when the client offered no
/// ALPN), HTTP/2 (the nghttp2 pipeline) or HTTP/1.1 (the REST shim).
struct PipelineInstaller: Sendable {
    let configuration: ServerConfiguration
    let router: RPCRouter
    let logger: Logger
    let http: any HTTPRequestHandling
    let httpConfiguration: HTTP1Configuration
    let metrics: TransportMetrics
    let budget: RequestBufferBudget
    let tls: TLSContextStore?

    func sniffer(closeNote: ConnectionCloseNote, tls: Bool) -> ProtocolSniffer {
        ProtocolSniffer(timeout: configuration.handshakeTimeout, closeNote: closeNote, detectTLS: tls) { detected, context in
            try install(detected, on: context.channel, closeNote: closeNote)
        }
    }

    func install(_ detected: ProtocolSniffer.Detected, on channel: any Channel, closeNote: ConnectionCloseNote) throws {
        let pipeline = channel.pipeline.syncOperations
        switch detected {
        case .http2:
            try pipeline.addHandler(GRPCConnectionHandler(
                configuration: configuration, router: router, logger: logger,
                http: http, httpConfiguration: httpConfiguration, metrics: metrics, closeNote: closeNote,
                budget: budget))
        case .http1:
            try pipeline.configureHTTPServerPipeline(withPipeliningAssistance: true, withErrorHandling: true)
            try pipeline.addHandler(HTTP1ConnectionHandler(
                configuration: httpConfiguration, gracefulShutdownTimeout: configuration.gracefulShutdownTimeout,
                handler: http, logger: logger, closeNote: closeNote, budget: budget,
                handlersOnEventLoop: configuration.handlersOnEventLoop))
        case .tls:
            guard let tls else { throw ServerError.tlsNotConfigured }
            let pending = PendingTLSHandshake(timeout: configuration.handshakeTimeout, closeNote: closeNote)
            try pipeline.addHandler(NIOSSLServerHandler(context: tls.context))
            try pipeline.addHandler(ApplicationProtocolNegotiationHandler { result, channel in
                channel.eventLoop.makeCompletedFuture {
                    channel.pipeline.syncOperations.removeHandler(pending, promise: nil)
                    switch result {
                    case .negotiated("h2"):
                        try install(.http2, on: channel, closeNote: closeNote)
                    case .negotiated("http/1.1"):
                        try install(.http1, on: channel, closeNote: closeNote)
                    default:
                        try channel.pipeline.syncOperations.addHandler(sniffer(closeNote: closeNote, tls: false))
                    }
                }
            })
            try pipeline.addHandler(pending)
        }
    }

    enum ServerError: Error {
        case tlsNotConfigured
    }
}
