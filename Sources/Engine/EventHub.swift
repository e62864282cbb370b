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
/// timer per watcher). A clock runs on the Engine's `EngineClock` and is cancelled when its last
/// subscriber is gone.
final class EventHub: Sendable {
    private typealias Continuation = AsyncStream<HubItem>.Continuation

    /// The subscribers of one tick interval and the task that ticks them.
    private struct TickClock {
        /// The subscriber whose arrival created it: its `startClock` hands the task in.
        let creator: Int
        var members: [Int: Continuation] = [:]
        var task: Task<Void, Never>?
    }

    private struct State {
        /// Per run, its subscribers by id.
        var runs: [String: [Int: Continuation]] = [:]
        /// Per tick interval with at least one subscriber, its clock.
        var clocks: [Duration: TickClock] = [:]
    }

    private let state = Mutex(State())
    private let nextID = Atomic<Int>(0)
    private let clock: any EngineClock
    let bufferSize: Int

    init(bufferSize: Int, clock: any EngineClock = SystemClock()) {
        self.bufferSize = bufferSize
        self.clock = clock
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
            state.clocks[tickInterval, default: TickClock(creator: id)].members[id] = continuation
            return !running
        }
        continuation.onTermination = { [weak self] _ in
            let stopped = self?.state.withLock { state -> Task<Void, Never>? in
                state.runs[runID]?[id] = nil
                if state.runs[runID]?.isEmpty == true { state.runs[runID] = nil }
                guard let tickInterval else { return nil }
                state.clocks[tickInterval]?.members[id] = nil
                guard state.clocks[tickInterval]?.members.isEmpty == true else { return nil }
                return state.clocks.removeValue(forKey: tickInterval)?.task
            }
            stopped?.cancel()
        }
        if needsClock, let tickInterval { startClock(tickInterval, creator: id) }
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

    /// One task per interval: sleeps on the clock and ticks every subscriber of the interval,
    /// until the last of them leaves and cancels it.
    private func startClock(_ interval: Duration, creator: Int) {
        let task = Task { [weak self, clock] in
            while !Task.isCancelled {
                do { try await clock.sleep(for: interval) } catch { return }
                guard !Task.isCancelled, let self else { return }
                self.tick(interval)
            }
        }
        let orphaned = state.withLock { state -> Bool in
            // Its subscribers may have left already (and others made a clock of their own).
            guard state.clocks[interval]?.creator == creator else { return true }
            state.clocks[interval]?.task = task
            return false
        }
        if orphaned { task.cancel() }
    }

    /// Yields `.tick` to the interval's subscribers.
    private func tick(_ interval: Duration) {
        let members = state.withLock { state in state.clocks[interval].map { Array($0.members.values) } ?? [] }
        for continuation in members { continuation.yield(.tick) }
    }
}
