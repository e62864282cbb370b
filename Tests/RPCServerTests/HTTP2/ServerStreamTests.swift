import Codec
import NIOCore
import NIOHTTP1
import Testing
@testable import RPCServer

@Suite("The per-stream state machine shared by gRPC calls and REST over h2c")
struct ServerStreamTests {
    private func framed(_ body: [UInt8]) -> [UInt8] { GRPCFraming.frame(body) }

    private func budget(_ limit: Int = 1 << 20) -> ConnectionBufferBudget {
        ConnectionBufferBudget(limit: limit, global: RequestBufferBudget(limit: 1 << 30))
    }

    private func unary(admitted: Bool = true) -> ServerStream {
        ServerStream(grpcMaxMessageSize: 100, bidirectional: false, admitted: admitted)
    }

    private func bidirectional(admitted: Bool = true) -> ServerStream {
        ServerStream(grpcMaxMessageSize: 100, bidirectional: true, admitted: admitted)
    }

    private func http(maxBodySize: Int = 100, admitted: Bool = true) -> ServerStream {
        ServerStream(http: "POST", uri: "/v1/workflows/run", headers: ["content-type": "application/json"],
                     maxBodySize: maxBodySize, admitted: admitted)
    }

    @Test("an admitted unary call holds its bytes against the budget, credits them at once and releases them when the handler starts")
    func unaryCall() {
        var budget = budget()
        var stream = unary()
        #expect(stream.phase == .open)
        let received = stream.receiveData(framed([1, 2, 3]), budget: &budget)
        #expect(received.credit == 8)
        #expect(received.actions.isEmpty)
        #expect(budget.used == 8)
        #expect(stream.buffered == 8)
        let ended = stream.receiveEnd(budget: &budget)
        guard case .startHandler(.grpcMessage(let message)) = ended.actions.first else {
            Issue.record("expected the handler to start"); return
        }
        #expect(message == [1, 2, 3])
        #expect(budget.used == 0)
        #expect(stream.phase == .dispatched)
        #expect(stream.sendMessage() == .sendHeadersThenMessage)
        #expect(stream.phase == .responding)
        #expect(stream.finish() == .sendTrailers)
        #expect(stream.phase == .closed)
    }

    @Test("an idle stream holds its DATA with no budget and no credit until admitted, then receives it as if it arrived now")
    func idleThenAdmitted() {
        var budget = budget()
        var stream = unary(admitted: false)
        #expect(stream.phase == .idle)
        let received = stream.receiveData(framed([7, 7]), budget: &budget)
        #expect(received.credit == 0)
        #expect(received.actions.isEmpty)
        #expect(budget.used == 0)
        #expect(stream.heldBytes == 7)
        let outcome1 = stream.receiveEnd(budget: &budget)
        #expect(outcome1.actions.isEmpty)

        let admitted = stream.admit(budget: &budget)
        #expect(admitted.credit == 7)
        guard case .startHandler(.grpcMessage(let message)) = admitted.actions.first else {
            Issue.record("expected the handler to start"); return
        }
        #expect(message == [7, 7])
        #expect(stream.heldBytes == 0)
        #expect(budget.used == 0)
        #expect(stream.phase == .dispatched)
    }

    @Test("a stream refused from its headers drops what it held and never credits DATA, then or later")
    func refusedFromHeaders() {
        var budget = budget()
        var stream = http(admitted: false)
        _ = stream.receiveData(Array(repeating: 1, count: 50), budget: &budget)
        let refused = stream.refuse()
        #expect(refused)
        #expect(stream.phase == .refused)
        #expect(stream.heldBytes == 0)
        let later = stream.receiveData(Array(repeating: 1, count: 30), budget: &budget)
        #expect(later.credit == 0)
        #expect(later.actions.isEmpty)
        let outcome2 = stream.receiveEnd(budget: &budget)
        #expect(outcome2.actions.isEmpty)
        #expect(budget.used == 0)
        let refusedAgain = stream.refuse()
        #expect(!refusedAgain)
        let outcome3 = stream.admit(budget: &budget)
        #expect(outcome3.actions.isEmpty)
    }

    @Test("a gRPC request over the connection's budget is answered RESOURCE_EXHAUSTED; its later DATA is dropped and credited")
    func overBudget() {
        var budget = budget(10)
        var stream = unary()
        let received = stream.receiveData(framed(Array(repeating: 0, count: 20)), budget: &budget)
        #expect(received.credit == 25)
        guard case .reject(let early) = received.actions.first else {
            Issue.record("expected a rejection"); return
        }
        #expect(early.code == .resourceExhausted)
        #expect(stream.phase == .refused)
        #expect(budget.used == 0)
        let later = stream.receiveData([1, 2, 3], budget: &budget)
        #expect(later.credit == 3)
        #expect(later.actions.isEmpty)
        #expect(budget.used == 0)
    }

    @Test("a bad request message is rejected and its partial bytes released")
    func badMessage() {
        var budget = budget()
        var stream = unary()
        guard case .reject(let early) = stream.receiveData(framed([1]) + framed([2]), budget: &budget).actions.first else {
            Issue.record("expected a rejection"); return
        }
        #expect(early.code == .unimplemented)
        #expect(budget.used == 0)
        #expect(stream.buffered == 0)
    }

