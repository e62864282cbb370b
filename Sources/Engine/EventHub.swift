import Synchronization

/// Delivers events that were just stored to the watchers of their run, in this process.
///
/// Publishing never blocks: each subscriber has a bounded buffer that keeps the newest events
/// (`bufferingNewest`), so a slow watcher can neither stall a worker nor grow memory. A
/// watcher that lost events sees a gap in the sequence numbers and reads the missing ones
/// from the store (events are stored before they are published); the terminal event, being
/// the newest, is never the one dropped.
final class EventHub: Sendable {
    private struct Subscriber {
        let continuation: AsyncStream<RunEvent>.Continuation
    }

    private let subscribers = Mutex<[String: [Int: Subscriber]]>([:])
    private let nextID = Atomic<Int>(0)
    let bufferSize: Int

    init(bufferSize: Int) {
        self.bufferSize = bufferSize
    }

    /// Live events of `runID` from now on. The stream ends when the caller stops iterating.
    func subscribe(runID: String) -> AsyncStream<RunEvent> {
        let (stream, continuation) = AsyncStream.makeStream(of: RunEvent.self, bufferingPolicy: .bufferingNewest(bufferSize))
        let id = nextID.wrappingAdd(1, ordering: .relaxed).newValue
        subscribers.withLock { $0[runID, default: [:]][id] = Subscriber(continuation: continuation) }
        continuation.onTermination = { [weak self] _ in
            self?.subscribers.withLock { all in
                all[runID]?[id] = nil
                if all[runID]?.isEmpty == true { all[runID] = nil }
            }
        }
        return stream
    }

    /// Hands stored events to the run's subscribers.
    func publish(_ events: [RunEvent]) {
        guard let runID = events.first?.runID else { return }
        let targets = subscribers.withLock { $0[runID].map { Array($0.values) } ?? [] }
        for subscriber in targets {
            for event in events { subscriber.continuation.yield(event) }
        }
    }

    /// The runs that have watchers in this process.
    var watchedRunIDs: [String] { subscribers.withLock { Array($0.keys) } }

    func isWatched(_ runID: String) -> Bool { subscribers.withLock { $0[runID] != nil } }

    var subscriberCount: Int { subscribers.withLock { $0.values.reduce(0) { $0 + $1.count } } }
}
