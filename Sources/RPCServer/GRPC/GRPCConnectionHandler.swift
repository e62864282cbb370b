import NGHTTP2Support
import Codec
import Logging
import NIOCore
import NIOHTTP1

/// Sent down a connection's pipeline to start a graceful shutdown.
struct GracefulShutdownEvent: Sendable {}

/// One HTTP/2 connection: an nghttp2 session fed from the channel, gRPC calls routed to
/// handlers that run as Swift tasks, and their responses written back.
///
/// Everything here runs on the channel's event loop. Handlers run elsewhere and reach the
/// connection through `CallSink`, which hops back to the loop.
final class GRPCConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// One accepted call.
    private struct Call {
        var machine: ServerCallStateMachine
        let handler: RPCHandler
        let context: ServerContext
        var task: Task<Void, Never>?
        var deadline: Scheduled<Void>?
        var waitingWriters: [CheckedContinuation<Void, any Error>] = []
        /// A bidirectional-streaming call's request messages, until the client half-closes.
        var inbound: AsyncThrowingStream<[UInt8], any Error>.Continuation?
        let metrics: MethodMetrics
        let started: NIODeadline
        var ended = false

        /// Counts the call's end once, with the status the client sees.
        mutating func end(_ code: StatusCode) {
            guard !ended else { return }
            ended = true
            metrics.record(code, since: started)
        }
    }

    /// Graceful shutdown: notice (GOAWAY max id + PING), then the final GOAWAY once the PING is acknowledged.
    private enum ShutdownState {
        case active
        case noticeSent
        case goAwaySent
        /// GOAWAY(ENHANCE_YOUR_CALM) sent; the peer is ignored until the connection closes.
        case closingForAbuse
    }

    private static let shutdownPingOpaque: UInt64 = 0x666C_6F77_6420_4741  // "flowd GA"

    /// A plain HTTP request on this connection (the REST shim over h2c).
    private struct HTTPCall {
        var method: String
        var uri: String
        var headers: HTTPHeaders
        var body = ByteBuffer()
        var rejected = false
        var task: Task<Void, Never>?
        var waitingWriters: [CheckedContinuation<Void, any Error>] = []
    }

    private let configuration: ServerConfiguration
    private let router: RPCRouter
    private let http: (any HTTPRequestHandling)?
    private let httpConfiguration: HTTP1Configuration
    private var httpCalls: [Int32: HTTPCall] = [:]
    private var logger: Logger
    private let limits = DecodingLimits()

    private var session: NGHTTP2Session?
    private var context: ChannelHandlerContext?
    private var loopBound: NIOLoopBound<GRPCConnectionHandler>?
    private var calls: [Int32: Call] = [:]
    private var runningHandlers = 0
    private var output = ByteBuffer()
    private var flushScheduled = false
    private var shutdownState = ShutdownState.active
    private var abuse: AbuseGuard
    private var handshakeTimer: Scheduled<Void>?
    private var idleTimer: Scheduled<Void>?
    private var graceTimer: Scheduled<Void>?
    private var peer = "unknown"
    private let metrics: TransportMetrics
    private let closeNote: ConnectionCloseNote?

    /// `http` answers plain HTTP requests under `/v1/` and `/metrics` (the REST shim over
    /// h2c); without it, every non-gRPC request gets 415. `metrics` counts the calls;
    /// `closeNote` learns why this handler closes the connection.
    init(configuration: ServerConfiguration, router: RPCRouter, logger: Logger,
         http: (any HTTPRequestHandling)? = nil, httpConfiguration: HTTP1Configuration = HTTP1Configuration(),
         metrics: TransportMetrics = .disabled, closeNote: ConnectionCloseNote? = nil) {
        self.configuration = configuration
        self.router = router
        self.http = http
        self.httpConfiguration = httpConfiguration
        self.logger = logger
        self.abuse = AbuseGuard(configuration: configuration)
        self.metrics = metrics
        self.closeNote = closeNote
    }

    // MARK: Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        peer = context.channel.remoteAddress?.description ?? "unknown"
        logger[metadataKey: "peer"] = "\(peer)"
        do {
            session = try NGHTTP2Session(settings: .init(
                maxConcurrentStreams: UInt32(configuration.maxConcurrentStreams),
                initialWindowSize: UInt32(configuration.initialStreamWindowSize),
                connectionWindowSize: Int32(configuration.connectionWindowSize),
                maxHeaderListSize: UInt32(configuration.maxHeaderListSize),
                maxFieldCount: configuration.maxHeaderFields,
                resetBurst: UInt64(configuration.resetStreamBurst),
                resetRatePerSecond: UInt64(configuration.resetStreamRatePerSecond)))
        } catch {
            logger.error("could not create an HTTP/2 session", metadata: ["error": "\(error)"])
            closeNote?.note(.protocolError)
            context.close(promise: nil)
            return
        }
        if context.channel.isActive { startHandshakeTimer(context: context) }
        flushNow()
    }

    func channelActive(context: ChannelHandlerContext) {
        startHandshakeTimer(context: context)
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        cancelAllCalls()
        for (_, call) in httpCalls { cancel(call) }
        httpCalls.removeAll()
        for timer in [handshakeTimer, idleTimer, graceTimer] { timer?.cancel() }
        session = nil
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        cancelAllCalls()
        for (_, call) in httpCalls { cancel(call) }
        httpCalls.removeAll()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let session else { return }
        let buffer = unwrapInboundIn(data)
        do {
            try buffer.withUnsafeReadableBytes { bytes throws(HTTP2SessionError) in try session.receive(bytes) }
        } catch {
            logger.debug("closing the connection after an HTTP/2 error", metadata: ["error": "\(error)"])
            closeNote?.note(.protocolError)
            flushNow()
            context.close(promise: nil)
            return
        }
        handleEvents()
    }

    /// Acts on what nghttp2 recorded, after `mem_recv`/`mem_send` returned.
    private func handleEvents() {
        guard let session else { return }
        for event in session.takeEvents() {
            if case .closingForAbuse = shutdownState { break }
            handle(event)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        flushNow()
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { flushNow() }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is GracefulShutdownEvent {
            beginGracefulShutdown()
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("connection error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    // MARK: HTTP/2 events

    private func handle(_ event: HTTP2Event) {
        switch event {
        case .requestHeaders(let streamID, let fields, let tooLarge, let endStream):
            receiveHeaders(streamID: streamID, fields: fields, tooLarge: tooLarge, endStream: endStream)
        case .data(let streamID, let bytes):
            abuse.resetEmptyFrames()
            if httpCalls[streamID] != nil {
                receiveHTTPBody(streamID: streamID, bytes: bytes)
                return
            }
            guard calls[streamID] != nil else { return }
            let action = calls[streamID]!.machine.receiveData(bytes)
            perform(action, streamID: streamID)
        case .endOfRequest(let streamID):
            if httpCalls[streamID] != nil {
                startHTTPHandler(streamID: streamID)
                return
            }
            guard calls[streamID] != nil else { return }
            let action = calls[streamID]!.machine.receiveEnd()
            perform(action, streamID: streamID)
        case .emptyDataFrame:
            enforce(abuse.emptyDataFrame())
        case .streamClosed(let streamID, _):
            if var call = calls.removeValue(forKey: streamID) {
                call.end(.cancelled)
                cancel(call)
            }
            if let call = httpCalls.removeValue(forKey: streamID) { cancel(call) }
            if calls.isEmpty && httpCalls.isEmpty { startIdleTimer() }
        case .settings:
            if let handshakeTimer {
                handshakeTimer.cancel()
                self.handshakeTimer = nil
                if calls.isEmpty { startIdleTimer() }
            }
            enforce(abuse.settingsFrame())
        case .ping:
            enforce(abuse.ping())
        case .pingAck(let opaque):
            if opaque == Self.shutdownPingOpaque, case .noticeSent = shutdownState { sendFinalGoAway() }
        case .invalidFrame:
            enforce(abuse.invalidFrame())
        }
    }

    private func receiveHeaders(streamID: Int32, fields: [HeaderField], tooLarge: Bool, endStream: Bool) {
        let started = NIODeadline.now()
        idleTimer?.cancel()
        idleTimer = nil
        if tooLarge {
            rejectUnrouted(streamID: streamID, since: started, EarlyResponse(
                code: .resourceExhausted,
                message: "request headers exceed \(configuration.maxHeaderListSize) bytes or \(configuration.maxHeaderFields) fields"))
            return
        }
        if http != nil, let path = fields.first(where: { $0.name == ":path" })?.value, Self.isHTTPPath(path),
           !RequestHead.isGRPCContentType(fields.first(where: { $0.name == "content-type" })?.value ?? "") {
            beginHTTPCall(streamID: streamID, fields: fields, endStream: endStream)
            return
        }
        let head: RequestHead
        switch RequestHead.parse(fields) {
        case .rejected(let early):
            rejectUnrouted(streamID: streamID, since: started, early)
            return
        case .accepted(let parsed):
            head = parsed
        }
        let handler: RPCHandler
        switch router.lookup(head.path) {
        case .found(let found):
            handler = found
        case .unknownMethod:
            rejectUnrouted(streamID: streamID, since: started,
                           EarlyResponse(code: .unimplemented, message: "unknown method \(head.path)"))
            return
        case .unknownService(let service):
            rejectUnrouted(streamID: streamID, since: started,
                           EarlyResponse(code: .unimplemented, message: "unknown service \(service)"))
            return
        case .malformedPath:
            rejectUnrouted(streamID: streamID, since: started,
                           EarlyResponse(code: .unimplemented, message: "malformed method name \"\(head.path)\""))
            return
        }
        let parts = head.path.split(separator: "/")
        let serverContext = ServerContext(
            descriptor: MethodDescriptor(service: String(parts[0]), method: String(parts[1])),
            metadata: head.metadata,
            deadline: head.timeout.map { NIODeadline.now() + $0 },
            peer: peer)
        let bidirectional = handler.kind == .bidirectionalStreaming
        var call = Call(machine: ServerCallStateMachine(maxMessageSize: configuration.maxReceiveMessageSize,
                                                        bidirectional: bidirectional),
                        handler: handler, context: serverContext,
                        metrics: handler.metrics ?? metrics.unknownMethod, started: started)
        if let timeout = head.timeout, let context, let loopBound {
            call.deadline = context.eventLoop.scheduleTask(in: timeout) {
                loopBound.value.deadlineExpired(streamID: streamID)
            }
        }
        calls[streamID] = call
        if bidirectional {
            // The handler runs from the headers on and reads the messages as they come; a
            // client that sends more than it reads is stopped at the bound.
            let (messages, inbound) = AsyncThrowingStream<[UInt8], any Error>.makeStream(
                bufferingPolicy: .bufferingOldest(configuration.maxBufferedRequestMessages))
            calls[streamID]!.inbound = inbound
            startHandler(streamID: streamID, request: .stream(messages))
        }
        if endStream, calls[streamID] != nil {
            let action = calls[streamID]!.machine.receiveEnd()
            perform(action, streamID: streamID)
        }
    }

    private func perform(_ action: ServerCallStateMachine.ReceiveAction, streamID: Int32) {
        switch action {
        case .none:
            break
        case .reject(let early):
            calls[streamID]?.deadline?.cancel()
            calls[streamID]?.end(early.code)
            sendEarlyResponse(streamID: streamID, early)
        case .startHandler(let request):
            startHandler(streamID: streamID, request: .single(request))
        case .deliver(let messages):
            guard let inbound = calls[streamID]?.inbound else { return }
            for message in messages {
                if case .dropped = inbound.yield(message) {
                    calls[streamID]!.inbound = nil
                    inbound.finish(throwing: RPCError(
                        code: .resourceExhausted,
                        message: "more than \(configuration.maxBufferedRequestMessages) request messages are waiting to be read"))
                    return
                }
            }
        case .endOfRequests:
            calls[streamID]?.inbound?.finish()
            calls[streamID]?.inbound = nil
        case .failRequests(let early):
            calls[streamID]?.inbound?.finish(throwing: RPCError(code: early.code, message: early.message))
            calls[streamID]?.inbound = nil
        }
    }

    private func startHandler(streamID: Int32, request: RequestInput) {
        guard let call = calls[streamID], let context, let loopBound else { return }
        guard runningHandlers < configuration.maxRunningHandlersPerConnection else {
            calls[streamID]?.inbound?.finish(throwing: CancellationError())
            calls[streamID]?.inbound = nil
            calls[streamID]?.machine.streamClosed()
            calls[streamID]?.end(.unavailable)  // what clients make of REFUSED_STREAM
            session?.resetStream(streamID: streamID, errorCode: .refusedStream)
            scheduleFlush()
            return
        }
        runningHandlers += 1
        let sink = CallSink(streamID: streamID, eventLoop: context.eventLoop, connection: loopBound)
        let handler = call.handler
        let serverContext = call.context
        let limits = self.limits
        calls[streamID]!.task = Task {
            await handler.run(request: request, context: serverContext, limits: limits, sink: sink)
        }
    }

    private func deadlineExpired(streamID: Int32) {
        guard calls[streamID] != nil else { return }
        let action = calls[streamID]!.machine.deadlineExpired()
        calls[streamID]!.end(.deadlineExceeded)
        calls[streamID]!.task?.cancel()
        calls[streamID]!.inbound?.finish(throwing: CancellationError())
        calls[streamID]!.inbound = nil
        failWaitingWriters(streamID: streamID)
        switch action {
        case .sendDeadlineExceeded:
            sendEarlyResponse(streamID: streamID, EarlyResponse(code: .deadlineExceeded, message: "Deadline Exceeded"))
        case .resetStream:
            session?.resetStream(streamID: streamID, errorCode: .cancel)
            scheduleFlush()
        case .none:
            break
        }
    }

    /// Ends every call of a connection that is going away.
    private func cancelAllCalls() {
        for (_, var call) in calls {
            call.end(.cancelled)
            cancel(call)
        }
        calls.removeAll()
    }

    /// Answers a request that reached no method (counted as method `unknown`).
    private func rejectUnrouted(streamID: Int32, since started: NIODeadline, _ early: EarlyResponse) {
        metrics.unknownMethod.record(early.code, since: started)
        sendEarlyResponse(streamID: streamID, early)
    }

    /// Plain HTTP over h2c: the REST shim's paths and the metrics.
    private static func isHTTPPath(_ path: String) -> Bool {
        path.hasPrefix("/v1/") || path == "/metrics" || path.hasPrefix("/metrics?")
    }

    private func cancel(_ call: Call) {
        call.inbound?.finish(throwing: CancellationError())
        call.task?.cancel()
        call.deadline?.cancel()
        for writer in call.waitingWriters { writer.resume(throwing: CancellationError()) }
    }

    private func failWaitingWriters(streamID: Int32) {
        guard let writers = calls[streamID]?.waitingWriters, !writers.isEmpty else { return }
        calls[streamID]!.waitingWriters = []
        for writer in writers { writer.resume(throwing: CancellationError()) }
    }

    // MARK: Plain HTTP over h2c (the REST shim)

    private func beginHTTPCall(streamID: Int32, fields: [HeaderField], endStream: Bool) {
        var headers = HTTPHeaders()
        var method = "GET", uri = "/"
        for field in fields {
            switch field.name {
            case ":method": method = field.value
            case ":path": uri = field.value
            case ":authority": headers.add(name: "host", value: field.value)
            case let name where name.hasPrefix(":"): continue
            default: headers.add(name: field.name, value: field.value)
            }
        }
        httpCalls[streamID] = HTTPCall(method: method, uri: uri, headers: headers)
        if endStream { startHTTPHandler(streamID: streamID) }
    }

    private func receiveHTTPBody(streamID: Int32, bytes: [UInt8]) {
        guard var call = httpCalls[streamID], !call.rejected else { return }
        if call.body.readableBytes + bytes.count > httpConfiguration.maxRequestBodySize {
            call.rejected = true
            call.body = ByteBuffer()
            httpCalls[streamID] = call
            sendHTTPHead(streamID: streamID, RESTError.payloadTooLarge(limit: httpConfiguration.maxRequestBodySize).response)
            return
        }
        call.body.writeBytes(bytes)
        httpCalls[streamID] = call
    }

    private func startHTTPHandler(streamID: Int32) {
        guard let call = httpCalls[streamID], !call.rejected, call.task == nil, let http, let context, let loopBound else { return }
        guard runningHandlers < configuration.maxRunningHandlersPerConnection else {
            session?.resetStream(streamID: streamID, errorCode: .refusedStream)
            scheduleFlush()
            return
        }
        runningHandlers += 1
        let request = HTTPRequest(method: HTTPMethod(rawValue: call.method), uri: call.uri, headers: call.headers, body: call.body)
        let sink = HTTPStreamSink(streamID: streamID, eventLoop: context.eventLoop, connection: loopBound)
        httpCalls[streamID]!.task = Task {
            let response = await http.respond(to: request)
            sink.head(response)
            if case .stream(let produce) = response.body {
                try? await produce(HTTPBodyWriter(write: { bytes in try await sink.write(bytes) }))
                sink.finish()
            }
            sink.done()
        }
    }

    /// Submits the response head; a complete body goes with it.
    fileprivate func sendHTTPHead(streamID: Int32, _ response: HTTPResponse) {
        guard httpCalls[streamID] != nil, let session else { return }
        var fields = [HeaderField(name: ":status", value: String(response.status.code))]
        for (name, value) in response.headers {
            let lowered = name.lowercased()
            guard !["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "content-length"]
                .contains(lowered) else { continue }
            fields.append(HeaderField(name: lowered, value: value))
        }
        var body: ByteBuffer?
        if case .full(let bytes) = response.body {
            fields.append(HeaderField(name: "content-length", value: String(bytes.readableBytes)))
            body = bytes
        }
        let endStream = body.map { $0.readableBytes == 0 } ?? false
        do {
            try session.sendResponseHeaders(streamID: streamID, fields: fields, endStream: endStream)
        } catch {
            logger.debug("could not send an HTTP response", metadata: ["stream": "\(streamID)", "error": "\(error)"])
            return
        }
        if let body, body.readableBytes > 0 {
            session.sendData(streamID: streamID, bytes: Array(body.readableBytesView))
            session.finishBody(streamID: streamID)
        }
        scheduleFlush()
    }

    fileprivate func sendHTTPBody(streamID: Int32, bytes: ByteBuffer, writer: CheckedContinuation<Void, any Error>) {
        guard httpCalls[streamID] != nil, let session else {
            writer.resume(throwing: CancellationError())
            return
        }
        session.sendData(streamID: streamID, bytes: Array(bytes.readableBytesView))
        scheduleFlush()
        if session.bufferedOutboundBytes(streamID: streamID) > configuration.streamWriteHighWaterMark {
            httpCalls[streamID]!.waitingWriters.append(writer)
        } else {
            writer.resume()
        }
    }

    fileprivate func finishHTTPBody(streamID: Int32) {
        guard httpCalls[streamID] != nil else { return }
        session?.finishBody(streamID: streamID)
        scheduleFlush()
    }

    fileprivate func httpHandlerFinished() {
        runningHandlers -= 1
    }

    private func cancel(_ call: HTTPCall) {
        call.task?.cancel()
        for writer in call.waitingWriters { writer.resume(throwing: CancellationError()) }
    }

    // MARK: Responses (called on the loop by CallSink)

    fileprivate func sendHeaders(streamID: Int32, metadata: Metadata) {
        guard calls[streamID] != nil, calls[streamID]!.machine.sendHeaders() else { return }
        submitResponseHeaders(streamID: streamID, metadata: metadata)
        scheduleFlush()
    }

    fileprivate func sendMessage(streamID: Int32, bytes: [UInt8], writer: CheckedContinuation<Void, any Error>?) {
        guard calls[streamID] != nil else {
            writer?.resume(throwing: CancellationError())
            return
        }
        switch calls[streamID]!.machine.sendMessage() {
        case .callClosed:
            writer?.resume(throwing: CancellationError())
            return
        case .sendHeadersThenMessage:
            submitResponseHeaders(streamID: streamID, metadata: Metadata())
        case .sendMessage:
            break
        }
        var framed: [UInt8] = []
        GRPCFraming.appendFrame(bytes, to: &framed)
        session?.sendData(streamID: streamID, bytes: framed)
        scheduleFlush()
        guard let writer else { return }
        if (session?.bufferedOutboundBytes(streamID: streamID) ?? 0) > configuration.streamWriteHighWaterMark {
            calls[streamID]!.waitingWriters.append(writer)
        } else {
            writer.resume()
        }
    }

    fileprivate func finish(streamID: Int32, response: UnaryResponse?, status: RPCStatus, metadata: Metadata) {
        runningHandlers -= 1
        guard calls[streamID] != nil else { return }
        calls[streamID]!.end(status.code)
        if let response {
            sendHeaders(streamID: streamID, metadata: response.metadata)
            sendMessage(streamID: streamID, bytes: response.message, writer: nil)
        }
        calls[streamID]!.deadline?.cancel()
        calls[streamID]!.inbound?.finish()
        calls[streamID]!.inbound = nil
        let trailers = Self.trailerFields(status: status, metadata: metadata)
        switch calls[streamID]!.machine.finish() {
        case .sendTrailersOnly:
            sendTrailersOnly(streamID: streamID, httpStatus: 200, trailers: trailers)
        case .sendTrailers:
            session?.sendTrailers(streamID: streamID, fields: trailers)
            scheduleFlush()
        case .none:
            break
        }
    }

    private func submitResponseHeaders(streamID: Int32, metadata: Metadata) {
        var fields = [HeaderField(name: ":status", value: "200"),
                      HeaderField(name: "content-type", value: "application/grpc")]
        fields.append(contentsOf: metadata.headerFields)
        do {
            try session?.sendResponseHeaders(streamID: streamID, fields: fields, endStream: false)
        } catch {
            logger.debug("could not send response headers", metadata: ["stream": "\(streamID)", "error": "\(error)"])
        }
    }

    private func sendEarlyResponse(streamID: Int32, _ early: EarlyResponse) {
        var trailers = Self.trailerFields(status: RPCStatus(code: early.code, message: early.message), metadata: Metadata())
        trailers.append(contentsOf: early.extraFields)
        sendTrailersOnly(streamID: streamID, httpStatus: early.httpStatus, trailers: trailers)
    }

    private func sendTrailersOnly(streamID: Int32, httpStatus: Int, trailers: [HeaderField]) {
        let fields = [HeaderField(name: ":status", value: String(httpStatus)),
                      HeaderField(name: "content-type", value: "application/grpc")] + trailers
        do {
            try session?.sendResponseHeaders(streamID: streamID, fields: fields, endStream: true)
        } catch {
            logger.debug("could not send a Trailers-Only response", metadata: ["stream": "\(streamID)", "error": "\(error)"])
        }
        scheduleFlush()
    }

    /// `grpc-status`, percent-encoded `grpc-message`, `grpc-status-details-bin`, then metadata.
    static func trailerFields(status: RPCStatus, metadata: Metadata) -> [HeaderField] {
        var fields = [HeaderField(name: "grpc-status", value: String(status.code.rawValue))]
        if !status.message.isEmpty {
            fields.append(HeaderField(name: "grpc-message", value: GRPCStatusMessage.percentEncode(status.message)))
        }
        if !status.details.isEmpty {
            fields.append(HeaderField(name: "grpc-status-details-bin",
                                      value: Base64.encodeUnpadded(status.serializedBytes())))
        }
        fields.append(contentsOf: metadata.headerFields)
        return fields
    }

    // MARK: Output

    /// Coalesces flushes requested by handlers within one event-loop tick.
    private func scheduleFlush() {
        guard !flushScheduled, let context, let loopBound else { return }
        flushScheduled = true
        context.eventLoop.execute { loopBound.value.flushNow() }
    }

    /// Writes everything nghttp2 has to send, then wakes writers whose stream drained.
    private func flushNow() {
        flushScheduled = false
        guard let context, let session, context.channel.isWritable else { return }
        do {
            try session.drainOutput(into: &output)
        } catch {
            logger.debug("closing the connection after an HTTP/2 error", metadata: ["error": "\(error)"])
            closeNote?.note(.protocolError)
            context.close(promise: nil)
            return
        }
        if output.readableBytes > 0 {
            context.writeAndFlush(wrapOutboundOut(output), promise: nil)
            output = context.channel.allocator.buffer(capacity: 0)
        }
        handleEvents()
        resumeDrainedWriters()
        if !session.isActive {
            context.close(promise: nil)
        }
    }

    private func resumeDrainedWriters() {
        guard let session else { return }
        for (streamID, call) in httpCalls where !call.waitingWriters.isEmpty {
            if session.bufferedOutboundBytes(streamID: streamID) < configuration.streamWriteLowWaterMark {
                httpCalls[streamID]!.waitingWriters = []
                for writer in call.waitingWriters { writer.resume() }
            }
        }
        for (streamID, call) in calls where !call.waitingWriters.isEmpty {
            if session.bufferedOutboundBytes(streamID: streamID) < configuration.streamWriteLowWaterMark {
                calls[streamID]!.waitingWriters = []
                for writer in call.waitingWriters { writer.resume() }
            }
        }
    }

    // MARK: Connection management

    private func startHandshakeTimer(context: ChannelHandlerContext) {
        guard handshakeTimer == nil, let loopBound else { return }
        handshakeTimer = context.eventLoop.scheduleTask(in: configuration.handshakeTimeout) {
            loopBound.value.logger.debug("closing a connection that did not complete the HTTP/2 handshake")
            loopBound.value.closeNote?.note(.handshakeTimeout)
            loopBound.value.context?.close(promise: nil)
        }
    }

    private func startIdleTimer() {
        guard idleTimer == nil, case .active = shutdownState, let context, let loopBound else { return }
        idleTimer = context.eventLoop.scheduleTask(in: configuration.idleTimeout) {
            loopBound.value.closeIdleConnection()
        }
    }

    /// An idle connection has no call to drain: the final GOAWAY goes out at once and the
    /// connection closes once it is written (a stream racing it is refused and retried by the
    /// client).
    private func closeIdleConnection() {
        guard case .active = shutdownState, calls.isEmpty, let context, let loopBound else { return }
        logger.debug("closing an idle connection")
        closeNote?.note(.idle)
        sendFinalGoAway()
        graceTimer = context.eventLoop.scheduleTask(in: configuration.gracefulShutdownTimeout) {
            loopBound.value.context?.close(promise: nil)
        }
    }

    /// GOAWAY(2^31-1) + PING; the final GOAWAY follows the PING's ack. In-flight calls finish;
    /// the connection closes when nghttp2 has nothing left to do, or at the grace deadline.
    func beginGracefulShutdown() {
        guard case .active = shutdownState, let session, let context, let loopBound else { return }
        closeNote?.note(.shutdown)
        shutdownState = .noticeSent
        idleTimer?.cancel()
        do {
            try session.sendShutdownNotice(pingOpaque: Self.shutdownPingOpaque)
        } catch {
            sendFinalGoAway()
        }
        graceTimer = context.eventLoop.scheduleTask(in: configuration.gracefulShutdownTimeout) {
            loopBound.value.context?.close(promise: nil)
        }
        flushNow()
    }

    private func sendFinalGoAway() {
        shutdownState = .goAwaySent
        try? session?.sendGoAway(errorCode: .noError)
        scheduleFlush()
    }

    private func enforce(_ verdict: AbuseGuard.Verdict) {
        guard case .goAway(let reason) = verdict, let session else { return }
        if case .closingForAbuse = shutdownState { return }
        logger.info("closing an abusive connection", metadata: ["reason": "\(reason)"])
        closeNote?.note(.abuse(reason))
        shutdownState = .closingForAbuse
        try? session.sendGoAway(errorCode: .enhanceYourCalm, debugData: reason)
        cancelAllCalls()
        scheduleFlush()
        if let context, let loopBound {
            graceTimer = context.eventLoop.scheduleTask(in: .seconds(1)) { loopBound.value.context?.close(promise: nil) }
        }
    }
}

/// The connection's side of a running handler: every call hops to the event loop.
private struct CallSink: ResponseSink {
    let streamID: Int32
    let eventLoop: any EventLoop
    let connection: NIOLoopBound<GRPCConnectionHandler>

    func sendHeaders(_ metadata: Metadata) async throws {
        eventLoop.execute { [connection, streamID] in
            connection.value.sendHeaders(streamID: streamID, metadata: metadata)
        }
    }

    func sendMessage(_ bytes: [UInt8]) async throws {
        try await withCheckedThrowingContinuation { (writer: CheckedContinuation<Void, any Error>) in
            eventLoop.execute { [connection, streamID] in
                connection.value.sendMessage(streamID: streamID, bytes: bytes, writer: writer)
            }
        }
    }

    func finish(response: UnaryResponse?, status: RPCStatus, metadata: Metadata) {
        eventLoop.execute { [connection, streamID] in
            connection.value.finish(streamID: streamID, response: response, status: status, metadata: metadata)
        }
    }
}

/// The connection's side of a running HTTP handler (REST over h2c): every call hops to the loop.
private struct HTTPStreamSink: Sendable {
    let streamID: Int32
    let eventLoop: any EventLoop
    let connection: NIOLoopBound<GRPCConnectionHandler>

    func head(_ response: HTTPResponse) {
        eventLoop.execute { [connection, streamID] in connection.value.sendHTTPHead(streamID: streamID, response) }
    }

    func write(_ bytes: ByteBuffer) async throws {
        try await withCheckedThrowingContinuation { (writer: CheckedContinuation<Void, any Error>) in
            eventLoop.execute { [connection, streamID] in
                connection.value.sendHTTPBody(streamID: streamID, bytes: bytes, writer: writer)
            }
        }
    }

    func finish() {
        eventLoop.execute { [connection, streamID] in connection.value.finishHTTPBody(streamID: streamID) }
    }

    func done() {
        eventLoop.execute { [connection] in connection.value.httpHandlerFinished() }
    }
}

/// Counts frames that cost the server work without doing anything useful, per connection
/// (hardening.md 1.2: PING, SETTINGS, empty-frame and invalid-frame floods, which nghttp2 1.52
/// leaves to the application).
struct AbuseGuard {
    enum Verdict: Equatable {
        case ok
        case goAway(reason: String)
    }

    private let window: TimeAmount
    private let maxPings: Int
    private let maxSettings: Int
    private let maxEmptyFrames: Int
    private let maxInvalidFrames: Int
    private var windowStart = NIODeadline.now()
    private var pings = 0
    private var settings = 0
    private var invalidFrames = 0
    private var consecutiveEmptyFrames = 0

    init(configuration: ServerConfiguration) {
        window = configuration.abuseWindow
        maxPings = configuration.maxPingsPerWindow
        maxSettings = configuration.maxSettingsPerWindow
        maxEmptyFrames = configuration.maxConsecutiveEmptyFrames
        maxInvalidFrames = configuration.maxInvalidFramesPerWindow
    }

    private mutating func rollWindow(now: NIODeadline) {
        if now - windowStart > window {
            windowStart = now
            pings = 0
            settings = 0
            invalidFrames = 0
        }
    }

    mutating func ping(now: NIODeadline = .now()) -> Verdict {
        rollWindow(now: now)
        pings += 1
        return pings > maxPings ? .goAway(reason: "too_many_pings") : .ok
    }

    mutating func settingsFrame(now: NIODeadline = .now()) -> Verdict {
        rollWindow(now: now)
        settings += 1
        return settings > maxSettings ? .goAway(reason: "too_many_settings") : .ok
    }

    mutating func invalidFrame(now: NIODeadline = .now()) -> Verdict {
        rollWindow(now: now)
        invalidFrames += 1
        return invalidFrames > maxInvalidFrames ? .goAway(reason: "too_many_invalid_frames") : .ok
    }

    mutating func emptyDataFrame() -> Verdict {
        consecutiveEmptyFrames += 1
        return consecutiveEmptyFrames > maxEmptyFrames ? .goAway(reason: "empty_frames") : .ok
    }

    mutating func resetEmptyFrames() {
        consecutiveEmptyFrames = 0
    }
}
