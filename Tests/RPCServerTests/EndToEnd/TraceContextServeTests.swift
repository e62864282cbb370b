import Codec
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import RPCClient
import Synchronization
import Testing

/// The `flowd` executable, built next to the test bundle by `swift build --build-tests`.
private let flowdBinary: URL = URL(fileURLWithPath: CommandLine.arguments[0])
    .deletingLastPathComponent().appendingPathComponent("flowd")

private let callerTraceID = "4bf92f3577b34da6a3ce929d0e0e4736"
private let callerTraceParent = "00-\(callerTraceID)-00f067aa0ba902b7-01"

/// A request as `RecordingHTTPServer` received it; the body as bytes (an OTLP export is protobuf).
private struct ReceivedRequest: Sendable {
    let method: String
    let uri: String
    let headers: [String: String]
    let body: [UInt8]
}

/// An HTTP/1.1 server on 127.0.0.1 (port 0) that records every request and answers 200 with
/// `contentType` and `body`: the service an `http` node calls, or an OTLP/HTTP collector.
private final class RecordingHTTPServer: Sendable {
    private let channel: any Channel
    private let log: ServerLog
    let port: Int

    var requests: [ReceivedRequest] { log.requests.withLock { $0 } }

    private init(channel: any Channel, log: ServerLog) {
        self.channel = channel
        self.log = log
        self.port = channel.localAddress!.port!
    }

    static func start(contentType: String, body: String) async throws -> RecordingHTTPServer {
        let server = ServerLog()
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(Handler(contentType: contentType, body: body) { request in
                        server.requests.withLock { $0.append(request) }
                    })
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return RecordingHTTPServer(channel: channel, log: server)
    }

    func shutdown() async {
        try? await channel.close()
    }

    private final class ServerLog: Sendable {
        let requests = Mutex<[ReceivedRequest]>([])
    }

    private final class Handler: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart

        let contentType: String
        let body: String
        let record: @Sendable (ReceivedRequest) -> Void
        var head: HTTPRequestHead?
        var received = ByteBuffer()

        init(contentType: String, body: String, record: @escaping @Sendable (ReceivedRequest) -> Void) {
            self.contentType = contentType
            self.body = body
            self.record = record
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                self.head = head
                received.clear()
            case .body(var chunk):
                received.writeBuffer(&chunk)
            case .end:
                guard let head else { return }
                var headers: [String: String] = [:]
                for header in head.headers { headers[header.name.lowercased()] = header.value }
                record(ReceivedRequest(method: head.method.rawValue, uri: head.uri, headers: headers,
                                       body: received.readableBytesView.map { $0 }))
                var responseHeaders = HTTPHeaders()
                responseHeaders.add(name: "content-type", value: contentType)
                responseHeaders.add(name: "content-length", value: "\(body.utf8.count)")
                context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: responseHeaders))),
                              promise: nil)
                context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            }
        }
    }
}

/// A real `flowd serve` with the example workflows, loopback on its egress allow-list.
private struct TracedServer {
    let server: ChildProcess
    let data: URL
    let host = "127.0.0.1"
    let port: Int

