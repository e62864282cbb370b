import Testing
@testable import RPCServer

@Suite("Header names and values: known texts reused, any other bytes decoded as before")
struct HeaderTextTests {
    private func name(_ bytes: [UInt8]) -> String { bytes.withUnsafeBytes { HeaderText.name($0) } }
    private func value(_ bytes: [UInt8]) -> String { bytes.withUnsafeBytes { HeaderText.value($0) } }

    @Test("every field decodes to the String that String(decoding:as:) makes, known or not, valid UTF-8 or not")
    func sameAsDecoding() {
        let samples: [[UInt8]] = [
            Array(":path".utf8), Array("content-type".utf8), Array("grpc-accept-encoding".utf8), Array("te".utf8),
            Array("application/grpc".utf8), Array("application/grpc+json".utf8), Array("POST".utf8), Array("post".utf8),
            Array("x-custom".utf8), Array(":pat".utf8), Array(":paTh".utf8), [], [0xFF, 0xFE], Array("trailers".utf8),
            Array("é".utf8), Array(repeating: UInt8(ascii: "a"), count: 300), Array("grpc-timeout".utf8),
            Array("authorization".utf8), Array("application/json".utf8), Array("identity,deflate,gzip".utf8),
        ]
        for bytes in samples {
            #expect(name(bytes) == String(decoding: bytes, as: UTF8.self), "\(bytes)")
            #expect(value(bytes) == String(decoding: bytes, as: UTF8.self), "\(bytes)")
        }
    }

    @Test("a known name or value is a literal: its text has static storage, shared by every field")
    func reused() {
        let first = value(Array("application/grpc".utf8))
        let second = value(Array("application/grpc".utf8))
        let address = { (text: String) in text.utf8.withContiguousStorageIfAvailable { UInt(bitPattern: $0.baseAddress) } }
        #expect(address(first) != nil && address(first) == address(second))
        #expect(address(name(Array("grpc-accept-encoding".utf8))) == address(name(Array("grpc-accept-encoding".utf8))))
    }
}
