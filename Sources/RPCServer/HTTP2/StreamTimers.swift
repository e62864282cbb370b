import NIOCore

/// The per-stream clocks of one connection: idle streams (request still open, no byte either
/// way) and stalled writes (response bytes waiting for a window the peer does not open).
///
/// A plain value driven by the connection: it reports activity as it happens and calls
/// `sweep(now:output:)` on a timer; the sweep returns the streams to reset. Times come from the
/// caller, so tests use any clock.
///
/// ```
///   opened ──activity──> (lastActivity = now)
///     │  request open, no output pending, now - lastActivity >= idleTimeout ──> .idle
///     │  output pending, sent bytes unchanged since stallSince for writeStallTimeout ──> .writeStalled
///     └─ closed ──> forgotten
/// ```
struct StreamTimers {
    struct Entry {
        let openedAt: NIODeadline
        var lastActivity: NIODeadline
        var requestOpen: Bool
        var stallSince: NIODeadline?
        var sentBytes = 0
    }

    enum Expiry: Equatable {
        /// The request is still open and nothing moved for `idleTimeout`.
        case idle(streamID: Int32)
        /// Response bytes waited `writeStallTimeout` for the peer's window.
        case writeStalled(streamID: Int32)
    }

    /// What the connection knows about a stream's output at sweep time.
    struct Output {
        var pending: Bool
        var sentBytes: Int
    }

    let idleTimeout: TimeAmount
    let writeStallTimeout: TimeAmount
    private(set) var entries = StreamMap<Entry>()

    init(idleTimeout: TimeAmount, writeStallTimeout: TimeAmount) {
        self.idleTimeout = idleTimeout
        self.writeStallTimeout = writeStallTimeout
    }

    /// How often the connection should sweep: a quarter of the shorter timeout, between
    /// 10 ms and 1 s.
    var sweepInterval: TimeAmount {
        let shorter = min(idleTimeout, writeStallTimeout).nanoseconds / 4
        return .nanoseconds(max(10_000_000, min(1_000_000_000, shorter)))
    }

    mutating func opened(streamID: Int32, requestOpen: Bool, now: NIODeadline) {
        entries[streamID] = Entry(openedAt: now, lastActivity: now, requestOpen: requestOpen)
    }

    /// Bytes moved on the stream (either way).
    mutating func activity(streamID: Int32, now: NIODeadline) {
        entries.update(streamID) { $0.lastActivity = now }
    }

    mutating func requestEnded(streamID: Int32, now: NIODeadline) {
        entries.update(streamID) { entry in
            entry.requestOpen = false
            entry.lastActivity = now
        }
    }

    /// Forgets the stream; returns how long it lived (nil for a stream never opened here).
    @discardableResult
    mutating func closed(streamID: Int32, now: NIODeadline) -> TimeAmount? {
        entries.removeValue(forKey: streamID).map { now - $0.openedAt }
    }

    func age(streamID: Int32, now: NIODeadline) -> TimeAmount? {
        entries[streamID].map { now - $0.openedAt }
    }

    var isEmpty: Bool { entries.isEmpty }

    /// The streams whose time is up; they are forgotten (the caller resets them).
    mutating func sweep(now: NIODeadline, output: (Int32) -> Output) -> [Expiry] {
        var expired: [Expiry] = []
        for (streamID, var entry) in entries {
            let out = output(streamID)
            if out.sentBytes != entry.sentBytes {
                entry.sentBytes = out.sentBytes
                entry.lastActivity = now
                entry.stallSince = nil
            }
            if out.pending {
                let since = entry.stallSince ?? now
                entry.stallSince = since
                if now - since >= writeStallTimeout {
                    expired.append(.writeStalled(streamID: streamID))
                    entries[streamID] = nil
                    continue
                }
            } else {
                entry.stallSince = nil
                if entry.requestOpen, now - entry.lastActivity >= idleTimeout {
                    expired.append(.idle(streamID: streamID))
                    entries[streamID] = nil
                    continue
                }
            }
            entries[streamID] = entry
        }
        return expired.sorted { $0.streamID < $1.streamID }
    }
}

extension StreamTimers.Expiry {
    var streamID: Int32 {
        switch self {
        case .idle(let id), .writeStalled(let id): id
        }
    }
}
