import Codec
import NIOCore
import Testing
@testable import RPCServer

/// The connection's bookkeeping types, driven with explicit times (no wall clock).
@Suite("Connection policy: abuse counters, stream timers, budgets, limits")
struct ConnectionPolicyTests {
    private let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000)

    private func limits(_ change: (inout ServerConfiguration) -> Void = { _ in }) -> AbuseGuard.Limits {
        var configuration = ServerConfiguration()
        change(&configuration)
        return AbuseGuard.Limits(configuration: configuration)
    }

    @Test("PING and SETTINGS floods get GOAWAY once over the per-window count, and the window rolls")
    func pingAndSettingsWindows() {
        var abuse = AbuseGuard(limits: limits { $0.maxPingsPerWindow = 3; $0.maxSettingsPerWindow = 2 }, now: t0)
        for _ in 0..<3 { #expect(abuse.ping(now: t0) == .ok) }
        #expect(abuse.ping(now: t0) == .goAway(reason: "too_many_pings"))
        // A new window forgives the past.
        #expect(abuse.ping(now: t0 + .seconds(11)) == .ok)
        #expect(abuse.settingsFrame(now: t0) == .ok)
        #expect(abuse.settingsFrame(now: t0) == .ok)
        #expect(abuse.settingsFrame(now: t0) == .goAway(reason: "too_many_settings"))
        #expect(abuse.settingsFrame(now: t0 + .seconds(22)) == .ok)
    }

    @Test("empty DATA frames are counted per window, so a byte between them does not make the flood free")
    func emptyFramesPerWindow() {
        var abuse = AbuseGuard(limits: limits { $0.maxConsecutiveEmptyFrames = 10; $0.maxEmptyFramesPerWindow = 30 }, now: t0)
        var verdicts: [AbuseGuard.Verdict] = []
        for _ in 0..<4 {
            for _ in 0..<9 { verdicts.append(abuse.emptyDataFrame(now: t0)) }
            abuse.dataWithPayload()
        }
        #expect(verdicts.prefix(30).allSatisfy { $0 == .ok })
        #expect(verdicts[30] == .goAway(reason: "empty_frames"))
    }

    @Test("consecutive empty DATA frames over the limit get GOAWAY")
    func consecutiveEmptyFrames() {
        var abuse = AbuseGuard(limits: limits { $0.maxConsecutiveEmptyFrames = 3 }, now: t0)
        for _ in 0..<3 { #expect(abuse.emptyDataFrame(now: t0) == .ok) }
        #expect(abuse.emptyDataFrame(now: t0) == .goAway(reason: "empty_frames"))
    }

    @Test("more than half of the streams reset within their first second is a GOAWAY, once enough streams were opened")
    func prematureResets() {
        var abuse = AbuseGuard(limits: limits { $0.prematureResetMinStreams = 10 }, now: t0)
        for _ in 0..<9 { abuse.streamOpened() }
        for _ in 0..<9 { #expect(abuse.peerReset(lifetime: .milliseconds(5)) == .ok) }  // under the minimum
        abuse.streamOpened()
        #expect(abuse.peerReset(lifetime: .milliseconds(5)) == .goAway(reason: "premature_resets"))

        var patient = AbuseGuard(limits: limits { $0.prematureResetMinStreams = 10 }, now: t0)
        for _ in 0..<20 { patient.streamOpened() }
        for _ in 0..<20 { #expect(patient.peerReset(lifetime: .seconds(2)) == .ok) }  // long-lived streams
    }

    @Test("a stream whose request stays open with no bytes is idle after the timeout; a finished request is not")
    func streamIdle() {
        var timers = StreamTimers(idleTimeout: .seconds(10), writeStallTimeout: .seconds(5))
        timers.opened(streamID: 1, requestOpen: true, now: t0)
        timers.opened(streamID: 3, requestOpen: false, now: t0)
        let quiet: (Int32) -> StreamTimers.Output = { _ in .init(pending: false, sentBytes: 0) }
        #expect(timers.sweep(now: t0 + .seconds(9), output: quiet).isEmpty)
        timers.activity(streamID: 1, now: t0 + .seconds(9))
        #expect(timers.sweep(now: t0 + .seconds(18), output: quiet).isEmpty)
        #expect(timers.sweep(now: t0 + .seconds(19), output: quiet) == [.idle(streamID: 1)])
        #expect(timers.sweep(now: t0 + .seconds(100), output: quiet).isEmpty)  // stream 3: handler running
        #expect(timers.entries.keys.sorted() == [3])
    }

    @Test("response bytes that make no progress for the write-stall timeout expire the stream; progress restarts the clock")
    func writeStall() {
        var timers = StreamTimers(idleTimeout: .seconds(60), writeStallTimeout: .seconds(5))
        timers.opened(streamID: 1, requestOpen: false, now: t0)
        var sent = 0
        let output: (Int32) -> StreamTimers.Output = { _ in .init(pending: true, sentBytes: sent) }
        #expect(timers.sweep(now: t0 + .seconds(1), output: output).isEmpty)   // stall starts
        #expect(timers.sweep(now: t0 + .seconds(5), output: output).isEmpty)
        sent = 100                                                             // the window opened a bit
        #expect(timers.sweep(now: t0 + .seconds(6), output: output).isEmpty)
        #expect(timers.sweep(now: t0 + .seconds(10), output: output).isEmpty)  // stalled again since 6 s
        #expect(timers.sweep(now: t0 + .seconds(11), output: output) == [.writeStalled(streamID: 1)])
    }

    @Test("the sweep interval is a quarter of the shorter timeout, between 10 ms and 1 s")
    func sweepInterval() {
        #expect(StreamTimers(idleTimeout: .seconds(60), writeStallTimeout: .seconds(30)).sweepInterval == .seconds(1))
        #expect(StreamTimers(idleTimeout: .seconds(2), writeStallTimeout: .seconds(1)).sweepInterval == .milliseconds(250))
        #expect(StreamTimers(idleTimeout: .milliseconds(1), writeStallTimeout: .seconds(1)).sweepInterval == .milliseconds(10))
    }

    @Test("a connection's buffer budget is bounded by its own limit and by the server's, and gives back what it took")
    func budgets() {
        let global = RequestBufferBudget(limit: 100)
        var a = ConnectionBufferBudget(limit: 60, global: global)
        var b = ConnectionBufferBudget(limit: 60, global: global)
        #expect(Bool(a.reserve(60)))
        #expect(!Bool(a.reserve(1)))            // its own limit
        #expect(Bool(b.reserve(40)))
        #expect(!Bool(b.reserve(1)))            // the server's limit
        #expect(global.inUse == 100)
        a.release(30)
        #expect(Bool(b.reserve(20)))
        a.releaseAll()
        b.releaseAll()
        #expect(global.inUse == 0)
        #expect(a.used == 0 && b.used == 0)
    }

    @Test("connections are limited in total and per source address, and closing frees the slot")
    func connectionLimits() {
        var limits = ConnectionLimits(maxTotal: 3, maxPerAddress: 2)
        #expect(Bool(limits.open(address: "10.0.0.1")))
        #expect(Bool(limits.open(address: "10.0.0.1")))
        #expect(!Bool(limits.open(address: "10.0.0.1")))
        #expect(Bool(limits.open(address: "10.0.0.2")))
        #expect(!Bool(limits.open(address: "10.0.0.3")))
        limits.close(address: "10.0.0.1")
        #expect(Bool(limits.open(address: "10.0.0.3")))
        #expect(limits.total == 3)
    }

    @Test("grpc-message is cut on a character boundary so that the trailers always fit, and huge details are left out")
    func trailerTruncation() {
        let long = String(repeating: "é", count: 40_000)
        let status = RPCStatus(code: .notFound, message: "unknown service " + long,
                               details: [.errorInfo(ErrorInfo(reason: long, domain: "flowd"))])
        let fields = GRPCConnectionHandler.trailerFields(status: status, metadata: Metadata(), maxMessageBytes: 1024)
        #expect(fields.map(\.name) == ["grpc-status", "grpc-message"])
        let message = GRPCConnectionHandler.truncated(status.message, toUTF8Bytes: 1024)
        #expect(message.utf8.count <= 1024)
        #expect(message.hasSuffix("é..."))
        #expect(GRPCConnectionHandler.truncated("short", toUTF8Bytes: 1024) == "short")
    }

    @Test("a call whose request no longer fits the budget is rejected with RESOURCE_EXHAUSTED, or its request stream fails")
    func requestRefused() {
        let early = EarlyResponse(code: .resourceExhausted, message: "over budget")
        var unary = ServerCallStateMachine(maxMessageSize: 100)
        #expect(unary.requestRefused(early) == .reject(early))
        #expect(unary.isClosed)
        var bidi = ServerCallStateMachine(maxMessageSize: 100, bidirectional: true)
        #expect(bidi.requestRefused(early) == .failRequests(early))
        #expect(bidi.requestRefused(early) == .none)
    }

    @Test("Bearer credentials are recognised from the header alone")
    func bearer() {
        #expect(RPCRouter.hasBearerCredentials("Bearer abc"))
        #expect(RPCRouter.hasBearerCredentials("bearer abc"))
        #expect(!RPCRouter.hasBearerCredentials(nil))
        #expect(!RPCRouter.hasBearerCredentials("Bearer"))
        #expect(!RPCRouter.hasBearerCredentials("Bearer "))
        #expect(!RPCRouter.hasBearerCredentials("Bearer \t "))
        #expect(!RPCRouter.hasBearerCredentials("Basic abc"))
    }

    @Test("the default handler cap per connection does not exceed the stream limit, and the buffer budgets hold a largest message")
    func defaults() {
        let configuration = ServerConfiguration()
        #expect(configuration.maxRunningHandlersPerConnection <= configuration.maxConcurrentStreams)
        #expect(configuration.maxBufferedRequestBytesPerConnection >= configuration.maxReceiveMessageSize + 5)
        #expect(configuration.maxBufferedRequestBytes >= configuration.maxBufferedRequestBytesPerConnection)
    }
}

@Suite("Frame header scanner")
struct FrameHeaderScannerTests {
    private func frame(type: UInt8, flags: UInt8, stream: UInt32, payload: [UInt8] = []) -> [UInt8] {
        let n = payload.count
        return [UInt8(n >> 16 & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n & 0xFF), type, flags,
                UInt8(stream >> 24), UInt8(stream >> 16 & 0xFF), UInt8(stream >> 8 & 0xFF), UInt8(stream & 0xFF)] + payload
    }

    @Test("frame headers are found after the preface however the bytes are split, and empty DATA without END_STREAM is recognised")
    func split() {
        let input = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
            + frame(type: 0x4, flags: 0, stream: 0, payload: [0, 3, 0, 0, 0, 100])
            + frame(type: 0x0, flags: 0, stream: 1)
            + frame(type: 0x0, flags: 1, stream: 1)
            + frame(type: 0x0, flags: 0, stream: 3, payload: [1, 2, 3])
        for cut in 0...input.count {
            var scanner = FrameHeaderScanner()
            var headers: [FrameHeaderScanner.Header] = []
            for part in [Array(input[..<cut]), Array(input[cut...])] {
                part.withUnsafeBytes { scanner.scan($0) { headers.append($0) } }
            }
            #expect(headers.map(\.type) == [4, 0, 0, 0])
            #expect(headers.map(\.isEmptyDataWithoutEndStream) == [false, true, false, false])
            #expect(headers.last?.streamID == 3 && headers.last?.length == 3)
        }
    }
}