    static func start(_ extra: [String] = []) async throws -> TracedServer {
        let data = FileManager.default.temporaryDirectory.appendingPathComponent("flowd-trace-\(UUID().uuidString)")
        let server = try ChildProcess([flowdBinary.path, "serve", "--host", "127.0.0.1", "--port", "0", "--data-dir", data.path,
                                       "--workflows", "examples/workflows", "--egress-allow", "127.0.0.1"] + extra)
        #expect(await server.waitForLine(startingWith: "flowd: listening on "), "\(server.snapshot().output)")
        let port = try #require(server.snapshot().output.split(separator: "\n")
            .first { $0.hasPrefix("flowd: listening on ") }?.split(separator: ":").last.flatMap { Int($0) })
        return TracedServer(server: server, data: data, port: port)
    }

    func key(_ workflow: String) async throws -> String {
        let child = try ChildProcess([flowdBinary.path, "keys", "create", "--tenant", "demo", "--workflow", workflow,
                                      "--data-dir", data.path])
        return await child.finish(timeout: .seconds(60)).output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// `call-service` to `url`, blocking, over gRPC with `metadata`; the run as answered.
    func runOverGRPC(key: String, url: String, metadata: [(name: String, value: String)]) async throws -> FlowdV1.Run {
        let connection = try await GRPCClientConnection.connect(host: host, port: port)
        defer { Task { await connection.close() } }
        let response = try await connection.unary(
            "/flowd.v1.Workflows/RunWorkflow",
            FlowdV1.RunWorkflowRequest(workflow: "call-service", inputsJson: #"{"url": "\#(url)"}"#, responseMode: .blocking),
            metadata: [("authorization", "Bearer \(key)")] + metadata, timeout: .seconds(60),
            as: FlowdV1.RunWorkflowResponse.self)
        return response.run
    }

    /// `call-service` to `url`, blocking, over REST (curl, HTTP/1.1) with `headers`; the body.
    func runOverREST(key: String, url: String, headers: [String]) async throws -> String {
        let child = try ChildProcess(["curl", "-sS", "-X", "POST", "http://\(host):\(port)/v1/workflows/run",
                                      "-H", "Authorization: Bearer \(key)", "-H", "Content-Type: application/json"]
                                     + headers.flatMap { ["-H", $0] }
                                     + ["-d", #"{"inputs": {"url": "\#(url)"}, "response_mode": "blocking", "user": "u"}"#])
        return await child.finish(timeout: .seconds(60)).output
    }

    /// SIGTERM, and the exit: a graceful shutdown, which flushes the trace exporter.
    func stop() async -> (status: Int32, output: String) {
        server.terminate()
        let result = await server.finish(timeout: .seconds(60))
        try? FileManager.default.removeItem(at: data)
        return result
    }
}

/// The parts of a received `traceparent` (checked: version 00, lowercase hex, ids not zero).
private func traceParent(_ request: ReceivedRequest?) throws -> (traceID: String, parentID: String, flags: String) {
    let value = try #require(request?.headers["traceparent"], "no traceparent in \(String(describing: request?.headers))")
    let fields = value.split(separator: "-", omittingEmptySubsequences: false).map(String.init)
    try #require(fields.count == 4, "\(value)")
    let hex = Set("0123456789abcdef")
    #expect(fields[0] == "00" && fields[1].count == 32 && fields[2].count == 16 && fields[3].count == 2, "\(value)")
    #expect(fields.dropFirst().allSatisfy { $0.allSatisfy(hex.contains) }, "\(value)")
    #expect(fields[1] != String(repeating: "0", count: 32) && fields[2] != String(repeating: "0", count: 16), "\(value)")
    return (fields[1], fields[2], fields[3])
}

private func bytes(hex: String) -> [UInt8] {
    var result: [UInt8] = []
    var index = hex.startIndex
    while index < hex.endIndex {
        let next = hex.index(index, offsetBy: 2)
        result.append(UInt8(hex[index..<next], radix: 16)!)
        index = next
    }
    return result
}

private extension Array where Element == UInt8 {
    func contains(bytes needle: [UInt8]) -> Bool {
        guard !needle.isEmpty, count >= needle.count else { return false }
        return (0...(count - needle.count)).contains { Array(self[$0..<($0 + needle.count)]) == needle }
    }
}

@Suite("Trace context on the real binary: traceparent from gRPC and REST reaches the called service; OTLP export", .serialized)
struct TraceContextServeTests {
    @Test("gRPC metadata and a REST header carry the caller's trace id to the called service; without one a valid new trace")
    func propagated() async throws {
        let service = try await RecordingHTTPServer.start(contentType: "application/json", body: #"{"ok": true}"#)
        defer { Task { await service.shutdown() } }
        let served = try await TracedServer.start()
        let key = try await served.key("call-service")
        let base = "http://127.0.0.1:\(service.port)"

        let overGRPC = try await served.runOverGRPC(key: key, url: "\(base)/grpc", metadata: [
            ("traceparent", callerTraceParent), ("tracestate", "rojo=00f067aa0ba902b7"),
        ])
        #expect(overGRPC.status == .succeeded, "\(overGRPC.error)")
        let overREST = try await served.runOverREST(key: key, url: "\(base)/rest", headers: [
            "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ])
        #expect(overREST.contains(#""status": "succeeded""#) || overREST.contains(#""status":"succeeded""#), "\(overREST)")
        let untraced = try await served.runOverGRPC(key: key, url: "\(base)/none", metadata: [])
        #expect(untraced.status == .succeeded)
        // An invalid traceparent is ignored, not refused.
        let invalid = try await served.runOverGRPC(key: key, url: "\(base)/invalid", metadata: [
            ("traceparent", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        ])
        #expect(invalid.status == .succeeded, "\(invalid.error)")
        let log = await served.stop()
        #expect(log.status == 0, "\(log.output)")

        let requests = service.requests
        let grpc = try traceParent(requests.first { $0.uri == "/grpc" })
        #expect(grpc.traceID == callerTraceID)
        #expect(grpc.parentID != "00f067aa0ba902b7")
        #expect(grpc.flags == "01")
        #expect(requests.first { $0.uri == "/grpc" }?.headers["tracestate"] == "rojo=00f067aa0ba902b7")
        let rest = try traceParent(requests.first { $0.uri == "/rest" })
        #expect(rest.traceID == "0af7651916cd43dd8448eb211c80319c")
        #expect(rest.parentID != "b7ad6b7169203331")
        let none = try traceParent(requests.first { $0.uri == "/none" })
        #expect(![callerTraceID, "0af7651916cd43dd8448eb211c80319c"].contains(none.traceID))
        #expect(requests.first { $0.uri == "/none" }?.headers["tracestate"] == nil)
        let invalidParts = try traceParent(requests.first { $0.uri == "/invalid" })
        #expect(invalidParts.traceID != none.traceID)
    }

    @Test("--otlp-endpoint: the run's spans reach a loopback OTLP/HTTP collector, carrying the caller's trace id and the called service's parent span")
    func exported() async throws {
        let service = try await RecordingHTTPServer.start(contentType: "application/json", body: #"{"ok": true}"#)
        defer { Task { await service.shutdown() } }
        let collector = try await RecordingHTTPServer.start(contentType: "application/x-protobuf", body: "")
        defer { Task { await collector.shutdown() } }
        let served = try await TracedServer.start(["--otlp-endpoint", "http://127.0.0.1:\(collector.port)"])
        let key = try await served.key("call-service")

        let run = try await served.runOverGRPC(key: key, url: "http://127.0.0.1:\(service.port)/traced",
                                               metadata: [("traceparent", callerTraceParent)])
        #expect(run.status == .succeeded, "\(run.error)")
        // The graceful shutdown flushes the exporter: no waiting for its schedule.
        let log = await served.stop()
        #expect(log.status == 0, "\(log.output)")

        let called = try traceParent(service.requests.first { $0.uri == "/traced" })
        #expect(called.traceID == callerTraceID)
        let exports = collector.requests
        #expect(!exports.isEmpty, "nothing exported; server log:\n\(log.output)")
        #expect(exports.allSatisfy { $0.method == "POST" && $0.uri == "/v1/traces" })
        #expect(exports.allSatisfy { $0.headers["content-type"] == "application/x-protobuf" })
        let body = exports.flatMap(\.body)
        // The 16 raw bytes of the trace id, and the 8 of the node span the service saw as parent.
        #expect(body.contains(bytes: bytes(hex: callerTraceID)), "the caller's trace id is not in the export")
        #expect(body.contains(bytes: bytes(hex: called.parentID)), "the called service's parent span is not in the export")
        #expect(body.contains(bytes: Array("workflow call-service".utf8)))
        #expect(body.contains(bytes: Array("node call".utf8)))
    }

    @Test("an --otlp-endpoint that is not an http or https URL is refused at start")
    func invalidEndpoint() async throws {
        let data = FileManager.default.temporaryDirectory.appendingPathComponent("flowd-trace-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: data) }
        let bad = try ChildProcess([flowdBinary.path, "serve", "--port", "0", "--workflows", "examples/workflows",
                                    "--data-dir", data.path, "--otlp-endpoint", "127.0.0.1:4318"])
        let refused = await bad.finish(timeout: .seconds(60))
        #expect(refused.status != 0)
        #expect(refused.output.contains("--otlp-endpoint must be an http or https URL"), "\(refused.output)")
    }
}
