public import NIOCore
public import NIOHTTP1

/// Limits of the HTTP/1.1 side of the port (the REST shim).
public struct HTTP1Configuration: Sendable {
    /// Largest request body accepted; larger is 413 and the connection is closed.
    public var maxRequestBodySize: Int = 4 * 1024 * 1024
    /// A connection must deliver a complete request (head and body) within this time after it
    /// opens or after the previous response ended; otherwise it is closed (408 when a request
    /// had begun). Covers both idle keep-alive connections and slow clients.
    public var idleTimeout: TimeAmount = .seconds(60)

    public init() {}
}

/// A complete HTTP request as the REST handlers see it.
public struct HTTPRequest: Sendable {
    public var method: HTTPMethod
    /// The path without the query string.
    public let path: String
    /// The REST shim's route of `path`, recognised once per request (the metrics, the head's
    /// check and the answer all ask for it).
    let route: RESTPath?
    /// Query parameters in order, percent-decoded.
    public var query: [(name: String, value: String)]
    public var headers: HTTPHeaders
    public var body: ByteBuffer

    public init(method: HTTPMethod, uri: String, headers: HTTPHeaders, body: ByteBuffer) {
        self.method = method
        self.headers = headers
        self.body = body
        let parts = uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        path = parts.first.map { String($0).removingPercentEncodingLeniently() } ?? "/"
        route = RESTPath(path)
        query = parts.count > 1 ? Self.parseQuery(String(parts[1])) : []
    }

    /// The first value of a query parameter.
    public func queryValue(_ name: String) -> String? {
        query.first { $0.name == name }?.value
    }

    static func parseQuery(_ text: String) -> [(name: String, value: String)] {
        text.split(separator: "&").compactMap { pair in
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let name = kv.first, !name.isEmpty else { return nil }
            let decode = { (s: Substring) in String(s).replacingOccurrences(of: "+", with: " ").removingPercentEncodingLeniently() }
            return (decode(name), kv.count > 1 ? decode(kv[1]) : "")
        }
    }
}

/// The REST shim's paths, recognised by comparing bytes: routing builds no strings but the ids
/// it keeps (splitting the path into Strings and comparing them by Character cost about 11,000
/// instructions).
enum RESTPath: Equatable {
    case metrics, run, logs, parameters, info
    case getRun(id: Substring)
    case stop(taskID: Substring)

    /// The one method the route answers (besides OPTIONS).
    var method: HTTPMethod {
        switch self {
        case .run, .stop: .POST
        case .metrics, .getRun, .logs, .parameters, .info: .GET
        }
    }

    init?(_ path: String) {
        switch path {
        case "/metrics": self = .metrics
        case "/v1/workflows/run": self = .run
        case "/v1/workflows/logs": self = .logs
        case "/v1/parameters": self = .parameters
        case "/v1/info": self = .info
        default:
            if let id = Self.segment(of: path, after: "/v1/workflows/run/", then: "") {
                self = .getRun(id: id)
            } else if let id = Self.segment(of: path, after: "/v1/workflows/tasks/", then: "/stop") {
                self = .stop(taskID: id)
            } else {
                return nil
            }
        }
    }

    /// The non-empty segment between `prefix` and `suffix` that fills the rest of `path`.
    private static func segment(of path: String, after prefix: StaticString, then suffix: StaticString) -> Substring? {
        let utf8 = path.utf8
        let prefixBytes = UnsafeBufferPointer(start: prefix.utf8Start, count: prefix.utf8CodeUnitCount)
        let suffixBytes = UnsafeBufferPointer(start: suffix.utf8Start, count: suffix.utf8CodeUnitCount)
        guard utf8.count > prefixBytes.count + suffixBytes.count, utf8.starts(with: prefixBytes) else { return nil }
        let start = utf8.index(utf8.startIndex, offsetBy: prefixBytes.count)
        let end = utf8.index(utf8.endIndex, offsetBy: -suffixBytes.count)
        guard utf8[end...].elementsEqual(suffixBytes), !utf8[start..<end].contains(UInt8(ascii: "/")) else { return nil }
        return path[start..<end]
    }
}

/// Streams a response body; each write resolves once the bytes are flushed (so a slow
/// reader slows the producer) and throws once the client has gone.
public struct HTTPBodyWriter: Sendable {
    let write: @Sendable (ByteBuffer) async throws -> Void

    public func write(_ bytes: ByteBuffer) async throws { try await write(bytes) }
    public func write(_ text: String) async throws { try await write(ByteBuffer(string: text)) }
}

/// A response: head, then a complete body or a streamed one.
public struct HTTPResponse: Sendable {
    public enum Body: Sendable {
        case full(ByteBuffer)
        /// Written with chunked encoding until the closure returns.
        case stream(@Sendable (HTTPBodyWriter) async throws -> Void)
    }

    public var status: HTTPResponseStatus
    public var headers: HTTPHeaders
    public var body: Body

    public init(status: HTTPResponseStatus, headers: HTTPHeaders = [:], body: Body) {
        self.status = status
        self.headers = headers
        self.body = body
    }
}

/// Answers HTTP/1.1 requests (the REST shim's router).
public protocol HTTPRequestHandling: Sendable {
    /// The response to a complete request. Cancelled when the client disconnects.
    func respond(to request: HTTPRequest) async -> HTTPResponse

    /// Whether `refusal(forHead:)` must be asked before the body of this request is read
    /// (`head` has an empty body).
    func checksHead(_ head: HTTPRequest) -> Bool

    /// The answer to a request refused from its head alone (a bad API key), before its body is
    /// read; nil admits it (`respond(to:)` then gets the whole request).
    func refusal(forHead head: HTTPRequest) async -> HTTPResponse?

    /// `refusal(forHead:)`'s answer when it can be given without waiting (a cached key);
    /// asked first, `.undecided` falls back to it.
    func verdictAtOnce(forHead head: HTTPRequest) -> HeadVerdict
}

/// A verdict on a request's head reached without waiting, or `undecided`.
public enum HeadVerdict: Sendable {
    case admit
    case refuse(HTTPResponse)
    case undecided
}

extension HTTPRequestHandling {
    public func checksHead(_ head: HTTPRequest) -> Bool { false }
    public func refusal(forHead head: HTTPRequest) async -> HTTPResponse? { nil }
    public func verdictAtOnce(forHead head: HTTPRequest) -> HeadVerdict { .undecided }
}

extension String {
    /// Percent-decoding that keeps malformed escapes as they are.
    func removingPercentEncodingLeniently() -> String {
        guard utf8.contains(UInt8(ascii: "%")) else { return self }  // (Foundation's contains(String) cost 6,000)
        var bytes: [UInt8] = []
        var iterator = Array(utf8)[...]
        while let byte = iterator.popFirst() {
            if byte == UInt8(ascii: "%"), iterator.count >= 2,
               let value = UInt8(String(decoding: iterator.prefix(2), as: UTF8.self), radix: 16) {
                bytes.append(value)
                iterator = iterator.dropFirst(2)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// Answers every HTTP/1.1 request with 404 (a server without the REST shim).
struct NotFoundHandler: HTTPRequestHandling {
    func respond(to request: HTTPRequest) async -> HTTPResponse { RESTError.notFound.response }
}
