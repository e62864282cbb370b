import Engine
import Workflows
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization
import Testing

/// The repository's `examples/workflows`.
let examplesDirectory = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("examples/workflows", isDirectory: true)

/// Writes `files` (name → text) to a fresh directory and loads it as a catalog.
func loadCatalog(_ files: [String: String]) throws -> WorkflowCatalog {
    try withTemporaryFiles(files) { directory in try WorkflowCatalog.load(directory: directory) }
}

/// The problems loading `files` reports (none when it loads).
func loadProblems(_ files: [String: String]) throws -> [WorkflowDefinitionError] {
    try withTemporaryFiles(files) { directory in
        do {
            _ = try WorkflowCatalog.load(directory: directory)
            return []
        } catch let error as WorkflowCatalogError {
            return error.problems
        }
    }
}

func withTemporaryFiles<T>(_ files: [String: String], _ body: (URL) throws -> T) throws -> T {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("flowd-workflows-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    for (name, text) in files { try Data(text.utf8).write(to: directory.appendingPathComponent(name)) }
    return try body(directory)
}

/// An executable shell script in a fresh directory; removed by `remove()`.
struct Script {
    let directory: URL
    let path: String

    init(_ body: String) throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("flowd-exec-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let url = directory.appendingPathComponent("node.sh")
        // Written through a close-on-exec descriptor: a process another test spawns meanwhile
        // would otherwise inherit it open for writing, and executing the script then fails
        // with ETXTBSY for as long as that process lives (a test waiting for the script's
        // child then waits forever).
        let fd = open(url.path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o755)
        guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        defer { close(fd) }
        let bytes = Array(("#!/bin/sh\n" + body + "\n").utf8)
        guard bytes.withUnsafeBytes({ write(fd, $0.baseAddress, $0.count) }) == bytes.count else {
            throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO)
        }
        path = url.path
    }

    func file(_ name: String) -> String { directory.appendingPathComponent(name).path }

    func remove() { try? FileManager.default.removeItem(at: directory) }
}

/// Whether a process with this id exists (zombies included).
func processExists(_ pid: pid_t) -> Bool {
    kill(pid, 0) == 0 || errno != ESRCH
}

/// Collects what a runner emits.
final class EventLog: Sendable {
    private let entries = Mutex<[(event: NewEvent, steps: Int)]>([])

    var sink: WorkflowRunner.EventSink {
        { events, steps in
            self.entries.withLock { entries in
                for (offset, event) in events.enumerated() { entries.append((event, offset == events.count - 1 ? steps : 0)) }
            }
        }
    }

    var events: [NewEvent] { entries.withLock { $0.map(\.event) } }
    var steps: Int { entries.withLock { $0.reduce(0) { $0 + $1.steps } } }

    /// The node events' payloads, in order.
    func payloads() throws -> [NodeEventPayload] {
        try events.map { try NodeEventPayload(json: $0.payloadJSON) }
    }

    /// The last `node_finished` payload of `node`.
    func finished(_ node: String) throws -> NodeEventPayload? {
        let pairs = Array(zip(events, try payloads()))
        return pairs.last { $0.0.kind == .nodeFinished && $0.1.nodeID == node }?.1
    }
}

/// Runs one workflow given as YAML directly on a runner (no Engine), collecting its events.
func runWorkflow(_ yaml: String, inputs: String = "{}", configuration: WorkflowRunnerConfiguration = WorkflowRunnerConfiguration(),
                 log: EventLog = EventLog(), clock: any EngineClock = SystemClock(),
                 resolver: any HostResolving = SystemResolver()) async throws -> ExecutionResult {
    let definition = try WorkflowCatalog.parse(yaml, file: "test.yaml")
    let runner = WorkflowRunner(catalog: try WorkflowCatalog(definitions: [definition]), configuration: configuration,
                                resolver: resolver, clock: clock)
    return try await runner.run(definition, inputs: try definition.validateInputs(json: inputs), emit: log.sink)
}

