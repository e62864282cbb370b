import Foundation
import GRDB
import Synchronization

/// Group commit: every write of a `SQLiteRunStore` goes through one committer thread, which
/// takes the writes waiting at that moment and runs them, in arrival order, in one
/// `BEGIN IMMEDIATE … COMMIT` transaction: one WAL fsync for the whole batch.
///
/// ```
///  callers ──perform──▶ pending ──(thread wakes)──▶ BEGIN IMMEDIATE
///                                                    op 1, op 2, … op n   (each sees the earlier ones)
///                                                    COMMIT ──▶ resume op 1 … op n
///                                   on any error: ROLLBACK, then op 1 … op n again, one transaction each
/// ```
///
/// - A caller is resumed only after the COMMIT that holds its write returned, so an
///   acknowledged write is durable (`synchronous=FULL`).
/// - Ops are pure functions of their inputs (ids, times and leases are fixed before they are
///   queued), so re-running them alone after a failed batch is deterministic; an op that fails
///   alone fails only its own caller, and a batch whose COMMIT fails fails each of its callers
///   with that (retryable) error and nobody else.
/// - The batch runs on this thread, not in a caller's task: one caller's cancellation cannot
///   interrupt the others' transaction.
/// - No timer: a batch is whatever queued while the previous one committed, at most
///   `maxBatchSize` ops.
/// - Callers first: while callers' writes wait, a batch takes every one of them but at most
///   `executionWritesPerBatch` of execution's (the oldest); the others wait for a later batch.
///   Execution's writes (a run's claim, events and finish: several times a submission's work
///   here) would otherwise take most of this thread while a backlog executes, and admission
///   would wait behind them. Execution never stops: every batch takes some of its writes, and
///   all of them when no caller waits. The ops a batch takes run in arrival order, so within a
///   lane writes keep their order; a caller's write may overtake an execution write queued
///   before it (a run's own writes, its claim, appends and finish, all use the execution lane).
/// - The committer thread is the store's one serial resource, so it does nothing it can hand
///   off: once a batch committed, its callers are resumed on a serial completion queue (one
///   hand-off per batch and lane, batches in commit order within a lane), and the thread goes
///   on to the next batch at once. Resuming a caller wakes a thread and frees the op's
///   closures and results. The callers of execution's writes have a lane of their own (see
///   `Lane`), so a caller of one lane may be resumed before a caller of the other whose write
///   committed earlier.
final class SQLiteCommitter: @unchecked Sendable {
    /// Who waits for a write: a caller of the store's API (a submission, a stop, a key), or
    /// the execution of runs (claims, appends, finishes), whose callers are resumed on a queue
    /// of their own at the execution's quality of service.
    enum Lane: Sendable {
        case caller
        case execution
    }

    /// One queued write: `apply` runs it (and keeps its result), `complete` resumes the caller.
    private struct Item: Sendable {
        let lane: Lane
        let apply: @Sendable (SQLiteWriter) throws -> Void
        let complete: @Sendable ((any Error)?) -> Void
    }

    private struct Pending {
        var items: [Item] = []
        var sleeping = false
        var stopping = false
    }

    private let pool: DatabasePool
    private let pending = Mutex(Pending())
    /// Resume the callers of committed (or failed) batches, in order per lane, off the
    /// committer thread.
    private let completions: DispatchQueue
    private let executionCompletions: DispatchQueue
    private let wake = DispatchSemaphore(value: 0)
    let maxBatchSize: Int
    /// Execution's writes in a batch that also holds callers' writes, at most (see above).
    let executionWritesPerBatch: Int
    /// Batches committed so far (tests read it to see that writes were grouped).
    private let batchCounter = Atomic<Int>(0)
    private let writeCounter = Atomic<Int>(0)

    /// Runs on this thread with the writer after every commit, once the batch's callers were
    /// resumed (the store checkpoints from there when the WAL must restart).
    private let afterCommit: @Sendable (Database) -> Void

    private let metrics: StoreMetrics?
    /// The statements of the batch being committed (see `SQLiteWriter.Statements`).
    private let statements = SQLiteWriter.Statements()

