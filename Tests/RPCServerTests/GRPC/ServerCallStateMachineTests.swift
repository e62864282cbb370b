import Codec
import Testing
@testable import RPCServer

@Suite("The server call state machine")
struct ServerCallStateMachineTests {
    private func framed(_ body: [UInt8]) -> [UInt8] { GRPCFraming.frame(body) }

    @Test("one message then END_STREAM starts the handler with that message")
    func oneMessage() {
        var machine = ServerCallStateMachine(maxMessageSize: 100)
        let bytes = framed([1, 2, 3])
        #expect(machine.receiveData(Array(bytes[..<2])) == .none)
        #expect(machine.receiveData(Array(bytes[2...])) == .none)
        #expect(machine.receiveEnd() == .startHandler(request: [1, 2, 3]))
    }

    @Test("a second request message is a cardinality violation (UNIMPLEMENTED)")
    func twoMessages() {
        var machine = ServerCallStateMachine(maxMessageSize: 100)
        guard case .reject(let early) = machine.receiveData(framed([1]) + framed([2])) else {
            Issue.record("expected a rejection"); return
        }
        #expect(early.code == .unimplemented)
        #expect(machine.isClosed)
        #expect(machine.receiveEnd() == .none)
    }

    @Test("a bidirectional call delivers messages as they complete, answers while the client sends, and ends cleanly")
    func bidirectional() {
        var machine = ServerCallStateMachine(maxMessageSize: 100, bidirectional: true)
        let two = framed([1]) + framed([2, 2])
        #expect(machine.receiveData(Array(two.prefix(7))) == .deliver([[1]]))
        #expect(machine.sendMessage() == .sendHeadersThenMessage)
        #expect(machine.receiveData(Array(two.dropFirst(7))) == .deliver([[2, 2]]))
        #expect(machine.sendMessage() == .sendMessage)
        #expect(machine.receiveEnd() == .endOfRequests)
        #expect(machine.receiveData(framed([3])) == .none)
        #expect(machine.finish() == .sendTrailers)

        var cut = ServerCallStateMachine(maxMessageSize: 100, bidirectional: true)
        #expect(cut.receiveData(Array(framed([1, 2, 3]).prefix(6))) == .none)
        guard case .failRequests(let early) = cut.receiveEnd() else { Issue.record("expected a failure"); return }
        #expect(early.code == .internalError)
        #expect(cut.finish() == .sendTrailersOnly)

        var large = ServerCallStateMachine(maxMessageSize: 4, bidirectional: true)
        guard case .failRequests(let tooLarge) = large.receiveData(framed([1, 2, 3, 4, 5])) else {
            Issue.record("expected a failure"); return
        }
        #expect(tooLarge.code == .resourceExhausted)
    }

    @Test("END_STREAM without a message, or inside one, is rejected")
    func missingOrPartialMessage() {
        var empty = ServerCallStateMachine(maxMessageSize: 100)
        guard case .reject(let none) = empty.receiveEnd() else { Issue.record("expected a rejection"); return }
        #expect(none.code == .unimplemented)

        var partial = ServerCallStateMachine(maxMessageSize: 100)
        #expect(partial.receiveData(Array(framed([1, 2, 3]).prefix(6))) == .none)
        guard case .reject(let cut) = partial.receiveEnd() else { Issue.record("expected a rejection"); return }
        #expect(cut.code == .internalError)
    }

    @Test("a length prefix over the limit is RESOURCE_EXHAUSTED before the body arrives")
    func oversizedPrefix() {
        var machine = ServerCallStateMachine(maxMessageSize: 10)
        guard case .reject(let early) = machine.receiveData([0, 0, 0, 0, 11]) else {
            Issue.record("expected a rejection"); return
        }
        #expect(early.code == .resourceExhausted)
    }

    @Test("a compressed message without a negotiated encoding is INTERNAL")
    func compressedFlag() {
        var machine = ServerCallStateMachine(maxMessageSize: 10)
        guard case .reject(let early) = machine.receiveData([1, 0, 0, 0, 1, 7]) else {
            Issue.record("expected a rejection"); return
        }
        #expect(early.code == .internalError)
    }

    @Test("responses: headers once, then trailers; finishing before any message is Trailers-Only")
    func responses() {
        var streaming = ServerCallStateMachine(maxMessageSize: 10)
        _ = streaming.receiveData(framed([]))
        _ = streaming.receiveEnd()
        #expect(streaming.sendMessage() == .sendHeadersThenMessage)
        #expect(streaming.sendMessage() == .sendMessage)
        #expect(streaming.finish() == .sendTrailers)
        #expect(streaming.sendMessage() == .callClosed)
        #expect(streaming.finish() == .none)

        var failing = ServerCallStateMachine(maxMessageSize: 10)
        _ = failing.receiveData(framed([]))
        _ = failing.receiveEnd()
        #expect(failing.finish() == .sendTrailersOnly)
    }

    @Test("a deadline is Trailers-Only DEADLINE_EXCEEDED before headers, RST_STREAM after")
    func deadlines() {
        var early = ServerCallStateMachine(maxMessageSize: 10)
        _ = early.receiveData(framed([]))
        _ = early.receiveEnd()
        #expect(early.deadlineExpired() == .sendDeadlineExceeded)
        #expect(early.finish() == .none)

        var late = ServerCallStateMachine(maxMessageSize: 10)
        _ = late.receiveData(framed([]))
        _ = late.receiveEnd()
        _ = late.sendMessage()
        #expect(late.deadlineExpired() == .resetStream)
        #expect(late.deadlineExpired() == .none)
    }
}
