import Codec
import CoreMetrics
import Engine
import NIOCore
import NIOHTTP1
public import Prometheus
import Synchronization

/// The Prometheus side of one server: a registry of its own (so that servers and tests in one
/// process never share a series), the swift-metrics factory that records into it with flowd's
/// histogram buckets, and the text `GET /metrics` answers with.
///
/// ```swift
/// var metrics = ServerMetrics()
/// let engine = Engine(store: store, executor: executor, metrics: metrics.factory)
/// metrics.beforeScrape = { await engine.metrics.refreshRunGauges() }
/// let server = GRPCServer(configuration: config, services: services, metrics: metrics, logger: logger)
/// ```
public struct ServerMetrics: Sendable {
    /// Where every series lives.
    public let registry: PrometheusCollectorRegistry
    /// Records into `registry`; pass it to the store, the Engine and `MetricsSystem.bootstrap`.
    public let factory: PrometheusMetricsFactory
    /// Runs before each scrape (gauges read from elsewhere, such as the store's run counts).
    public var beforeScrape: @Sendable () async -> Void = {}
    /// `flowd_grpc_request_duration_seconds`, kept outside the registry (see
    /// `MethodDurationHistogram`) and written after its series.
    public let requestDurations = RequestDurationHistograms(name: RPCMetricName.grpcDuration, buckets: ServerMetrics.requestBuckets)

    /// The `Content-Type` of the text exposition format.
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets[RPCMetricName.httpDuration] = Self.requestBuckets
        for name in [EngineMetricName.scheduleDelay, EngineMetricName.runDuration] {
            factory.durationHistogramBuckets[name] = Self.runBuckets
        }
        factory.durationHistogramBuckets[EngineMetricName.storeTransaction] = Self.transactionBuckets
        factory.valueHistogramBuckets[EngineMetricName.groupCommitBatchSize] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
        self.factory = factory
    }

    /// RPC and REST requests: 0.5 ms to 60 s (streams last as long as their run).
    static let requestBuckets: [Duration] = [
        .microseconds(500), .milliseconds(1), .milliseconds(2.5), .milliseconds(5), .milliseconds(10),
        .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500),
        .seconds(1), .seconds(2.5), .seconds(5), .seconds(10), .seconds(30), .seconds(60),
    ]
    /// Time in `scheduled` and run durations: 1 ms to 30 min (the reaper's default).
    static let runBuckets: [Duration] = [
        .milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(50), .milliseconds(100),
        .milliseconds(500), .seconds(1), .seconds(5), .seconds(10), .seconds(30), .seconds(60),
        .seconds(300), .seconds(1800),
    ]
    /// Store transactions: 100 µs to 1 s.
    static let transactionBuckets: [Duration] = [
        .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2.5),
        .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
        .milliseconds(250), .seconds(1),
    ]

    /// The text exposition of every series, after `beforeScrape`.
    public func scrape() async -> [UInt8] {
        await beforeScrape()
        var buffer: [UInt8] = []
        registry.emit(into: &buffer)
        requestDurations.emit(into: &buffer)
        return buffer
    }
}

/// Names of the transport's metrics (README, "Metrics").
public enum RPCMetricName {
    /// Counter, labels `method` (the routed `/service/method`, or `unknown`) and `code`.
    public static let grpcRequests = "flowd_grpc_requests_total"
    /// Histogram (seconds), label `method`: from the request headers to the status sent.
    public static let grpcDuration = "flowd_grpc_request_duration_seconds"
    /// Counter, labels `route` (a route template, or `other`), `method` and `code`.
    public static let httpRequests = "flowd_http_requests_total"
    /// Histogram (seconds), labels `route` and `method`: until the response body ended.
    public static let httpDuration = "flowd_http_request_duration_seconds"
    /// Gauge: connections open (gRPC, h2c and HTTP/1.1 alike).
    public static let connectionsOpen = "flowd_connections_open"
    /// Counter, label `reason` (see `ConnectionCloseReason`).
    public static let connectionsClosed = "flowd_connections_closed_total"
}

/// Counters of one gRPC method by status code and its latency histogram, made up front.
///
/// The histogram is flowd's own (`MethodDurationHistogram`) when the server has a
/// `ServerMetrics`, so that connections can batch their calls (`CallMetricsBatch`); otherwise it
/// is a swift-metrics `Timer` of whatever backend was bootstrapped, recorded per call.
final class MethodMetrics: Sendable {
    private let codes: [CoreMetrics.Counter]
    private let duration: CoreMetrics.Timer?
    let histogram: MethodDurationHistogram?

    /// Status codes 0-16 get a series each; any other value counts as UNKNOWN.
    static let codeCount = 17

    init(method: String, factory: any MetricsFactory, durations: RequestDurationHistograms? = nil) {
        codes = (0..<Self.codeCount).map { code in
            CoreMetrics.Counter(label: RPCMetricName.grpcRequests,
                    dimensions: [("method", method), ("code", StatusCode(rawValue: code).description)], factory: factory)
        }
        if let durations {
            histogram = durations.make(method: method)
            duration = nil
        } else {
            histogram = nil
            duration = CoreMetrics.Timer(label: RPCMetricName.grpcDuration, dimensions: [("method", method)], factory: factory)
        }
    }

