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
/// and is in `streaming` until it ends: request messages are delivered as they arrive (until
/// the client half-closes, `reading`) while the handler responds.
///
/// Methods return what the caller must do; the machine itself has no side effects.
struct ServerCallStateMachine {
    enum State: Equatable {
        case receiving
        case handling
        case responding
        /// Bidirectional; `responded` once response headers went out.
        case streaming(responded: Bool)
        case closed
    }

    /// Where the call is. The request's bytes live beside it (`assembly`, `message`), not in
    /// its cases: a payload was copied out of the enum and written back on every step, a
    /// retain and a release per buffer.
    private(set) var state: State
    private let maxMessageSize: Int
    /// The bytes of a request message split across DATA frames, and a bidirectional call's
    /// deframer; nil while none are held. Boxed and made only when needed: a request that
    /// arrives whole (nearly every unary one) is deframed on the stack, and a deframer kept
    /// inline made the machine a large value that was copied and destroyed at every step.
    private var assembly: Assembly?
    /// Bidirectional: request messages may still come (false once the client half-closed or
    /// the request stream failed).
    private var reading: Bool
    /// Receiving: the one request message, once complete.
    private var message: [UInt8]?

    private final class Assembly {
        var deframer: GRPCMessageDeframer

        init(_ deframer: GRPCMessageDeframer) {
            self.deframer = deframer
        }
    }

    init(maxMessageSize: Int, bidirectional: Bool = false) {
        self.maxMessageSize = maxMessageSize
        reading = bidirectional
        state = bidirectional ? .streaming(responded: false) : .receiving
    }

    /// The rare payloads are `indirect` (boxed): an action is copied from step to step of every
    /// call, and the size of its largest case was what each copy moved and switched over.
    enum ReceiveAction: Equatable {
        case none
        /// The request is complete: run the handler with this message.
        case startHandler(request: [UInt8])
        /// End the call now with a Trailers-Only response.
        indirect case reject(EarlyResponse)
        /// Bidirectional: hand these request messages to the running handler.
        case deliver([[UInt8]])
        /// Bidirectional: the client half-closed; no more request messages.
        case endOfRequests
        /// Bidirectional: the request stream is broken; the handler ends the call with this.
        indirect case failRequests(EarlyResponse)
    }

    mutating func receiveData(_ bytes: [UInt8]) -> ReceiveAction {
        bytes.withUnsafeBytes { receiveData($0) }
    }

    mutating func receiveData(_ bytes: UnsafeRawBufferPointer) -> ReceiveAction {
        switch state {
        case .streaming:
            guard reading else { return .none }
            let assembly = self.assembly ?? Assembly(GRPCMessageDeframer(maxMessageSize: maxMessageSize))
            self.assembly = assembly
            if let failure = Self.append(bytes, to: &assembly.deframer) {
                reading = false
                self.assembly = nil
                return .failRequests(failure)
            }
            var messages: [[UInt8]] = []
            while let next = assembly.deframer.next() { messages.append(next) }
            return messages.isEmpty ? .none : .deliver(messages)
        case .receiving:
            if let assembly {
                return receive(bytes, into: &assembly.deframer)
            }
            if message == nil {
                do {
                    if let whole = try GRPCMessageDeframer.wholeMessage(bytes, maxMessageSize: maxMessageSize) {
                        message = whole
                        return .none
                    }
                } catch {
                    close()
                    return .reject(Self.rejection(for: error))
                }
            }
            var deframer = GRPCMessageDeframer(maxMessageSize: maxMessageSize)
            let action = receive(bytes, into: &deframer)
            if state == .receiving, deframer.hasPartialMessage { assembly = Assembly(deframer) }
            return action
        case .handling, .responding, .closed:
            return .none
        }
    }

    /// Receiving: feeds `bytes` to `deframer` and takes the message it completes.
    private mutating func receive(_ bytes: UnsafeRawBufferPointer, into deframer: inout GRPCMessageDeframer) -> ReceiveAction {
        if let failure = Self.append(bytes, to: &deframer) {
            close()
            return .reject(failure)
        }
        while let next = deframer.next() {
            guard message == nil else {
                close()
                return .reject(EarlyResponse(code: .unimplemented,
                                             message: "request cardinality violation: expected one request message"))
            }
            message = next
        }
        return .none
    }

    mutating func receiveEnd() -> ReceiveAction {
        switch state {
        case .streaming:
            guard reading else { return .none }
            reading = false
            let partial = assembly?.deframer.hasPartialMessage ?? false
            assembly = nil
            if partial {
                return .failRequests(EarlyResponse(code: .internalError, message: "the request ended inside a message"))
            }
            return .endOfRequests
        case .receiving:
            let partial = assembly?.deframer.hasPartialMessage ?? false
            let request = message
            close()
            if partial {
                return .reject(EarlyResponse(code: .internalError, message: "the request ended inside a message"))
            }
            guard let request else {
                return .reject(EarlyResponse(code: .unimplemented,
                                             message: "request cardinality violation: expected one request message, got none"))
            }
            state = .handling
            return .startHandler(request: request)
        case .handling, .responding, .closed:
            return .none
        }
    }

    /// The connection cannot hold more of this call's request (its buffer budget is spent):
    /// the call ends with `early` as a bad message would (receiving: Trailers-Only;
    /// bidirectional: the handler's request stream fails).
    mutating func requestRefused(_ early: EarlyResponse) -> ReceiveAction {
        switch state {
        case .receiving:
            close()
            return .reject(early)
        case .streaming where reading:
            reading = false
            assembly = nil
            return .failRequests(early)
        case .streaming, .handling, .responding, .closed:
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
        switch state {
        case .streaming(responded: false):
            state = .streaming(responded: true)
            return true
        case .handling:
            state = .responding
            return true
        default:
            return false
        }
    }

    mutating func sendMessage() -> SendAction {
        switch state {
        case .handling:
            state = .responding
            return .sendHeadersThenMessage
        case .responding, .streaming(responded: true):
            return .sendMessage
        case .streaming(responded: false):
            state = .streaming(responded: true)
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
        defer { close() }
        switch state {
        case .receiving, .handling, .streaming(responded: false): return .sendTrailersOnly
        case .responding, .streaming(responded: true): return .sendTrailers
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
        defer { close() }
        switch state {
        case .receiving, .handling, .streaming(responded: false): return .sendDeadlineExceeded
        case .responding, .streaming(responded: true): return .resetStream
        case .closed: return .none
        }
    }

    mutating func streamClosed() {
        close()
    }

    var isClosed: Bool { state == .closed }

    var isBidirectional: Bool {
        if case .streaming = state { return true }
        return false
    }

    private mutating func close() {
        state = .closed
        reading = false
        assembly = nil
        message = nil
    }

    /// Feeds `bytes` to `deframer`; the rejection when they are not valid framing.
    private static func append(_ bytes: UnsafeRawBufferPointer, to deframer: inout GRPCMessageDeframer) -> EarlyResponse? {
        do {
            try deframer.append(bytes)
            return nil
        } catch {
            return rejection(for: error)
        }
    }

    private static func rejection(for error: CodecError) -> EarlyResponse {
        switch error.code {
        case .messageTooLarge: EarlyResponse(code: .resourceExhausted, message: error.message)
        default: EarlyResponse(code: .internalError, message: error.message)
        }
    }
}