extension WorkflowRunnerConfiguration {
    /// The default configuration with loopback on the egress allow-list: for the tests whose
    /// http nodes call a server on 127.0.0.1 (as an operator would say with
    /// `--egress-allow 127.0.0.1`).
    static var loopbackAllowed: WorkflowRunnerConfiguration {
        var configuration = WorkflowRunnerConfiguration()
        configuration.egress = try! EgressPolicy(allow: ["127.0.0.1"])
        return configuration
    }
}

/// The JSON object of a run's outputs.
func outputs(_ result: ExecutionResult) throws -> [String: JSONValue] {
    let text = try #require(result.outputsJSON)
    return try #require(try JSONValue(parsing: text).objectValue)
}

/// A request as the loopback server saw it.
struct RecordedRequest: Sendable {
    let method: String
    let uri: String
    let headers: [String: String]
    let body: String
}

/// An HTTP/1.1 server on 127.0.0.1 with a port of its own, answering with `respond`; nil
/// leaves the request unanswered (for timeouts).
final class LoopbackHTTPServer: Sendable {
    struct Reply: Sendable {
        var status: Int
        var contentType: String
        var body: String
        var headers: [(String, String)] = []

        static func json(_ body: String, status: Int = 200) -> Reply { Reply(status: status, contentType: "application/json", body: body) }
        static func text(_ body: String, status: Int) -> Reply { Reply(status: status, contentType: "text/plain", body: body) }
        /// 302 Found to `location`.
        static func redirect(to location: String) -> Reply {
            Reply(status: 302, contentType: "text/plain", body: "", headers: [("location", location)])
        }
    }

    private let channel: any Channel
    private let log: RequestLog
    let port: Int

    var baseURL: String { "http://127.0.0.1:\(port)" }
    var requests: [RecordedRequest] { log.requests.withLock { $0 } }

    private init(channel: any Channel, log: RequestLog) {
        self.channel = channel
        self.log = log
        self.port = channel.localAddress!.port!
    }

    static func start(_ respond: @escaping @Sendable (RecordedRequest) -> Reply?) async throws -> LoopbackHTTPServer {
        let log = RequestLog()
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(Handler(respond: { request in
                        log.requests.withLock { $0.append(request) }
                        return respond(request)
                    }))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return LoopbackHTTPServer(channel: channel, log: log)
    }

    func shutdown() async {
        try? await channel.close()
    }

    private final class RequestLog: Sendable {
        let requests = Mutex<[RecordedRequest]>([])
    }

    private final class Handler: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart

        let respond: @Sendable (RecordedRequest) -> Reply?
        var head: HTTPRequestHead?
        var body = ByteBuffer()

        init(respond: @escaping @Sendable (RecordedRequest) -> Reply?) { self.respond = respond }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                self.head = head
                body.clear()
            case .body(var chunk):
                body.writeBuffer(&chunk)
            case .end:
                guard let head else { return }
                var headers: [String: String] = [:]
                for header in head.headers { headers[header.name.lowercased()] = header.value }
                let request = RecordedRequest(method: head.method.rawValue, uri: head.uri, headers: headers, body: String(buffer: body))
                guard let reply = respond(request) else { return }
                var responseHeaders = HTTPHeaders()
                responseHeaders.add(name: "content-type", value: reply.contentType)
                responseHeaders.add(name: "content-length", value: "\(reply.body.utf8.count)")
                for (name, value) in reply.headers { responseHeaders.add(name: name, value: value) }
                context.write(wrapOutboundOut(.head(HTTPResponseHead(
                    version: .http1_1, status: HTTPResponseStatus(statusCode: reply.status), headers: responseHeaders))), promise: nil)
                context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: reply.body)))), promise: nil)
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            }
        }
    }
}

/// Waits (on a thread of its own: open and read block) until a writer has opened the FIFO,
/// written and closed it; what it wrote, as a pid.
func readPID(fromFIFO path: String) async -> pid_t? {
    await withCheckedContinuation { continuation in
        Thread {
            let fd = open(path, O_RDONLY)
            guard fd >= 0 else { return continuation.resume(returning: nil) }
            defer { close(fd) }
            var bytes: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 64)
            while true {
                let count = read(fd, &buffer, buffer.count)
                if count <= 0 { break }
                bytes += buffer[0..<count]
            }
            continuation.resume(returning: pid_t(String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)))
        }.start()
    }
}
