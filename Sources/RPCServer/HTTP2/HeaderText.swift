#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The header names and values nearly every request carries, as string literals: a field that
/// matches one byte for byte gets the literal (static storage, nothing to validate or
/// allocate) instead of its bytes decoded as UTF-8 into a new String (an allocation above 15
/// bytes: `application/grpc`, `grpc-accept-encoding`). Names arrive lowercase (HTTP/2 requires
/// it); values are compared exactly. Anything else is decoded as before.
enum HeaderText {
    static func name(_ bytes: UnsafeRawBufferPointer) -> String {
        switch bytes.count {
        case 2: if bytes.equals("te") { return "te" }
        case 5: if bytes.equals(":path") { return ":path" }
        case 6: if bytes.equals("accept") { return "accept" }
        case 7:
            if bytes.equals(":method") { return ":method" }
            if bytes.equals(":scheme") { return ":scheme" }
        case 10:
            if bytes.equals(":authority") { return ":authority" }
            if bytes.equals("user-agent") { return "user-agent" }
        case 11: if bytes.equals("traceparent") { return "traceparent" }
        case 12:
            if bytes.equals("content-type") { return "content-type" }
            if bytes.equals("grpc-timeout") { return "grpc-timeout" }
        case 13:
            if bytes.equals("authorization") { return "authorization" }
            if bytes.equals("grpc-encoding") { return "grpc-encoding" }
        case 14: if bytes.equals("content-length") { return "content-length" }
        case 15:
            if bytes.equals("accept-encoding") { return "accept-encoding" }
            if bytes.equals("idempotency-key") { return "idempotency-key" }
        case 20: if bytes.equals("grpc-accept-encoding") { return "grpc-accept-encoding" }
        default: break
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func value(_ bytes: UnsafeRawBufferPointer) -> String {
        switch bytes.count {
        case 3: if bytes.equals("GET") { return "GET" }
        case 4:
            if bytes.equals("POST") { return "POST" }
            if bytes.equals("http") { return "http" }
            if bytes.equals("gzip") { return "gzip" }
        case 5: if bytes.equals("https") { return "https" }
        case 8:
            if bytes.equals("trailers") { return "trailers" }
            if bytes.equals("identity") { return "identity" }
        case 16:
            if bytes.equals("application/grpc") { return "application/grpc" }
            if bytes.equals("application/json") { return "application/json" }
        case 21: if bytes.equals("identity,deflate,gzip") { return "identity,deflate,gzip" }
        case 22: if bytes.equals("application/grpc+proto") { return "application/grpc+proto" }
        default: break
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

extension UnsafeRawBufferPointer {
    /// The same bytes as `text`, compared with `memcmp` (header names and values are checked
    /// for every field of every call; generic sequence compares cost about 140 instructions).
    func equals(_ text: StaticString) -> Bool {
        guard count == text.utf8CodeUnitCount else { return false }
        guard let base = baseAddress else { return true }
        return memcmp(base, text.utf8Start, count) == 0
    }

    /// The same bytes as `other`, compared with `memcmp`.
    func equals(_ other: UnsafeRawBufferPointer) -> Bool {
        guard count == other.count else { return false }
        guard let base = baseAddress, let otherBase = other.baseAddress else { return true }
        return memcmp(base, otherBase, count) == 0
    }
}