    @Test("bidirectional messages stay counted while queued and are released as the handler takes them or when dropped")
    func bidirectionalQueue() {
        var budget = budget()
        var stream = bidirectional()
        let outcome = stream.receiveData(framed([1]) + framed([2, 2]) + [0, 0], budget: &budget)
        #expect(outcome.credit == 15)
        guard case .deliver(let messages) = outcome.actions.first else {
            Issue.record("expected messages"); return
        }
        #expect(messages == [[1], [2, 2]])
        #expect(budget.used == 15)
        stream.delivered(size: 1, enqueued: true, budget: &budget)
        stream.delivered(size: 2, enqueued: false, budget: &budget)
        #expect(stream.queued == 6)
        #expect(stream.buffered == 8)  // the queued message and 2 bytes of the next prefix
        #expect(budget.used == 8)
        stream.messageTaken(count: 1, budget: &budget)
        #expect(stream.queued == 0)
        #expect(budget.used == 2)
        stream.closed(budget: &budget)
        #expect(budget.used == 0)
        #expect(stream.phase == .closed)
    }

    @Test("an idle bidirectional call starts its handler at admission, before the messages it held are delivered")
    func bidirectionalAdmission() {
        var budget = budget()
        var stream = bidirectional(admitted: false)
        _ = stream.receiveData(framed([5]), budget: &budget)
        _ = stream.receiveEnd(budget: &budget)
        let outcome = stream.admit(budget: &budget)
        #expect(outcome.actions.count == 3)
        guard case .startHandler(.grpcStream) = outcome.actions[0],
              case .deliver(let messages) = outcome.actions[1],
              case .endOfRequests = outcome.actions[2] else {
            Issue.record("expected start, deliver, end of requests; got \(outcome.actions)"); return
        }
        #expect(messages == [[5]])
        #expect(outcome.credit == 6)
        #expect(stream.phase == .dispatched)
    }

    @Test("a bidirectional call over the budget fails its request stream but keeps its response going")
    func bidirectionalOverBudget() {
        var budget = budget(4)
        var stream = bidirectional()
        guard case .failRequests(let early) = stream.receiveData(framed([1, 2, 3]), budget: &budget).actions.first else {
            Issue.record("expected the request stream to fail"); return
        }
        #expect(early.code == .resourceExhausted)
        #expect(stream.sendMessage() == .sendHeadersThenMessage)
        #expect(stream.finish() == .sendTrailers)
    }

    @Test("an HTTP body is buffered until END_STREAM, then handed on whole and released")
    func httpBody() {
        var budget = budget()
        var stream = http()
        let outcome4 = stream.receiveData(Array("{\"a\":".utf8), budget: &budget)
        #expect(outcome4.credit == 5)
        let outcome5 = stream.receiveData(Array("1}".utf8), budget: &budget)
        #expect(outcome5.credit == 2)
        #expect(budget.used == 7)
        let ended = stream.receiveEnd(budget: &budget)
        guard case .startHandler(.http(let request)) = ended.actions.first else {
            Issue.record("expected the handler to start"); return
        }
        #expect(request.method == .POST)
        #expect(request.path == "/v1/workflows/run")
        #expect(String(buffer: request.body) == "{\"a\":1}")
        #expect(budget.used == 0)
        #expect(stream.phase == .dispatched)
        stream.httpResponseStarted()
        #expect(stream.phase == .responding)
    }

    @Test("an HTTP body over its size limit is answered 413, over the budget 503, and its bytes are released")
    func httpLimits() {
        var budget = budget()
        var stream = http(maxBodySize: 10)
        _ = stream.receiveData(Array(repeating: 1, count: 8), budget: &budget)
        let over = stream.receiveData(Array(repeating: 1, count: 8), budget: &budget)
        guard case .rejectHTTP(let response) = over.actions.first else {
            Issue.record("expected a refusal"); return
        }
        #expect(response.status == .payloadTooLarge)
        #expect(over.credit == 8)
        #expect(budget.used == 0)
        #expect(stream.phase == .refused)
        let outcome6 = stream.receiveEnd(budget: &budget)
        #expect(outcome6.actions.isEmpty)

        var small = self.budget(4)
        var busy = http()
        guard case .rejectHTTP(let busyResponse) = busy.receiveData([1, 2, 3, 4, 5], budget: &small).actions.first else {
            Issue.record("expected a refusal"); return
        }
        #expect(busyResponse.status == .serviceUnavailable)
        #expect(small.used == 0)
    }

    @Test("the deadline of an idle call answers DEADLINE_EXCEEDED and drops what it held")
    func idleDeadline() {
        var budget = budget()
        var stream = unary(admitted: false)
        _ = stream.receiveData(framed([1]), budget: &budget)
        #expect(stream.deadlineExpired() == .sendDeadlineExceeded)
        #expect(stream.heldBytes == 0)
        #expect(stream.phase == .closed)
        let outcome7 = stream.admit(budget: &budget)
        #expect(outcome7.actions.isEmpty)
    }

    @Test("a handler refused for the connection's cap releases every byte and closes the stream")
    func handlerRefused() {
        var budget = budget()
        var stream = bidirectional()
        _ = stream.receiveData(framed([1]) + [0], budget: &budget)
        stream.delivered(size: 1, enqueued: true, budget: &budget)
        #expect(budget.used == 7)
        stream.handlerRefused(budget: &budget)
        #expect(budget.used == 0)
        #expect(stream.phase == .closed)
        let outcome8 = stream.receiveData(framed([2]), budget: &budget)
        #expect(outcome8.actions.isEmpty)
    }

    @Test("writers park over the high-water mark and all resume once the output is under the low-water mark")
    func writers() {
        var stream = unary()
        #expect(stream.wrote(outbound: 10, highWaterMark: 100) == .resume)
        #expect(stream.wrote(outbound: 200, highWaterMark: 100) == .park)
        #expect(stream.wrote(outbound: 300, highWaterMark: 100) == .park)
        #expect(stream.drained(outbound: 150, lowWaterMark: 50) == 0)
        #expect(stream.drained(outbound: 20, lowWaterMark: 50) == 2)
        #expect(stream.parkedWriters == 0)
        #expect(stream.drained(outbound: 0, lowWaterMark: 50) == 0)
    }
}
