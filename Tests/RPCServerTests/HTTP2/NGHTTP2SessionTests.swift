import Codec
import NGHTTP2Support
import NIOCore
import Testing
@testable import RPCClient
@testable import RPCServer

@Suite("NGHTTP2Session: a request's header block and body as the connection reads them")
struct NGHTTP2SessionTests {
    static let fields = [
        HeaderField(name: ":method", value: "POST"), HeaderField(name: ":scheme", value: "http"),
        HeaderField(name: ":path", value: "/grpc.health.v1.Health/Check"), HeaderField(name: ":authority", value: "127.0.0.1:1"),
        HeaderField(name: "content-type", value: "application/grpc"), HeaderField(name: "te", value: "trailers"),
        HeaderField(name: "user-agent", value: "a client with a long user agent string"),
        HeaderField(name: "x-custom-bin", value: "AAEC"),
    ]
    static let body: [UInt8] = [0, 0, 0, 0, 3, 10, 1, 65]

    /// What a client sends for one request: preface, SETTINGS, HEADERS, DATA.
    static func clientBytes() throws -> [UInt8] {
        let client = try NGHTTP2ClientSession(settings: .init(initialWindowSize: 65_535, maxHeaderListSize: 16_384))
        _ = try client.submitRequest(fields: fields, body: body)
        var buffer = ByteBuffer()
        try client.drainOutput(into: &buffer)
        return Array(buffer.readableBytesView)
    }

    static func server() throws -> NGHTTP2Session {
        try NGHTTP2Session(settings: .init(maxConcurrentStreams: 100, initialWindowSize: 65_535, connectionWindowSize: 1 << 20,
                                           maxHeaderListSize: 16_384, maxFieldCount: 64, resetBurst: 1000,
                                           resetRatePerSecond: 33))
    }

    @Test("split into two reads at every byte, the header block and the body arrive whole and once")
    func everySplit() throws {
        let bytes = try Self.clientBytes()
        for split in 0...bytes.count {
            let session = try Self.server()
            var headerBlocks: [[HeaderField]] = []
            var body: [UInt8] = []
            for part in [bytes[..<split], bytes[split...]] {
                try Array(part).withUnsafeBytes { try session.receive($0) }
                // As the connection does: each read's events are handled before the next read.
                for event in session.takeEvents() {
                    switch event {
                    case .requestHeaders(_, let range, let tooLarge, _):
                        #expect(!tooLarge)
                        headerBlocks.append(session.withHeaderBlock(range) { $0.fields })
                    case .data(_, let range):
                        body += session.withReceivedData(range) { Array($0) }
                    default:
                        break
                    }
                }
            }
            #expect(headerBlocks == [Self.fields], "split at \(split)")
            #expect(body == Self.body, "split at \(split)")
        }
    }

    @Test("a header block over the field limit or the list size is reported too large, and the next one is whole",
          arguments: ["fields", "bytes"])
    func tooLarge(_ limit: String) throws {
        let client = try NGHTTP2ClientSession(settings: .init(initialWindowSize: 65_535, maxHeaderListSize: 65_536))
        // 70 fields against 64, or five values of 4,000 bytes against 16,384 bytes of list.
        let extra = limit == "fields"
            ? (0..<70).map { HeaderField(name: "x-field-\($0)", value: "v") }
            : (0..<5).map { HeaderField(name: "x-big-\($0)", value: String(repeating: "v", count: 4_000)) }
        _ = try client.submitRequest(fields: Self.fields + extra, body: Self.body)
        _ = try client.submitRequest(fields: Self.fields, body: Self.body)
        var buffer = ByteBuffer()
        try client.drainOutput(into: &buffer)
        let session = try Self.server()
        try Array(buffer.readableBytesView).withUnsafeBytes { try session.receive($0) }
        var blocks: [(tooLarge: Bool, fields: [HeaderField])] = []
        for case .requestHeaders(_, let range, let tooLarge, _) in session.takeEvents() {
            blocks.append((tooLarge, session.withHeaderBlock(range) { $0.fields }))
        }
        #expect(blocks.count == 2)
        #expect(blocks.first?.tooLarge == true && blocks.first?.fields == [])
        #expect(blocks.last?.tooLarge == false && blocks.last?.fields == Self.fields)
    }

