import InputParsing
import NGHTTP2Support

/// gRPC metadata: ordered key-value pairs carried as HTTP/2 headers.
///
/// Keys are lowercase. Keys ending in `-bin` carry binary values, which travel base64-encoded
/// (sent unpadded; padded and unpadded input are both accepted, and comma-joined values split).
public struct Metadata: Sendable, Hashable, Sequence {
    /// A metadata value: text for ordinary keys, bytes for `-bin` keys.
    public enum Value: Sendable, Hashable {
        case string(String)
        case binary([UInt8])
    }

    /// One entry.
    public struct Element: Sendable, Hashable {
        public var key: String
        public var value: Value
    }

    private var elements: [Element] = []

    public init() {}

    public var count: Int { elements.count }
    public var isEmpty: Bool { elements.isEmpty }

    public func makeIterator() -> IndexingIterator<[Element]> { elements.makeIterator() }

    /// Adds a text value. `key` is lowercased.
    public mutating func addString(_ value: String, forKey key: String) {
        elements.append(Element(key: key.lowercased(), value: .string(value)))
    }

    /// Adds a binary value; `key` must end in `-bin`.
    public mutating func addBinary(_ value: [UInt8], forKey key: String) {
        precondition(key.hasSuffix("-bin"), "binary metadata keys end in -bin")
        elements.append(Element(key: key.lowercased(), value: .binary(value)))
    }

    /// Every text value for `key`.
    public subscript(stringValues key: String) -> [String] {
        elements.compactMap { element in
            guard element.key == key, case .string(let value) = element.value else { return nil }
            return value
        }
    }

    /// Every binary value for `key`.
    public subscript(binaryValues key: String) -> [[UInt8]] {
        elements.compactMap { element in
            guard element.key == key, case .binary(let value) = element.value else { return nil }
            return value
        }
    }
}

extension Metadata {
    /// Header names that belong to the protocol and never appear as application metadata.
    static func isReserved(_ name: String) -> Bool {
        var name = name
        return name.withUTF8 { isReserved(UnsafeRawBufferPointer($0)) }
    }

    /// `isReserved` of a name's bytes (header names are ASCII; this runs for every field of
    /// every call).
    static func isReserved(_ name: UnsafeRawBufferPointer) -> Bool {
        guard let first = name.first else { return false }
        if first == UInt8(ascii: ":") || (name.count >= 5 && UnsafeRawBufferPointer(rebasing: name[..<5]).equals("grpc-")) {
            return true
        }
        switch name.count {  // by length first, as in RequestHead.parse
        case 2: return name.equals("te")
        case 4: return name.equals("host")
        case 12: return name.equals("content-type")
        case 14: return name.equals("content-length")
        default: return false
        }
    }

    /// A request's metadata as bytes: a copy of its whole header block (one array, copied at
    /// once; `Metadata(requestBlockBytes:)` leaves the reserved fields out), nil when a `-bin`
    /// value is not base64. A call keeps these and Strings are made only if its handler asks
    /// (as elements, a call's user-agent alone was an array and a String).
    static func requestBlockBytes(_ block: RequestHeaderBlock) -> [UInt8]? {
        if block.hasBinaryNames {
            for field in block where isBinaryKey(field.name) && !isReserved(field.name) {
                if BinaryMetadata.decode(HeaderText.value(field.value)) == nil { return nil }
            }
        }
        return Array(block.bytes)
    }

    /// The metadata of `requestBlockBytes` (validated when they were made).
    init(requestBlockBytes bytes: [UInt8]) {
        self = bytes.withUnsafeBytes { Metadata(requestBlock: RequestHeaderBlock(bytes: $0)) } ?? Metadata()
    }

    private static func isBinaryKey(_ name: UnsafeRawBufferPointer) -> Bool {
        name.count >= 4 && UnsafeRawBufferPointer(rebasing: name[(name.count - 4)...]).equals("-bin")
    }

    /// Builds request metadata from a header block; nil when a `-bin` value is not base64.
    init?(requestBlock block: RequestHeaderBlock) {
        self.init()
        for field in block where !Self.isReserved(field.name) {
            let name = HeaderText.name(field.name)
            if Self.isBinaryKey(field.name) {
                guard let values = BinaryMetadata.decode(HeaderText.value(field.value)) else { return nil }
                for bytes in values { elements.append(Element(key: name, value: .binary(bytes))) }
            } else {
                elements.append(Element(key: name, value: .string(HeaderText.value(field.value))))
            }
        }
    }

    /// Header fields for this metadata; reserved and malformed keys are skipped.
    var headerFields: [HeaderField] {
        elements.compactMap { element in
            guard !Self.isReserved(element.key), Self.isValidKey(element.key) else { return nil }
            switch element.value {
            case .string(let value):
                guard value.utf8.allSatisfy({ $0 >= 0x20 && $0 <= 0x7E }) else { return nil }
                return HeaderField(name: element.key, value: value)
            case .binary(let bytes):
                return HeaderField(name: element.key, value: Base64.encodeUnpadded(bytes))
            }
        }
    }

    private static func isValidKey(_ key: String) -> Bool {
        !key.isEmpty && key.utf8.allSatisfy { byte in
            (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z"))
                || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
                || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: ".")
        }
    }
}
