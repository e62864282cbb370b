import Foundation

/// Run ids: UUIDs of version 7 (RFC 9562), lowercase text: 48 bits of Unix milliseconds, then
/// 74 random bits. Time-ordered ids keep the store's inserts at the right edge of its indexes
/// (the run table's key, the event log clustered by run id), so a group commit of many new
/// runs touches a few pages instead of one random page per run; random UUIDs made each
/// commit write hundreds of pages.
enum RunID {
    static func make(now: Date) -> String {
        var generator = SystemRandomNumberGenerator()
        return make(milliseconds: UInt64(max(0, now.timeIntervalSince1970 * 1000)), using: &generator)
    }

    static func make(milliseconds: UInt64, using generator: inout some RandomNumberGenerator) -> String {
        var bytes = [UInt8](repeating: 0, count: 16)
        for index in 0..<6 { bytes[index] = UInt8(truncatingIfNeeded: milliseconds >> (8 * (5 - index))) }
        let random = (generator.next() as UInt64, generator.next() as UInt64)
        for index in 6..<14 { bytes[index] = UInt8(truncatingIfNeeded: random.0 >> (8 * (index - 6))) }
        for index in 14..<16 { bytes[index] = UInt8(truncatingIfNeeded: random.1 >> (8 * (index - 14))) }
        bytes[6] = 0x70 | (bytes[6] & 0x0F)  // version 7
        bytes[8] = 0x80 | (bytes[8] & 0x3F)  // variant 10
        let hex = Hex.encode(bytes)
        let characters = Array(hex.utf8)
        var text: [UInt8] = []
        text.reserveCapacity(36)
        for (index, character) in characters.enumerated() {
            if index == 8 || index == 12 || index == 16 || index == 20 { text.append(UInt8(ascii: "-")) }
            text.append(character)
        }
        return String(decoding: text, as: UTF8.self)
    }
}
