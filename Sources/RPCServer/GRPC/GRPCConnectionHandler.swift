import InputParsing
import NGHTTP2Support
import Codec
import Logging
import Engine
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

    /// One stream with a request: its state machine and what runs for it. Confined to the loop.
    ///
    /// A class: the handler reads and changes a stream many times per call through the map,
    /// and a struct of this size was copied out and destroyed on every read
    /// (`streams[id] != nil`, `streams[id]?.machine.phase`).
    final class Stream {
        var machine: ServerStream
        /// The gRPC method, for a call (nil for a plain HTTP request).
        let call: CallInfo?
        /// The handler, once started.
        var task: Task<Void, Never>?
        /// The check of the credentials in the headers, while the stream is idle.
        var verdict: Task<Void, Never>?
        var deadline: Scheduled<Void>?
        var waitingWriters: [CheckedContinuation<Void, any Error>] = []
        /// A bidirectional-streaming call's request messages, until the client half-closes.
        var inbound: Inbound?
        var ended = false

        init(machine: consuming ServerStream, call: CallInfo?) {
            self.machine = machine
            self.call = call
        }

        /// A gRPC call's stream (its machine built in place: built outside and passed in, it was
        /// copied and destroyed, a dozen retains and releases).
        init(grpc call: CallInfo, maxMessageSize: Int, admitted: Bool) {
            self.machine = ServerStream(grpcMaxMessageSize: maxMessageSize,
                                        bidirectional: call.handler.kind == .bidirectionalStreaming, admitted: admitted)
            self.call = call
        }

        /// Counts the call's end once, with the status the client sees.
        func end(_ code: StatusCode, in batch: CallMetricsBatch) {
            guard !ended, let call else { return }
            ended = true
            batch.record(call.metrics, code, since: call.started)
        }

        /// Stops whatever still runs or waits for the stream.
        func cancel() {
            inbound?.finish(throwing: CancellationError())
            task?.cancel()
            verdict?.cancel()
            deadline?.cancel()
            for writer in waitingWriters { writer.resume(throwing: CancellationError()) }
        }
    }

    /// A bidirectional call's request messages on their way to the handler. A class: as an
    /// optional generic continuation, the field was tested and destroyed through value
    /// witnesses at every step of every call, which nearly none has.
    final class Inbound {
        let continuation: AsyncThrowingStream<[UInt8], any Error>.Continuation

        init(_ continuation: AsyncThrowingStream<[UInt8], any Error>.Continuation) {
            self.continuation = continuation
        }

        func yield(_ message: [UInt8]) -> AsyncThrowingStream<[UInt8], any Error>.Continuation.YieldResult {
            continuation.yield(message)
        }

        func finish(throwing error: (any Error)? = nil) {
            continuation.finish(throwing: error)
        }
    }

    /// The routed method of a gRPC call and the fields its handler sees (a class: it is handed
    /// from step to step of the call, and the handler's `ServerContext` is a view of it).
    final class CallInfo: CallFields, @unchecked Sendable {
        // @unchecked: `let`s of Sendable types only, as in `CallFields`.
        let handler: RPCHandler
        let metrics: MethodMetrics
        let started: NIODeadline

        init(handler: RPCHandler, metadata: MetadataSource, deadline: NIODeadline?, peer: String,
             authenticatedKey: AuthenticatedKey?, metrics: MethodMetrics, started: NIODeadline) {
            self.handler = handler
            self.metrics = metrics
            self.started = started
            super.init(descriptor: handler.descriptor, metadata: metadata, deadline: deadline, peer: peer,
                       authenticatedKey: authenticatedKey)
        }

        var context: ServerContext { ServerContext(fields: self) }
    }

    static let shutdownPingOpaque: UInt64 = 0x666C_6F77_6420_4741  // "flowd GA"
    /// Most a write buffer starts with (see `flushOnce`); larger passes grow it as before.
    static let outputCapacityHint = 16 * 1024

    let configuration: ServerConfiguration
    let routes: RouteTable
    let http: (any HTTPRequestHandling)?
    /// `http != nil`, without copying the existential to find out (a value-witness copy a call).
    let servesHTTP: Bool
    let httpConfiguration: HTTP1Configuration
    var logger: Logger
    let limits = DecodingLimits()

    /// A `let`: read +0 wherever the connection uses it (as a `var`, each of a call's dozen uses
    /// was a retain and a release). Nil when nghttp2 could not make one (`sessionError`); it
    /// lives as long as this handler.
    let session: NGHTTP2Session?
    let sessionError: (any Error)?
    var context: ChannelHandlerContext?
    var loopBound: NIOLoopBound<GRPCConnectionHandler>?
    /// Handlers' tasks run on this connection's loop (nil: the global executor).
    var taskExecutor: EventLoopTaskExecutor?
    /// Every stream with a request, gRPC or plain HTTP.
    var streams = StreamMap<Stream>()
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
    /// The read transaction shared by the handlers answered at once in one pass of
    /// `handleEvents` (see `ReadBatch`); ended at the end of the pass, or right after a handler
    /// that runs outside one (a call admitted once its key was verified asynchronously), so a
    /// snapshot never outlives the requests it was taken for.
    let readBatch = ReadBatch()
    /// Calls ended and not yet added to the server's metrics (flushed before each write).
    let callMetrics = CallMetricsBatch()
    var inEventPass = false
    /// Some stream may have writers waiting for its output to drain (`resumeDrainedWriters`
    /// looks only then: it went through every stream after every write).
    var writersParked = false
    /// See `passClock()`.
    var passTime: NIODeadline?
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
        self.routes = router.routeTable
        self.http = http
        self.servesHTTP = http != nil
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
        do {
            session = try NGHTTP2Session(settings: .init(
                maxConcurrentStreams: UInt32(configuration.maxConcurrentStreams),
                initialWindowSize: UInt32(configuration.initialStreamWindowSize),
                connectionWindowSize: Int32(configuration.connectionWindowSize),
                maxHeaderListSize: UInt32(configuration.maxHeaderListSize),
                maxFieldCount: configuration.maxHeaderFields,
                resetBurst: UInt64(configuration.resetStreamBurst),
                resetRatePerSecond: UInt64(configuration.resetStreamRatePerSecond)))
            sessionError = nil
        } catch {
            session = nil
            sessionError = error
        }
    }

    // MARK: Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        if configuration.handlersOnEventLoop { taskExecutor = EventLoopTaskExecutor(context.eventLoop) }
        peer = context.channel.remoteAddress?.description ?? "unknown"
        logger[metadataKey: "peer"] = "\(peer)"
        guard session != nil else {
            logger.error("could not create an HTTP/2 session", metadata: ["error": "\(sessionError.map { "\($0)" } ?? "unknown")"])
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
        callMetrics.flush()
        for timer in [handshakeTimer, idleTimer, graceTimer, ageTimer] { timer?.cancel() }
        sweepTask?.cancel()
        budget.releaseAll()
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        cancelAllCalls()
        callMetrics.flush()
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
        let outerPass = inEventPass
        inEventPass = true
        for event in session.takeEvents() {
            guard manager.acceptsInput else { break }
            handle(event)
        }
        inEventPass = outerPass
        if !outerPass {
            readBatch.end()
            passTime = nil
            callMetrics.flush()
        }
    }

    /// The time of the current pass of `handleEvents`, read once per pass: its events arrived
    /// in one read of the socket, and stream timers, abuse rates and a call's start need no
    /// finer time than that (five clock reads per call before, 3 % of a Health/Check's CPU).
    func passClock() -> NIODeadline {
        if let passTime { return passTime }
        let now = NIODeadline.now()
        if inEventPass { passTime = now }
        return now
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
        case .requestHeaders(let streamID, let range, let tooLarge, let endStream):
            session?.withHeaderBlock(range) { block in
                receiveHeaders(streamID: streamID, block: block, tooLarge: tooLarge, endStream: endStream)
            }
        case .data(let streamID, let range):
            abuse.dataWithPayload()
            timers.activity(streamID: streamID, now: passClock())
            guard let stream = streams[streamID], let session else {
                // No request to read it into (answered from its headers): dropped.
                session?.consume(streamID: streamID, count: range.count)
                return
            }
            perform(session.withReceivedData(range) { stream.machine.receiveData($0, budget: &budget) }, streamID: streamID)
        case .endOfRequest(let streamID):
            timers.requestEnded(streamID: streamID, now: passClock())
            guard let stream = streams[streamID] else { return }
            perform(stream.machine.receiveEnd(budget: &budget), streamID: streamID)
        case .emptyDataFrame:
            enforce(abuse.emptyDataFrame(now: passClock()))
        case .peerReset(let streamID, _):
            enforce(abuse.peerReset(lifetime: timers.age(streamID: streamID, now: passClock())))
        case .streamClosed(let streamID, _):
            timers.closed(streamID: streamID, now: passClock())
            if let stream = streams.removeValue(forKey: streamID) {
                stream.end(.cancelled, in: callMetrics)
                stream.machine.closed(budget: &budget)
                stream.cancel()
            }
            if streams.isEmpty { act(manager.allStreamsClosed()) }
        case .settings:
            act(manager.settingsReceived(openStreams: streams.count))
            enforce(abuse.settingsFrame(now: passClock()))
        case .ping:
            enforce(abuse.ping(now: passClock()))
        case .pingAck(let opaque):
            if opaque == Self.shutdownPingOpaque { act(manager.shutdownPingAcknowledged()) }
        case .invalidFrame:
            enforce(abuse.invalidFrame(now: passClock()))
        }
    }

    /// A bidirectional handler took a message of `count` bytes (its 5-byte prefix aside).
    func requestMessageTaken(streamID: Int32, count: Int) {
        streams[streamID]?.machine.messageTaken(count: count, budget: &budget)
    }

    func receiveHeaders(streamID: Int32, block: RequestHeaderBlock, tooLarge: Bool, endStream: Bool) {
        let started = passClock()
        act(manager.streamOpened())
        abuse.streamOpened()
        timers.opened(streamID: streamID, requestOpen: !endStream, now: started)
        if tooLarge {
            rejectUnrouted(streamID: streamID, since: started, EarlyResponse(
                code: .resourceExhausted,
                message: "request headers exceed \(configuration.maxHeaderListSize) bytes or \(configuration.maxHeaderFields) fields"))
            return
        }
        let path = block.value(of: ":path") ?? UnsafeRawBufferPointer(start: nil, count: 0)
        if servesHTTP, Self.isHTTPPath(path),
           !RequestHead.isGRPCContentType(block.value(of: "content-type").map(HeaderText.value) ?? "") {
            beginHTTPCall(streamID: streamID, fields: block.fields, endStream: endStream)
            return
        }
        let head: RequestHead
        switch RequestHead.parse(block) {
        case .rejected(let early):
            rejectUnrouted(streamID: streamID, since: started, early)
            return
        case .accepted(let parsed):
            head = parsed
        }
        guard let handler = routes.handler(for: path) else {
            rejectUnroutable(streamID: streamID, path: path, since: started)
            return
        }
        var admission = Admission.admitted(nil)
        if let credentials = handler.credentials {
            guard let decided = credentialAdmission(of: credentials, block: block, streamID: streamID, handler: handler,
                                          since: started) else { return }
            admission = decided
        }
        let timeout = head.timeout.map { min($0, configuration.maxGRPCTimeout) }
        let stream = Stream(grpc: CallInfo(handler: handler, metadata: .requestBlock(head.metadataBytes),
                                           deadline: timeout.map { started + $0 }, peer: peer,
                                           authenticatedKey: admission.authenticatedKey,
                                           metrics: handler.metrics ?? metrics.unknownMethod, started: started),
                            maxMessageSize: configuration.maxReceiveMessageSize, admitted: admission.isAdmitted)
        if let timeout, let context, let loopBound {
            stream.deadline = context.eventLoop.scheduleTask(in: timeout) {
                loopBound.value.deadlineExpired(streamID: streamID)
            }
        }
        streams[streamID] = stream
        switch admission {
        case .refused(let refusal):
            credentialsChecked(streamID: streamID, refusal: .grpc(refusal))
        case .verify(let verify, let authorization):
            // The body waits, uncredited, for the verdict on the key.
            checkCredentials(streamID: streamID) { await verify(authorization).map(Refusal.grpc) }
        case .admitted where stream.machine.isBidirectional:
            // The handler runs from the headers on and reads the messages as they come; a
            // client that sends more than it reads is stopped at the bound.
            startHandler(streamID: streamID, .grpcStream)
        case .admitted:
            break
        }
        // Still open: a refusal above may have ended it.
        if endStream, let open = streams[streamID] {
            perform(open.machine.receiveEnd(budget: &budget), streamID: streamID)
        }
    }

    /// What a call's credentials decide from its headers.
    enum Admission {
        /// Admitted, with the key the credentials named when it was verified at once.
        case admitted(AuthenticatedKey?)
        /// Refused once its stream is set up (`credentialsChecked`).
        case refused(RPCError)
        /// Held idle until `verify` answers on `authorization`.
        case verify(@Sendable (String?) async -> RPCError?, authorization: String?)

        var isAdmitted: Bool {
            if case .admitted = self { return true }
            return false
        }

        var authenticatedKey: AuthenticatedKey? {
            if case .admitted(let key) = self { return key }
            return nil
        }
    }

    /// Applies a service's credential rules to a call's headers; nil when the call was answered
    /// already (no bearer credentials at all: its body is never buffered).
    func credentialAdmission(of credentials: CredentialRules, block: RequestHeaderBlock, streamID: Int32, handler: RPCHandler,
                   since started: NIODeadline) -> Admission? {
        let authorization = block.value(of: "authorization").map(HeaderText.value)
        guard RPCRouter.hasBearerCredentials(authorization) else {
            callMetrics.record(handler.metrics ?? metrics.unknownMethod, credentials.missing.code, since: started)
            sendRefusal(streamID: streamID, credentials.missing)
            return nil
        }
        guard let verify = credentials.verify else { return .admitted(nil) }
        switch credentials.verifyAtOnce?(authorization) ?? .undecided {
        case .admit: return .admitted(nil)
        case .authenticated(let key): return .admitted(AuthenticatedKey(key))
        case .refuse(let refusal): return .refused(refusal)
        case .undecided: return .verify(verify, authorization: authorization)
        }
    }

    /// Why a stream was refused from its headers.
    enum Refusal: Sendable {
        case grpc(RPCError)
        case http(HTTPResponse)
    }

    /// Runs `verdict` off the loop; the stream stays idle (its DATA held, uncredited) until it
    /// answers: nil admits the stream, a refusal is answered at once.
    func checkCredentials(streamID: Int32, _ verdict: @escaping @Sendable () async -> Refusal?) {
        guard let context, let loopBound else { return }
        let eventLoop = context.eventLoop
        streams[streamID]?.verdict = Task(executorPreference: taskExecutor) {
            let refusal = await verdict()
            if eventLoop.inEventLoop {
                loopBound.value.credentialsChecked(streamID: streamID, refusal: refusal)
            } else {
                eventLoop.execute { loopBound.value.credentialsChecked(streamID: streamID, refusal: refusal) }
            }
        }
    }

    func credentialsChecked(streamID: Int32, refusal: Refusal?) {
        guard let stream = streams[streamID] else { return }
        stream.verdict = nil
        guard let refusal else {
            perform(stream.machine.admit(budget: &budget), streamID: streamID)
            scheduleFlush()
            return
        }
        guard stream.machine.refuse() else { return }
        switch refusal {
        case .grpc(let error):
            stream.deadline?.cancel()
            stream.end(error.code, in: callMetrics)
            sendRefusal(streamID: streamID, error)
        case .http(let response):
            sendHTTPHead(streamID: streamID, response)
        }
    }

    /// A Trailers-Only response with the status a handler throwing `error` would have ended with.
    func sendRefusal(streamID: Int32, _ error: RPCError) {
        let (status, trailing) = RPCHandler.status(for: error)
        sendTrailersOnly(streamID: streamID, httpStatus: 200,
                         trailers: Self.trailerFields(status: status, metadata: trailing,
                                                      maxMessageBytes: configuration.maxStatusMessageBytes))
    }

    /// Does the outcome's actions in order, then gives its credit back to the peer.
    func perform(_ outcome: ServerStream.Outcome, streamID: Int32) {
        for action in outcome {
            guard streams[streamID]?.machine.phase != .closed else { break }
            perform(action, streamID: streamID)
        }
        session?.consume(streamID: streamID, count: outcome.credit)
    }

    func perform(_ action: ServerStream.Action, streamID: Int32) {
        switch action {
        case .startHandler(let dispatch):
            startHandler(streamID: streamID, dispatch)
        case .reject(let early):
            let stream = streams[streamID]!
            stream.deadline?.cancel()
            stream.end(early.code, in: callMetrics)
            sendEarlyResponse(streamID: streamID, early)
        case .rejectHTTP(let response):
            sendHTTPHead(streamID: streamID, response)
        case .deliver(let messages):
            let stream = streams[streamID]!
            for message in messages {
                let enqueued: Bool
                if let inbound = stream.inbound, case .enqueued = inbound.yield(message) {
                    enqueued = true
                } else {
                    enqueued = false
                }
                // Dropped: the handler will not see it, so the connection no longer holds it.
                stream.machine.delivered(size: message.count, enqueued: enqueued, budget: &budget)
                if !enqueued, let inbound = stream.inbound {
                    stream.inbound = nil
                    inbound.finish(throwing: RPCError(
                        code: .resourceExhausted,
                        message: "more than \(configuration.maxBufferedRequestMessages) request messages are waiting to be read"))
                }
            }
        case .endOfRequests:
            let stream = streams[streamID]!
            stream.inbound?.finish()
            stream.inbound = nil
        case .failRequests(let early):
            let stream = streams[streamID]!
            stream.inbound?.finish(throwing: RPCError(code: early.code, message: early.message))
            stream.inbound = nil
        }
    }

    /// Starts the stream's handler, unless the connection runs too many: then the stream is
    /// refused (RST_STREAM REFUSED_STREAM).
    func startHandler(streamID: Int32, _ dispatch: ServerStream.Dispatch) {
        guard let stream = streams[streamID], context != nil else { return }
        guard runningHandlers < configuration.maxRunningHandlersPerConnection else {
            stream.inbound?.finish(throwing: CancellationError())
            stream.inbound = nil
            stream.machine.handlerRefused(budget: &budget)
            stream.end(.unavailable, in: callMetrics)  // what clients make of REFUSED_STREAM
            session?.resetStream(streamID: streamID, errorCode: .refusedStream)
            scheduleFlush()
            return
        }
        runningHandlers += 1
        switch dispatch {
        case .http(let request):
            startHTTPHandler(streamID: streamID, request: request)
        case .grpcMessage(let message):
            runGRPCHandler(stream, streamID: streamID, request: .bytes(message))
        case .grpcStream:
            guard let context, let loopBound else { return }
            let (messages, inbound) = AsyncThrowingStream<[UInt8], any Error>.makeStream(
                bufferingPolicy: .bufferingOldest(configuration.maxBufferedRequestMessages))
            stream.inbound = Inbound(inbound)
            let eventLoop = context.eventLoop
            let taken: @Sendable (Int) -> Void = { count in
                eventLoop.execute { loopBound.value.requestMessageTaken(streamID: streamID, count: count) }
            }
            runGRPCHandler(stream, streamID: streamID, request: .stream(messages, taken: taken))
        }
    }

    /// Runs the call's handler: at once on the loop when it can answer without suspending,
    /// else in a task that reaches the connection through a `CallSink`.
    func runGRPCHandler(_ stream: Stream, streamID: Int32, request: RequestInput) {
        guard let call = stream.call else { return }
        if configuration.handlersOnEventLoop, call.handler.immediate != nil {
            let started = call.handler.runImmediately(request: request, context: call.context, limits: limits, batch: readBatch)
            if !inEventPass { readBatch.end() }
            switch consume started {
            case .ended(let ending):
                runningHandlers -= 1
                finish(stream, streamID: streamID, response: ending.response, status: ending.status, metadata: ending.metadata)
            case .later(let rest):
                guard let sink = makeSink(streamID: streamID) else { return }
                stream.task = Task(executorPreference: taskExecutor) {
                    await RPCHandler.complete(rest, sink: sink)
                }
            }
            return
        }
        guard let sink = makeSink(streamID: streamID) else { return }
        let handler = call.handler
        let serverContext = call.context
        let limits = self.limits
        let request = request.forTask
        stream.task = Task(executorPreference: taskExecutor) {
            await handler.run(request: request, context: serverContext, limits: limits, sink: sink)
        }
    }

    private func makeSink(streamID: Int32) -> CallSink? {
        guard let context, let loopBound else { return nil }
        return CallSink(streamID: streamID, eventLoop: context.eventLoop, connection: loopBound)
    }

    func deadlineExpired(streamID: Int32) {
        guard let stream = streams[streamID] else { return }
        let action = stream.machine.deadlineExpired()
        stream.end(.deadlineExceeded, in: callMetrics)
        stream.task?.cancel()
        stream.verdict?.cancel()
        stream.inbound?.finish(throwing: CancellationError())
        stream.inbound = nil
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

    /// Ends every stream of a connection that is going away.
    func cancelAllCalls() {
        // Each stream leaves the map before it is closed, so that its buffers are freed before
        // their bytes go back to the budget (an emptied budget gives memory back to the system).
        for streamID in Array(streams.keys) {
            guard let stream = streams.removeValue(forKey: streamID) else { continue }
            stream.end(.cancelled, in: callMetrics)
            stream.machine.closed(budget: &budget)
            stream.cancel()
        }
    }

    /// Answers a request whose `:path` names no registered method.
    func rejectUnroutable(streamID: Int32, path: UnsafeRawBufferPointer, since started: NIODeadline) {
        let early: EarlyResponse
        switch routes.miss(path) {
        case .unknownMethod:
            early = EarlyResponse(code: .unimplemented, message: "unknown method \(HeaderText.value(path))")
        case .unknownService(let service):
            early = EarlyResponse(code: .unimplemented, message: "unknown service \(service)")
        case .malformedPath:
            early = EarlyResponse(code: .unimplemented, message: "malformed method name \"\(HeaderText.value(path))\"")
        }
        rejectUnrouted(streamID: streamID, since: started, early)
    }

    /// Answers a request that reached no method (counted as method `unknown`).
    func rejectUnrouted(streamID: Int32, since started: NIODeadline, _ early: EarlyResponse) {
        callMetrics.record(metrics.unknownMethod, early.code, since: started)
        sendEarlyResponse(streamID: streamID, early)
    }

    /// Plain HTTP over h2c: the REST shim's paths and the metrics.
    static func isHTTPPath(_ path: UnsafeRawBufferPointer) -> Bool {
        // A gRPC path's second byte is its service's first letter: nearly every call is out here.
        guard path.count >= 4, path[1] == UInt8(ascii: "v") || path[1] == UInt8(ascii: "m") else { return false }
        func starts(with prefix: StaticString) -> Bool {
            path.count >= prefix.utf8CodeUnitCount
                && UnsafeRawBufferPointer(rebasing: path[..<prefix.utf8CodeUnitCount]).equals(prefix)
        }
        return starts(with: "/v1/") || path.equals("/metrics") || starts(with: "/metrics?")
    }

    func failWaitingWriters(streamID: Int32) {
        guard let stream = streams[streamID], !stream.waitingWriters.isEmpty else { return }
        let writers = stream.waitingWriters
        stream.waitingWriters = []
        stream.machine.writersFailed()
        for writer in writers { writer.resume(throwing: CancellationError()) }
    }

    /// Parks `writer` while the stream's output is over the high-water mark, else resumes it.
    func parkOrResume(streamID: Int32, _ writer: CheckedContinuation<Void, any Error>) {
        let outbound = session?.bufferedOutboundBytes(streamID: streamID) ?? 0
        let stream = streams[streamID]!
        switch stream.machine.wrote(outbound: outbound, highWaterMark: configuration.streamWriteHighWaterMark) {
        case .park:
            stream.waitingWriters.append(writer)
            writersParked = true
        case .resume: writer.resume()
        }
    }

    // MARK: Responses (called on the loop by CallSink)

    func sendHeaders(streamID: Int32, metadata: Metadata) {
        guard let stream = streams[streamID] else { return }
        sendHeaders(stream, streamID: streamID, metadata: metadata)
    }

    private func sendHeaders(_ stream: Stream, streamID: Int32, metadata: Metadata) {
        guard stream.machine.sendHeaders() else { return }
        submitResponseHeaders(streamID: streamID, metadata: metadata)
        scheduleFlush()
    }

    func sendMessage(streamID: Int32, bytes: [UInt8], writer: CheckedContinuation<Void, any Error>?) {
        guard let stream = streams[streamID] else {
            writer?.resume(throwing: CancellationError())
            return
        }
        if bytes.count > configuration.maxSendMessageSize {
            // The handler's write throws; the call ends with this status.
            writer?.resume(throwing: Self.responseTooLarge(bytes.count, limit: configuration.maxSendMessageSize))
            return
        }
        guard sendMessage(stream, streamID: streamID, bytes: bytes) else {
            writer?.resume(throwing: CancellationError())
            return
        }
        if let writer { parkOrResume(streamID: streamID, writer) }
    }

    /// Queues one response message (headers first if none went out); false when the call is over.
    private func sendMessage(_ stream: Stream, streamID: Int32, bytes: [UInt8]) -> Bool {
        switch stream.machine.sendMessage() {
        case .callClosed:
            return false
        case .sendHeadersThenMessage:
            submitResponseHeaders(streamID: streamID, metadata: Metadata())
        case .sendMessage:
            break
        }
        session?.sendMessage(streamID: streamID, bytes)
        scheduleFlush()
        return true
    }

    func finish(streamID: Int32, response: UnaryResponse?, status: RPCStatus, metadata: Metadata) {
        runningHandlers -= 1
        guard let stream = streams[streamID] else { return }
        finish(stream, streamID: streamID, response: response, status: status, metadata: metadata)
    }

    /// Ends the call of `stream` (in the map) with the handler's response and status.
    private func finish(_ stream: Stream, streamID: Int32, response: UnaryResponse?, status: RPCStatus, metadata: Metadata) {
        let responseSize = response?.message.count ?? 0
        if responseSize > configuration.maxSendMessageSize {
            let (status, metadata) = RPCHandler.status(for: Self.responseTooLarge(responseSize, limit: configuration.maxSendMessageSize))
            sendEnding(stream, streamID: streamID, response: nil, status: status, metadata: metadata)
        } else {
            sendEnding(stream, streamID: streamID, response: response, status: status, metadata: metadata)
        }
    }

    /// The response, if any, then the status: trailers after a response, Trailers-Only without.
    private func sendEnding(_ stream: Stream, streamID: Int32, response: UnaryResponse?, status: RPCStatus, metadata: Metadata) {
        stream.end(status.code, in: callMetrics)
        if let response {
            sendHeaders(stream, streamID: streamID, metadata: response.metadata)
            _ = sendMessage(stream, streamID: streamID, bytes: response.message)
        }
        stream.deadline?.cancel()
        stream.inbound?.finish()
        stream.inbound = nil
        switch stream.machine.finish() {
        case .sendTrailersOnly:
            sendTrailersOnly(streamID: streamID, httpStatus: 200,
                             trailers: Self.trailerFields(status: status, metadata: metadata,
                                                          maxMessageBytes: configuration.maxStatusMessageBytes))
        case .sendTrailers:
            session?.sendTrailers(streamID: streamID, block: Self.trailers(status: status, metadata: metadata,
                                                                           maxMessageBytes: configuration.maxStatusMessageBytes))
            scheduleFlush()
        case .none:
            break
        }
    }

    /// What every gRPC response starts with, and the trailer of a plain OK: encoded once.
    static let responseHeaders = StaticHeaderBlock([HeaderField(name: ":status", value: "200"),
                                                    HeaderField(name: "content-type", value: "application/grpc")])
    static let okTrailers = StaticHeaderBlock([HeaderField(name: "grpc-status", value: "0")])

    /// A response's headers: the fixed block, with the call's metadata when it has some.
    static func responseHeaders(metadata: Metadata) -> HeaderBlock {
        metadata.isEmpty ? .fixed(responseHeaders) : .fields(responseHeaders.fields + metadata.headerFields)
    }

    /// A call's trailers (after a response's headers): the fixed block for a plain OK,
    /// `trailerFields` otherwise.
    static func trailers(status: RPCStatus, metadata: Metadata, maxMessageBytes: Int) -> HeaderBlock {
        if status.code == .ok && status.message.isEmpty && status.details.isEmpty && metadata.isEmpty { return .fixed(okTrailers) }
        return .fields(trailerFields(status: status, metadata: metadata, maxMessageBytes: maxMessageBytes))
    }

    func submitResponseHeaders(streamID: Int32, metadata: Metadata) {
        let block = Self.responseHeaders(metadata: metadata)
        do {
            try session?.sendResponseHeaders(streamID: streamID, block: block, endStream: false)
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
        // Before the responses go out: a client that has its answer finds its call counted.
        callMetrics.flush()
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
            // The next pass starts with room for as much as this one wrote (up to a bound):
            // grown from nothing, a pass's buffer was reallocated as its frames were added.
            output = context.channel.allocator.buffer(capacity: min(bytes.readableBytes, Self.outputCapacityHint))
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
        guard writersParked, let session else { return }
        writersParked = false
        for (streamID, stream) in streams where !stream.waitingWriters.isEmpty {
            let outbound = session.bufferedOutboundBytes(streamID: streamID)
            guard stream.machine.drained(outbound: outbound, lowWaterMark: configuration.streamWriteLowWaterMark) > 0
            else {
                writersParked = true
                continue
            }
            let writers = stream.waitingWriters
            stream.waitingWriters = []
            for writer in writers { writer.resume() }
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
