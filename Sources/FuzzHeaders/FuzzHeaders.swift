import InputParsing

/// libFuzzer target (tools/fuzz.sh): the parsers of gRPC request metadata and the protocol
/// sniffer's decision. The first byte picks the parser, the rest is its input. Each parser is
/// checked against what its documentation promises, not only for crashes.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzHeaders(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    guard let selector = bytes.first else { return 0 }
    let input = Array(bytes.dropFirst())
    let text = String(decoding: input, as: UTF8.self)
    switch selector % 6 {
    case 0: checkTimeout(text)
    case 1: checkBearer(text)
    case 2: checkIdempotencyKey(text)
    case 3: checkContentType(text)
    case 4: checkBinaryMetadata(text)
    default: checkSniffer(input)
    }
    return 0
}

/// 1-8 digits and a unit, saturating; the effective value never exceeds the cap.
private func checkTimeout(_ text: String) {
    let parsed = GRPCTimeout.parse(text)
    let utf8 = Array(text.utf8)
    let units: [UInt8: Int64] = [
        UInt8(ascii: "H"): 3_600_000_000_000, UInt8(ascii: "M"): 60_000_000_000, UInt8(ascii: "S"): 1_000_000_000,
        UInt8(ascii: "m"): 1_000_000, UInt8(ascii: "u"): 1_000, UInt8(ascii: "n"): 1,
    ]
    let digits = utf8.dropLast()
    let wellFormed = (2...9).contains(utf8.count) && digits.allSatisfy { $0 >= 48 && $0 <= 57 } && units[utf8.last!] != nil
    precondition((parsed != nil) == wellFormed, "grpc-timeout \(text.debugDescription): accepted \(parsed != nil)")
    guard let parsed else { return }
    let value = digits.reduce(Int64(0)) { $0 * 10 + Int64($1 - 48) }
    let (high, low) = value.multipliedFullWidth(by: units[utf8.last!]!)
    let expected = high != 0 || low > UInt64(Int64.max) ? Int64.max : Int64(low)
    precondition(parsed == expected && parsed >= 0, "grpc-timeout \(text.debugDescription) = \(parsed), expected \(expected)")
    for cap in [Int64(24 * 3_600_000_000_000), 1_000_000_000, 0, Int64(value)] {
        let effective = GRPCTimeout.effective(text, cap: cap)!
        precondition(effective >= 0 && effective <= cap && effective == min(parsed, cap), "grpc-timeout over its cap")
    }
}

/// The key is what follows `Bearer ` without blanks around it, and re-parses to itself.
private func checkBearer(_ header: String) {
    let utf8 = Array(header.utf8)
    let result = BearerCredentials.parse(header)
    guard let space = utf8.firstIndex(of: 0x20) else {
        precondition(result == .failure(.missingCredentials), "no space but \(result)")
        return
    }
    let isBearer = space == 6 && zip(utf8[..<6], "bearer".utf8).allSatisfy { $0 | 0x20 == $1 }
    if !isBearer {
        precondition(result == .failure(.wrongScheme), "scheme \(header.debugDescription) read as \(result)")
        return
    }
    let blank: (UInt8) -> Bool = { $0 == 0x20 || $0 == 0x09 }
    let rest = utf8[(space + 1)...]
    switch result {
    case .success(let key):
        let keyBytes = Array(key.utf8)
        precondition(!keyBytes.isEmpty && !blank(keyBytes.first!) && !blank(keyBytes.last!), "blank around key")
        precondition(Array(rest.drop(while: blank).reversed().drop(while: blank).reversed()) == keyBytes, "key bytes differ")
        precondition(BearerCredentials.parse("Bearer " + key) == .success(key), "key does not re-parse")
        precondition(BearerCredentials.parse("bEARER \t" + key + "\t ") == .success(key), "key with blanks does not re-parse")
    case .failure(let failure):
        precondition(failure == .emptyKey && rest.allSatisfy(blank), "\(header.debugDescription) refused as \(failure)")
    }
}

/// A valid key is 1-255 printable ASCII bytes that an HTTP header value carries unchanged.
private func checkIdempotencyKey(_ key: String) {
    let utf8 = Array(key.utf8)
    let valid = IdempotencyKey.isValid(key)
    let printable = utf8.allSatisfy { $0 >= 0x20 && $0 <= 0x7E }
    let expected = (1...IdempotencyKey.maxLength).contains(utf8.count) && printable && utf8.first != 0x20 && utf8.last != 0x20
    precondition(valid == expected, "idempotency key \(key.debugDescription): valid \(valid)")
    if valid {
        // RFC 9110 §5.5: field values lose leading and trailing SP/HTAB; a key must survive that.
        let trimmed = utf8.drop(while: { $0 == 0x20 || $0 == 0x09 }).reversed().drop(while: { $0 == 0x20 || $0 == 0x09 })
        precondition(Array(trimmed.reversed()) == utf8, "a valid key changes as a header value")
    }
}

/// `application/grpc` or `application/grpc+proto`, ASCII letters in any case, optionally
/// followed by an ASCII `;` and parameters. Bytes, as HTTP reads a field value: U+037E, which
/// Swift's Characters take for `;`, separates nothing.
private func checkContentType(_ value: String) {
    let mediaType = value.utf8.prefix { $0 != UInt8(ascii: ";") }
        .map { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") ? $0 | 0x20 : $0 }
    let expected = mediaType == Array("application/grpc".utf8) || mediaType == Array("application/grpc+proto".utf8)
    precondition(GRPCContentType.isGRPC(value) == expected, "content-type \(value.debugDescription)")
}

/// Each comma-separated part decodes, and re-encoding a decoded value decodes to it again.
private func checkBinaryMetadata(_ value: String) {
    guard let values = BinaryMetadata.decode(value) else { return }
    precondition(values.count == value.utf8.filter { $0 == UInt8(ascii: ",") }.count + 1, "parts lost or invented")
    for bytes in values {
        let encoded = Base64.encodeUnpadded(bytes)
        precondition(!encoded.contains("=") && encoded.utf8.count == (bytes.count * 4 + 2) / 3, "unpadded length")
        precondition(Base64.decode(encoded[...]) == bytes, "base64 does not round-trip")
    }
}

/// A verdict is final: no prefix of the bytes reached another one, and more bytes cannot
/// change it. Undecided means a proper prefix of the preface.
private func checkSniffer(_ bytes: [UInt8]) {
    let preface = ProtocolDetection.preface
    for tls in [false, true] {
        let verdict = ProtocolDetection.detect(bytes, tls: tls)
        switch verdict {
        case nil:
            precondition(bytes.count < preface.count && preface.starts(with: bytes), "undecided on a non-prefix")
            precondition(!(tls && bytes.first == 0x16), "TLS record not detected")
        case .tls?:
            precondition(tls && bytes.first == 0x16, "TLS without 0x16 or not asked")
        case .http2?:
            precondition(bytes.starts(with: preface), "HTTP/2 without the preface")
        case .http1?:
            precondition(!bytes.starts(with: preface) && !preface.starts(with: bytes), "HTTP/1 on a preface prefix")
        }
        for count in 0...min(bytes.count, preface.count + 2) {
            let early = ProtocolDetection.detect(bytes.prefix(count), tls: tls)
            precondition(early == nil || early == verdict, "verdict changed as bytes arrived")
        }
        if let verdict {
            precondition(ProtocolDetection.detect(bytes + [0x00, 0xFF], tls: tls) == verdict, "verdict changed with more bytes")
        }
    }
}
