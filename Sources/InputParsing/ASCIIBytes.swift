/// Byte comparisons of protocol tokens (media types, auth schemes): ASCII only, as HTTP reads a
/// field value; no Unicode case mapping, no Characters (U+037E is not a `;`).
enum ASCIIBytes {
    /// Whether `bytes` spell `lowercase` (lower-case ASCII) in any ASCII case.
    static func equalsIgnoringCase(_ bytes: some Collection<UInt8>, _ lowercase: [UInt8]) -> Bool {
        bytes.count == lowercase.count && zip(bytes, lowercase).allSatisfy { byte, expected in
            (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte | 0x20 : byte) == expected
        }
    }

    /// A field value's media type: its bytes before the first `;` (the parameters cut off).
    static func mediaType(_ value: String) -> Substring.UTF8View {
        let bytes = value.utf8
        return bytes[..<(bytes.firstIndex(of: UInt8(ascii: ";")) ?? bytes.endIndex)]
    }
}
