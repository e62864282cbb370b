import Logging
import Synchronization

/// Brings the events that other processes store to this process's watchers, on a shared store:
/// a notification names a run, the relay reads that run's new stored events and publishes them
/// to the `EventHub`; every `rereadInterval` it re-reads all watched runs (the safety net for a
/// lost notification). Runs executing here are skipped: their events are published locally.
/// The store is the truth: `RunEventSequence` skips duplicates and fills gaps from it, so a
/// late, repeated or reordered relay never shows a watcher a gap or a duplicate.
final class EventRelay: Sendable {
    private let store: any RunStore
    private let hub: EventHub
    private let clock: any EngineClock
    private let logger: Logger
    private let rereadInterval: Duration
    private let pageSize: Int
    private let isLocal: @Sendable (String) -> Bool
    /// Per watched run, the last sequence relayed.
    private let relayed = Mutex<[String: Int64]>([:])

    init(store: any RunStore, hub: EventHub, clock: any EngineClock, logger: Logger, rereadInterval: Duration,
         pageSize: Int, isLocal: @escaping @Sendable (String) -> Bool) {
        self.store = store
        self.hub = hub
        self.clock = clock
        self.logger = logger
        self.rereadInterval = rereadInterval
        self.pageSize = max(1, pageSize)
        self.isLocal = isLocal
    }

    /// Until cancelled: relays on each notification and on each re-read tick.
    func run(_ notifications: AsyncStream<String>) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { [self] in
                for await runID in notifications {
                    if runID.isEmpty { await relayAll() } else if hub.isWatched(runID) { await relay(runID) }
                }
            }
            group.addTask { [self] in
                while !Task.isCancelled {
                    do { try await clock.sleep(for: rereadInterval) } catch { return }
                    await relayAll()
                }
            }
            await group.next()
            group.cancelAll()
        }
    }

    private func relayAll() async {
        let watched = hub.watchedRunIDs
        relayed.withLock { relayed in
            let keep = Set(watched)
            relayed = relayed.filter { keep.contains($0.key) }
        }
        for runID in watched { await relay(runID) }
    }

    /// Publishes the run's stored events after the last one relayed (all of them, page by page).
    private func relay(_ runID: String) async {
        guard !isLocal(runID) else { return }
        var after = relayed.withLock { $0[runID] ?? 0 }
        do {
            while true {
                let page = try await store.events(runID: runID, after: after, limit: pageSize)
                guard let last = page.last else { return }
                hub.publish(page)
                after = last.sequence
                relayed.withLock { $0[runID] = max($0[runID] ?? 0, after) }
                if page.count < pageSize || last.isTerminal { return }
            }
        } catch {
            logger.debug("relaying a run's events failed; the next pass retries",
                         metadata: ["run": "\(runID)", "error": "\(error)"])
        }
    }
}
