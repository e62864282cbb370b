import Codec

/// The server side of one unary or server-streaming gRPC call on one HTTP/2 stream.
///
/// ```
///                      receiveData (at most one message)
///                         ┌──────┐
///   headers accepted ──> receiving ──receiveEnd with one message──> handling ──first message──> responding
///                         │                                          │                            │
///                         │ bad or extra message, no message,        │ finish: Trailers-Only      │ finish: trailers
///                         │ deadline: Trailers-Only                  │ deadline: Trailers-Only    │ deadline: RST_STREAM(CANCEL)
///                         v                                          v                            v
///                       closed <─────────────────────────────────────┴────────────────────────────┘
///   any state ── stream closed or reset by the peer ──> closed (the handler is cancelled)
/// ```
///
/// Methods return what the caller must do; the machine itself has no side effects.
struct ServerCallStateMachine {
    enum State {
        case receiving(deframer: GRPCMessageDeframer, message: [UInt8]?)
        case handling
        case responding
        case closed
    }

    private(set) var state: State

    init(maxMessageSize: Int) {
        state = .receiving(deframer: GRPCMessageDeframer(maxMessageSize: maxMessageSize), message: nil)
    }

    enum ReceiveAction: Equatable {
        case none
        /// The request is complete: run the handler with this message.
        case startHandler(request: [UInt8])
        /// End the call now with a Trailers-Only response.
        case reject(EarlyResponse)
    }

    mutating func receiveData(_ bytes: [UInt8]) -> ReceiveAction {
        guard case .receiving(var deframer, var message) = state else { return .none }
        state = .closed  // while mutating the deframer in place
        do {
            try bytes.withUnsafeBytes { try deframer.append($0) }
        } catch let error as CodecError {
            return .reject(Self.rejection(for: error))
        } catch {
            return .reject(EarlyResponse(code: .internalError, message: "\(error)"))
        }
        while let next = deframer.next() {
            guard message == nil else {
                return .reject(EarlyResponse(code: .unimplemented,
                                             message: "request cardinality violation: expected one request message"))
            }
            message = next
        }
        state = .receiving(deframer: deframer, message: message)
        return .none
    }

    mutating func receiveEnd() -> ReceiveAction {
        guard case .receiving(let deframer, let message) = state else { return .none }
        state = .closed
        if deframer.hasPartialMessage {
            return .reject(EarlyResponse(code: .internalError, message: "the request ended inside a message"))
        }
        guard let message else {
            return .reject(EarlyResponse(code: .unimplemented,
                                         message: "request cardinality violation: expected one request message, got none"))
        }
        state = .handling
        return .startHandler(request: message)
    }

    enum SendAction: Equatable {
        /// Submit response headers, then the message.
        case sendHeadersThenMessage
        case sendMessage
        /// The call is over; the writer must stop.
        case callClosed
    }

    /// The handler wants to send response headers (without a message yet).
    mutating func sendHeaders() -> Bool {
        guard case .handling = state else { return false }
        state = .responding
        return true
    }

    mutating func sendMessage() -> SendAction {
        switch state {
        case .handling:
            state = .responding
            return .sendHeadersThenMessage
        case .responding:
            return .sendMessage
        case .receiving, .closed:
            return .callClosed
        }
    }

    enum FinishAction: Equatable {
        case sendTrailersOnly
        case sendTrailers
        case none
    }

    mutating func finish() -> FinishAction {
        defer { state = .closed }
        switch state {
        case .receiving, .handling: return .sendTrailersOnly
        case .responding: return .sendTrailers
        case .closed: return .none
        }
    }

    enum DeadlineAction: Equatable {
        /// Trailers-Only DEADLINE_EXCEEDED (clients report CANCELLED for a bare RST_STREAM).
        case sendDeadlineExceeded
        /// Headers went out already: RST_STREAM(CANCEL).
        case resetStream
        case none
    }

    mutating func deadlineExpired() -> DeadlineAction {
        defer { state = .closed }
        switch state {
        case .receiving, .handling: return .sendDeadlineExceeded
        case .responding: return .resetStream
        case .closed: return .none
        }
    }

    mutating func streamClosed() {
        state = .closed
    }

    var isClosed: Bool {
        if case .closed = state { return true }
        return false
    }

    private static func rejection(for error: CodecError) -> EarlyResponse {
        switch error.code {
        case .messageTooLarge: EarlyResponse(code: .resourceExhausted, message: error.message)
        default: EarlyResponse(code: .internalError, message: error.message)
        }
    }
}
