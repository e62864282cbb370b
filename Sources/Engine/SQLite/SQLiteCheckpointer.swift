import Foundation
import GRDB
import Synchronization

/// Moves the WAL into the database file off the commit path.
///
/// SQLite checkpoints automatically inside the COMMIT that pushes the WAL past 1,000 pages,
/// which adds a database write and an fsync to one unlucky batch. The writer turns that off
/// (`wal_autocheckpoint = 0`) and this thread runs `PRAGMA wal_checkpoint(PASSIVE)` on its own
/// connection instead, at most every `interval` while commits happen: PASSIVE copies what
/// it can without waiting for readers or the writer, and the writer keeps appending to the
/// WAL meanwhile (restarting it from the beginning once everything was copied).
final class SQLiteCheckpointer: @unchecked Sendable {
    private struct State {
        var requested = false
        var sleeping = false
        var stopping = false
    }

    private let connection: DatabaseQueue
    private let state = Mutex(State())
    private let wake = DispatchSemaphore(value: 0)
    private let interval: Duration

    init(path: String, busyTimeout: Duration, interval: Duration = .milliseconds(250)) throws {
        var configuration = Configuration()
        let (seconds, attoseconds) = busyTimeout.components
        configuration.busyMode = .timeout(Double(seconds) + Double(attoseconds) / 1e18)
        configuration.label = "flowd.sqlite.checkpointer"
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
        }
        connection = try DatabaseQueue(path: path, configuration: configuration)
        self.interval = interval
        let thread = Thread { [self] in loop() }
        thread.name = "flowd.sqlite.checkpointer"
        thread.start()
    }

    /// Called after a commit: a checkpoint follows within `interval`.
    func committed() {
        let wasSleeping = state.withLock { state -> Bool in
            guard !state.requested else { return false }
            state.requested = true
            defer { state.sleeping = false }
            return state.sleeping
        }
        if wasSleeping { wake.signal() }
    }

    func stop() {
        let wasSleeping = state.withLock { state -> Bool in
            state.stopping = true
            defer { state.sleeping = false }
            return state.sleeping
        }
        if wasSleeping { wake.signal() }
    }

    private func loop() {
        let (seconds, attoseconds) = interval.components
        let pause = Double(seconds) + Double(attoseconds) / 1e18
        while true {
            let (run, stop) = state.withLock { state -> (Bool, Bool) in
                if state.stopping { return (false, true) }
                if state.requested {
                    state.requested = false
                    return (true, false)
                }
                state.sleeping = true
                return (false, false)
            }
            if stop { break }
            guard run else {
                wake.wait()
                continue
            }
            // A failed pass (busy, I/O) is retried after the next commit; SQLite's own
            // checkpoint at close, or the next pass, catches up.
            try? connection.inDatabase { db in _ = try Row.fetchOne(db, sql: "PRAGMA wal_checkpoint(PASSIVE)") }
            Thread.sleep(forTimeInterval: pause)
        }
        try? connection.close()
    }
}
