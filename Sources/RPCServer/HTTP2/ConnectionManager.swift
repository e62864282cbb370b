/// The life of one HTTP/2 connection apart from its streams: handshake, idle, draining
/// (shutdown or maximum age), the final GOAWAY, and closes for abuse or protocol errors.
///
/// ```
///                SETTINGS             drain (shutdown, max age)           shutdown PING ack
///  handshaking ───────────> active ────────────────────────────> noticeSent ───────────────> goAwaySent
///     │   │ drain ─────────────────────────────────────────────────^                           ^
///     │   handshake timeout: close        │ idle timeout, no open stream: final GOAWAY ────────┘
///     v                                   │ (grace timers close noticeSent / goAwaySent connections)
///   any state ── abuse or protocol error ──> closingForAbuse (GOAWAY ENHANCE_YOUR_CALM, linger, close)
/// ```
///
/// A plain value: each event returns what the connection must do; the connection owns the
/// timers and the nghttp2 session, and reports their expiry back as events.
struct ConnectionManager: Equatable {
    enum State: Equatable {
        case handshaking
        case active
        /// GOAWAY(2^31-1) and a PING sent; the final GOAWAY follows the PING's acknowledgement.
        case noticeSent
        /// The final GOAWAY is sent; the connection closes when nghttp2 is done or at the grace deadline.
        case goAwaySent
        /// GOAWAY(ENHANCE_YOUR_CALM) or a protocol error: the peer is no longer listened to.
        case closingForAbuse
    }

    enum Action: Equatable {
        case none
        /// Close now, noting `reason`.
        case close(ConnectionCloseReason)
        case startIdleTimer
        case cancelIdleTimer
        /// Cancel the handshake timer (and start the idle timer when `idle`).
        case handshakeDone(idle: Bool)
        /// GOAWAY(2^31-1) + PING, note `reason`, start the grace timer.
        case sendShutdownNotice(ConnectionCloseReason)
        /// The final GOAWAY(NO_ERROR); with `graceReason`, note it and start the grace timer.
        case sendFinalGoAway(graceReason: ConnectionCloseReason?)
        /// GOAWAY(ENHANCE_YOUR_CALM, reason), end every call, lingering close.
        case goAwayForAbuse(reason: String)
        /// A fatal protocol error: end every call, lingering close (nghttp2 queued its GOAWAY).
        case closeForProtocolError
    }

    private(set) var state = State.handshaking

    /// True while the peer's bytes are still read and acted on.
    var acceptsInput: Bool { state != .closingForAbuse }

    mutating func settingsReceived(openStreams: Int) -> Action {
        guard state == .handshaking else { return .none }
        state = .active
        return .handshakeDone(idle: openStreams == 0)
    }

    mutating func handshakeTimedOut() -> Action {
        state == .handshaking ? .close(.handshakeTimeout) : .none
    }

    mutating func streamOpened() -> Action {
        state == .active ? .cancelIdleTimer : .none
    }

    mutating func allStreamsClosed() -> Action {
        state == .active ? .startIdleTimer : .none
    }

    /// An idle connection has no call to drain: the final GOAWAY goes out at once.
    mutating func idleTimedOut(openStreams: Int) -> Action {
        guard state == .active, openStreams == 0 else { return .none }
        state = .goAwaySent
        return .sendFinalGoAway(graceReason: .idle)
    }

    /// Graceful shutdown of the server, or the connection reached its maximum age.
    mutating func drain(_ reason: ConnectionCloseReason) -> Action {
        guard state == .handshaking || state == .active else { return .none }
        state = .noticeSent
        return .sendShutdownNotice(reason)
    }

    /// The shutdown notice could not be submitted: go straight to the final GOAWAY.
    mutating func shutdownNoticeFailed() -> Action {
        guard state == .noticeSent else { return .none }
        state = .goAwaySent
        return .sendFinalGoAway(graceReason: nil)
    }

    mutating func shutdownPingAcknowledged() -> Action {
        guard state == .noticeSent else { return .none }
        state = .goAwaySent
        return .sendFinalGoAway(graceReason: nil)
    }

    mutating func abuse(reason: String) -> Action {
        guard state != .closingForAbuse else { return .none }
        state = .closingForAbuse
        return .goAwayForAbuse(reason: reason)
    }

    mutating func protocolError() -> Action {
        guard state != .closingForAbuse else { return .none }
        state = .closingForAbuse
        return .closeForProtocolError
    }
}
