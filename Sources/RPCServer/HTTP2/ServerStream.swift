import Codec
import NIOCore
import NIOHTTP1

/// One request stream of an HTTP/2 connection, a gRPC call or a plain HTTP request (the REST
/// shim over h2c): its life, the request bytes it holds against the connection's budget, the
/// flow-control credit its DATA earns, and its writers' backpressure.
///
/// ```
///          headers
///   idle ────admitted───> open ───request complete──> dispatched ──response headers──> responding
///    │  (credentials       │   (a bidirectional call is dispatched at admission,       │
///    │   being checked)    │    its request still open)                                │
///    │ refused             │ bad or oversized request, budget spent                    │
///    └─────────────────────┴──────> refused                                            │
///   any state ── deadline, stream closed or reset by the peer ──> closed <──finish─────┘
/// ```
///
/// - idle: DATA stays as nghttp2 delivered it, neither budgeted nor credited, so the peer can
///   send at most the stream's initial window before the verdict.
/// - open, dispatched, responding: DATA goes into budgeted buffers and earns its credit back at
///   once; a gRPC call's own rules are `ServerCallStateMachine`'s.
/// - refused, closed: DATA is dropped and credited (a stream refused from its headers is not:
///   its held bytes go back to the connection when nghttp2 closes the stream).
///
/// Methods return what the connection must do; the only effect they have is on the budget
/// passed in. Not copyable: a stream's machine lives in its stream's object, and a copy (a
/// temporary moved in, a value read out) was a dozen reference-count operations.
struct ServerStream: ~Copyable {
    enum Phase: Equatable {
        case idle, open, refused, dispatched, responding, closed
    }

    /// A plain HTTP request's head and the body received so far. A class: a gRPC call's
    /// stream has none, and inline it made every gRPC stream's copy and destruction larger.
    final class HTTPRequestState {
        let method: String
        let uri: String
        let headers: HTTPHeaders
        var body = ByteBuffer()
        let maxBodySize: Int

        init(method: String, uri: String, headers: HTTPHeaders, maxBodySize: Int) {
            self.method = method
            self.uri = uri
            self.headers = headers
            self.maxBodySize = maxBodySize
        }
    }

    /// What a handler is started with. (Here and in `Action`, the rare payloads are `indirect`:
    /// see `ServerCallStateMachine.ReceiveAction`.)
    enum Dispatch {
        /// The one request message of a unary or server-streaming call.
        case grpcMessage([UInt8])
        /// A bidirectional call: messages follow through `deliver`.
        case grpcStream
        indirect case http(HTTPRequest)
    }

    enum Action {
        case startHandler(Dispatch)
        /// Bidirectional: hand these messages on, then report each through `delivered`.
        case deliver([[UInt8]])
        /// Bidirectional: the client half-closed.
        case endOfRequests
        /// Bidirectional: the request stream broke; the handler ends the call with this.
        indirect case failRequests(EarlyResponse)
        /// gRPC: end the call now with a Trailers-Only response.
        indirect case reject(EarlyResponse)
        /// HTTP: answer now with this (the body is no longer read).
        indirect case rejectHTTP(HTTPResponse)
    }

    /// What to do, and how many received bytes to give back to the peer as credit.
    struct Outcome: Sequence {
        /// The first action, inline: nearly every outcome has none or one, and an array of one
        /// was an allocation per call.
        private var first: Action?
        private var more: [Action] = []
        var credit = 0

        init(credit: Int = 0) {
            self.credit = credit
        }

        init(_ action: Action?) {
            first = action
        }

        /// The actions, in order.
        var actions: [Action] { Array(self) }

        mutating func append(_ action: Action?) {
            guard let action else { return }
            if first == nil { first = action } else { more.append(action) }
        }

        /// Appends `other`'s actions and adds its credit.
        mutating func append(contentsOf other: Outcome) {
            for action in other { append(action) }
            credit += other.credit
        }

        struct Iterator: IteratorProtocol {
            fileprivate var first: Action?
            fileprivate let more: [Action]
            fileprivate var index = 0

            mutating func next() -> Action? {
                if let action = first.take() { return action }
                guard index < more.count else { return nil }
                defer { index += 1 }
                return more[index]
            }
        }

        func makeIterator() -> Iterator { Iterator(first: first, more: more) }
    }

    private(set) var phase: Phase
    /// A gRPC call's machine, or a plain HTTP request (exactly one is set). Two fields, not an
    /// enum with payloads: a payload was copied out and written back on every step.
    private(set) var grpc: ServerCallStateMachine?
    private(set) var http: HTTPRequestState?
    /// Request bytes held against the connection's budget: a partial message or body, plus
    /// (bidirectional) whole messages queued and not yet taken by the handler.
    private(set) var buffered = 0
    /// Of `buffered`, the bytes of whole messages queued for a bidirectional handler.
    private(set) var queued = 0
    /// DATA received while idle, in order, and whether END_STREAM followed.
    private var held: [[UInt8]] = []
    private var heldEnd = false
    /// Writers waiting for the stream's output to drain.
    private(set) var parkedWriters = 0
    /// Refused from its headers: DATA that still arrives earns no credit.
    private var refusedUnread = false