    static func codeIndex(_ code: StatusCode) -> Int {
        code.rawValue >= 0 && code.rawValue < codeCount ? code.rawValue : StatusCode.unknown.rawValue
    }

    /// One call, counted at once (a server without `ServerMetrics`: no histogram of flowd's own
    /// to batch into).
    func record(_ code: StatusCode, nanoseconds: Int64) {
        codes[Self.codeIndex(code)].increment()
        duration?.recordNanoseconds(nanoseconds)
    }

    /// Calls counted by a `CallMetricsBatch`, per status code.
    func add(codes counts: [Int]) {
        for (index, count) in counts.enumerated() where count > 0 { codes[index].increment(by: Int64(count)) }
    }
}

/// Why the server's side of a connection ended; the `reason` label of
/// `flowd_connections_closed_total`.
enum ConnectionCloseReason: String, CaseIterable, Sendable {
    /// The client closed it, reset it or asked for it (HTTP/1.1 `Connection: close`).
    case peer
    /// No request (HTTP/1.1) or no call (HTTP/2) within the idle timeout.
    case idle
    /// Nothing recognisable (HTTP/2 preface or HTTP/1.1 request) or no HTTP/2 SETTINGS in time.
    case handshakeTimeout = "handshake_timeout"
    /// An HTTP/1.1 request begun and not completed in time (408).
    case requestTimeout = "request_timeout"
    /// An HTTP/1.1 request body over the limit (413).
    case bodyTooLarge = "body_too_large"
    /// An HTTP/1.1 request body the server-wide budget of buffered request bytes had no room for (503).
    case serverBusy = "server_busy"
    /// An HTTP/1.1 request refused from its head (a bad API key, 401) before its body was read.
    case unauthenticated
    /// A framing or HTTP/2 protocol error.
    case protocolError = "protocol_error"
    /// Drained by a graceful shutdown.
    case shutdown
    /// Accepted while the server was shutting down.
    case refused
    /// Closed for abuse (GOAWAY ENHANCE_YOUR_CALM): PING, SETTINGS, invalid-frame or empty-frame floods.
    case abusePings = "abuse_too_many_pings"
    case abuseSettings = "abuse_too_many_settings"
    case abuseInvalidFrames = "abuse_too_many_invalid_frames"
    case abuseEmptyFrames = "abuse_empty_frames"
    case abusePrematureResets = "abuse_premature_resets"
    /// The peer made the server queue too many frames without reading them.
    case abuseOutboundQueue = "abuse_outbound_queue"
    /// Over the connection limit in total or for its source address.
    case overLimit = "over_limit"
    /// Older than the maximum connection age (drained with GOAWAY).
    case maxAge = "max_age"
    /// The socket stayed unwritable longer than the write-stall timeout.
    case writeStall = "write_stall"

    /// The reason for an `AbuseGuard` verdict's reason.
    static func abuse(_ guardReason: String) -> ConnectionCloseReason {
        ConnectionCloseReason(rawValue: "abuse_" + guardReason) ?? .protocolError
    }
}

/// Where a connection's handlers note why they close it (the first reason noted wins); read
/// when the channel has closed. Lives on the channel's event loop.
typealias ConnectionCloseNote = NIOLoopBoundBox<ConnectionCloseReason?>

extension NIOLoopBoundBox where Value == ConnectionCloseReason? {
    /// Notes `reason` unless a reason was noted before.
    func note(_ reason: ConnectionCloseReason) {
        if value == nil { value = reason }
    }
}

/// The transport's metrics of one server: gRPC calls by method, connections, REST requests.
final class TransportMetrics: Sendable {
    /// Calls whose path is not a routed method.
    let unknownMethod: MethodMetrics
    private let factory: any MetricsFactory
    private let durations: RequestDurationHistograms?
    private let connectionsOpen: CoreMetrics.Meter
    private let closed: [ConnectionCloseReason: CoreMetrics.Counter]
    private let http = Mutex<[HTTPSeriesKey: HTTPSeries]>([:])

    /// Records nothing (handlers made outside a server).
    static let disabled = TransportMetrics(factory: NOOPMetricsHandler.instance)

    /// `durations`: the server's `ServerMetrics.requestDurations` (nil: call durations go to
    /// `factory` as timers).
    init(factory: any MetricsFactory, durations: RequestDurationHistograms? = nil) {
        self.factory = factory
        self.durations = durations
        unknownMethod = MethodMetrics(method: "unknown", factory: factory, durations: durations)
        connectionsOpen = CoreMetrics.Meter(label: RPCMetricName.connectionsOpen, factory: factory)
        var closed: [ConnectionCloseReason: CoreMetrics.Counter] = [:]
        for reason in ConnectionCloseReason.allCases {
            closed[reason] = CoreMetrics.Counter(label: RPCMetricName.connectionsClosed,
                                                 dimensions: [("reason", reason.rawValue)], factory: factory)
        }
        self.closed = closed
    }