    @Test("response messages come out framed and in order across DATA frames and window updates, then the trailers")
    func framedResponse() throws {
        let client = try NGHTTP2ClientSession(settings: .init(initialWindowSize: 65_535, maxHeaderListSize: 16_384))
        let id = try client.submitRequest(fields: Self.fields, body: Self.body)
        let server = try Self.server()
        let large = (0..<200_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let messages: [[UInt8]] = [large, [1, 2, 3], [], Array(repeating: 9, count: 70_000)]
        var received: [UInt8] = []
        var trailers: [HeaderField] = []
        var responded = false
        // Bytes go back and forth until the client has the trailers (bounded: a few dozen rounds).
        for _ in 0..<200 where trailers.isEmpty {
            var toServer = ByteBuffer()
            try client.drainOutput(into: &toServer)
            try Array(toServer.readableBytesView).withUnsafeBytes { try server.receive($0) }
            for case .requestHeaders(let streamID, _, _, _) in server.takeEvents() where !responded {
                responded = true
                try server.sendResponseHeaders(streamID: streamID, fields: [HeaderField(name: ":status", value: "200")],
                                               endStream: false)
                for message in messages { server.sendMessage(streamID: streamID, message) }
                server.sendTrailers(streamID: streamID, block: .fields([HeaderField(name: "grpc-status", value: "0")]))
            }
            var toClient = ByteBuffer()
            try server.drainOutput(into: &toClient)
            try Array(toClient.readableBytesView).withUnsafeBytes { try client.receive($0) }
            for event in client.takeEvents() {
                switch event {
                case .data(let streamID, let bytes) where streamID == id: received += bytes
                case .headers(let streamID, let fields, _, true) where streamID == id: trailers = fields
                default: break
                }
            }
        }
        #expect(trailers == [HeaderField(name: "grpc-status", value: "0")])
        #expect(received == messages.flatMap { GRPCFraming.frame($0) })
    }

    @Test("nghttp2's memory pool reuses blocks and keeps at most poolBlocksPerClass free ones per size class")
    func poolBound() throws {
        let client = try NGHTTP2ClientSession(settings: .init(initialWindowSize: 65_535, maxHeaderListSize: 16_384))
        let server = try Self.server()
        var answered = 0
        // Three rounds of 90 concurrent calls, each answered with headers, a message and trailers.
        for _ in 0..<3 {
            for _ in 0..<90 { _ = try client.submitRequest(fields: Self.fields, body: Self.body) }
            for _ in 0..<20 {
                var toServer = ByteBuffer()
                try client.drainOutput(into: &toServer)
                try Array(toServer.readableBytesView).withUnsafeBytes { try server.receive($0) }
                for case .requestHeaders(let streamID, _, _, _) in server.takeEvents() {
                    answered += 1
                    try server.sendResponseHeaders(streamID: streamID, fields: [HeaderField(name: ":status", value: "200")],
                                                   endStream: false)
                    server.sendMessage(streamID: streamID, [1, 2, 3])
                    server.sendTrailers(streamID: streamID, block: .fields([HeaderField(name: "grpc-status", value: "0")]))
                }
                var toClient = ByteBuffer()
                try server.drainOutput(into: &toClient)
                guard toClient.readableBytes > 0 || toServer.readableBytes > 0 else { break }
                try Array(toClient.readableBytesView).withUnsafeBytes { try client.receive($0) }
                _ = client.takeEvents()
            }
        }
        #expect(answered == 270)
        #expect(server.pooledBlocks >= Int(NGHTTP2Session.poolBlocksPerClass), "the pool keeps blocks for reuse")
        #expect(server.pooledBlocks <= 4 * Int(NGHTTP2Session.poolBlocksPerClass))
    }

    @Test("streams closed in any order leave the list of open streams holding exactly the others")
    func openStreamList() throws {
        let client = try NGHTTP2ClientSession(settings: .init(initialWindowSize: 65_535, maxHeaderListSize: 16_384))
        let server = try Self.server()
        for _ in 0..<60 { _ = try client.submitRequest(fields: Self.fields, body: Self.body) }
        var toServer = ByteBuffer()
        try client.drainOutput(into: &toServer)
        try Array(toServer.readableBytesView).withUnsafeBytes { try server.receive($0) }
        var ids: [Int32] = []
        for case .requestHeaders(let streamID, _, _, _) in server.takeEvents() { ids.append(streamID) }
        #expect(ids.count == 60)
        #expect(server.openStreamCount == 60)
        // Close two thirds, in a fixed order that is neither opening order nor its reverse
        // (every 7th of the 40, around): the head, the tail and the middle of the list all go.
        let chosen = ids.enumerated().filter { $0.offset % 3 != 1 }.map(\.element)
        let closing = chosen.indices.map { chosen[($0 * 7) % chosen.count] }
        #expect(Set(closing).count == chosen.count)
        for id in closing {
            try server.sendResponseHeaders(streamID: id, fields: [HeaderField(name: ":status", value: "200"),
                                                                  HeaderField(name: "grpc-status", value: "0")],
                                           endStream: true)
            var out = ByteBuffer()
            try server.drainOutput(into: &out)
        }
        let closed = server.takeEvents().compactMap { event -> Int32? in
            if case .streamClosed(let id, _) = event { return id }
            return nil
        }
        #expect(Set(closed) == Set(closing))
        #expect(server.openStreamCount == 20)
    }
}