    /// `executionQoS`: where the execution lane's callers are resumed (see `Lane`); the same
    /// quality of service as the executor the runs execute on lets a thread of that pool resume
    /// them and run them on, instead of waking another pool's thread for each.
    init(pool: DatabasePool, maxBatchSize: Int = 512, executionWritesPerBatch: Int = SQLiteCommitter.defaultExecutionWritesPerBatch,
         name: String = "flowd.sqlite.committer", metrics: StoreMetrics? = nil,
         executionQoS: DispatchQoS = .unspecified, afterCommit: @escaping @Sendable (Database) -> Void = { _ in }) {
        self.pool = pool
        self.metrics = metrics
        self.afterCommit = afterCommit
        self.maxBatchSize = max(1, maxBatchSize)
        self.executionWritesPerBatch = max(1, executionWritesPerBatch)
        completions = DispatchQueue(label: name + ".completions")
        executionCompletions = DispatchQueue(label: name + ".execution-completions", qos: executionQoS)
        let thread = Thread { [self] in loop() }
        thread.name = name
        thread.start()
    }

    /// Stops the thread once the queue is empty. Later `perform` calls fail.
    func stop() {
        let wasSleeping = pending.withLock { pending in
            pending.stopping = true
            defer { pending.sleeping = false }
            return pending.sleeping
        }
        if wasSleeping { wake.signal() }
    }

    /// Measured with 64 workers executing a backlog while 64 submissions were in flight (60,000
    /// async `hello` submissions, release build, 2 cores, alternating): with at most 4 of
    /// execution's writes per batch 17,969-19,584 submissions/s (p99 7.6-9.4 ms), 1: 18,132-21,236,
    /// 16: 17,480-19,642, with all of them 15,741-17,673 (p99 9.3-10.7 ms).
    static let defaultExecutionWritesPerBatch = 4

    var batchesCommitted: Int { batchCounter.load(ordering: .relaxed) }
    var writesCommitted: Int { writeCounter.load(ordering: .relaxed) }

    /// Runs `body` inside the next batch's transaction and returns its result after that
    /// transaction committed. Errors are GRDB's or the body's own.
    func perform<T: Sendable>(lane: Lane = .caller, _ body: @escaping @Sendable (SQLiteWriter) throws -> T) async throws -> T {
        try await withUnsafeThrowingContinuation { continuation in
            enqueue(lane: lane, body) { continuation.resume(with: $0) }
        }
    }

    /// Queues `body` at once (behind everything queued before this call returns) and calls
    /// `completion` on `lane`'s completion queue after the transaction holding it committed.
    func enqueue<T: Sendable>(lane: Lane = .caller, _ body: @escaping @Sendable (SQLiteWriter) throws -> T,
                              completion: @escaping @Sendable (Result<T, any Error>) -> Void) {
        let box = ResultBox<T>()
        // Only the committer thread touches `box`, before it calls `completion`; hence unchecked.
        let item = Item(
            lane: lane,
            apply: { db in box.value = try body(db) },
            complete: { error in completion(error.map { .failure($0) } ?? .success(box.value!)) })
        let (accepted, wasSleeping) = pending.withLock { pending -> (Bool, Bool) in
            guard !pending.stopping else { return (false, false) }
            pending.items.append(item)
            defer { pending.sleeping = false }
            return (true, pending.sleeping)
        }
        guard accepted else {
            completion(.failure(StoreError(code: .closed, message: "the run store is closed")))
            return
        }
        if wasSleeping { wake.signal() }
    }

    private final class ResultBox<T>: @unchecked Sendable {
        var value: T?
    }

    // MARK: The thread

    private func loop() {
        while true {
            let (batch, stop) = pending.withLock { pending -> ([Item], Bool) in
                if pending.items.isEmpty {
                    if pending.stopping { return ([], true) }
                    pending.sleeping = true
                    return ([], false)
                }
                return (Self.takeBatch(from: &pending.items, maxBatchSize: maxBatchSize,
                                       executionWritesPerBatch: executionWritesPerBatch), false)
            }
            if stop { return }
            if batch.isEmpty {
                wake.wait()
                continue
            }
            run(batch)
        }
    }

