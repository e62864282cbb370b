#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Synchronization

/// Run ids: UUIDs of version 7 (RFC 9562), lowercase text: 48 bits of Unix milliseconds, then
/// 74 random bits. Time-ordered ids keep the store's inserts at the right edge of its indexes
/// (the run table's key, the event log clustered by run id), so a group commit of many new
/// runs touches a few pages instead of one random page per run; random UUIDs made each
/// commit write hundreds of pages.
enum RunID {
    static func make(now: Date) -> String {
        var generator = BufferedSystemRandom()
        return make(milliseconds: UInt64(max(0, now.timeIntervalSince1970 * 1000)), using: &generator)
    }

    static func make(milliseconds: UInt64, using generator: inout some RandomNumberGenerator) -> String {
        var bytes: (UInt64, UInt64) = (0, 0)
        let random = (generator.next() as UInt64, generator.next() as UInt64)
        return withUnsafeMutableBytes(of: &bytes) { bytes in
            for index in 0..<6 { bytes[index] = UInt8(truncatingIfNeeded: milliseconds >> (8 * (5 - index))) }
            for index in 6..<14 { bytes[index] = UInt8(truncatingIfNeeded: random.0 >> (8 * (index - 6))) }
            for index in 14..<16 { bytes[index] = UInt8(truncatingIfNeeded: random.1 >> (8 * (index - 14))) }
            bytes[6] = 0x70 | (bytes[6] & 0x0F)  // version 7
            bytes[8] = 0x80 | (bytes[8] & 0x3F)  // variant 10
            return String(unsafeUninitializedCapacity: 36) { text in
                var out = 0
                for (index, byte) in bytes.enumerated() {
                    if index == 4 || index == 6 || index == 8 || index == 10 {
                        text[out] = UInt8(ascii: "-")
                        out += 1
                    }
                    text[out] = Hex.digit(byte >> 4)
                    text[out + 1] = Hex.digit(byte & 0x0F)
                    out += 2
                }
                return out
            }
        }
    }
}

/// The system's random bytes (getrandom, as `SystemRandomNumberGenerator`), read 4 KiB at a
/// time instead of one system call per number: two per run id were a measurable part of a
/// submission.
struct BufferedSystemRandom: RandomNumberGenerator {
    private static let pool = Mutex<(words: [UInt64], next: Int)>(([], 0))

    mutating func next() -> UInt64 {
        Self.pool.withLock { pool in
            if pool.next == pool.words.count {
                pool.words = Self.systemWords(512)
                pool.next = 0
            }
            defer { pool.next += 1 }
            return pool.words[pool.next]
        }
    }

    /// `count` words read from /dev/urandom in one go (the kernel's CSPRNG, as getrandom(2)),
    /// or one by one from `SystemRandomNumberGenerator` when that fails.
    private static func systemWords(_ count: Int) -> [UInt64] {
        var words = [UInt64](repeating: 0, count: count)
        let complete = words.withUnsafeMutableBytes { buffer -> Bool in
            let fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { return false }
            defer { close(fd) }
            var filled = 0
            while filled < buffer.count {
                let got = read(fd, buffer.baseAddress! + filled, buffer.count - filled)
                if got < 0 && errno == EINTR { continue }
                guard got > 0 else { return false }
                filled += got
            }
            return true
        }
        if !complete {
            var system = SystemRandomNumberGenerator()
            for index in words.indices { words[index] = system.next() }
        }
        return words
    }
}
