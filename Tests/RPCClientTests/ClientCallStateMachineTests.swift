import NGHTTP2Support
import Codec
@testable import RPCClient
import Testing

@Suite("The client call state machine")
struct ClientCallStateMachineTests {
    private let okHeaders = [HTTP2HeaderField(name: ":status", value: "200"),
                             HTTP2HeaderField(name: "content-type", value: "application/grpc")]

    @Test("headers, messages split across DATA frames, then OK trailers deliver each message once and finish OK")
    func happyPath() {
        var machine = ClientCallStateMachine(maxMessageSize: 1024)
        #expect(machine.receiveHeaders(okHeaders, tooLarge: false, endStream: false) == [])
        let framed = GRPCFraming.frame([1, 2, 3]) + GRPCFraming.frame([])
        #expect(machine.receiveData(Array(framed.prefix(4))) == [])
        #expect(machine.receiveData(Array(framed.dropFirst(4))) == [.deliver([1, 2, 3]), .deliver([])])
        #expect(machine.receiveHeaders([HTTP2HeaderField(name: "grpc-status", value: "0")], tooLarge: false, endStream: true)
                == [.finish(nil)])
        #expect(machine.streamClosed(errorCode: 0) == [])
    }

    @Test("a Trailers-Only error keeps its code, its percent-decoded message and its ErrorInfo detail")
    func trailersOnly() {
        var machine = ClientCallStateMachine(maxMessageSize: 1024)
        let status = RPCStatus(code: .notFound, message: "run r_1 not found",
                               details: [.errorInfo(ErrorInfo(reason: "RUN_NOT_FOUND"))])
        let encoded = status.serializedBytes()
        let base64 = String(decoding: encodeBase64(encoded).utf8.filter { $0 != UInt8(ascii: "=") }, as: UTF8.self)
        let actions = machine.receiveHeaders(okHeaders + [
            HTTP2HeaderField(name: "grpc-status", value: "5"),
            HTTP2HeaderField(name: "grpc-message", value: "run r_1 not found %E2%98%BA"),
            HTTP2HeaderField(name: "grpc-status-details-bin", value: base64),
        ], tooLarge: false, endStream: true)
        #expect(actions == [.finish(.init(code: .notFound, message: "run r_1 not found ☺",
                                          details: [.errorInfo(ErrorInfo(reason: "RUN_NOT_FOUND"))]))])
    }

    @Test("a non-gRPC answer, a reset, a lost connection and an expired deadline each end the call once with their code")
    func failures() {
        var http = ClientCallStateMachine(maxMessageSize: 1024)
        #expect(http.receiveHeaders([HTTP2HeaderField(name: ":status", value: "503")], tooLarge: false, endStream: true)
                == [.finish(.init(code: .unavailable, message: "HTTP status 503 from the server"))])

        var reset = ClientCallStateMachine(maxMessageSize: 1024)
        _ = reset.receiveHeaders(okHeaders, tooLarge: false, endStream: false)
        #expect(reset.streamClosed(errorCode: 0x8).first == .finish(.init(code: .cancelled, message: "the server cancelled the call (RST_STREAM CANCEL)")))
        #expect(reset.connectionLost("gone") == [])

        var lost = ClientCallStateMachine(maxMessageSize: 1024)
        #expect(lost.connectionLost("gone") == [.finish(.init(code: .unavailable, message: "gone"))])

        var late = ClientCallStateMachine(maxMessageSize: 1024)
        _ = late.receiveHeaders(okHeaders, tooLarge: false, endStream: false)
        #expect(late.deadlineExpired() == [.resetStream, .finish(.init(code: .deadlineExceeded, message: "the call's deadline passed"))])
        #expect(late.receiveData(GRPCFraming.frame([1])) == [])
    }

    @Test("a server CANCEL after the deadline passed ends the call DEADLINE_EXCEEDED, without a reset of our own")
    func cancelledAfterDeadline() {
        var raced = ClientCallStateMachine(maxMessageSize: 1024)
        _ = raced.receiveHeaders(okHeaders, tooLarge: false, endStream: false)
        #expect(raced.cancelledAfterDeadline() == [.finish(.init(code: .deadlineExceeded, message: "the call's deadline passed"))])
        #expect(raced.deadlineExpired() == [])
    }

    @Test("a response message over the limit fails the call with RESOURCE_EXHAUSTED and resets the stream")
    func tooLarge() {
        var machine = ClientCallStateMachine(maxMessageSize: 4)
        _ = machine.receiveHeaders(okHeaders, tooLarge: false, endStream: false)
        let actions = machine.receiveData(GRPCFraming.frame([1, 2, 3, 4, 5]))
        #expect(actions.first == .resetStream)
        guard case .finish(let status?) = actions.last else { Issue.record("not finished: \(actions)"); return }
        #expect(status.code == .resourceExhausted)
    }

    @Test("grpc-timeout uses at most 8 digits with the finest unit that fits")
    func timeoutEncoding() {
        #expect(ClientConnectionHandler.encodeTimeout(.milliseconds(1500)) == "1500000u")
        #expect(ClientConnectionHandler.encodeTimeout(.seconds(30)) == "30000000u")
        #expect(ClientConnectionHandler.encodeTimeout(.seconds(3600)) == "3600000m")
        #expect(ClientConnectionHandler.encodeTimeout(.milliseconds(50)) == "50000000n")
    }
}

private func encodeBase64(_ bytes: [UInt8]) -> String {
    let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
    var out = ""
    var index = 0
    while index < bytes.count {
        let chunk = Array(bytes[index..<min(index + 3, bytes.count)])
        let value = chunk.enumerated().reduce(0) { $0 | Int($1.element) << (16 - 8 * $1.offset) }
        for position in 0..<4 {
            out.append(position <= chunk.count ? alphabet[(value >> (18 - 6 * position)) & 63] : "=")
        }
        index += 3
    }
    return out
}
