import Codec
import Logging
import NGHTTP2Support
import NIOCore
import NIOHTTP1

/// The connection's timers and its life (ConnectionManager's actions), the stream sweep, and
/// the lingering close.
extension GRPCConnectionHandler {
    // MARK: Connection management

    func startHandshakeTimer(context: ChannelHandlerContext) {
        guard handshakeTimer == nil, let loopBound else { return }
        handshakeTimer = context.eventLoop.scheduleTask(in: configuration.handshakeTimeout) {
            loopBound.value.logger.debug("closing a connection that did not complete the HTTP/2 handshake")
            loopBound.value.act(loopBound.value.manager.handshakeTimedOut())
        }
    }

    /// Does what the connection manager decided.
    func act(_ action: ConnectionManager.Action) {
        switch action {
        case .none:
            break
        case .close(let reason):
            closeNote?.note(reason)
            context?.close(promise: nil)
        case .startIdleTimer:
            startIdleTimer()
        case .cancelIdleTimer:
            // Asked at every stream's start; nearly always there is no timer.
            if let timer = idleTimer {
                timer.cancel()
                idleTimer = nil
            }
        case .handshakeDone(let idle):
            handshakeTimer?.cancel()
            handshakeTimer = nil
            if idle { startIdleTimer() }
        case .sendShutdownNotice(let reason):
            closeNote?.note(reason)
            idleTimer?.cancel()
            idleTimer = nil
            do {
                try session?.sendShutdownNotice(pingOpaque: Self.shutdownPingOpaque)
            } catch {
                act(manager.shutdownNoticeFailed())
            }
            startGraceTimer()
            flushNow()
        case .sendFinalGoAway(let graceReason):
            try? session?.sendGoAway(errorCode: .noError)
            if let graceReason {
                closeNote?.note(graceReason)
                startGraceTimer()
            }
            scheduleFlush()
        case .goAwayForAbuse(let reason):
            logger.info("closing an abusive connection", metadata: ["reason": "\(reason)"])
            closeNote?.note(.abuse(reason))
            try? session?.sendGoAway(errorCode: .enhanceYourCalm, debugData: reason)
            cancelAllCalls()
            lingeringClose()
        case .closeForProtocolError:
            cancelAllCalls()
            lingeringClose()
        }
    }

    func startGraceTimer() {
        guard let context, let loopBound else { return }
        graceTimer?.cancel()
        graceTimer = context.eventLoop.scheduleTask(in: configuration.gracefulShutdownTimeout) {
            loopBound.value.context?.close(promise: nil)
        }
    }

    /// The sweep (stream idle and write-stall timeouts, a socket that stays unwritable) and
    /// the maximum connection age.
    func startConnectionTimers(context: ChannelHandlerContext) {
        guard let loopBound, sweepTask == nil else { return }
        let interval = timers.sweepInterval
        sweepTask = context.eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
            loopBound.value.sweep(now: .now())
        }
        let age = configuration.maxConnectionAge.nanoseconds
        let jitter = age / 10 > 0 ? Int64.random(in: -(age / 10)...(age / 10)) : 0
        ageTimer = context.eventLoop.scheduleTask(in: .nanoseconds(age + jitter)) {
            loopBound.value.logger.debug("draining a connection that reached its maximum age")
            loopBound.value.act(loopBound.value.manager.drain(.maxAge))
        }
    }

    /// Resets the streams whose idle or write-stall time is up; closes the connection when
    /// its socket stayed unwritable for the write-stall timeout.
    func sweep(now: NIODeadline) {
        guard let session, let context else { return }
        if let since = unwritableSince, now - since >= configuration.writeStallTimeout {
            logger.debug("closing a connection whose peer stopped reading")
            closeNote?.note(.writeStall)
            context.close(promise: nil)
            return
        }
        let expired = timers.sweep(now: now) { streamID in
            StreamTimers.Output(pending: session.hasPendingOutput(streamID: streamID),
                                sentBytes: session.sentBodyBytes(streamID: streamID))
        }
        for expiry in expired {
            let streamID = expiry.streamID
            logger.debug("resetting a stream", metadata: ["stream": "\(streamID)", "why": "\(expiry)"])
            if let stream = streams[streamID] {
                stream.end(.cancelled, in: callMetrics)
                stream.machine.markClosed()
                stream.task?.cancel()
                stream.verdict?.cancel()
                stream.inbound?.finish(throwing: CancellationError())
                stream.inbound = nil
                failWaitingWriters(streamID: streamID)
            }
            session.resetStream(streamID: streamID, errorCode: .cancel)
        }
        if !expired.isEmpty { scheduleFlush() }
    }

    func startIdleTimer() {
        guard idleTimer == nil, let context, let loopBound else { return }
        idleTimer = context.eventLoop.scheduleTask(in: configuration.idleTimeout) {
            let connection = loopBound.value
            connection.idleTimer = nil
            connection.logger.debug("closing an idle connection")
            connection.act(connection.manager.idleTimedOut(openStreams: connection.streams.count))
        }
    }

    /// GOAWAY(2^31-1) + PING; the final GOAWAY follows the PING's ack. In-flight calls finish;
    /// the connection closes when nghttp2 has nothing left to do, or at the grace deadline.
    func beginGracefulShutdown() {
        act(manager.drain(.shutdown))
    }

    func enforce(_ verdict: AbuseGuard.Verdict) {
        guard case .goAway(let reason) = verdict else { return }
        act(manager.abuse(reason: reason))
    }

    /// How long a connection closed for abuse or a protocol error keeps reading (and dropping)
    /// the peer's bytes after its GOAWAY.
    static let lingerTime: TimeAmount = .seconds(2)

    /// Writes what nghttp2 has (the GOAWAY), shuts the socket's output down, then drops what
    /// the peer still sends until it closes or `lingerTime` passes. Closing with unread input
    /// would make the kernel send a TCP RST, and the peer would lose the GOAWAY.
    func lingeringClose() {
        guard let context, let loopBound else { return }
        if let session, context.channel.isActive {
            _ = try? session.drainOutput(into: &output)
            if output.readableBytes > 0 {
                context.write(wrapOutboundOut(output), promise: nil)
                output = context.channel.allocator.buffer(capacity: 0)
            }
        }
        context.flush()
        context.close(mode: .output, promise: nil)
        context.channel.setOption(ChannelOptions.autoRead, value: true).whenFailure { _ in }
        graceTimer?.cancel()
        graceTimer = context.eventLoop.scheduleTask(in: Self.lingerTime) { loopBound.value.context?.close(promise: nil) }
    }
}
