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

    @Test("REST paths are recognised by their bytes: exact routes, one non-empty id segment, nothing else")
    func paths() {
        #expect(RESTPath("/v1/workflows/run") == .run)
        #expect(RESTPath("/metrics") == .metrics && RESTPath("/v1/info") == .info && RESTPath("/v1/parameters") == .parameters)
        #expect(RESTPath("/v1/workflows/logs") == .logs)
        #expect(RESTPath("/v1/workflows/run/abc") == .getRun(id: "abc"))
        #expect(RESTPath("/v1/workflows/run/é-1") == .getRun(id: "é-1"))
        #expect(RESTPath("/v1/workflows/tasks/t1/stop") == .stop(taskID: "t1"))
        for unknown in ["", "/", "/v1/workflows/run/", "/v1/workflows/run/a/b", "/v1/workflows/tasks//stop",
                        "/v1/workflows/tasks/t1/stopx", "/v1/workflows/tasks/a/b/stop", "/v1/info/", "v1/info",
                        "/v1/workflows/runx", "/V1/info", "/v1/workflows/tasks/stop"] {
            #expect(RESTPath(unknown) == nil, "\(unknown)")
        }
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
