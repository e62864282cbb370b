import NIOCore
import Testing
@testable import RPCServer

@Suite("REST shim pieces")
struct RESTUnitTests {
    @Test("the sniffer waits on a partial preface, chooses HTTP/2 on the whole one and HTTP/1 on the first difference")
    func sniffing() {
        let preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        #expect(ProtocolSniffer.detect(ByteBuffer(string: "")) == nil)
        #expect(ProtocolSniffer.detect(ByteBuffer(string: "PRI * HTTP/2")) == nil)
        #expect(ProtocolSniffer.detect(ByteBuffer(string: preface)) == .http2)
        #expect(ProtocolSniffer.detect(ByteBuffer(string: preface + "\u{0}\u{0}")) == .http2)
        #expect(ProtocolSniffer.detect(ByteBuffer(string: "P")) == nil)
        #expect(ProtocolSniffer.detect(ByteBuffer(string: "POST /v1/workflows/run HTTP/1.1\r\n")) == .http1)
        #expect(ProtocolSniffer.detect(ByteBuffer(string: "GET")) == .http1)
    }

    @Test("JSON is written as Python's json.dumps does: separators, order, ensure_ascii")
    func pythonStyleJSON() {
        let value: DifyJSON = .object([
            ("b", 1), ("a", .array([.string("为 \"q\"\n"), .double(0.875), .null, true])), ("e", .string("😀")),
        ])
        #expect(value.text == #"{"b": 1, "a": ["\u4e3a \"q\"\n", 0.875, null, true], "e": "\ud83d\ude00"}"#)
        #expect(DifyJSON.string("\u{01}\u{7F}\t\\ plain").text == #""\u0001\u007f\t\\ plain""#)
    }

    @Test("query strings are split and percent-decoded")
    func query() {
        let request = HTTPRequest(method: .GET, uri: "/v1/workflows/logs?page=2&keyword=a%20b+c&status=",
                                  headers: [:], body: ByteBuffer())
        #expect(request.path == "/v1/workflows/logs")
        #expect(request.queryValue("page") == "2")
        #expect(request.queryValue("keyword") == "a b c")
        #expect(request.queryValue("status") == "")
    }
}