    func method(_ path: String) -> MethodMetrics {
        MethodMetrics(method: path, factory: factory, durations: durations)
    }

    func connectionOpened() {
        connectionsOpen.increment()
    }

    func connectionClosed(_ reason: ConnectionCloseReason, wasOpen: Bool = true) {
        if wasOpen { connectionsOpen.decrement() }
        closed[reason]?.increment()
    }

    /// The series of a REST request, made on first use (REST routes and status codes are few;
    /// the lookup takes a lock, which the gRPC path never does).
    func httpSeries(route: RESTRoute, method: HTTPMethod, code: UInt) -> HTTPSeries {
        let key = HTTPSeriesKey(route: route, method: RESTRoute.methodLabel(method), code: code)
        return http.withLock { series in
            if let existing = series[key] { return existing }
            let made = HTTPSeries(
                requests: CoreMetrics.Counter(label: RPCMetricName.httpRequests,
                                  dimensions: [("route", route.rawValue), ("method", key.method), ("code", String(code))],
                                  factory: factory),
                duration: CoreMetrics.Timer(label: RPCMetricName.httpDuration,
                                            dimensions: [("route", route.rawValue), ("method", key.method)], factory: factory))
            series[key] = made
            return made
        }
    }
}

struct HTTPSeriesKey: Hashable {
    var route: RESTRoute
    var method: String
    var code: UInt
}

/// The counter and latency histogram of REST requests with one route, method and status.
struct HTTPSeries: Sendable {
    let requests: CoreMetrics.Counter
    let duration: CoreMetrics.Timer

    func record(since start: NIODeadline) {
        requests.increment()
        duration.recordNanoseconds((NIODeadline.now() - start).nanoseconds)
    }
}

/// The `route` label of REST metrics: the route templates of the REST shim and `/metrics`.
enum RESTRoute: String, Sendable {
    case metrics = "/metrics"
    case run = "/v1/workflows/run"
    case getRun = "/v1/workflows/run/{id}"
    case stop = "/v1/workflows/tasks/{task_id}/stop"
    case logs = "/v1/workflows/logs"
    case parameters = "/v1/parameters"
    case info = "/v1/info"
    case other

    init(_ route: RESTPath?) {
        switch route {
        case .metrics: self = .metrics
        case .run: self = .run
        case .logs: self = .logs
        case .parameters: self = .parameters
        case .info: self = .info
        case .getRun: self = .getRun
        case .stop: self = .stop
        case nil: self = .other
        }
    }

    /// Standard methods by name; anything else is `other` (bounded label values).
    static func methodLabel(_ method: HTTPMethod) -> String {
        switch method {
        case .GET, .HEAD, .POST, .PUT, .DELETE, .PATCH, .OPTIONS: method.rawValue
        default: "other"
        }
    }
}

/// Serves `GET /metrics` (when the server has `ServerMetrics`) and records every HTTP
/// request, REST over HTTP/1.1 or h2c alike, before and after the wrapped handler.
struct MetricsHTTPHandler: HTTPRequestHandling {
    let inner: any HTTPRequestHandling
    let metrics: TransportMetrics
    let endpoint: ServerMetrics?

    func respond(to request: HTTPRequest) async -> HTTPResponse {
        let started = NIODeadline.now()
        let route = RESTRoute(request.route)
        var response: HTTPResponse
        if route == .metrics, let endpoint {
            response = await Self.scrape(request, endpoint)
        } else {
            response = await inner.respond(to: request)
        }
        let series = metrics.httpSeries(route: route, method: request.method, code: response.status.code)
        if case .stream(let produce) = response.body {
            response.body = .stream { writer in
                defer { series.record(since: started) }
                try await produce(writer)
            }
        } else {
            series.record(since: started)
        }
        return response
    }

    func checksHead(_ head: HTTPRequest) -> Bool {
        head.route != .metrics && inner.checksHead(head)
    }

    func verdictAtOnce(forHead head: HTTPRequest) -> HeadVerdict {
        guard head.route != .metrics else { return .admit }
        let started = NIODeadline.now()
        let verdict = inner.verdictAtOnce(forHead: head)
        if case .refuse(let response) = verdict {
            metrics.httpSeries(route: RESTRoute(head.route), method: head.method, code: response.status.code)
                .record(since: started)
        }
        return verdict
    }

    func refusal(forHead head: HTTPRequest) async -> HTTPResponse? {
        let started = NIODeadline.now()
        guard let response = await inner.refusal(forHead: head) else { return nil }
        metrics.httpSeries(route: RESTRoute(head.route), method: head.method, code: response.status.code)
            .record(since: started)
        return response
    }

    private static func scrape(_ request: HTTPRequest, _ endpoint: ServerMetrics) async -> HTTPResponse {
        guard request.method == .GET else { return RESTError.methodNotAllowed(allowed: [.GET]).response }
        return HTTPResponse(status: .ok, headers: ["content-type": ServerMetrics.contentType, "cache-control": "no-store"],
                            body: .full(ByteBuffer(bytes: await endpoint.scrape())))
    }
}
