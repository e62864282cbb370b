import PostgresNIO

/// Tells the other processes which runs have new events, after the transactions that stored
/// them committed: `pg_notify` on `PostgresRunStore.eventChannel`, one run id per payload.
///
/// Why not inside those transactions: a transaction that notifies takes one lock for the
/// whole database from just before its commit until the commit is durable, so every
/// transaction that stored an event would wait for every other one's WAL flush, one after
/// another (measured: most of the store's connections waiting on `Lock:object`, end-to-end
/// runs bounded near 80/s). Here the ids wait in a set while one notification is at the
/// server, and go together in the next: one short transaction per round trip, for any
/// number of runs.
///
/// A notification is a hint (the event table is the truth): one lost to a crash between the
/// commit and the notification, or to a failed notification (logged, not retried), is made up
/// by the watchers' periodic re-read.
final class PostgresEventNotifier: Sendable {
    private struct State {
        var pending: Set<String> = []
        var sending = false
        var notifications = 0
    }

    private let connector: PostgresConnector
    private let channel: String
    private let state = Locked(State())

    init(connector: PostgresConnector, channel: String) {
        self.connector = connector
        self.channel = channel
    }

    /// Notifications sent so far (tests read it to see ids grouped).
    var notificationsSent: Int { state.withLock { $0.notifications } }

    /// Queues `runIDs` for the next notification; returns at once.
    func notify<S: Sequence<String>>(_ runIDs: S) {
        let start = state.withLock { state -> Bool in
            state.pending.formUnion(runIDs)
            guard !state.sending, !state.pending.isEmpty else { return false }
            state.sending = true
            return true
        }
        if start { Task { await drain() } }
    }

    private func drain() async {
        while true {
            let ids = state.withLock { state -> [String] in
                let ids = Array(state.pending)
                state.pending.removeAll(keepingCapacity: true)
                if ids.isEmpty { state.sending = false }
                return ids
            }
            guard !ids.isEmpty else { return }
            do {
                _ = try await connector.rows("SELECT pg_notify(\(channel), id) FROM unnest(\(ids)::text[]) AS t(id)")
                state.withLock { $0.notifications += 1 }
            } catch {
                connector.logger.debug("notifying other processes of new events failed; their watchers re-read",
                                       metadata: ["error": "\(error)", "runs": "\(ids.count)"])
            }
        }
    }
}
