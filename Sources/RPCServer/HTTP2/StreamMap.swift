/// Per-stream state by HTTP/2 stream id, without hashing: a call looks its stream up about
/// twenty times, and a `Dictionary<Int32, _>` spent a SipHash on each (2,800 instructions per
/// `Health/Check` in callgrind).
///
/// Open addressing with linear probing on a power-of-two table; a client's stream ids are odd
/// and increasing, so `id >> 1` spreads consecutive streams over consecutive slots. Removal
/// shifts the following entries back (no tombstones). Id 0 (the connection) is never a key.
struct StreamMap<Value>: Sequence {
    private var ids: [Int32]
    private var values: [Value?]
    private var mask: Int
    private(set) var count = 0

    init() {
        ids = Array(repeating: 0, count: 16)
        values = Array(repeating: nil, count: 16)
        mask = 15
    }

    var isEmpty: Bool { count == 0 }

    /// The ids present, in table order.
    var keys: [Int32] { ids.filter { $0 != 0 } }

    private func home(_ id: Int32) -> Int { Int(UInt32(bitPattern: id) >> 1) & mask }

    private func slot(of id: Int32) -> Int? {
        var index = home(id)
        while true {
            let found = ids[index]
            if found == id { return index }
            if found == 0 { return nil }
            index = (index + 1) & mask
        }
    }

    subscript(id: Int32) -> Value? {
        get { slot(of: id).flatMap { values[$0] } }
        set {
            guard let newValue else {
                removeValue(forKey: id)
                return
            }
            if let index = slot(of: id) {
                values[index] = newValue
                return
            }
            precondition(id != 0, "stream id 0 is the connection")
            if (count + 1) * 4 > ids.count * 3 { grow() }
            var index = home(id)
            while ids[index] != 0 { index = (index + 1) & mask }
            ids[index] = id
            values[index] = newValue
            count += 1
        }
    }

    @discardableResult
    mutating func removeValue(forKey id: Int32) -> Value? {
        guard var hole = slot(of: id) else { return nil }
        let removed = values[hole]
        ids[hole] = 0
        values[hole] = nil
        count -= 1
        // Backward shift: an entry after the hole moves into it unless its home lies
        // cyclically in (hole, index].
        var index = hole
        while true {
            index = (index + 1) & mask
            let moving = ids[index]
            if moving == 0 { break }
            let wanted = home(moving)
            let staysPut = hole <= index ? (wanted > hole && wanted <= index) : (wanted > hole || wanted <= index)
            if staysPut { continue }
            ids[hole] = moving
            values[hole] = values[index]
            ids[index] = 0
            values[index] = nil
            hole = index
        }
        return removed
    }

    private mutating func grow() {
        let oldIDs = ids, oldValues = values
        ids = Array(repeating: 0, count: oldIDs.count * 2)
        values = Array(repeating: nil, count: oldIDs.count * 2)
        mask = ids.count - 1
        count = 0
        for (id, value) in zip(oldIDs, oldValues) where id != 0 { self[id] = value }
    }

    func makeIterator() -> AnyIterator<(key: Int32, value: Value)> {
        var index = 0
        let ids = ids, values = values
        return AnyIterator {
            while index < ids.count {
                defer { index += 1 }
                if ids[index] != 0, let value = values[index] { return (ids[index], value) }
            }
            return nil
        }
    }
}
