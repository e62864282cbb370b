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
    /// One array of id and value side by side: a change is one uniqueness check and one bounds
    /// check, not one per array.
    private struct Slot {
        var id: Int32
        var value: Value?
    }
    private var slots: [Slot]
    private var mask: Int
    private(set) var count = 0

    init() {
        slots = Array(repeating: Slot(id: 0, value: nil), count: 16)
        mask = 15
    }

    var isEmpty: Bool { count == 0 }

    /// The ids present, in table order.
    var keys: [Int32] { slots.compactMap { $0.id != 0 ? $0.id : nil } }

    private func home(_ id: Int32) -> Int { Int(UInt32(bitPattern: id) >> 1) & mask }

    /// How far the entry in slot `index` is from its home.
    private func distance(_ id: Int32, at index: Int) -> Int { (index - home(id)) & mask }

    private func slot(of id: Int32) -> Int? {
        var index = home(id)
        var travelled = 0
        while true {
            let found = slots[index].id
            if found == id { return index }
            if found == 0 || distance(found, at: index) < travelled { return nil }
            index = (index + 1) & mask
            travelled += 1
        }
    }

    subscript(id: Int32) -> Value? {
        get { slot(of: id).flatMap { slots[$0].value } }
        set {
            guard let newValue else {
                removeValue(forKey: id)
                return
            }
            if let index = slot(of: id) {
                slots[index].value = newValue
                return
            }
            precondition(id != 0, "stream id 0 is the connection")
            if (count + 1) * 4 > slots.count * 3 { grow() }
            insertNew(id, newValue)
        }
    }

    /// Changes the value of `id` in place (one look-up; `map[id]?.field = x` is a get and a set);
    /// false when `id` is not present.
    @discardableResult
    mutating func update(_ id: Int32, _ body: (inout Value) -> Void) -> Bool {
        guard let index = slot(of: id) else { return false }
        body(&slots[index].value!)
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
            let present = slots[index].id
            if present == 0 {
                slots[index] = Slot(id: id, value: value)
                count += 1
                return
            }
            if distance(present, at: index) < travelled { break }
            index = (index + 1) & mask
            travelled += 1
        }
        var moving = Slot(id: id, value: value)
        while true {
            let present = slots[index].id
            if present == 0 {
                slots[index] = moving
                count += 1
                return
            }
            let presentDistance = distance(present, at: index)
            if presentDistance < travelled {
                swap(&slots[index], &moving)
                travelled = presentDistance
            }
            index = (index + 1) & mask
            travelled += 1
        }
    }

    @discardableResult
    mutating func removeValue(forKey id: Int32) -> Value? {
        guard var hole = slot(of: id) else { return nil }
        let removed = slots[hole].value
        count -= 1
        // Backward shift: each following entry away from its home moves one slot nearer.
        while true {
            let next = (hole + 1) & mask
            let moving = slots[next].id
            if moving == 0 || distance(moving, at: next) == 0 { break }
            slots[hole] = slots[next]
            hole = next
        }
        slots[hole] = Slot(id: 0, value: nil)
        return removed
    }

    private mutating func grow() {
        let old = slots
        slots = Array(repeating: Slot(id: 0, value: nil), count: old.count * 2)
        mask = slots.count - 1
        count = 0
        for slot in old where slot.id != 0 { insertNew(slot.id, slot.value!) }
    }

    func makeIterator() -> AnyIterator<(key: Int32, value: Value)> {
        var index = 0
        let slots = slots
        return AnyIterator {
            while index < slots.count {
                defer { index += 1 }
                if slots[index].id != 0, let value = slots[index].value { return (slots[index].id, value) }
            }
            return nil
        }
    }
}