    /// A gRPC call; `admitted` false leaves it idle until `admit` or `refuse`. (Its machine is
    /// built here: passed in, it was copied and the original destroyed.)
    @inline(__always)
    init(grpcMaxMessageSize maxMessageSize: Int, bidirectional: Bool, admitted: Bool) {
        grpc = ServerCallStateMachine(maxMessageSize: maxMessageSize, bidirectional: bidirectional)
        phase = admitted ? .open : .idle
    }

    /// A plain HTTP request whose body may be `maxBodySize` bytes.
    init(http method: String, uri: String, headers: HTTPHeaders, maxBodySize: Int, admitted: Bool) {
        http = HTTPRequestState(method: method, uri: uri, headers: headers, maxBodySize: maxBodySize)
        phase = admitted ? .open : .idle
    }

    var isBidirectional: Bool { grpc?.isBidirectional ?? false }

    /// Bytes received while idle and not yet accounted for (nor credited).
    var heldBytes: Int { held.reduce(0) { $0 + $1.count } }

    // MARK: Admission

    /// The verdict on the headers is yes: a bidirectional call is dispatched, then what was
    /// held is received as if it arrived now.
    mutating func admit(budget: inout ConnectionBufferBudget) -> Outcome {
        guard phase == .idle else { return Outcome() }
        phase = .open
        var outcome = Outcome()
        if isBidirectional {
            phase = .dispatched
            outcome.append(.startHandler(.grpcStream))
        }
        let chunks = held
        held = []
        for chunk in chunks {
            outcome.append(contentsOf: receiveData(chunk, budget: &budget))
        }
        if heldEnd {
            heldEnd = false
            outcome.append(contentsOf: receiveEnd(budget: &budget))
        }
        return outcome
    }

    /// The verdict on the headers is no: the stream is answered at once; what was held is
    /// dropped without credit.
    mutating func refuse() -> Bool {
        guard phase == .idle else { return false }
        phase = .refused
        refusedUnread = true
        held = []
        heldEnd = false
        grpc?.streamClosed()
        return true
    }

    // MARK: Request

    mutating func receiveData(_ bytes: [UInt8], budget: inout ConnectionBufferBudget) -> Outcome {
        bytes.withUnsafeBytes { receiveData($0, budget: &budget) }
    }

    /// A chunk of request body, read in place (copied only where it must stay).
    mutating func receiveData(_ bytes: UnsafeRawBufferPointer, budget: inout ConnectionBufferBudget) -> Outcome {
        if phase == .idle {
            held.append(Array(bytes))
            return Outcome()
        }
        if refusedUnread { return Outcome() }
        var outcome = Outcome(credit: bytes.count)
        if grpc != nil {
            guard !grpc!.isClosed else { return outcome }
            let action: ServerCallStateMachine.ReceiveAction
            if budget.reserve(bytes.count) {
                buffered += bytes.count
                action = grpc!.receiveData(bytes)
            } else {
                action = grpc!.requestRefused(EarlyResponse(
                    code: .resourceExhausted,
                    message: "the server holds too many request bytes for this connection (limit \(budget.limit)) or in total (limit \(budget.global.limit)); retry later"))
            }
            outcome.append(apply(action, budget: &budget))
        } else if http != nil {
            guard phase == .open else { return outcome }
            let maxBodySize = http!.maxBodySize
            let overLimit = http!.body.readableBytes + bytes.count > maxBodySize
            guard !overLimit, budget.reserve(bytes.count) else {
                http!.body = ByteBuffer()
                releaseAll(budget: &budget)
                phase = .refused
                outcome.append(.rejectHTTP(overLimit
                    ? RESTError.payloadTooLarge(limit: maxBodySize).response
                    : RESTError.serverBusy.response))
                return outcome
            }
            buffered += bytes.count
            http!.body.writeBytes(bytes)
        }
        return outcome
    }

    /// END_STREAM from the peer.
    mutating func receiveEnd(budget: inout ConnectionBufferBudget) -> Outcome {
        if phase == .idle {
            heldEnd = true
            return Outcome()
        }
        if grpc != nil {
            let action = grpc!.receiveEnd()
            return Outcome(apply(action, budget: &budget))
        }
        guard http != nil, phase == .open else { return Outcome() }
        let body = http!.body
        http!.body = ByteBuffer()
        // The body is handed on: the connection no longer holds it.
        releaseAll(budget: &budget)
        phase = .dispatched
        return Outcome(.startHandler(.http(HTTPRequest(
            method: HTTPMethod(rawValue: http!.method), uri: http!.uri, headers: http!.headers, body: body))))
    }

