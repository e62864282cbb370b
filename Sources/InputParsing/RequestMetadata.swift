#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// `grpc-timeout` (PROTOCOL-HTTP2.md): 1-8 ASCII digits and a unit (H, M, S, m, u, n).
public enum GRPCTimeout {
    /// The timeout in nanoseconds; nil when `text` is malformed. Saturates at `Int64.max`
    /// instead of overflowing (`99999999H`).
    public static func parse(_ text: String) -> Int64? {
        let bytes = text.utf8
        guard bytes.count >= 2, bytes.count <= 9 else { return nil }
        var value: Int64 = 0
        for byte in bytes.dropLast() {
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
            value = value * 10 + Int64(byte - UInt8(ascii: "0"))
        }
        let nanosecondsPerUnit: Int64
        switch bytes.last! {
        case UInt8(ascii: "H"): nanosecondsPerUnit = 3_600_000_000_000
        case UInt8(ascii: "M"): nanosecondsPerUnit = 60_000_000_000
        case UInt8(ascii: "S"): nanosecondsPerUnit = 1_000_000_000
        case UInt8(ascii: "m"): nanosecondsPerUnit = 1_000_000
        case UInt8(ascii: "u"): nanosecondsPerUnit = 1_000
        case UInt8(ascii: "n"): nanosecondsPerUnit = 1
        default: return nil
        }
        let (product, overflow) = value.multipliedReportingOverflow(by: nanosecondsPerUnit)
        return overflow ? Int64.max : product
    }

    /// The deadline the server keeps for `text`: the parsed timeout lowered to `cap`
    /// (`ServerConfiguration.maxGRPCTimeout`); nil when malformed.
    public static func effective(_ text: String, cap: Int64) -> Int64? {
        parse(text).map { min($0, cap) }
    }
}

/// `content-type` of a gRPC request.
public enum GRPCContentType {
    /// `application/grpc` or `application/grpc+proto` (with optional parameters, case-insensitive):
    /// the media type is everything before the first `;` (an empty one is no media type).
    /// Compared as ASCII bytes, in place (it runs on every call).
    public static func isGRPC(_ value: String) -> Bool {
        if value == "application/grpc" { return true }  // what nearly every client sends
        let mediaType = ASCIIBytes.mediaType(value)
        return ASCIIBytes.equalsIgnoringCase(mediaType, grpc) || ASCIIBytes.equalsIgnoringCase(mediaType, grpcProto)
    }

    private static let grpc = Array("application/grpc".utf8)
    private static let grpcProto = Array("application/grpc+proto".utf8)
}

/// `authorization: Bearer <key>`: the one parser behind the transports' early check from the
/// headers and the `Authenticator`, so the two cannot disagree.
public enum BearerCredentials {
    public enum Failure: Error, Sendable, Equatable {
        /// No header, or no space after the scheme.
        case missingCredentials
        /// A scheme other than `Bearer` (case-insensitive).
        case wrongScheme
        /// Nothing but spaces and tabs after the scheme.
        case emptyKey
    }

    /// The key: what follows the first space after a case-insensitive `Bearer`, without the
    /// spaces and tabs around it. Works on the UTF-8 bytes (no Unicode case mapping).
    public static func parse(_ header: String?) -> Result<String, Failure> {
        guard var header else { return .failure(.missingCredentials) }
        // Indexes into the contiguous bytes: a call parses its header up to three times.
        return header.withUTF8 { bytes -> Result<String, Failure> in
            guard let space = bytes.firstIndex(of: UInt8(ascii: " ")) else { return .failure(.missingCredentials) }
            guard ASCIIBytes.equalsIgnoringCase(UnsafeBufferPointer(rebasing: bytes[..<space]), bearer) else {
                return .failure(.wrongScheme)
            }
            var start = space + 1, end = bytes.count
            while start < end, bytes[start] == 0x20 || bytes[start] == 0x09 { start += 1 }
            while end > start, bytes[end - 1] == 0x20 || bytes[end - 1] == 0x09 { end -= 1 }
            guard start < end else { return .failure(.emptyKey) }
            return .success(String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<end]), as: UTF8.self))
        }
    }

    private static let bearer = Array("bearer".utf8)
}

/// Idempotency keys (`idempotency-key` header or metadata, `idempotency_key` field).
public enum IdempotencyKey {
    /// Longest key, in bytes.
    public static let maxLength = 255

    /// 1 to `maxLength` printable ASCII characters (0x21-0x7E, and spaces inside but not at
    /// either end: HTTP strips those from a header value, so the same key stays the same key
    /// whichever way it travels).
    public static func isValid(_ key: String) -> Bool {
        let bytes = key.utf8
        guard let first = bytes.first, let last = bytes.last, bytes.count <= maxLength,
              first != 0x20, last != 0x20 else { return false }
        return bytes.allSatisfy { $0 >= 0x20 && $0 <= 0x7E }
    }
}

/// Values of `-bin` metadata: base64, sent unpadded; padded and unpadded input are both
/// accepted, and comma-joined values split (PROTOCOL-HTTP2.md).
public enum BinaryMetadata {
    /// Each comma-separated part decoded; nil when a part is not base64.
    public static func decode(_ value: String) -> [[UInt8]]? {
        var values: [[UInt8]] = []
        for part in value.split(separator: ",", omittingEmptySubsequences: false) {
            guard let bytes = Base64.decode(part.trimmingSpaces()) else { return nil }
            values.append(bytes)
        }
        return values
    }
}

/// Base64 as gRPC uses it for `-bin` metadata, on top of Foundation's codec.
public enum Base64 {
    public static func encodeUnpadded(_ bytes: [UInt8]) -> String {
        var text = Data(bytes).base64EncodedString()
        while text.hasSuffix("=") { text.removeLast() }
        return text
    }

    public static func decode(_ text: Substring) -> [UInt8]? {
        var padded = String(text)
        let remainder = padded.utf8.count % 4
        if remainder == 1 { return nil }
        if remainder > 0 { padded += String(repeating: "=", count: 4 - remainder) }
        return Data(base64Encoded: padded).map(Array.init)
    }
}

extension Substring {
    fileprivate func trimmingSpaces() -> Substring {
        var slice = self
        while slice.first == " " { slice.removeFirst() }
        while slice.last == " " { slice.removeLast() }
        return slice
    }
}
