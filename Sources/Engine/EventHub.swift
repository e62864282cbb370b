import Synchronization

/// What a subscriber's stream carries: a stored event of its run, or a tick of the shared clock
/// it asked for.
enum HubItem: Sendable {
    case event(RunEvent)
    case tick
}

/// Delivers events that were just stored to the watchers of their run, in this process.
///
/// Publishing never blocks: each subscriber has a bounded buffer that keeps the newest items
/// (`bufferingNewest`), so a slow watcher can neither stall a worker nor grow memory. A
/// watcher that lost events sees a gap in the sequence numbers and reads the missing ones
/// from the store (events are stored before they are published); the terminal event, being
/// the newest, is never the one dropped. Each event is handed to each subscriber once, as it is
/// published: watchers do not read the store for live events.
///
/// Watchers that send heartbeats or pings while their run is quiet subscribe with a tick
/// interval: one clock per interval (one sleeping task, whatever the number of watchers) yields
/// `.tick` into every such subscriber's stream, so a watcher is a single task waiting on a
/// single stream, not a merge of its events with a timer of its own (three more tasks and a
/// timer per watcher). A clock stops when its last subscriber is gone.
final class EventHub: Sendable {
    private typealias Continuation = AsyncStream<HubItem>.Continuation

    private struct State {
        /// Per run, its subscribers by id.
        var runs: [String: [Int: Continuation]] = [:]
        /// Per tick interval, the subscribers that asked for it; present while its clock runs.
        var clocks: [Duration: [Int: Continuation]] = [:]
    }

    private let state = Mutex(State())
    private let nextID = Atomic<Int>(0)
    let bufferSize: Int

    init(bufferSize: Int) {
        self.bufferSize = bufferSize
    }

    /// Live events of `runID` from now on, and a `.tick` about every `tickInterval` when one is
    /// given (the first one within `tickInterval`: the clock is shared). The stream ends when the
    /// caller stops iterating.
    func subscribe(runID: String, tickInterval: Duration? = nil) -> AsyncStream<HubItem> {
        let (stream, continuation) = AsyncStream.makeStream(of: HubItem.self, bufferingPolicy: .bufferingNewest(bufferSize))
        let id = nextID.wrappingAdd(1, ordering: .relaxed).newValue
        let needsClock = state.withLock { state -> Bool in
            state.runs[runID, default: [:]][id] = continuation
            guard let tickInterval else { return false }
            let running = state.clocks[tickInterval] != nil
            state.clocks[tickInterval, default: [:]][id] = continuation
            return !running
        }
        continuation.onTermination = { [weak self] _ in
            self?.state.withLock { state in
                state.runs[runID]?[id] = nil
                if state.runs[runID]?.isEmpty == true { state.runs[runID] = nil }
                if let tickInterval { state.clocks[tickInterval]?[id] = nil }
            }
        }
        if needsClock, let tickInterval { startClock(tickInterval) }
        return stream
    }

    /// Hands stored events to the run's subscribers.
    func publish(_ events: [RunEvent]) {
        guard let runID = events.first?.runID else { return }
        let targets = state.withLock { $0.runs[runID].map { Array($0.values) } ?? [] }
        for continuation in targets {
            for event in events { continuation.yield(.event(event)) }
        }
    }

    /// The runs that have watchers in this process.
    var watchedRunIDs: [String] { state.withLock { Array($0.runs.keys) } }

    func isWatched(_ runID: String) -> Bool { state.withLock { $0.runs[runID] != nil } }

    var subscriberCount: Int { state.withLock { $0.runs.values.reduce(0) { $0 + $1.count } } }

    /// Clocks running now (tests).
    var runningClocks: Int { state.withLock { $0.clocks.count } }

    // MARK: Clocks

    /// One task per interval: sleeps, ticks every subscriber of the interval, until there are none.
    private func startClock(_ interval: Duration) {
        Task { [weak self] in
            while true {
                try? await Task.sleep(for: interval)
                guard let self, self.tick(interval) else { return }
            }
        }
    }

    /// Yields `.tick` to the interval's subscribers; false, and the clock is gone, when it has none.
    private func tick(_ interval: Duration) -> Bool {
        let members = state.withLock { state -> [Continuation]? in
            guard let members = state.clocks[interval], !members.isEmpty else {
                state.clocks[interval] = nil
                return nil
            }
            return Array(members.values)
        }
        guard let members else { return false }
        for continuation in members { continuation.yield(.tick) }
        return true
    }
}
