import Testing
@testable import RPCServer

@Suite("Connection manager: handshake, idle, drain, abuse")
struct ConnectionManagerTests {
    @Test("SETTINGS completes the handshake; without it the handshake timeout closes the connection")
    func handshake() {
        var manager = ConnectionManager()
        #expect(manager.handshakeTimedOut() == .close(.handshakeTimeout))
        var ready = ConnectionManager()
        #expect(ready.settingsReceived(openStreams: 0) == .handshakeDone(idle: true))
        #expect(ready.state == .active)
        #expect(ready.handshakeTimedOut() == .none)
        #expect(ready.settingsReceived(openStreams: 0) == .none)  // a later SETTINGS frame
    }

    @Test("the idle timer runs only while no stream is open, and an idle connection gets the final GOAWAY at once")
    func idle() {
        var manager = ConnectionManager()
        _ = manager.settingsReceived(openStreams: 0)
        #expect(manager.streamOpened() == .cancelIdleTimer)
        #expect(manager.allStreamsClosed() == .startIdleTimer)
        #expect(manager.idleTimedOut(openStreams: 1) == .none)  // a stream raced the timer
        #expect(manager.idleTimedOut(openStreams: 0) == .sendFinalGoAway(graceReason: .idle))
        #expect(manager.state == .goAwaySent)
        #expect(manager.allStreamsClosed() == .none)
        #expect(manager.drain(.shutdown) == .none)
    }

    @Test("a drain sends the notice, and the final GOAWAY follows the acknowledgement of its PING, once")
    func drain() {
        var manager = ConnectionManager()
        _ = manager.settingsReceived(openStreams: 2)
        #expect(manager.drain(.maxAge) == .sendShutdownNotice(.maxAge))
        #expect(manager.drain(.shutdown) == .none)
        #expect(manager.streamOpened() == .none)
        #expect(manager.shutdownPingAcknowledged() == .sendFinalGoAway(graceReason: nil))
        #expect(manager.shutdownPingAcknowledged() == .none)

        var early = ConnectionManager()
        #expect(early.drain(.shutdown) == .sendShutdownNotice(.shutdown))  // still in the handshake
        #expect(early.shutdownNoticeFailed() == .sendFinalGoAway(graceReason: nil))
    }

    @Test("abuse or a protocol error in any state closes once, and input is ignored from then on")
    func abuse() {
        var manager = ConnectionManager()
        _ = manager.settingsReceived(openStreams: 0)
        _ = manager.drain(.shutdown)
        #expect(manager.acceptsInput)
        #expect(manager.abuse(reason: "too_many_pings") == .goAwayForAbuse(reason: "too_many_pings"))
        #expect(!manager.acceptsInput)
        #expect(manager.abuse(reason: "empty_frames") == .none)
        #expect(manager.protocolError() == .none)
        #expect(manager.shutdownPingAcknowledged() == .none)

        var broken = ConnectionManager()
        #expect(broken.protocolError() == .closeForProtocolError)
        #expect(broken.handshakeTimedOut() == .none)
    }
}
