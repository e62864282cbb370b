import Testing
@testable import RPCServer

@Suite("StreamMap: per-stream state by id without hashing")
struct StreamMapTests {
    /// A small deterministic generator, so that a failure repeats.
    private struct SplitMix: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    @Test("200,000 random inserts, updates and removals agree with a Dictionary, through growth and wrap-around", arguments: [1, 2, 3])
    func agreesWithDictionary(seed: UInt64) {
        var random = SplitMix(state: seed)
        var map = StreamMap<Int>()
        var reference: [Int32: Int] = [:]
        var nextID: Int32 = 1
        for step in 0..<200_000 {
            let roll = Int.random(in: 0..<10, using: &random)
            if roll < 4 {
                // A new client stream: odd ids, increasing (as HTTP/2 has them), now and then far ahead.
                map[nextID] = step
                reference[nextID] = step
                nextID += Int32.random(in: 0..<20, using: &random) == 0 ? 2 * Int32.random(in: 1..<5000, using: &random) : 2
            } else if roll < 8, let victim = reference.keys.randomElement(using: &random) {
                #expect(map.removeValue(forKey: victim) == reference.removeValue(forKey: victim))
            } else if let target = reference.keys.randomElement(using: &random) {
                map[target] = -step
                reference[target] = -step
            }
            if step % 997 == 0 {
                #expect(map.count == reference.count)
                for (id, value) in reference { #expect(map[id] == value) }
                #expect(map[nextID] == nil && map[nextID + 2] == nil)
            }
        }
        #expect(Dictionary(uniqueKeysWithValues: map.map { ($0.key, $0.value) }) == reference)
        #expect(Set(map.keys) == Set(reference.keys))
        for id in reference.keys { map[id] = nil }
        #expect(map.isEmpty && map.count == 0)
    }

    @Test("ids that share a home slot are all found after removals in the middle of their run")
    func collisions() {
        var map = StreamMap<String>()
        // 16 slots at first: ids 1, 33, 65, 97 all have home slot 0.
        for id: Int32 in [1, 33, 65, 97, 3] { map[id] = "s\(id)" }
        #expect(map.removeValue(forKey: 33) == "s33")
        #expect(map[1] == "s1" && map[65] == "s65" && map[97] == "s97" && map[3] == "s3" && map[33] == nil)
        map[1] = nil
        #expect(map[65] == "s65" && map[97] == "s97" && map[3] == "s3" && map.count == 3)
    }
}