    /// A message handed to a bidirectional handler was queued (`enqueued`) or dropped because
    /// the handler had too many unread; a dropped one is no longer held.
    mutating func delivered(size: Int, enqueued: Bool, budget: inout ConnectionBufferBudget) {
        let size = size + GRPCFraming.prefixLength
        if enqueued {
            queued += size
        } else {
            buffered -= size
            budget.release(size)
        }
    }

    /// A bidirectional handler took a message of `count` bytes (its 5-byte prefix aside).
    mutating func messageTaken(count: Int, budget: inout ConnectionBufferBudget) {
        let taken = min(queued, count + GRPCFraming.prefixLength)
        queued -= taken
        buffered -= taken
        budget.release(taken)
    }

    /// The connection runs too many handlers to start this one: every byte is released and the
    /// stream is to be reset with REFUSED_STREAM.
    mutating func handlerRefused(budget: inout ConnectionBufferBudget) {
        releaseAll(budget: &budget)
        markClosed()
    }

    // MARK: Response

    /// gRPC: the handler sends response headers without a message; false when too late.
    mutating func sendHeaders() -> Bool {
        guard grpc != nil else { return false }
        let send = grpc!.sendHeaders()
        if send { phase = .responding }
        return send
    }

    mutating func sendMessage() -> ServerCallStateMachine.SendAction {
        guard grpc != nil else { return .callClosed }
        let action = grpc!.sendMessage()
        if action == .sendHeadersThenMessage { phase = .responding }
        return action
    }

    mutating func finish() -> ServerCallStateMachine.FinishAction {
        guard grpc != nil else { return .none }
        let action = grpc!.finish()
        phase = .closed
        return action
    }

    /// HTTP: the response head goes out.
    mutating func httpResponseStarted() {
        if phase == .dispatched { phase = .responding }
    }

    mutating func deadlineExpired() -> ServerCallStateMachine.DeadlineAction {
        held = []
        guard grpc != nil else { return .none }
        let action = grpc!.deadlineExpired()
        phase = .closed
        return action
    }

    enum WriteAction: Equatable {
        case resume
        /// The stream's output is over the high-water mark: the writer waits for `drained`.
        case park
    }

    /// A writer queued output; `outbound` bytes now wait for the peer's window.
    mutating func wrote(outbound: Int, highWaterMark: Int) -> WriteAction {
        guard outbound > highWaterMark else { return .resume }
        parkedWriters += 1
        return .park
    }

    /// The number of parked writers to resume now that `outbound` bytes wait.
    mutating func drained(outbound: Int, lowWaterMark: Int) -> Int {
        guard parkedWriters > 0, outbound < lowWaterMark else { return 0 }
        defer { parkedWriters = 0 }
        return parkedWriters
    }

    /// Parked writers are failed (the stream is over): no one waits any more.
    mutating func writersFailed() {
        parkedWriters = 0
    }

    // MARK: End

    /// The stream is reset (timers) or closed: its request is over.
    mutating func markClosed() {
        held = []
        heldEnd = false
        grpc?.streamClosed()
        http?.body = ByteBuffer()
        phase = .closed
    }

    /// nghttp2 closed the stream: its buffers are dropped, then their bytes released (in that
    /// order: the budget emptying is when freed memory goes back to the system).
    mutating func closed(budget: inout ConnectionBufferBudget) {
        markClosed()
        releaseAll(budget: &budget)
    }

    // MARK: Internals

    private mutating func releaseAll(budget: inout ConnectionBufferBudget) {
        budget.release(buffered)
        buffered = 0
        queued = 0
    }

    /// Releases the bytes no longer held (all but queued messages).
    private mutating func releaseUnqueued(budget: inout ConnectionBufferBudget) {
        budget.release(buffered - queued)
        buffered = queued
    }

    private mutating func apply(_ action: ServerCallStateMachine.ReceiveAction,
                                budget: inout ConnectionBufferBudget) -> Action? {
        switch action {
        case .none:
            return nil
        case .reject(let early):
            releaseUnqueued(budget: &budget)
            phase = .refused
            return .reject(early)
        case .startHandler(let message):
            // The message is handed on: the connection no longer holds its bytes.
            releaseUnqueued(budget: &budget)
            phase = .dispatched
            return .startHandler(.grpcMessage(message))
        case .deliver(let messages):
            return .deliver(messages)
        case .endOfRequests:
            return .endOfRequests
        case .failRequests(let early):
            releaseUnqueued(budget: &budget)
            return .failRequests(early)
        }
    }
}
