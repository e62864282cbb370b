import InputParsing
import NGHTTP2Support
import Codec
import NIOCore
import Testing
@testable import RPCServer

@Suite("Request header validation")
struct RequestHeadTests {
    private func fields(_ extra: [(String, String)] = [], method: String = "POST",
                        contentType: String? = "application/grpc") -> [HeaderField] {
        var list = [HeaderField(name: ":method", value: method), HeaderField(name: ":scheme", value: "http"),
                    HeaderField(name: ":path", value: "/a.B/C"), HeaderField(name: ":authority", value: "x")]
        if let contentType { list.append(HeaderField(name: "content-type", value: contentType)) }
        list += extra.map { HeaderField(name: $0.0, value: $0.1) }
        return list
    }

    private func rejection(_ fields: [HeaderField]) -> EarlyResponse? {
        if case .rejected(let early) = RequestHead.parse(fields) { return early }
        return nil
    }

    @Test("grpc-timeout units convert to nanoseconds and malformed values are rejected")
    func timeouts() {
        #expect(RequestHead.parseTimeout("1H") == .hours(1))
        #expect(RequestHead.parseTimeout("2M") == .minutes(2))
        #expect(RequestHead.parseTimeout("3S") == .seconds(3))
        #expect(RequestHead.parseTimeout("300m") == .milliseconds(300))
        #expect(RequestHead.parseTimeout("7u") == .microseconds(7))
        #expect(RequestHead.parseTimeout("99999999n") == .nanoseconds(99_999_999))
        #expect(RequestHead.parseTimeout("99999999H") == .nanoseconds(Int64.max))
        for bad in ["", "S", "1", "123456789S", "1x", "-1S", "1.5S"] {
            #expect(RequestHead.parseTimeout(bad) == nil, "\(bad)")
        }
        #expect(rejection(fields([("grpc-timeout", "soon")]))?.httpStatus == 400)
    }

    @Test("a non-gRPC content type is HTTP 415; a non-POST method is 405")
    func contentTypeAndMethod() {
        #expect(rejection(fields(contentType: "application/json"))?.httpStatus == 415)
        #expect(rejection(fields(contentType: nil))?.httpStatus == 415)
        #expect(rejection(fields(contentType: "application/grpc+json"))?.httpStatus == 415)
        #expect(rejection(fields(contentType: ";application/grpc"))?.httpStatus == 415)
        #expect(rejection(fields(contentType: "application/grpc+proto")) == nil)
        #expect(rejection(fields(contentType: "application/grpc; charset=utf-8")) == nil)
        #expect(rejection(fields(method: "GET"))?.httpStatus == 405)
    }

    @Test("a compressed request encoding is UNIMPLEMENTED with grpc-accept-encoding")
    func encoding() {
        let early = rejection(fields([("grpc-encoding", "gzip")]))
        #expect(early?.code == .unimplemented)
        #expect(early?.extraFields == [HeaderField(name: "grpc-accept-encoding", value: "identity")])
        #expect(rejection(fields([("grpc-encoding", "identity")])) == nil)
    }

    @Test("metadata keeps application headers, decodes -bin values and drops reserved ones")
    func metadata() throws {
        guard case .accepted(let head) = RequestHead.parse(fields([
            ("x-a", "1"), ("x-b-bin", "q6ur"), ("x-c-bin", "AAE=, AgM"), ("grpc-timeout", "1S"), ("te", "trailers"),
        ])) else { Issue.record("expected acceptance"); return }
        #expect(head.metadata[stringValues: "x-a"] == ["1"])
        #expect(head.metadata[binaryValues: "x-b-bin"] == [[0xAB, 0xAB, 0xAB]])
        #expect(head.metadata[binaryValues: "x-c-bin"] == [[0, 1], [2, 3]])
        #expect(head.metadata.count == 4)
        #expect(head.timeout == .seconds(1))
        #expect(rejection(fields([("x-b-bin", "!!!")]))?.httpStatus == 400)
        // The quick test for -bin names looks at names only, and at every field.
        func hasBinaryNames(_ pairs: [(String, String)]) -> Bool {
            RequestHeaderBlock.encode(pairs.map { HeaderField(name: $0.0, value: $0.1) })
                .withUnsafeReadableBytes { RequestHeaderBlock(bytes: $0).hasBinaryNames }
        }
        #expect(hasBinaryNames([("x-a", "1"), ("te", "trailers"), ("x-b-bin", "q6ur")]))
        #expect(!hasBinaryNames([("x-a", "ends-bin"), ("bin", "1"), ("-bi", "n")]))
        #expect(!hasBinaryNames([]))
    }

    @Test("trailers carry the status, a percent-encoded message, details and metadata")
    func trailers() {
        var metadata = Metadata()
        metadata.addBinary([0xAB, 0xAB, 0xAB], forKey: "x-t-bin")
        let status = RPCStatus(code: .resourceExhausted, message: "50% ☺\n",
                               details: [.retryInfo(RetryInfo(retryDelay: .seconds(2)))])
        let fields = GRPCConnectionHandler.trailerFields(status: status, metadata: metadata)
        #expect(fields[0] == HeaderField(name: "grpc-status", value: "8"))
        #expect(fields[1] == HeaderField(name: "grpc-message", value: "50%25 %E2%98%BA%0A"))
        #expect(fields[2].name == "grpc-status-details-bin")
        let decoded = try? RPCStatus(serializedBytes: Base64.decode(fields[2].value[...]) ?? [])
        #expect(decoded == status)
        #expect(fields[3] == HeaderField(name: "x-t-bin", value: "q6ur"))
    }

    @Test("the blocks encoded once say what the fields built per call would; anything else is built")
    func fixedBlocks() {
        let ok = GRPCConnectionHandler.trailers(status: RPCStatus(code: .ok), metadata: Metadata(), maxMessageBytes: 1024)
        guard case .fixed = ok else { Issue.record("a plain OK is not the fixed block"); return }
        #expect(ok.fields == GRPCConnectionHandler.trailerFields(status: RPCStatus(code: .ok), metadata: Metadata()))
        var metadata = Metadata()
        metadata.addString("v", forKey: "x-t")
        for (status, metadata) in [(RPCStatus(code: .ok, message: "fine"), Metadata()), (RPCStatus(code: .ok), metadata),
                                   (RPCStatus(code: .notFound), Metadata())] {
            let block = GRPCConnectionHandler.trailers(status: status, metadata: metadata, maxMessageBytes: 1024)
            guard case .fields(let fields) = block else { Issue.record("\(status) took the fixed block"); continue }
            #expect(fields == GRPCConnectionHandler.trailerFields(status: status, metadata: metadata))
        }
        #expect(GRPCConnectionHandler.responseHeaders(metadata: Metadata()).fields
                == [HeaderField(name: ":status", value: "200"), HeaderField(name: "content-type", value: "application/grpc")])
        #expect(GRPCConnectionHandler.responseHeaders(metadata: metadata).fields.last == HeaderField(name: "x-t", value: "v"))
    }
}
