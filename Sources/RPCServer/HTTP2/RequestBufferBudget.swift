import Synchronization

/// The bytes of request bodies the whole server holds before they reach a handler (partial
/// gRPC messages, queued streaming messages, REST bodies), bounded by `limit`.
///
/// Shared by every connection; each connection also has its own `ConnectionBufferBudget`.
/// A reservation that would go over either bound fails, and the stream that asked is answered
/// RESOURCE_EXHAUSTED (or 413) while the connection goes on.
final class RequestBufferBudget: Sendable {
    let limit: Int
    private let used = Atomic<Int>(0)
    /// The most bytes held since the budget was last empty.
    private let peak = Atomic<Int>(0)
    /// Called when the budget empties after holding at least `burstBytes` (e.g. to give the
    /// freed memory back to the operating system), on the thread that released the last bytes.
    private let afterBurst: (@Sendable () -> Void)?
    let burstBytes: Int

    init(limit: Int, burstBytes: Int = 8 << 20, afterBurst: (@Sendable () -> Void)? = nil) {
        self.limit = limit
        self.burstBytes = burstBytes
        self.afterBurst = afterBurst
    }

    /// Takes `count` bytes if they fit; false (and nothing taken) otherwise.
    func reserve(_ count: Int) -> Bool {
        var current = used.load(ordering: .relaxed)
        while true {
            guard current + count <= limit else { return false }
            let (exchanged, original) = used.compareExchange(
                expected: current, desired: current + count, ordering: .relaxed)
            if exchanged {
                // A read first: the peak rarely moves, and a read-modify-write on every
                // reservation was one more atomic operation per request.
                if current + count > peak.load(ordering: .relaxed) { peak.max(current + count, ordering: .relaxed) }
                return true
            }
            current = original
        }
    }

    func release(_ count: Int) {
        guard count > 0 else { return }
        let remaining = used.subtract(count, ordering: .relaxed).newValue
        guard remaining == 0, let afterBurst else { return }
        if peak.exchange(0, ordering: .relaxed) >= burstBytes { afterBurst() }
    }

    /// Bytes reserved now.
    var inUse: Int { used.load(ordering: .relaxed) }
}

/// One connection's share: at most `limit` buffered request bytes, and the server-wide
/// `global` budget too. Confined to the connection's event loop.
struct ConnectionBufferBudget {
    let limit: Int
    let global: RequestBufferBudget
    private(set) var used = 0

    init(limit: Int, global: RequestBufferBudget) {
        self.limit = limit
        self.global = global
    }

    /// Takes `count` bytes if the connection and the server both have room.
    mutating func reserve(_ count: Int) -> Bool {
        guard count > 0 else { return true }
        guard used + count <= limit, global.reserve(count) else { return false }
        used += count
        return true
    }

    mutating func release(_ count: Int) {
        let count = min(count, used)
        guard count > 0 else { return }
        used -= count
        global.release(count)
    }

    /// Gives everything back (the connection is closing).
    mutating func releaseAll() {
        release(used)
    }
}
