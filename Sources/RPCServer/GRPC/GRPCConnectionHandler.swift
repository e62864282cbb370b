import InputParsing
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
    struct Call {
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
        /// Request bytes of this call held against the connection's budget: a partial
        /// message, plus (bidirectional) messages queued and not yet taken by the handler.
        var buffered = 0
        /// Of `buffered`, the bytes of whole messages queued for a bidirectional handler.
        var queued = 0

        /// Counts the call's end once, with the status the client sees.
        mutating func end(_ code: StatusCode) {
            guard !ended else { return }
            ended = true
            metrics.record(code, since: started)
        }
    }

    static let shutdownPingOpaque: UInt64 = 0x666C_6F77_6420_4741  // "flowd GA"

    /// A plain HTTP request on this connection (the REST shim over h2c).
    struct HTTPCall {
        var method: String
        var uri: String
        var headers: HTTPHeaders
        var body = ByteBuffer()
        /// Body bytes held against the connection's budget until the handler gets them.
        var buffered = 0
        var rejected = false
        var task: Task<Void, Never>?
        var waitingWriters: [CheckedContinuation<Void, any Error>] = []
    }

    let configuration: ServerConfiguration
    let router: RPCRouter
    let http: (any HTTPRequestHandling)?
    let httpConfiguration: HTTP1Configuration
    var httpCalls: [Int32: HTTPCall] = [:]
    var logger: Logger
    let limits = DecodingLimits()

    var session: NGHTTP2Session?
    var context: ChannelHandlerContext?
    var loopBound: NIOLoopBound<GRPCConnectionHandler>?
    /// Handlers' tasks run on this connection's loop (nil: the global executor).
    var taskExecutor: EventLoopTaskExecutor?
    var calls: [Int32: Call] = [:]
    var runningHandlers = 0
    var output = ByteBuffer()
    var flushScheduled = false
    /// `flushNow` is running; `flushAgain`: it was asked again meanwhile.
    var flushing = false
    var flushAgain = false
    var manager = ConnectionManager()
    var abuse: AbuseGuard
    var budget: ConnectionBufferBudget
    var timers: StreamTimers
    var handshakeTimer: Scheduled<Void>?
    var idleTimer: Scheduled<Void>?
    var graceTimer: Scheduled<Void>?
    var sweepTask: RepeatedTask?
    var ageTimer: Scheduled<Void>?
    /// Since when the socket has not been writable (the peer does not read).
    var unwritableSince: NIODeadline?
    var peer = "unknown"
    let metrics: TransportMetrics
    let closeNote: ConnectionCloseNote?

    /// `http` answers plain HTTP requests under `/v1/` and `/metrics` (the REST shim over
    /// h2c); without it, every non-gRPC request gets 415. `metrics` counts the calls;
    /// `closeNote` learns why this handler closes the connection. `budget` is the server-wide
    /// bound on buffered request bytes (a private one when nil).
    init(configuration: ServerConfiguration, router: RPCRouter, logger: Logger,
         http: (any HTTPRequestHandling)? = nil, httpConfiguration: HTTP1Configuration = HTTP1Configuration(),
         metrics: TransportMetrics = .disabled, closeNote: ConnectionCloseNote? = nil,
         budget: RequestBufferBudget? = nil) {
        self.configuration = configuration
        self.router = router
        self.http = http
        self.httpConfiguration = httpConfiguration
        self.logger = logger
        self.abuse = AbuseGuard(configuration: configuration)
        self.budget = ConnectionBufferBudget(
            limit: max(configuration.maxBufferedRequestBytesPerConnection, configuration.maxReceiveMessageSize + 5),
            global: budget ?? RequestBufferBudget(limit: configuration.maxBufferedRequestBytes))
        self.timers = StreamTimers(idleTimeout: configuration.streamIdleTimeout,
                                   writeStallTimeout: configuration.writeStallTimeout)
        self.metrics = metrics
        self.closeNote = closeNote
    }

    // MARK: Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        if configuration.handlersOnEventLoop { taskExecutor = EventLoopTaskExecutor(context.eventLoop) }
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
        startConnectionTimers(context: context)
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
        for timer in [handshakeTimer, idleTimer, graceTimer, ageTimer] { timer?.cancel() }
        sweepTask?.cancel()
        budget.releaseAll()
        session = nil
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        cancelAllCalls()
        for (_, call) in httpCalls { cancel(call) }
        httpCalls.removeAll()
        sweepTask?.cancel()
        ageTimer?.cancel()
        budget.releaseAll()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let session else { return }
        // After an abuse GOAWAY the peer is no longer listened to: its bytes are read and
        // dropped until it closes (lingering close), so that it sees the GOAWAY.
        guard manager.acceptsInput else { return }
        let buffer = unwrapInboundIn(data)
        do {
            try buffer.withUnsafeReadableBytes { bytes throws(HTTP2SessionError) in try session.receive(bytes) }
        } catch {
            logger.debug("closing the connection after an HTTP/2 error", metadata: ["error": "\(error)"])
            closeNote?.note(.protocolError)
            act(manager.protocolError())
            return
        }
        handleEvents()
        if session.outboundQueueSize > configuration.maxOutboundQueueFrames {
            enforce(.goAway(reason: "outbound_queue"))
        }
    }

    /// Acts on what nghttp2 recorded, after `mem_recv`/`mem_send` returned.
    func handleEvents() {
        guard let session else { return }
        for event in session.takeEvents() {
            guard manager.acceptsInput else { break }
            handle(event)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        flushNow()
        context.fireChannelReadComplete()
    }

    /// While the socket is not writable the peer is not read either (it cannot make the
    /// server queue more frames); the sweep closes a connection that stays so too long.
    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            unwritableSince = nil
            context.channel.setOption(ChannelOptions.autoRead, value: true).whenFailure { _ in }
            flushNow()
        } else {
            unwritableSince = unwritableSince ?? .now()
            context.channel.setOption(ChannelOptions.autoRead, value: false).whenFailure { _ in }
        }
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

    func handle(_ event: HTTP2Event) {
        switch event {
        case .requestHeaders(let streamID, let fields, let tooLarge, let endStream):
            receiveHeaders(streamID: streamID, fields: fields, tooLarge: tooLarge, endStream: endStream)
        case .data(let streamID, let bytes):
            abuse.dataWithPayload()
            timers.activity(streamID: streamID, now: .now())
            receiveData(streamID: streamID, bytes: bytes)
            // The bytes are now in a budgeted buffer or dropped: the peer may send more.
            session?.consume(streamID: streamID, count: bytes.count)
        case .endOfRequest(let streamID):
            timers.requestEnded(streamID: streamID, now: .now())
            if httpCalls[streamID] != nil {
                startHTTPHandler(streamID: streamID)
                return
            }
            guard calls[streamID] != nil else { return }
            let action = calls[streamID]!.machine.receiveEnd()
            perform(action, streamID: streamID)
        case .emptyDataFrame:
            enforce(abuse.emptyDataFrame(now: .now()))
        case .peerReset(let streamID, _):
            enforce(abuse.peerReset(lifetime: timers.age(streamID: streamID, now: .now())))
        case .streamClosed(let streamID, _):
            timers.closed(streamID: streamID, now: .now())
            if var call = calls.removeValue(forKey: streamID) {
                call.end(.cancelled)
                budget.release(call.buffered)
                cancel(call)
            }
            if let call = httpCalls.removeValue(forKey: streamID) {
                budget.release(call.buffered)
                cancel(call)
            }
            if calls.isEmpty && httpCalls.isEmpty { act(manager.allStreamsClosed()) }
        case .settings:
            act(manager.settingsReceived(openStreams: calls.count + httpCalls.count))
            enforce(abuse.settingsFrame(now: .now()))
        case .ping:
            enforce(abuse.ping(now: .now()))
        case .pingAck(let opaque):
            if opaque == Self.shutdownPingOpaque { act(manager.shutdownPingAcknowledged()) }
        case .invalidFrame:
            enforce(abuse.invalidFrame(now: .now()))
        }
    }

    /// A chunk of request body: into the call's deframer (or the REST body) if the
    /// connection's budget has room, else the stream is answered RESOURCE_EXHAUSTED.
    func receiveData(streamID: Int32, bytes: [UInt8]) {
        if httpCalls[streamID] != nil {
            receiveHTTPBody(streamID: streamID, bytes: bytes)
            return
        }
        guard calls[streamID] != nil, !calls[streamID]!.machine.isClosed else { return }
        guard budget.reserve(bytes.count) else {
            let action = calls[streamID]!.machine.requestRefused(EarlyResponse(
                code: .resourceExhausted,
                message: "the server holds too many request bytes for this connection (limit \(budget.limit)) or in total (limit \(budget.global.limit)); retry later"))
            perform(action, streamID: streamID)
            return
        }
        calls[streamID]!.buffered += bytes.count
        let action = calls[streamID]!.machine.receiveData(bytes)
        perform(action, streamID: streamID)
    }

    /// Releases the call's request bytes that are no longer held (all but queued messages).
    func releaseUnqueuedBytes(streamID: Int32) {
        guard let call = calls[streamID] else { return }
        budget.release(call.buffered - call.queued)
        calls[streamID]!.buffered = call.queued
    }

    /// A bidirectional handler took a message of `count` bytes (its 5-byte prefix aside).
    func requestMessageTaken(streamID: Int32, count: Int) {
        guard let call = calls[streamID] else { return }
        let taken = min(call.queued, count + GRPCFraming.prefixLength)
        calls[streamID]!.queued -= taken
        calls[streamID]!.buffered -= taken
        budget.release(taken)
    }

    func receiveHeaders(streamID: Int32, fields: [HeaderField], tooLarge: Bool, endStream: Bool) {
        let started = NIODeadline.now()
        act(manager.streamOpened())
        abuse.streamOpened()
        timers.opened(streamID: streamID, requestOpen: !endStream, now: started)
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
        let service = String(parts[0])
        if let refusal = router.credentialRequirements[service],
           !RPCRouter.hasBearerCredentials(head.metadata[stringValues: "authorization"].first) {
            // Answered from the headers: the body of an unauthenticated call is never buffered.
            (handler.metrics ?? metrics.unknownMethod).record(refusal.code, since: started)
            let (status, trailing) = RPCHandler.status(for: refusal)
            sendTrailersOnly(streamID: streamID, httpStatus: 200,
                             trailers: Self.trailerFields(status: status, metadata: trailing,
                                                          maxMessageBytes: configuration.maxStatusMessageBytes))
            return
        }
        let timeout = head.timeout.map { min($0, configuration.maxGRPCTimeout) }
        let serverContext = ServerContext(
            descriptor: MethodDescriptor(service: service, method: String(parts[1])),
            metadata: head.metadata,
            deadline: timeout.map { NIODeadline.now() + $0 },
            peer: peer)
        let bidirectional = handler.kind == .bidirectionalStreaming
        var call = Call(machine: ServerCallStateMachine(maxMessageSize: configuration.maxReceiveMessageSize,
                                                        bidirectional: bidirectional),
                        handler: handler, context: serverContext,
                        metrics: handler.metrics ?? metrics.unknownMethod, started: started)
        if let timeout, let context, let loopBound {
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
            let taken: @Sendable (Int) -> Void
            if let context, let loopBound {
                let eventLoop = context.eventLoop
                taken = { count in
                    eventLoop.execute { loopBound.value.requestMessageTaken(streamID: streamID, count: count) }
                }
            } else {
                taken = { _ in }
            }
            startHandler(streamID: streamID, request: .stream(messages, taken: taken))
        }
        if endStream, calls[streamID] != nil {
            let action = calls[streamID]!.machine.receiveEnd()
            perform(action, streamID: streamID)
        }
    }

    func perform(_ action: ServerCallStateMachine.ReceiveAction, streamID: Int32) {
        switch action {
        case .none:
            break
        case .reject(let early):
            calls[streamID]?.deadline?.cancel()
            calls[streamID]?.end(early.code)
            releaseUnqueuedBytes(streamID: streamID)
            sendEarlyResponse(streamID: streamID, early)
        case .startHandler(let request):
            // The message is handed on: the connection no longer holds its bytes.
            releaseUnqueuedBytes(streamID: streamID)
            startHandler(streamID: streamID, request: .single(RequestMessage(request)))
        case .deliver(let messages):
            guard calls[streamID] != nil else { return }
            for message in messages {
                let size = message.count + GRPCFraming.prefixLength
                if let inbound = calls[streamID]!.inbound, case .enqueued = inbound.yield(message) {
                    calls[streamID]!.queued += size
                    continue
                }
                // Dropped: the handler will not see it, so the connection no longer holds it.
                calls[streamID]!.buffered -= size
                budget.release(size)
                if let inbound = calls[streamID]!.inbound {
                    calls[streamID]!.inbound = nil
                    inbound.finish(throwing: RPCError(
                        code: .resourceExhausted,
                        message: "more than \(configuration.maxBufferedRequestMessages) request messages are waiting to be read"))
                }
            }
        case .endOfRequests:
            calls[streamID]?.inbound?.finish()
            calls[streamID]?.inbound = nil
        case .failRequests(let early):
            calls[streamID]?.inbound?.finish(throwing: RPCError(code: early.code, message: early.message))
            calls[streamID]?.inbound = nil
            releaseUnqueuedBytes(streamID: streamID)
        }
    }

    func startHandler(streamID: Int32, request: RequestInput) {
        guard let call = calls[streamID], let context, let loopBound else { return }
        guard runningHandlers < configuration.maxRunningHandlersPerConnection else {
            calls[streamID]?.inbound?.finish(throwing: CancellationError())
            calls[streamID]?.inbound = nil
            calls[streamID]?.machine.streamClosed()
            calls[streamID]?.end(.unavailable)  // what clients make of REFUSED_STREAM
            if let call = calls[streamID] {
                budget.release(call.buffered)
                calls[streamID]!.buffered = 0
                calls[streamID]!.queued = 0
            }
            session?.resetStream(streamID: streamID, errorCode: .refusedStream)
            scheduleFlush()
            return
        }
        runningHandlers += 1
        let sink = CallSink(streamID: streamID, eventLoop: context.eventLoop, connection: loopBound)
        let handler = call.handler
        let serverContext = call.context
        let limits = self.limits
        calls[streamID]!.task = Task(executorPreference: taskExecutor) {
            await handler.run(request: request, context: serverContext, limits: limits, sink: sink)
        }
    }

    func deadlineExpired(streamID: Int32) {
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
    func cancelAllCalls() {
        for (_, var call) in calls {
            call.end(.cancelled)
            budget.release(call.buffered)
            cancel(call)
        }
        calls.removeAll()
    }

    /// Answers a request that reached no method (counted as method `unknown`).
    func rejectUnrouted(streamID: Int32, since started: NIODeadline, _ early: EarlyResponse) {
        metrics.unknownMethod.record(early.code, since: started)
        sendEarlyResponse(streamID: streamID, early)
    }

    /// Plain HTTP over h2c: the REST shim's paths and the metrics.
    static func isHTTPPath(_ path: String) -> Bool {
        path.hasPrefix("/v1/") || path == "/metrics" || path.hasPrefix("/metrics?")
    }

    func cancel(_ call: Call) {
        call.inbound?.finish(throwing: CancellationError())
        call.task?.cancel()
        call.deadline?.cancel()
        for writer in call.waitingWriters { writer.resume(throwing: CancellationError()) }
    }

    func failWaitingWriters(streamID: Int32) {
        guard let writers = calls[streamID]?.waitingWriters, !writers.isEmpty else { return }
        calls[streamID]!.waitingWriters = []
        for writer in writers { writer.resume(throwing: CancellationError()) }
    }

    // MARK: Responses (called on the loop by CallSink)

    func sendHeaders(streamID: Int32, metadata: Metadata) {
        guard calls[streamID] != nil, calls[streamID]!.machine.sendHeaders() else { return }
        submitResponseHeaders(streamID: streamID, metadata: metadata)
        scheduleFlush()
    }

    func sendMessage(streamID: Int32, bytes: [UInt8], writer: CheckedContinuation<Void, any Error>?) {
        guard calls[streamID] != nil else {
            writer?.resume(throwing: CancellationError())
            return
        }
        if bytes.count > configuration.maxSendMessageSize {
            // The handler's write throws; the call ends with this status.
            writer?.resume(throwing: Self.responseTooLarge(bytes.count, limit: configuration.maxSendMessageSize))
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

    func finish(streamID: Int32, response: UnaryResponse?, status: RPCStatus, metadata: Metadata) {
        runningHandlers -= 1
        guard calls[streamID] != nil else { return }
        var response = response, status = status, metadata = metadata
        if let message = response?.message, message.count > configuration.maxSendMessageSize {
            (status, metadata) = RPCHandler.status(for: Self.responseTooLarge(message.count, limit: configuration.maxSendMessageSize))
            response = nil
        }
        calls[streamID]!.end(status.code)
        if let response {
            sendHeaders(streamID: streamID, metadata: response.metadata)
            sendMessage(streamID: streamID, bytes: response.message, writer: nil)
        }
        calls[streamID]!.deadline?.cancel()
        calls[streamID]!.inbound?.finish()
        calls[streamID]!.inbound = nil
        let trailers = Self.trailerFields(status: status, metadata: metadata,
                                          maxMessageBytes: configuration.maxStatusMessageBytes)
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

    func submitResponseHeaders(streamID: Int32, metadata: Metadata) {
        var fields = [HeaderField(name: ":status", value: "200"),
                      HeaderField(name: "content-type", value: "application/grpc")]
        fields.append(contentsOf: metadata.headerFields)
        do {
            try session?.sendResponseHeaders(streamID: streamID, fields: fields, endStream: false)
        } catch {
            logger.debug("could not send response headers", metadata: ["stream": "\(streamID)", "error": "\(error)"])
        }
    }

    func sendEarlyResponse(streamID: Int32, _ early: EarlyResponse) {
        var trailers = Self.trailerFields(status: RPCStatus(code: early.code, message: early.message), metadata: Metadata(),
                                          maxMessageBytes: configuration.maxStatusMessageBytes)
        trailers.append(contentsOf: early.extraFields)
        sendTrailersOnly(streamID: streamID, httpStatus: early.httpStatus, trailers: trailers)
    }

    func sendTrailersOnly(streamID: Int32, httpStatus: Int, trailers: [HeaderField]) {
        let fields = [HeaderField(name: ":status", value: String(httpStatus)),
                      HeaderField(name: "content-type", value: "application/grpc")] + trailers
        do {
            try session?.sendResponseHeaders(streamID: streamID, fields: fields, endStream: true)
        } catch {
            logger.debug("could not send a Trailers-Only response", metadata: ["stream": "\(streamID)", "error": "\(error)"])
        }
        scheduleFlush()
    }

    static func responseTooLarge(_ size: Int, limit: Int) -> RPCError {
        RPCError(code: .resourceExhausted, message: "response message of \(size) bytes exceeds the limit of \(limit) bytes")
    }

    /// Largest `grpc-status-details-bin` value sent (base64); larger details are left out,
    /// so that an error echoing its input cannot make the trailers too large to send.
    static let maxStatusDetailsBytes = 8 * 1024

    /// `grpc-status`, percent-encoded `grpc-message` (cut to `maxMessageBytes` bytes of
    /// UTF-8, on a character boundary, with "..." when cut), `grpc-status-details-bin` (left
    /// out above `maxStatusDetailsBytes`), then metadata.
    static func trailerFields(status: RPCStatus, metadata: Metadata, maxMessageBytes: Int = 1024) -> [HeaderField] {
        var fields = [HeaderField(name: "grpc-status", value: String(status.code.rawValue))]
        if !status.message.isEmpty {
            let message = truncated(status.message, toUTF8Bytes: maxMessageBytes)
            fields.append(HeaderField(name: "grpc-message", value: GRPCStatusMessage.percentEncode(message)))
        }
        if !status.details.isEmpty {
            let details = Base64.encodeUnpadded(status.serializedBytes())
            if details.utf8.count <= maxStatusDetailsBytes {
                fields.append(HeaderField(name: "grpc-status-details-bin", value: details))
            }
        }
        fields.append(contentsOf: metadata.headerFields)
        return fields
    }

    /// `text` cut to at most `limit` bytes of UTF-8 on a character boundary, "..." appended when cut.
    static func truncated(_ text: String, toUTF8Bytes limit: Int) -> String {
        guard text.utf8.count > limit else { return text }
        var kept = 0
        var end = text.startIndex
        for index in text.indices {
            let next = text.index(after: index)
            let size = text.utf8.distance(from: index, to: next)
            guard kept + size + 3 <= limit else { break }
            kept += size
            end = next
        }
        return String(text[..<end]) + "..."
    }

    // MARK: Output

    /// Coalesces flushes requested by handlers within one event-loop tick.
    func scheduleFlush() {
        guard !flushScheduled, let context, let loopBound else { return }
        flushScheduled = true
        context.eventLoop.execute { loopBound.value.flushNow() }
    }

    /// Writes everything nghttp2 has to send, then wakes writers whose stream drained.
    ///
    /// Re-entrant calls (a write can make the channel writable again, and
    /// `channelWritabilityChanged` flushes) only ask the running call for another pass: a nested
    /// pass would drain nghttp2 into `output` while the outer one is writing it.
    func flushNow() {
        flushScheduled = false
        guard !flushing else {
            flushAgain = true
            return
        }
        flushing = true
        defer { flushing = false }
        repeat {
            flushAgain = false
            guard flushOnce() else { return }
        } while flushAgain
    }

    /// One pass of `flushNow`; false when the connection is closing or cannot be written.
    private func flushOnce() -> Bool {
        guard let context, let session, context.channel.isWritable else { return false }
        do {
            try session.drainOutput(into: &output)
        } catch {
            logger.debug("closing the connection after an HTTP/2 error", metadata: ["error": "\(error)"])
            closeNote?.note(.protocolError)
            context.close(promise: nil)
            return false
        }
        if output.readableBytes > 0 {
            let bytes = output
            output = context.channel.allocator.buffer(capacity: 0)
            context.writeAndFlush(wrapOutboundOut(bytes), promise: nil)
        }
        handleEvents()
        resumeDrainedWriters()
        if !session.isActive {
            context.close(promise: nil)
            return false
        }
        return true
    }

    func resumeDrainedWriters() {
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
}

/// The connection's side of a running handler: every call hops to the event loop.
struct CallSink: ResponseSink {
    let streamID: Int32
    let eventLoop: any EventLoop
    let connection: NIOLoopBound<GRPCConnectionHandler>

    func sendHeaders(_ metadata: Metadata) async throws {
        onLoop { [connection, streamID] in connection.value.sendHeaders(streamID: streamID, metadata: metadata) }
    }

    func sendMessage(_ bytes: [UInt8]) async throws {
        try await withCheckedThrowingContinuation { (writer: CheckedContinuation<Void, any Error>) in
            onLoop { [connection, streamID] in connection.value.sendMessage(streamID: streamID, bytes: bytes, writer: writer) }
        }
    }

    func finish(response: UnaryResponse?, status: RPCStatus, metadata: Metadata) {
        onLoop { [connection, streamID] in
            connection.value.finish(streamID: streamID, response: response, status: status, metadata: metadata)
        }
    }

    /// At once when the handler runs on the connection's loop (see `EventLoopTaskExecutor`).
    private func onLoop(_ body: @escaping @Sendable () -> Void) {
        if eventLoop.inEventLoop { body() } else { eventLoop.execute(body) }
    }
}
