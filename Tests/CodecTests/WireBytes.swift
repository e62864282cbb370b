/// Hand-built protobuf wire bytes for feeding hostile input to the decoder.
enum Wire {
    static func varint(_ value: UInt64) -> [UInt8] {
        var value = value
        var out: [UInt8] = []
        while value >= 0x80 {
            out.append(UInt8(value & 0x7F) | 0x80)
            value >>= 7
        }
        out.append(UInt8(value))
        return out
    }

    static func key(_ field: UInt64, _ wireType: UInt64) -> [UInt8] {
        varint(field << 3 | wireType)
    }

    /// A length-delimited field (wire type 2).
    static func field(_ field: UInt64, _ payload: [UInt8]) -> [UInt8] {
        key(field, 2) + varint(UInt64(payload.count)) + payload
    }

    static func field(_ field: UInt64, _ text: String) -> [UInt8] {
        self.field(field, Array(text.utf8))
    }

    /// A varint field (wire type 0).
    static func field(_ field: UInt64, varint value: UInt64) -> [UInt8] {
        key(field, 0) + varint(value)
    }

    /// `payload` wrapped `depth` times in length-delimited field `field`, built inside out
    /// without recursion.
    static func nested(_ field: UInt64, depth: Int, around payload: [UInt8] = []) -> [UInt8] {
        var bytes = payload
        for _ in 0..<depth {
            bytes = self.field(field, bytes)
        }
        return bytes
    }
}

extension Array where Element == UInt8 {
    init(hex: String) {
        let digits = Array(hex.utf8)
        precondition(digits.count % 2 == 0, "odd number of hex digits")
        self = stride(from: 0, to: digits.count, by: 2).map { index in
            UInt8(String(decoding: digits[index...index + 1], as: UTF8.self), radix: 16)!
        }
    }

    var hex: String {
        map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
    }
}