    /// The next batch, in arrival order: callers' writes first (see the type's notes), then
    /// execution's in the room left; what it leaves stays in `items`, in order.
    private static func takeBatch(from items: inout [Item], maxBatchSize: Int, executionWritesPerBatch: Int) -> [Item] {
        var callers = 0
        for item in items where item.lane == .caller { callers += 1 }
        // Nothing to hold back: the batch is the oldest items, as many as fit.
        if callers == 0 || items.count - callers <= executionWritesPerBatch {
            let count = min(items.count, maxBatchSize)
            let batch = Array(items.prefix(count))
            items.removeFirst(count)
            return batch
        }
        var executionRoom = executionWritesPerBatch
        var batch: [Item] = []
        var kept: [Item] = []
        batch.reserveCapacity(min(maxBatchSize, callers + executionWritesPerBatch))
        for item in items {
            let taken = batch.count < maxBatchSize && (item.lane == .caller || executionRoom > 0)
            if taken {
                if item.lane == .execution { executionRoom -= 1 }
                batch.append(item)
            } else {
                kept.append(item)
            }
        }
        items = kept
        return batch
    }

    /// Commits `batch` in one transaction. When one op throws an error of its own (a
    /// constraint, a contract violation), the transaction rolls back, that op's caller gets
    /// the error, and the others are run again without it. An error of the database itself
    /// (busy, disk full, I/O, a failed COMMIT) fails every op of this batch and no other.
    private func run(_ batch: [Item]) {
        var remaining = batch
        while !remaining.isEmpty {
            var failedIndex: Int?
            do {
                try pool.writeWithoutTransaction { db in
                    let began = StoreMetrics.now()
                    let writer = SQLiteWriter(database: db, statements: statements)
                    defer { statements.removeAll() }
                    try Self.transaction(db) {
                        for (index, item) in remaining.enumerated() {
                            do {
                                try item.apply(writer)
                            } catch {
                                failedIndex = index
                                throw error
                            }
                        }
                    }
                    batchCounter.add(1, ordering: .relaxed)
                    writeCounter.add(remaining.count, ordering: .relaxed)
                    metrics?.committed(writes: remaining.count, since: began)
                    complete(remaining, with: nil)
                    afterCommit(db)
                }
                return
            } catch {
                guard let index = failedIndex, !Self.failsTheWholeBatch(error) else {
                    complete(remaining, with: error)
                    return
                }
                complete([remaining.remove(at: index)], with: error)
            }
        }
    }

    /// `BEGIN IMMEDIATE`, `body`, `COMMIT`, with both statements prepared once (GRDB's
    /// `inTransaction` prepares them from their text on every call); rolled back when `body`
    /// or the COMMIT throws (a COMMIT that failed leaves the transaction open).
    private static func transaction(_ db: Database, _ body: () throws -> Void) throws {
        try db.cachedStatement(sql: "BEGIN IMMEDIATE TRANSACTION").execute()
        do {
            try body()
            try db.cachedStatement(sql: "COMMIT TRANSACTION").execute()
        } catch {
            try? db.rollback()
            throw error
        }
    }

    /// Resumes `items`' callers on their lane's completion queue (after those of earlier
    /// hand-offs).
    private func complete(_ items: [Item], with error: (any Error)?) {
        for (lane, queue) in [(Lane.caller, completions), (.execution, executionCompletions)] {
            let resumed = items.filter { $0.lane == lane }
            if !resumed.isEmpty { queue.async { for item in resumed { item.complete(error) } } }
        }
    }

    /// Errors of the database rather than of one op's data.
    private static func failsTheWholeBatch(_ error: any Error) -> Bool {
        guard let error = error as? DatabaseError else { return false }
        switch error.resultCode.primaryResultCode {
        case .SQLITE_CONSTRAINT, .SQLITE_MISMATCH, .SQLITE_RANGE, .SQLITE_TOOBIG: return false
        default: return true
        }
    }
}
