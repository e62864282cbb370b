import Logging
import NIOCore
import NIOHTTP1

/// One HTTP/1.1 connection after the sniffer: collects each request (bounded by
/// `maxRequestBodySize`, and by the server-wide `RequestBufferBudget` while it is buffered:
/// 503 when the server holds too much), lets the handler answer it in a task, writes the response (streamed
/// with chunked encoding when it is a stream) and keeps the connection alive unless asked not to.
/// Requests are answered one at a time (NIO's pipelining assistance holds the next one back).
final class HTTP1ConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private enum State {
        /// Waiting for (the rest of) a request.
        case reading(head: HTTPRequestHead?, body: ByteBuffer)
        /// The head is being checked (its API key); the socket is not read meanwhile, and the
        /// parts already decoded wait here.
        case checking(head: HTTPRequestHead, held: [HTTPServerRequestPart], verdict: Task<Void, Never>)
        /// Answering a request.
        case responding(Task<Void, Never>)
        /// A 413 (or 503) was sent; the rest of the request is ignored and the connection closes.
        case discarding
    }

    private let configuration: HTTP1Configuration
    private let gracefulShutdownTimeout: TimeAmount
    private let handler: any HTTPRequestHandling
    private let logger: Logger
    private var state = State.reading(head: nil, body: ByteBuffer())
    private var readTimer: Scheduled<Void>?
    private var graceTimer: Scheduled<Void>?
    private var shuttingDown = false
    private var loopBound: NIOLoopBound<HTTP1ConnectionHandler>?
    /// Where handlers' tasks run: this connection's loop, or the global executor (nil).
    private var taskExecutor: EventLoopTaskExecutor?
    private let handlersOnEventLoop: Bool
    private var currentContext: ChannelHandlerContext?
    private let closeNote: ConnectionCloseNote?
    /// The server's budget of buffered request bytes (shared with the HTTP/2 connections).
    private let budget: RequestBufferBudget?
    /// Bytes of the body being read that are reserved in `budget`.
    private var reserved = 0

    /// `closeNote` learns why this handler closes the connection; `budget` bounds the bytes of
    /// bodies all connections buffer.
    init(configuration: HTTP1Configuration, gracefulShutdownTimeout: TimeAmount, handler: any HTTPRequestHandling,
         logger: Logger, closeNote: ConnectionCloseNote? = nil, budget: RequestBufferBudget? = nil,
         handlersOnEventLoop: Bool = true) {
        self.budget = budget
        self.handlersOnEventLoop = handlersOnEventLoop
        self.configuration = configuration
        self.gracefulShutdownTimeout = gracefulShutdownTimeout
        self.handler = handler
        self.logger = logger
        self.closeNote = closeNote
    }

    func handlerAdded(context: ChannelHandlerContext) {
        currentContext = context
        loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        if handlersOnEventLoop { taskExecutor = EventLoopTaskExecutor(context.eventLoop) }
        armReadTimer(context: context)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        dropBody()
        currentContext = nil
        readTimer?.cancel()
        graceTimer?.cancel()
        cancelTasks()
    }

    private func cancelTasks() {
        switch state {
        case .responding(let task), .checking(_, _, let task): task.cancel()
        case .reading, .discarding: break
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        dropBody()
        cancelTasks()
        readTimer?.cancel()
        graceTimer?.cancel()
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard event is GracefulShutdownEvent else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        shuttingDown = true
        closeNote?.note(.shutdown)
        if case .reading(nil, _) = state {
            context.close(promise: nil)
            return
        }
        let channel = context.channel
        graceTimer = context.eventLoop.scheduleTask(in: gracefulShutdownTimeout) { channel.close(promise: nil) }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("HTTP/1.1 connection error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        switch (state, part) {
        case (.discarding, _), (.responding, _):
            return
        case (.checking(let head, var held, let verdict), _):
            state = .checking(head: head, held: [], verdict: verdict)
            held.append(part)
            state = .checking(head: head, held: held, verdict: verdict)
        case (.reading, .head(let head)):
            if let length = head.headers.first(name: "content-length").flatMap(Int.init),
               length > configuration.maxRequestBodySize {
                rejectTooLarge(context: context)
                return
            }
            let request = HTTPRequest(method: head.method, uri: head.uri, headers: head.headers, body: ByteBuffer())
            if handler.checksHead(request) {
                switch handler.verdictAtOnce(forHead: request) {
                case .admit:
                    break
                case .refuse(let response):
                    closeNote?.note(.unauthenticated)
                    answerUnreadAndClose(response, context: context)
                    return
                case .undecided:
                    check(head: head, request, context: context)
                    return
                }
            }
            state = .reading(head: head, body: context.channel.allocator.buffer(capacity: 0))
        case (.reading(let head?, var body), .body(var chunk)):
            guard body.readableBytes + chunk.readableBytes <= configuration.maxRequestBodySize else {
                rejectTooLarge(context: context)
                return
            }
            guard budget?.reserve(chunk.readableBytes) ?? true else {
                closeNote?.note(.serverBusy)
                sendAndClose(.serverBusy, context: context)
                return
            }
            reserved += chunk.readableBytes
            state = .reading(head: nil, body: ByteBuffer())  // drop the reference before appending
            body.writeBuffer(&chunk)
            state = .reading(head: head, body: body)
        case (.reading(let head?, let body), .end):
            releaseBody()  // handed on: the connection no longer holds it
            readTimer?.cancel()
            readTimer = nil
            dispatch(HTTPRequest(method: head.method, uri: head.uri, headers: head.headers, body: body),
                     keepAlive: head.isKeepAlive, version: head.version, context: context)
        case (.reading(nil, _), .body), (.reading(nil, _), .end):
            return
        }
    }

    /// Asks the handler about the head (its API key) with the socket's reads stopped, so that
    /// the body of a refused request is never read.
    private func check(head: HTTPRequestHead, _ request: HTTPRequest, context: ChannelHandlerContext) {
        guard let loopBound else { return }
        context.channel.setOption(ChannelOptions.autoRead, value: false).whenFailure { _ in }
        let handler = self.handler
        let eventLoop = context.eventLoop
        let verdict = Task(executorPreference: taskExecutor) {
            let refusal = await handler.refusal(forHead: request)
            eventLoop.execute { loopBound.value.checked(refusal: refusal) }
        }
        state = .checking(head: head, held: [], verdict: verdict)
    }

    private func checked(refusal: HTTPResponse?) {
        guard let context = currentContext, case .checking(let head, let held, _) = state else { return }
        if let refusal {
            closeNote?.note(.unauthenticated)
            answerUnreadAndClose(refusal, context: context)
            return
        }
        state = .reading(head: head, body: context.channel.allocator.buffer(capacity: 0))
        for part in held { channelRead(context: context, data: NIOAny(part)) }
        context.channel.setOption(ChannelOptions.autoRead, value: true).whenFailure { _ in }
    }

    /// Answers a request whose body was not read, then closes: the output first, while what the
    /// peer still sends is read and dropped for a moment (closing with unread input would make
    /// the kernel reset the connection, and the peer could lose the answer).
    private func answerUnreadAndClose(_ response: HTTPResponse, context: ChannelHandlerContext) {
        state = .discarding
        readTimer?.cancel()
        context.write(wrapOutboundOut(.head(response.head(keepAlive: false, version: .http1_1))), promise: nil)
        if case .full(let body) = response.body, body.readableBytes > 0 {
            context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        }
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
            channel.close(mode: .output, promise: nil)
            channel.setOption(ChannelOptions.autoRead, value: true).whenFailure { _ in }
        }
        graceTimer?.cancel()
        graceTimer = context.eventLoop.scheduleTask(in: Self.lingerTime) { channel.close(promise: nil) }
    }

    /// How long a connection answered without reading its request keeps dropping input.
    static let lingerTime: TimeAmount = .seconds(2)

    /// Frees the body being read, then gives its bytes back to the server's budget (in that
    /// order: the budget emptying is when freed memory goes back to the system).
    private func dropBody() {
        if case .reading(let head, _) = state { state = .reading(head: head, body: ByteBuffer()) }
        releaseBody()
    }

    /// Gives the reserved bytes of the body being read back to the server's budget.
    private func releaseBody() {
        budget?.release(reserved)
        reserved = 0
    }

    private func rejectTooLarge(context: ChannelHandlerContext) {
        closeNote?.note(.bodyTooLarge)
        sendAndClose(.payloadTooLarge(limit: configuration.maxRequestBodySize), context: context)
    }

    private func armReadTimer(context: ChannelHandlerContext) {
        readTimer?.cancel()
        guard let loopBound else { return }
        readTimer = context.eventLoop.scheduleTask(in: configuration.idleTimeout) {
            loopBound.value.readTimedOut()
        }
    }

    /// No complete request in time: 408 when one had begun, otherwise a silent close.
    private func readTimedOut() {
        guard let context = currentContext else { return }
        if case .reading(_?, _) = state {
            closeNote?.note(.requestTimeout)
            sendAndClose(.requestTimeout, context: context)
        } else if case .reading = state {
            closeNote?.note(.idle)
            context.close(promise: nil)
        }
    }

    /// Answers with an error outside the request/response cycle and closes the connection.
    private func sendAndClose(_ error: RESTError, context: ChannelHandlerContext) {
        state = .discarding
        releaseBody()
        readTimer?.cancel()
        let response = error.response
        context.write(wrapOutboundOut(.head(response.head(keepAlive: false, version: .http1_1))), promise: nil)
        if case .full(let body) = response.body {
            context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        }
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
    }

    private func dispatch(_ request: HTTPRequest, keepAlive: Bool, version: HTTPVersion, context: ChannelHandlerContext) {
        let handler = self.handler
        let channel = context.channel
        let eventLoop = context.eventLoop
        guard let loopBound else { return }
        let task = Task(executorPreference: taskExecutor) {
            let response = await handler.respond(to: request)
            let keepAlive = keepAlive && !Task.isCancelled
            let head = response.head(keepAlive: keepAlive, version: version)
            switch response.body {
            case .full(let bytes):
                // Head, body and end in one flush.
                eventLoop.execute { loopBound.value.writeComplete(head: head, body: bytes, close: !keepAlive) }
            case .stream(let produce):
                do {
                    try await channel.writeAndFlush(HTTPServerResponsePart.head(head)).get()
                    try await produce(HTTPBodyWriter { bytes in
                        try await channel.writeAndFlush(HTTPServerResponsePart.body(.byteBuffer(bytes))).get()
                    })
                    eventLoop.execute { loopBound.value.finishResponse(close: !keepAlive) }
                } catch {
                    channel.close(promise: nil)
                }
            }
        }
        state = .responding(task)
    }

    /// Writes a complete response: head, body (if any) and end, flushed once.
    private func writeComplete(head: HTTPResponseHead, body: ByteBuffer, close: Bool) {
        guard let context = currentContext else { return }
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        if body.readableBytes > 0 { context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil) }
        finishResponse(close: close)
    }

    /// Writes the end of the response. The state changes first: NIO's pipelining assistance
    /// delivers the next request as soon as the end passes through it.
    private func finishResponse(close: Bool) {
        guard let context = currentContext else { return }
        state = .reading(head: nil, body: ByteBuffer())
        let close = close || shuttingDown
        let channel = context.channel
        let written = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if close {
            written.whenComplete { _ in channel.close(promise: nil) }
        } else if case .reading = state {
            armReadTimer(context: context)
        }
    }
}

extension HTTPResponse {
    /// The response head with transport headers: `Content-Length` for a complete body,
    /// chunked encoding for a stream, and `Connection: close` when the connection ends after it.
    func head(keepAlive: Bool, version: HTTPVersion) -> HTTPResponseHead {
        var headers = self.headers
        switch body {
        case .full(let bytes):
            headers.replaceOrAdd(name: "content-length", value: String(bytes.readableBytes))
        case .stream:
            headers.replaceOrAdd(name: "transfer-encoding", value: "chunked")
        }
        if !keepAlive { headers.replaceOrAdd(name: "connection", value: "close") }
        return HTTPResponseHead(version: version, status: status, headers: headers)
    }
}
