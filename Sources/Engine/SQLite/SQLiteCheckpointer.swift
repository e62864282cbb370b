import Foundation
import GRDB
import Synchronization

/// Moves the WAL into the database file off the commit path, and keeps the WAL bounded.
///
/// SQLite checkpoints automatically inside the COMMIT that pushes the WAL past 1,000 pages,
/// which adds a database write and an fsync to one unlucky batch. The writer turns that off
/// (`wal_autocheckpoint = 0`) and this thread runs `PRAGMA wal_checkpoint(PASSIVE)` on its own
/// connection instead, at most every `interval` while commits happen: PASSIVE copies what
/// it can without waiting for readers or the writer.
///
/// The writer restarts the WAL from its beginning only when a transaction begins with every
/// frame copied, which never happens under steady load (each pass copies what was committed
/// before it; the committer appends meanwhile): the WAL grew by a gigabyte a minute, every
/// append extending the file. So once a pass has copied everything it saw of a WAL longer
/// than `restartFrames`, it asks the committer to catch up (`takeCatchUpRequest`): between two
/// batches, the committer copies the few frames committed since that pass, and its next
/// `BEGIN` writes from the start of the WAL again (truncated to `journal_size_limit`).
///
/// ```
///  pass (this thread): copy frames 1…n      ── n ≥ restartFrames and all copied ──▶ request
///  committer, after its next COMMIT:         take request ──▶ copy frames n+1…m (PASSIVE)
///  committer, next BEGIN IMMEDIATE:          WAL restarts at frame 1
/// ```
///
/// A reader still using old frames (another process) can hold the restart off; the next
/// pass asks again.
final class SQLiteCheckpointer: @unchecked Sendable {
    private struct State {
        var requested = false
        var sleeping = false
        var stopping = false
        var catchUpRequested = false
    }

    private let connection: DatabaseQueue
    private let state = Mutex(State())
    private let wake = DispatchSemaphore(value: 0)
    private let interval: Duration
    private let restartFrames: Int
    private let passCounter = Atomic<Int>(0)

    /// `interval`: the pause between passes while commits happen. `restartFrames`: the WAL
    /// length (in pages) from which the committer is asked to let the WAL restart.
    init(path: String, busyTimeout: Duration, interval: Duration = .milliseconds(250), restartFrames: Int = 4096) throws {
        var configuration = Configuration()
        let (seconds, attoseconds) = busyTimeout.components
        configuration.busyMode = .timeout(Double(seconds) + Double(attoseconds) / 1e18)
        configuration.label = "flowd.sqlite.checkpointer"
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
        }
        connection = try DatabaseQueue(path: path, configuration: configuration)
        self.interval = interval
        self.restartFrames = max(1, restartFrames)
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

    /// True once after a pass copied all of a WAL longer than `restartFrames`: the caller (the
    /// writer, between transactions) should checkpoint the rest itself.
    func takeCatchUpRequest() -> Bool {
        state.withLock { state in
            defer { state.catchUpRequested = false }
            return state.catchUpRequested
        }
    }

    /// Passes run so far (tests wait on it).
    var passes: Int { passCounter.load(ordering: .relaxed) }

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
            let result = try? connection.inDatabase { db in try Row.fetchOne(db, sql: "PRAGMA wal_checkpoint(PASSIVE)") }
            passCounter.add(1, ordering: .relaxed)
            if let result, let busy = result[0] as Int?, let log = result[1] as Int?, let copied = result[2] as Int?,
               busy == 0, log >= restartFrames, copied == log {
                state.withLock { $0.catchUpRequested = true }
            }
            Thread.sleep(forTimeInterval: pause)
        }
        try? connection.close()
    }
}
