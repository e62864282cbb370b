/// What a connection on the shared port speaks, told from its first bytes (the decision of
/// `ProtocolSniffer`).
public enum ProtocolDetection {
    public enum Verdict: Sendable, Equatable { case http2, http1, tls }

    /// The HTTP/2 client connection preface (RFC 9113 §3.4).
    public static let preface: [UInt8] = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    /// TLS (when `tls`) when the first byte opens a TLS handshake record (0x16), HTTP/2 when
    /// `bytes` start with the whole preface, HTTP/1 at the first byte that differs from it,
    /// nil while `bytes` are a proper prefix of the preface. A verdict never changes when
    /// more bytes arrive.
    @inlinable
    public static func detect(_ bytes: some Collection<UInt8>, tls: Bool = false) -> Verdict? {
        if tls, bytes.first == 0x16 { return .tls }
        var count = 0
        for byte in bytes.prefix(preface.count) {
            if byte != preface[count] { return .http1 }
            count += 1
        }
        return count == preface.count ? .http2 : nil
    }
}
