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
/// A bidirectional-streaming call (`bidirectional: true`) starts its handler with the headers
/// and is in `streaming` until it ends: request messages are delivered as they arrive (the
/// deframer is nil once the client half-closed) while the handler responds.
///
/// Methods return what the caller must do; the machine itself has no side effects.
struct ServerCallStateMachine {
    enum State {
        case receiving(deframer: GRPCMessageDeframer, message: [UInt8]?)
        case handling
        case responding
        case streaming(deframer: GRPCMessageDeframer?, responded: Bool)
        case closed
    }

    private(set) var state: State

    init(maxMessageSize: Int, bidirectional: Bool = false) {
        let deframer = GRPCMessageDeframer(maxMessageSize: maxMessageSize)
        state = bidirectional ? .streaming(deframer: deframer, responded: false) : .receiving(deframer: deframer, message: nil)
    }

    enum ReceiveAction: Equatable {
        case none
        /// The request is complete: run the handler with this message.
        case startHandler(request: [UInt8])
        /// End the call now with a Trailers-Only response.
        case reject(EarlyResponse)
        /// Bidirectional: hand these request messages to the running handler.
        case deliver([[UInt8]])
        /// Bidirectional: the client half-closed; no more request messages.
        case endOfRequests
        /// Bidirectional: the request stream is broken; the handler ends the call with this.
        case failRequests(EarlyResponse)
    }

    mutating func receiveData(_ bytes: [UInt8]) -> ReceiveAction {
        if case .streaming(let deframer?, let responded) = state {
            var deframer = deframer
            state = .streaming(deframer: nil, responded: responded)
            do {
                try bytes.withUnsafeBytes { try deframer.append($0) }
            } catch let error as CodecError {
                return .failRequests(Self.rejection(for: error))
            } catch {
                return .failRequests(EarlyResponse(code: .internalError, message: "\(error)"))
            }
            var messages: [[UInt8]] = []
            while let next = deframer.next() { messages.append(next) }
            state = .streaming(deframer: deframer, responded: responded)
            return messages.isEmpty ? .none : .deliver(messages)
        }
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
        if case .streaming(let deframer?, let responded) = state {
            state = .streaming(deframer: nil, responded: responded)
            if deframer.hasPartialMessage {
                return .failRequests(EarlyResponse(code: .internalError, message: "the request ended inside a message"))
            }
            return .endOfRequests
        }
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

    /// The connection cannot hold more of this call's request (its buffer budget is spent):
    /// the call ends with `early` as a bad message would (receiving: Trailers-Only;
    /// bidirectional: the handler's request stream fails).
    mutating func requestRefused(_ early: EarlyResponse) -> ReceiveAction {
        switch state {
        case .receiving:
            state = .closed
            return .reject(early)
        case .streaming(.some, let responded):
            state = .streaming(deframer: nil, responded: responded)
            return .failRequests(early)
        case .streaming(.none, _), .handling, .responding, .closed:
            return .none
        }
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
        if case .streaming(let deframer, false) = state {
            state = .streaming(deframer: deframer, responded: true)
            return true
        }
        guard case .handling = state else { return false }
        state = .responding
        return true
    }

    mutating func sendMessage() -> SendAction {
        switch state {
        case .handling:
            state = .responding
            return .sendHeadersThenMessage
        case .responding, .streaming(_, true):
            return .sendMessage
        case .streaming(let deframer, false):
            state = .streaming(deframer: deframer, responded: true)
            return .sendHeadersThenMessage
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
        case .receiving, .handling, .streaming(_, false): return .sendTrailersOnly
        case .responding, .streaming(_, true): return .sendTrailers
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
        case .receiving, .handling, .streaming(_, false): return .sendDeadlineExceeded
        case .responding, .streaming(_, true): return .resetStream
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
