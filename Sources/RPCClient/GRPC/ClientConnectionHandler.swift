import Codec
import NIOCore

/// A call as the connection starts it: the already-framed request and where responses go.
struct ClientCallRequest: Sendable {
    var path: String
    /// Extra request headers (lowercase names), e.g. `authorization`.
    var metadata: [(name: String, value: String)]
    var timeout: Duration?
    var framedRequest: [UInt8]
    var sink: AsyncThrowingStream<[UInt8], any Error>.Continuation
}

/// One HTTP/2 connection to a gRPC server: an nghttp2 client session fed from the channel,
/// with the calls on it.
///
/// Everything here runs on the channel's event loop; `GRPCClientConnection` hops onto it.
final class ClientConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private struct Call {
        var machine: ClientCallStateMachine
        let sink: AsyncThrowingStream<[UInt8], any Error>.Continuation
        var deadline: Scheduled<Void>?
        /// When `deadline` fires.
        var deadlineAt: NIODeadline?
    }

    private let configuration: GRPCClientConfiguration
    private let authority: String
    private var session: NGHTTP2ClientSession?
    private var context: ChannelHandlerContext?
    private var calls: [Int32: Call] = [:]
    /// Set once the connection cannot take new calls (closed, failed, or GOAWAY received).
    private var closedReason: String?

    init(configuration: GRPCClientConfiguration, authority: String) {
        self.configuration = configuration
        self.authority = authority
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        do {
            session = try NGHTTP2ClientSession(settings: .init(
                initialWindowSize: configuration.initialWindowSize,
                maxHeaderListSize: configuration.maxResponseHeaderListSize))
        } catch {
            closedReason = "cannot start an HTTP/2 session: \(error)"
            context.close(promise: nil)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        failAll("the connection was closed")
        session = nil
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        flush()
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll("the connection to the server was lost")
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        failAll("connection error: \(error)")
        context.close(promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let session else { return }
        let bytes = unwrapInboundIn(data)
        do {
            try bytes.withUnsafeReadableBytes { buffer throws(HTTP2ClientSessionError) in try session.receive(buffer) }
        } catch {
            failAll("HTTP/2 error from the server: \(error)")
            flush()
            context.close(promise: nil)
            return
        }
        handleEvents()
        flush()
    }

    // MARK: Calls

    /// Starts a call, or fails its sink at once when the connection cannot take it.
    func startCall(_ request: ClientCallRequest) {
        guard let session, closedReason == nil else {
            request.sink.finish(throwing: GRPCCallError(code: .unavailable, message: closedReason ?? "not connected"))
            return
        }
        var fields = [
            HTTP2HeaderField(name: ":method", value: "POST"),
            HTTP2HeaderField(name: ":scheme", value: "http"),
            HTTP2HeaderField(name: ":path", value: request.path),
            HTTP2HeaderField(name: ":authority", value: authority),
            HTTP2HeaderField(name: "content-type", value: "application/grpc"),
            HTTP2HeaderField(name: "te", value: "trailers"),
            HTTP2HeaderField(name: "user-agent", value: configuration.userAgent),
        ]
        if let timeout = request.timeout {
            fields.append(HTTP2HeaderField(name: "grpc-timeout", value: Self.encodeTimeout(timeout)))
        }
        for entry in request.metadata { fields.append(HTTP2HeaderField(name: entry.name, value: entry.value)) }
        let streamID: Int32
        do {
            streamID = try session.submitRequest(fields: fields, body: request.framedRequest)
        } catch {
            request.sink.finish(throwing: GRPCCallError(code: .unavailable, message: "cannot open a stream", cause: error))
            return
        }
        var call = Call(machine: ClientCallStateMachine(maxMessageSize: configuration.maxResponseMessageSize),
                        sink: request.sink)
        if let timeout = request.timeout, let context {
            let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
            call.deadlineAt = .now() + TimeAmount(timeout)
            call.deadline = context.eventLoop.scheduleTask(in: TimeAmount(timeout)) {
                loopBound.value.applyAndFlush(streamID: streamID) { $0.deadlineExpired() }
            }
        }
        calls[streamID] = call
        let loopBound = NIOLoopBound(self, eventLoop: context!.eventLoop)
        let eventLoop = context!.eventLoop
        request.sink.onTermination = { termination in
            guard case .cancelled = termination else { return }
            eventLoop.execute { loopBound.value.applyAndFlush(streamID: streamID) { $0.cancel() } }
        }
        flush()
    }

    /// GOAWAY, then close once it is written.
    func close() {
        closedReason = "the connection is closing"
        session?.terminate()
        flush()
        context?.close(promise: nil)
    }

    // MARK: Internals

    private func handleEvents() {
        guard let session else { return }
        for event in session.takeEvents() {
            switch event {
            case .headers(let id, let fields, let tooLarge, let endStream):
                apply(streamID: id) { $0.receiveHeaders(fields, tooLarge: tooLarge, endStream: endStream) }
            case .data(let id, let bytes):
                apply(streamID: id) { $0.receiveData(bytes) }
            case .endOfResponse(let id):
                apply(streamID: id) { $0.receiveEndOfResponse() }
            case .streamClosed(let id, let errorCode):
                // A server resets a call whose deadline passed once its headers went out
                // (RST_STREAM CANCEL). Read before this side's own timer ran (a busy or
                // descheduled client handles the socket first), the call still ended by its
                // deadline: DEADLINE_EXCEEDED, as the timer would have said, not CANCELLED.
                if errorCode == 0x8, let due = calls[id]?.deadlineAt, NIODeadline.now() >= due {
                    apply(streamID: id) { machine in
                        machine.deadlineExpired().filter { if case .resetStream = $0 { false } else { true } }
                    }
                } else {
                    apply(streamID: id) { $0.streamClosed(errorCode: errorCode) }
                }
                calls.removeValue(forKey: id)?.deadline?.cancel()
            case .goAway:
                closedReason = "the server is going away (GOAWAY)"
            }
        }
    }

    /// Runs one state-machine step for a call and carries out its actions (output is written by
    /// the caller's flush).
    private func apply(streamID: Int32, _ step: (inout ClientCallStateMachine) -> [ClientCallStateMachine.Action]) {
        guard var call = calls[streamID] else { return }
        let actions = step(&call.machine)
        calls[streamID] = call
        for action in actions {
            switch action {
            case .deliver(let message):
                call.sink.yield(message)
            case .resetStream:
                session?.resetStream(streamID: streamID, errorCode: .cancel)
            case .finish(let status):
                call.deadline?.cancel()
                if let status {
                    call.sink.finish(throwing: GRPCCallError(code: status.code, message: status.message,
                                                             details: status.details))
                } else {
                    call.sink.finish()
                }
            }
        }
        if call.machine.isFinished { calls.removeValue(forKey: streamID) }
    }

    /// A state-machine step from outside `channelRead` (a timer, a cancellation): its output is
    /// written at once.
    private func applyAndFlush(streamID: Int32, _ step: (inout ClientCallStateMachine) -> [ClientCallStateMachine.Action]) {
        apply(streamID: streamID, step)
        flush()
    }

    private func failAll(_ reason: String) {
        closedReason = closedReason ?? reason
        for id in Array(calls.keys) {
            apply(streamID: id) { $0.connectionLost(reason) }
        }
    }

    private func flush() {
        guard let session, let context, context.channel.isActive else { return }
        var buffer = context.channel.allocator.buffer(capacity: 0)
        do {
            try session.drainOutput(into: &buffer)
        } catch {
            failAll("HTTP/2 error: \(error)")
            context.close(promise: nil)
            return
        }
        if buffer.readableBytes > 0 { context.writeAndFlush(wrapOutboundOut(buffer), promise: nil) }
    }

    /// `grpc-timeout`: at most 8 digits and a unit; the finest unit that fits.
    static func encodeTimeout(_ timeout: Duration) -> String {
        let (seconds, attoseconds) = timeout.components
        let nanos = max(0, seconds) * 1_000_000_000 + max(0, attoseconds) / 1_000_000_000
        for (unit, divisor) in [("n", Int64(1)), ("u", 1_000), ("m", 1_000_000), ("S", 1_000_000_000),
                                ("M", 60_000_000_000), ("H", 3_600_000_000_000)] {
            let value = (nanos + divisor - 1) / divisor
            if value < 100_000_000 { return "\(value)\(unit)" }
        }
        return "99999999H"
    }
}

extension TimeAmount {
    init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        self = .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}
