import NIOCore
import NIOPosix
import Testing
@testable import RPCServer

/// Answers every request with the length of its body.
private struct BodyLength: HTTPRequestHandling {
    func respond(to request: HTTPRequest) async -> HTTPResponse {
        HTTPResponse(status: .ok, headers: [:], body: .full(ByteBuffer(string: "\(request.body.readableBytes)")))
    }
}

/// A plain TCP connection: writes what it is given and collects what the server sends until
/// the server closes.
private final class RawConnection: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    private var received = ByteBuffer()
    private let closed: EventLoopPromise<String>
    let channel: any Channel

    private init(channel: any Channel) {
        self.channel = channel
        closed = channel.eventLoop.makePromise()
    }

    static func connect(port: Int) async throws -> RawConnection {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(host: "127.0.0.1", port: port).get()
        let connection = RawConnection(channel: channel)
        try await channel.pipeline.addHandler(connection).get()
        return connection
    }

    func send(_ text: String) async throws {
        try await channel.writeAndFlush(ByteBuffer(string: text)).get()
    }

    /// Everything the server sent, once it closed the connection.
    func response() async throws -> String {
        try await closed.futureResult.get()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        received.writeBuffer(&bytes)
    }

    func channelInactive(context: ChannelHandlerContext) {
        closed.succeed(String(buffer: received))
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// Waits (bounded) until `condition` holds, polling the server's state.
private func waitUntil(_ what: String, _ condition: () -> Bool) async throws {
    let deadline = ContinuousClock.now + .seconds(30)
    while !condition() {
        guard ContinuousClock.now < deadline else {
            Issue.record("timed out waiting until \(what)")
            return
        }
        try await Task.sleep(for: .milliseconds(5))
    }
}

@Suite("HTTP/1.1 request bodies in the server-wide budget")
struct HTTP1BudgetTests {
    @Test("a body the server-wide budget has no room for is answered 503 server_busy; the bytes come back on close and on dispatch")
    func bodyOverServerBudget() async throws {
        var http = HTTP1Configuration()
        http.maxRequestBodySize = 1 << 20
        let budget = 64 * 1024
        try await withTestServer(services: [HealthService()], http: BodyLength(), httpConfiguration: http, configure: {
            $0.maxBufferedRequestBytes = budget
            $0.maxBufferedRequestBytesPerConnection = budget
        }) { server, port in
            // One connection holds 63 KiB of a body it never finishes (within the body limit).
            let holder = try await RawConnection.connect(port: port)
            try await holder.send("POST /hold HTTP/1.1\r\nHost: t\r\nContent-Length: 200000\r\n\r\n"
                                  + String(repeating: "a", count: 63 * 1024))
            try await waitUntil("the held body is buffered") { server.requestBudget.inUse == 63 * 1024 }

            // Another connection's 2 KiB body does not fit: 503 from the budget, not 413.
            let busy = try await RawConnection.connect(port: port)
            try await busy.send("POST /busy HTTP/1.1\r\nHost: t\r\nContent-Length: 2048\r\n\r\n"
                                + String(repeating: "b", count: 2048))
            let refused = try await busy.response()
            #expect(refused.hasPrefix("HTTP/1.1 503"), "\(refused)")
            #expect(refused.contains("server_busy"))
            #expect(server.requestBudget.inUse == 63 * 1024)

            // The holder leaves: its bytes go back; a complete request is then served, and its
            // body is released once handed to the handler.
            try await holder.channel.close()
            try await waitUntil("the held body is released") { server.requestBudget.inUse == 0 }
            let served = try await RawConnection.connect(port: port)
            try await served.send("POST /ok HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 2048\r\n\r\n"
                                  + String(repeating: "c", count: 2048))
            let answer = try await served.response()
            #expect(answer.hasPrefix("HTTP/1.1 200"), "\(answer)")
            #expect(answer.hasSuffix("\r\n\r\n2048"), "\(answer)")
            #expect(server.requestBudget.inUse == 0)
        }
    }
}
