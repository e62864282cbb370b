/// Per-stream state by HTTP/2 stream id, without hashing: a call looks its stream up about
/// twenty times, and a `Dictionary<Int32, _>` spent a SipHash on each (2,800 instructions per
/// `Health/Check` in callgrind).
///
/// Open addressing with linear probing and Robin Hood placement on a power-of-two table; a
/// client's stream ids are odd and increasing, so `id >> 1` spreads consecutive streams over
/// consecutive slots, nearly all in their home slot. Robin Hood keeps each probe run sorted by
/// distance from home, so a look-up stops at the first entry closer to its home than the key
/// would be, and a removal shifts back only the entries after it that are not home (plain
/// linear probing shifted or scanned the whole run of concurrent streams, 700 instructions per
/// removal at 32 streams). Id 0 (the connection) is never a key.
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

    /// How far the entry in slot `index` is from its home.
    private func distance(_ id: Int32, at index: Int) -> Int { (index - home(id)) & mask }

    private func slot(of id: Int32) -> Int? {
        var index = home(id)
        var travelled = 0
        while true {
            let found = ids[index]
            if found == id { return index }
            if found == 0 || distance(found, at: index) < travelled { return nil }
            index = (index + 1) & mask
            travelled += 1
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
            insertNew(id, newValue)
        }
    }

    /// Changes the value of `id` in place (one look-up; `map[id]?.field = x` is a get and a set);
    /// false when `id` is not present.
    @discardableResult
    mutating func update(_ id: Int32, _ body: (inout Value) -> Void) -> Bool {
        guard let index = slot(of: id) else { return false }
        body(&values[index]!)
        return true
    }

    /// Places an id that is not present: it takes the slot of the first entry nearer its home
    /// than it is, and that entry moves on the same way.
    private mutating func insertNew(_ id: Int32, _ value: Value) {
        var index = home(id)
        var travelled = 0
        // Nearly always a free slot comes before any entry to displace: the value is stored
        // once, without the swaps (a retain and a release each) of the displacing loop below.
        while true {
            let present = ids[index]
            if present == 0 {
                ids[index] = id
                values[index] = value
                count += 1
                return
            }
            if distance(present, at: index) < travelled { break }
            index = (index + 1) & mask
            travelled += 1
        }
        var id = id
        var value: Value? = value
        while true {
            let present = ids[index]
            if present == 0 {
                ids[index] = id
                values[index] = value
                count += 1
                return
            }
            let presentDistance = distance(present, at: index)
            if presentDistance < travelled {
                ids[index] = id
                swap(&values[index], &value)
                id = present
                travelled = presentDistance
            }
            index = (index + 1) & mask
            travelled += 1
        }
    }

    @discardableResult
    mutating func removeValue(forKey id: Int32) -> Value? {
        guard var hole = slot(of: id) else { return nil }
        let removed = values[hole]
        count -= 1
        // Backward shift: each following entry away from its home moves one slot nearer.
        while true {
            let next = (hole + 1) & mask
            let moving = ids[next]
            if moving == 0 || distance(moving, at: next) == 0 { break }
            ids[hole] = moving
            values[hole] = values[next]
            hole = next
        }
        ids[hole] = 0
        values[hole] = nil
        return removed
    }

    private mutating func grow() {
        let oldIDs = ids, oldValues = values
        ids = Array(repeating: 0, count: oldIDs.count * 2)
        values = Array(repeating: nil, count: oldIDs.count * 2)
        mask = ids.count - 1
        count = 0
        for (id, value) in zip(oldIDs, oldValues) where id != 0 { insertNew(id, value!) }
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
