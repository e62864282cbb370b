import CoreMetrics
import Foundation
import GRDB
import Logging
import Synchronization
private import CSQLiteTuning

/// The embedded store: SQLite in WAL mode, in `flowd.sqlite` inside a data directory.
///
/// - Writes are group-committed (`SQLiteCommitter`): the writes waiting at a moment share one
///   `BEGIN IMMEDIATE` transaction (asked for explicitly: a deferred read-then-write
///   transaction would fail at once with SQLITE_BUSY_SNAPSHOT when another connection or
///   process committed in between) and one fsync; each runs as if alone, in arrival order,
///   and each caller is answered after that COMMIT. With one writer at a time, the admission
///   check and the insert cannot race.
/// - `synchronous=FULL`: an acknowledged commit survives a crash and a power loss.
/// - A busy timeout (5 s by default) when several processes share the file; past it the call
///   fails with a retryable `StoreError`.
/// - Reads are single statements (each consistent on its own) on read-only connections taken
///   from `SQLiteReaders`, run on the caller's thread: no thread hop, no task switch.
/// - Times are INTEGER milliseconds since 1970; dates come back truncated to the millisecond.
///
/// Several handles (or processes) may open the same directory; admission, claims and
/// compare-and-set writes stay exact across them. `recoverInterruptedRuns` assumes it is the
/// only process using the directory (see there).
public final class SQLiteRunStore: RunStore {
    private let pool: DatabasePool
    /// Internal, not private: tests queue writes on a lane of their choice.
    let committer: SQLiteCommitter
    private let checkpointer: SQLiteCheckpointer
    private let readers: SQLiteReaders
    private let logger: Logger?

    /// Bytes of WAL kept on disk when the WAL restarts (64 MiB): reused without growing the
    /// file again; a burst's longer WAL is truncated back to this.
    public static let journalSizeLimit = 64 << 20

    /// The database file inside the data directory.
    public static let fileName = "flowd.sqlite"

    /// Opens the store in `directory` (created when missing), creating or migrating the
    /// schema. Throws a `StoreError` when the database cannot be opened, or when it was written
    /// by a newer flowd (unknown migrations).
    ///
    /// `busyTimeout` bounds every wait for another writer, including the wait at opening while
    /// another process turns a new database to WAL (SQLite answers that with SQLITE_BUSY at
    /// once, without its busy handler, so opening retries with a short backoff until then).
    ///
    /// `checkpointInterval` and `walRestartFrames` pace the WAL checkpoints (see
    /// `SQLiteCheckpointer`): at most one pass per interval while commits happen, and the WAL
    /// restarts from its beginning once it is longer than `walRestartFrames` pages and copied.
    ///
    /// `metrics` receives the committed transactions' latency and group-commit batch sizes.
    public init(directory: URL, logger: Logger? = nil, busyTimeout: Duration = .seconds(5),
                checkpointInterval: Duration = .milliseconds(250), walRestartFrames: Int = 4096,
                metrics: any MetricsFactory = MetricsSystem.factory, executionQoS: DispatchQoS = .unspecified) throws {
        Self.processSettings
        self.logger = logger
        let path = directory.appendingPathComponent(Self.fileName).path
        let pool: DatabasePool
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            var configuration = Configuration()
            configuration.busyMode = .timeout(Double(Self.milliseconds(busyTimeout)) / 1000)
            configuration.prepareDatabase { db in
                try db.execute(sql: "PRAGMA synchronous = FULL")
                try db.execute(sql: "PRAGMA foreign_keys = ON")
            }
            let deadline = ContinuousClock.now + busyTimeout
            var attempt = 0
            while true {
                do {
                    pool = try Self.openPool(path: path, configuration: configuration)
                    break
                } catch let error as DatabaseError where error.resultCode == .SQLITE_BUSY && ContinuousClock.now < deadline {
                    attempt += 1
                    logger?.debug("the run store is busy at opening; retrying", metadata: ["attempt": "\(attempt)"])
                    Thread.sleep(forTimeInterval: Double.random(in: 0.001...0.005) * Double(min(attempt, 10)))
                }
            }
            let migrator = SQLiteSchema.migrator
            if try pool.read(migrator.hasBeenSuperseded) {
                throw StoreError(code: .integrity,
                                 message: "\(path) was migrated by a newer flowd; refusing to use it")
            }
            do {
                try migrator.migrate(pool)
            } catch {
                // GRDB reads the applied migrations before the migration's own transaction, so
                // two processes opening a new directory at once can both try to create the
                // schema; the loser fails and, on a second look, finds the schema in place.
                logger?.info("migrating the run store failed once; retrying", metadata: ["error": "\(error)"])
                try migrator.migrate(pool)
            }
        } catch {
            throw StoreError.mapping(error)
        }
        self.pool = pool
        do {
            checkpointer = try SQLiteCheckpointer(path: path, busyTimeout: busyTimeout, interval: checkpointInterval,
                                                  restartFrames: walRestartFrames)
        } catch {
            throw StoreError.mapping(error)
        }
        committer = SQLiteCommitter(pool: pool, metrics: StoreMetrics(factory: metrics, store: "sqlite"),
                                    executionQoS: executionQoS, afterCommit: { [checkpointer] db in
            checkpointer.committed()
            if checkpointer.takeCatchUpRequest() {
                // Copies what was committed since the checkpointer's last pass, so that the
                // next BEGIN restarts the WAL (see SQLiteCheckpointer). A failure only delays that.
                _ = try? Row.fetchOne(db, sql: "PRAGMA wal_checkpoint(PASSIVE)")
            }
        })
        readers = SQLiteReaders(path: path, busyTimeout: busyTimeout)
        logger?.debug("opened the run store", metadata: ["path": "\(path)"])
    }

    deinit {
        committer.stop()
        checkpointer.stop()
    }

    /// SQLite's process-wide settings, applied once, before this process opens its first
    /// connection (SQLite ignores them after that). Memory statistics are off: with them on,
    /// every allocation of every connection takes one process-wide mutex, and nothing here
    /// reads them (about a tenth of the committer's CPU).
    private static let processSettings: Void = {
        _ = flowd_sqlite_config_memstatus(0)
    }()

    /// The pool, in WAL mode, its writer with `synchronous=FULL`. GRDB sets NORMAL on the writer
    /// when it turns WAL on, after `prepareDatabase` has run, so FULL is set again here. The
    /// writer does not checkpoint (`SQLiteCheckpointer` does).
    private static func openPool(path: String, configuration: Configuration) throws -> DatabasePool {
        let pool = try DatabasePool(path: path, configuration: configuration)
        try pool.writeWithoutTransaction { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
            // The checkpointer thread checkpoints instead, outside the commits (see there).
            try db.execute(sql: "PRAGMA wal_autocheckpoint = 0")
            // A WAL that grew under a burst shrinks back to this when it restarts.
            try db.execute(sql: "PRAGMA journal_size_limit = \(journalSizeLimit)")
        }
        return pool
    }

    /// Closes the database connections. Later calls fail with a `StoreError`. Optional: the
    /// connections also close when the store is released.
    public func close() throws {
        committer.stop()
        checkpointer.stop()
        readers.close()
        do {
            try pool.close()
        } catch {
            throw StoreError.mapping(error)
        }
    }

    // MARK: Transactions

    /// Runs `body` in the next group-committed transaction (see `SQLiteCommitter`) and returns
    /// its result once that transaction committed; rolled back (for this caller only) when it throws.
    /// A caller cancelled before its write is queued gets `CancellationError` and writes nothing;
    /// once queued, the write is not interrupted by its caller's cancellation (it shares a
    /// transaction with others) and its result is returned.
    func write<T: Sendable>(lane: SQLiteCommitter.Lane = .caller, _ body: @escaping @Sendable (SQLiteWriter) throws -> T) async throws -> T {
        try Task.checkCancellation()
        do {
            return try await committer.perform(lane: lane, body)
        } catch {
            throw StoreError.mapping(error)
        }
    }

    /// One statement (or several that need no common snapshot) on a read-only connection, on
    /// this thread.
    private func read<T>(_ body: (SQLiteRaw.ReadConnection) throws -> T) throws -> T {
        do {
            return try readers.read(body)
        } catch {
            throw StoreError.mapping(error)
        }
    }

    /// Rounds of `claim`'s loop so far, one per tenant served (tests read it).
    var claimRounds: Int { claimRoundCounter.load(ordering: .relaxed) }
    private let claimRoundCounter = Atomic<Int>(0)

    /// Checkpoint passes run so far (tests wait on it).
    var checkpointPasses: Int { checkpointer.passes }

    /// Group-commit counters: transactions committed and the writes they held.
    public var commitStatistics: (transactions: Int, writes: Int) {
        (committer.batchesCommitted, committer.writesCommitted)
    }

    // MARK: Submission

    /// Three statements for a new run with a key, two without: the key's row is inserted
    /// first (a conflict means the key is known: replay, refuse or take over an expired row),
    /// and admission is one guarded UPDATE of the tenant's counters. A submission refused for
    /// the limit removes the key's row it wrote, so it leaves nothing behind.
    public func submit(_ submission: Submission, policy: AdmissionPolicy, now: Date) async throws -> SubmissionOutcome {
        let nowMS = Self.milliseconds(now)
        let expiresAt = nowMS + Self.milliseconds(policy.idempotencyTTL)
        return try await write { db in
            if let key = submission.idempotencyKey {
                let inserted = try SQLiteRaw.execute(db, """
                    INSERT INTO idempotency (tenant, key, fingerprint, run_id, expires_at) VALUES (?, ?, ?, ?, ?)
                    ON CONFLICT (tenant, key) DO NOTHING
                    """, [.text(submission.tenant), .text(key), .text(submission.fingerprint), .text(submission.runID),
                          .integer(expiresAt)]) == 1
                if !inserted {
                    guard let (fingerprint, runID, expires) = try SQLiteRaw.row(db, """
                        SELECT fingerprint, run_id, expires_at FROM idempotency WHERE tenant = ? AND key = ?
                        """, [.text(submission.tenant), .text(key)], { ($0.text(0), $0.text(1), $0.integer(2)) }) else {
                        throw StoreError(code: .integrity, message: "the idempotency record of key \(key) vanished")
                    }
                    if expires > nowMS {
                        guard fingerprint == submission.fingerprint else { return .keyReused(existingRunID: runID) }
                        if let run = try Self.fetchRun(db, id: runID, tenant: submission.tenant) { return .replayed(run) }
                    }
                    // Expired (or naming a run that no longer exists): as if absent.
                    try SQLiteRaw.execute(db, """
                        UPDATE idempotency SET fingerprint = ?, run_id = ?, expires_at = ? WHERE tenant = ? AND key = ?
                        """, [.text(submission.fingerprint), .text(submission.runID), .integer(expiresAt),
                              .text(submission.tenant), .text(key)])
                }
            }
            let admitted = try SQLiteRaw.execute(db, """
                UPDATE tenants SET active = active + 1, scheduled = scheduled + 1
                WHERE tenant = ?1 AND active < COALESCE((SELECT max_active FROM tenant_limits WHERE tenant = ?1), ?2)
                """, [.text(submission.tenant), .integer(Int64(policy.defaultConcurrencyLimit))]) == 1
            if !admitted {
                // Over the limit, or the tenant's first run (no counters row yet).
                // `active` is nil when the tenant has no counters row yet.
                let (active, override) = try SQLiteRaw.row(db, """
                    SELECT (SELECT active FROM tenants WHERE tenant = ?1), (SELECT max_active FROM tenant_limits WHERE tenant = ?1)
                    """, [.text(submission.tenant)]) {
                        ($0.optionalInteger(0).map { Int($0) }, $0.optionalInteger(1).map { Int($0) })
                    } ?? (nil, nil)
                let limit = override ?? policy.defaultConcurrencyLimit
                if active != nil || limit <= 0 {
                    if let key = submission.idempotencyKey {
                        try SQLiteRaw.execute(db, "DELETE FROM idempotency WHERE tenant = ? AND key = ?",
                                              [.text(submission.tenant), .text(key)])
                    }
                    return .overLimit(active: active ?? 0, limit: limit)
                }
                try SQLiteRaw.execute(db, "INSERT INTO tenants (tenant, active, scheduled) VALUES (?, 1, 1)",
                                      [.text(submission.tenant)])
            }
            try SQLiteRaw.execute(db, """
                INSERT INTO runs (id, tenant, workflow, workflow_version, state, inputs_json, trigger, transport, user,
                                  idempotency_key, created_at, trace_context)
                VALUES (?, ?, ?, ?, 'scheduled', ?, ?, ?, ?, ?, ?, ?)
                """, [.text(submission.runID), .text(submission.tenant), .text(submission.workflow),
                      .text(submission.workflowVersion), .text(submission.inputsJSON), .text(submission.trigger.rawValue),
                      .text(submission.transport.rawValue), .text(submission.user), .text(submission.idempotencyKey),
                      .integer(nowMS), .text(submission.traceContext?.storedText)])
            return .created(RunRecord(
                id: submission.runID, tenant: submission.tenant, workflow: submission.workflow,
                workflowVersion: submission.workflowVersion, state: .scheduled, inputsJSON: submission.inputsJSON,
                trigger: submission.trigger, transport: submission.transport, user: submission.user,
                idempotencyKey: submission.idempotencyKey, createdAt: Self.date(nowMS),
                traceContext: submission.traceContext))
        }
    }

    // MARK: Workers

    /// Round-robin: among tenants with a `scheduled` run and under the per-tenant cap, the one
    /// whose last claim has the smallest claim number (never claimed = 0, so first), ties
    /// broken by the tenant's oldest scheduled run, then by name. Then that tenant's oldest run
    /// by (createdAt, id). Repeated up to `maxRuns` times in the same transaction.
    ///
    /// Bound: while k tenants have scheduled runs and none is capped, each of them gets one of
    /// every k consecutive claims. A tenant that is the only one with claimable runs gets as
    /// many as are asked for (up to its cap) in one statement. Finding the tenant reads the `tenants` rows with scheduled
    /// runs (at most as many as the tenants skipped for their cap, plus two).
    public func claim(_ request: ClaimRequest, now: Date) async throws -> [ClaimedRun] {
        let nowMS = Self.milliseconds(now)
        let leaseExpiresAt = nowMS + Self.milliseconds(request.leaseDuration)
        guard request.maxRuns > 0 else { return [] }
        return try await write(lane: .execution) { db in
            var held = request.held
            var capped = Set<String>()
            if let cap = request.perTenantLimit {
                for (tenant, count) in held where count >= cap { capped.insert(tenant) }
            }
            var claimed: [ClaimedRun] = []
            while claimed.count < request.maxRuns {
                let candidates = try SQLiteRaw.rows(db, """
                    SELECT t.tenant FROM tenants t WHERE t.scheduled > 0
                    ORDER BY t.last_claim,
                             (SELECT MIN(r.created_at) FROM runs r WHERE r.state = 'scheduled' AND r.tenant = t.tenant),
                             t.tenant
                    LIMIT ?
                    """, [.integer(Int64(capped.count + 2))]) { $0.text(0) }
                let eligible = candidates.filter { !capped.contains($0) }
                guard let tenant = eligible.first else { break }
                self.claimRoundCounter.add(1, ordering: .relaxed)
                // When it is the only tenant with claimable work (fewer rows than the limit: every
                // tenant with scheduled runs was read), rotation has nobody else to serve: take
                // its runs at once. (One row more than the capped tenants would not tell: the
                // limit is one more than that, and with a limit of `capped.count + 1` this never
                // held while a tenant was alone, so a claim of n runs took n rounds of six statements.)
                var count = 1
                if eligible.count == 1 && candidates.count < capped.count + 2 {
                    count = request.maxRuns - claimed.count
                    if let cap = request.perTenantLimit { count = min(count, cap - held[tenant, default: 0]) }
                }
                try SQLiteRaw.execute(db, "UPDATE counters SET value = value + ? WHERE name = 'claims'", [.integer(Int64(count))])
                guard let last = try SQLiteRaw.row(db, "SELECT value FROM counters WHERE name = 'claims'", [], { $0.integer(0) }) else {
                    throw StoreError(code: .integrity, message: "the claims counter is missing")
                }
                // The runs are read, then updated by the same sub-select, and their records
                // patched as the UPDATE changed them (no RETURNING, see `SQLiteRaw.execute`).
                let scheduled = try SQLiteRaw.rows(db, Self.selectScheduledRuns, [.text(tenant), .integer(Int64(count))],
                                                   Self.run(from:))
                guard !scheduled.isEmpty else {
                    throw StoreError(code: .integrity, message: "tenant \(tenant) counts scheduled runs but has none")
                }
                let updated = try SQLiteRaw.execute(db, """
                    UPDATE runs SET state = 'running', attempt = attempt + 1, started_at = ?, lease_owner = ?,
                           lease_expires_at = ?, last_progress_at = ?, last_sequence = last_sequence + 1
                    WHERE id IN (SELECT id FROM runs WHERE state = 'scheduled' AND tenant = ? ORDER BY created_at, id LIMIT ?)
                    """, [.integer(nowMS), .text(request.worker), .integer(leaseExpiresAt), .integer(nowMS), .text(tenant),
                          .integer(Int64(count))])
                guard updated == scheduled.count else {
                    throw StoreError(code: .integrity, message: "claimed \(updated) of \(scheduled.count) runs of tenant \(tenant)")
                }
                let runs = scheduled.map { run in
                    var run = run
                    run.state = .running
                    run.attempt += 1
                    run.startedAt = Self.date(nowMS)
                    run.leaseOwner = request.worker
                    run.leaseExpiresAt = Self.date(leaseExpiresAt)
                    run.lastProgressAt = Self.date(nowMS)
                    run.lastSequence += 1
                    return run
                }
                try SQLiteRaw.execute(db, "UPDATE tenants SET last_claim = ?, scheduled = scheduled - ? WHERE tenant = ?",
                                 [.integer(last), .integer(Int64(runs.count)), .text(tenant)])
                let events = runs.map { Self.runEvent(of: $0, kind: .runStarted, time: nowMS) }
                try Self.insertEvents(db, events)
                for (run, event) in zip(runs, events) { claimed.append(ClaimedRun(run: run, event: event)) }
                held[tenant, default: 0] += runs.count
                if let cap = request.perTenantLimit, held[tenant, default: 0] >= cap { capped.insert(tenant) }
            }
            return claimed
        }.map { ClaimedRun(run: $0.run, event: Self.published($0.event, of: $0.run)) }
    }

    public func renewLeases(_ leases: [HeldLease], worker: String, leaseDuration: Duration, now: Date) async throws -> [String: LeaseStatus] {
        guard !leases.isEmpty else { return [:] }
        let leaseExpiresAt = Self.milliseconds(now) + Self.milliseconds(leaseDuration)
        return try await write { db in
            var statuses: [String: LeaseStatus] = [:]
            for lease in leases {
                if let stopRequested = try SQLiteRaw.row(db, """
                    UPDATE runs SET lease_expires_at = ?
                    WHERE id = ? AND attempt = ? AND state = 'running' AND lease_owner = ?
                    RETURNING stop_requested
                    """, [.integer(leaseExpiresAt), .text(lease.runID), .integer(Int64(lease.attempt)), .text(worker)],
                    { $0.integer(0) != 0 }) {
                    statuses[lease.runID] = .held(stopRequested: stopRequested)
                } else {
                    statuses[lease.runID] = .lost
                }
            }
            return statuses
        }
    }

    /// Only node events (`node_started`, `node_finished`, `text_chunk`) may be appended:
    /// `run_started` and `run_finished` belong to `claim` and the calls that end a run;
    /// other kinds throw `StoreError.Code.invalidArgument` and store nothing.
    public func appendEvents(runID: String, attempt: Int, events: [NewEvent], stepsDelta: Int, now: Date) async throws -> [RunEvent]? {
        // The execution lane, like `enqueueEvents` and `enqueueFinish`: the committer keeps arrival
        // order within a lane only (see `SQLiteCommitter`), and a run's writes keep theirs.
        try await write(lane: .execution, try Self.appending(runID: runID, attempt: attempt, events: events,
                                                             stepsDelta: stepsDelta, now: now))
    }

    public func enqueueEvents(runID: String, attempt: Int, now: Date,
                              take: @escaping @Sendable () -> (events: [NewEvent], steps: Int),
                              completion: @escaping @Sendable (Result<[RunEvent]?, any Error>) -> Void) {
        // A batch may be applied more than once (after another write of it failed): the events
        // are taken on the first application and kept for the others.
        let taken = Mutex<(events: [NewEvent], steps: Int)?>(nil)
        committer.enqueue(lane: .execution, { db in
            let (events, steps) = taken.withLock { taken in
                if taken == nil { taken = take() }
                return taken!
            }
            // Nothing taken (the run's finish carries them instead): nothing to write.
            if events.isEmpty && steps == 0 { return [] }
            return try Self.appending(runID: runID, attempt: attempt, events: events, stepsDelta: steps, now: now)(db)
        }, completion: { result in completion(result.mapError(StoreError.mapping)) })
    }

    /// The transaction body of an append (see `appendEvents`).
    private static func appending(runID: String, attempt: Int, events: [NewEvent], stepsDelta: Int,
                                  now: Date) throws -> @Sendable (SQLiteWriter) throws -> [RunEvent]? {
        if let event = events.first(where: { $0.kind == .runStarted || $0.kind == .runFinished }) {
            throw StoreError(code: .invalidArgument,
                             message: "\(event.kind.rawValue) events are written by the store, not appended")
        }
        let nowMS = milliseconds(now)
        let count = Int64(events.count)
        return { db in
            guard try SQLiteRaw.execute(db, """
                UPDATE runs SET last_sequence = last_sequence + ?, last_progress_at = ?, total_steps = total_steps + ?
                WHERE id = ? AND attempt = ? AND state = 'running'
                """, [.integer(count), .integer(nowMS), .integer(Int64(stepsDelta)), .text(runID), .integer(Int64(attempt))]) == 1,
                  let last = try SQLiteRaw.row(db, "SELECT last_sequence FROM runs WHERE id = ?", [.text(runID)], { $0.integer(0) })
            else { return nil }
            var sequence = last - count
            var stored: [RunEvent] = []
            stored.reserveCapacity(events.count)
            for event in events {
                sequence += 1
                stored.append(RunEvent(runID: runID, sequence: sequence, time: date(nowMS), kind: event.kind,
                                       payloadJSON: event.payloadJSON))
            }
            try insertEvents(db, stored)
            return stored
        }
    }

    /// `state` must be terminal, else `StoreError.Code.invalidArgument`.
    public func finish(runID: String, attempt: Int, state: RunState, outputsJSON: String?, error: String?,
                       expectedLastSequence: Int64?, now: Date) async throws -> FinishedRun? {
        try await write(lane: .execution, try Self.finishing(runID: runID, attempt: attempt, state: state, outputsJSON: outputsJSON,
                                                             error: error, expectedLastSequence: expectedLastSequence, now: now,
                                                             take: { ([], 0) })).map(Self.published)
    }

    public func enqueueFinish(runID: String, attempt: Int, state: RunState, outputsJSON: String?, error: String?,
                              expectedLastSequence: Int64?, now: Date,
                              completion: @escaping @Sendable (Result<FinishedRun?, any Error>) -> Void) {
        enqueueFinish(runID: runID, attempt: attempt, state: state, outputsJSON: outputsJSON, error: error,
                      expectedLastSequence: expectedLastSequence, now: now, take: { ([], 0) }, completion: completion)
    }

    /// One write: the taken events and the end share the run's UPDATE (see `end`).
    public func enqueueFinish(runID: String, attempt: Int, state: RunState, outputsJSON: String?, error: String?,
                              expectedLastSequence: Int64?, now: Date,
                              take: @escaping @Sendable () -> (events: [NewEvent], steps: Int),
                              completion: @escaping @Sendable (Result<FinishedRun?, any Error>) -> Void) {
        let body: @Sendable (SQLiteWriter) throws -> FinishedRun?
        do {
            body = try Self.finishing(runID: runID, attempt: attempt, state: state, outputsJSON: outputsJSON,
                                      error: error, expectedLastSequence: expectedLastSequence, now: now, take: take)
        } catch {
            completion(.failure(error))
            return
        }
        committer.enqueue(lane: .execution, body, completion: { result in
            completion(result.map { $0.map(Self.published) }.mapError(StoreError.mapping))
        })
    }

    /// The transaction body of a finish (see `finish`). A body may be applied more than once
    /// (after another write of its batch failed): the events are taken on the first
    /// application and kept for the others.
    private static func finishing(runID: String, attempt: Int, state: RunState, outputsJSON: String?, error: String?,
                                  expectedLastSequence: Int64?, now: Date,
                                  take: @escaping @Sendable () -> (events: [NewEvent], steps: Int))
        throws -> @Sendable (SQLiteWriter) throws -> FinishedRun? {
        guard state.isTerminal else {
            throw StoreError(code: .invalidArgument, message: "finish needs a terminal state, not \(state.rawValue)")
        }
        let nowMS = milliseconds(now)
        let taken = Mutex<(events: [NewEvent], steps: Int)?>(nil)
        return { db in
            let (events, steps) = taken.withLock { taken in
                if taken == nil { taken = take() }
                return taken!
            }
            if let event = events.first(where: { $0.kind == .runStarted || $0.kind == .runFinished }) {
                throw StoreError(code: .invalidArgument,
                                 message: "\(event.kind.rawValue) events are written by the store, not appended")
            }
            if let finished = try end(db, runID: runID, attempt: attempt, from: .running, to: state, outputsJSON: outputsJSON,
                                      error: error, now: nowMS, lastSequence: expectedLastSequence,
                                      appending: events, steps: steps) {
                return finished
            }
            guard expectedLastSequence != nil else { return nil }
            // Not ended: either no longer running in this attempt (nil again below), or some of
            // its events are missing, and then it cannot end as reported.
            return try end(db, runID: runID, attempt: attempt, from: .running, to: .failed, outputsJSON: nil,
                           error: "some of the run's events could not be stored", now: nowMS)
        }
    }

    // MARK: Callers

    public func stop(runID: String, tenant: String, now: Date) async throws -> StopOutcome {
        let nowMS = Self.milliseconds(now)
        return try await write { db in
            guard let run = try Self.fetchRun(db, id: runID, tenant: tenant) else { return .notFound }
            switch run.state {
            case .scheduled:
                // Inside this transaction the CAS cannot fail.
                guard let finished = try Self.end(db, runID: runID, attempt: run.attempt, from: .scheduled,
                                                  to: .stopped, outputsJSON: nil, error: "stopped before it started",
                                                  now: nowMS)
                else { return .notFound }
                return .stopped(finished.run, Self.published(finished.event, of: finished.run))
            case .running:
                try db.database.cachedStatement(sql: "UPDATE runs SET stop_requested = 1 WHERE id = ?").execute(arguments: [runID])
                var requested = run
                requested.stopRequested = true
                return .stopRequested(requested)
            case .succeeded, .failed, .stopped, .partialSucceeded:
                return .alreadyFinished(run)
            }
        }
    }

    public func run(id: String, tenant: String?) async throws -> RunRecord? {
        try read { db in try Self.fetchRun(db, id: id, tenant: tenant) }
    }

    public func runAtOnce(id: String, tenant: String?, batch: ReadBatch?) throws -> ImmediateRead<RunRecord?> {
        do {
            return .value(try readers.read(in: batch) { db in try Self.fetchRun(db, id: id, tenant: tenant) })
        } catch {
            throw StoreError.mapping(error)
        }
    }

    public func events(runID: String, after: Int64, limit: Int) async throws -> [RunEvent] {
        let limit = max(0, limit)  // SQLite reads a negative LIMIT as "no limit"
        return try read { db in
            let events = try SQLiteRaw.rows(db, """
                SELECT run_id, sequence, time, kind, payload_json FROM run_events
                WHERE run_id = ? AND sequence > ? ORDER BY sequence LIMIT ?
                """, [.text(runID), .integer(after), .integer(Int64(limit))], Self.event(from:))
            // Run events get the run's inputs and outputs back (see `RunRecord.storedJSONPayload`).
            guard events.contains(where: { $0.kind == .runStarted || $0.kind == .runFinished }),
                  let (inputs, outputs) = try SQLiteRaw.row(db, "SELECT inputs_json, outputs_json FROM runs WHERE id = ?",
                                                            [.text(runID)], { ($0.text(0), $0.optionalText(1)) })
            else { return events }
            return events.map { $0.restoringData(inputsJSON: inputs, outputsJSON: outputs) }
        }
    }

    public func listRuns(tenant: String, filter: RunFilter, limit: Int, after cursor: RunCursor?) async throws -> [RunRecord] {
        var (conditions, arguments) = Self.conditions(tenant: tenant, filter: filter)
        if let cursor {
            conditions.append("(created_at, id) < (?, ?)")
            arguments += [.integer(Self.milliseconds(cursor.createdAt)), .text(cursor.id)]
        }
        arguments.append(.integer(Int64(max(0, limit))))
        let sql = "SELECT \(Self.runColumns) FROM runs WHERE \(conditions.joined(separator: " AND ")) ORDER BY created_at DESC, id DESC LIMIT ?"
        let statementArguments = arguments
        return try read { db in
            try SQLiteRaw.rows(db, sql, statementArguments, Self.run(from:))
        }
    }

    public func runLog(tenant: String, filter: RunFilter, offset: Int, limit: Int) async throws -> RunLogPage {
        let (conditions, arguments) = Self.conditions(tenant: tenant, filter: filter)
        let whereClause = conditions.joined(separator: " AND ")
        let count = "SELECT COUNT(*) FROM runs WHERE \(whereClause)"
        let page = """
            SELECT \(Self.runSummaryColumns) FROM runs WHERE \(whereClause)
            ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?
            """
        let pageArguments = arguments + [.integer(Int64(max(0, limit))), .integer(Int64(max(0, offset)))]
        return try read { db in
            let total = try SQLiteRaw.row(db, count, arguments) { $0.integer(0) } ?? 0
            let runs = limit > 0 ? try SQLiteRaw.rows(db, page, pageArguments, Self.run(from:)) : []
            return RunLogPage(total: Int(total), runs: runs)
        }
    }

    /// The WHERE conditions (joined by AND) and their arguments for a tenant's runs matching `filter`.
    private static func conditions(tenant: String, filter: RunFilter) -> ([String], [SQLiteRaw.Value]) {
        var conditions = ["tenant = ?"]
        var arguments: [SQLiteRaw.Value] = [.text(tenant)]
        if !filter.states.isEmpty {
            let states = filter.states.map(\.rawValue).sorted()
            conditions.append("state IN (\(Array(repeating: "?", count: states.count).joined(separator: ", ")))")
            arguments += states.map { .text($0) }
        }
        if let workflow = filter.workflow {
            conditions.append("workflow = ?")
            arguments.append(.text(workflow))
        }
        if let user = filter.user {
            conditions.append("user = ?")
            arguments.append(.text(user))
        }
        if let before = filter.createdBefore {
            conditions.append("created_at <= ?")
            arguments.append(.integer(milliseconds(before)))
        }
        if let after = filter.createdAfter {
            conditions.append("created_at >= ?")
            arguments.append(.integer(milliseconds(after)))
        }
        if let keyword = filter.keyword, let pattern = filter.keywordPattern {
            conditions.append("""
                (id = ? OR user LIKE ? ESCAPE '\\' OR inputs_json LIKE ? ESCAPE '\\' OR outputs_json LIKE ? ESCAPE '\\')
                """)
            arguments += [.text(keyword), .text(pattern), .text(pattern), .text(pattern)]
        }
        return (conditions, arguments)
    }

    // MARK: Maintenance

    /// The rules in order: (a) `scheduled` with `createdAt <= now - scheduledTimeout`;
    /// (b) `running` with `leaseExpiresAt < now`; (c) `running` with
    /// `lastProgressAt <= now - runningTimeout`. A run matching (b) and (c) gets (b)'s error.
    /// Results come in that order, oldest first within a rule.
    public func reap(now: Date, policy: ReaperPolicy) async throws -> [FinishedRun] {
        let nowMS = Self.milliseconds(now)
        let scheduledBefore = nowMS - Self.milliseconds(policy.scheduledTimeout)
        let progressBefore = nowMS - Self.milliseconds(policy.runningTimeout)
        let rules: [(sql: String, bound: Int64, from: RunState, error: String)] = [
            ("SELECT id, attempt, stop_requested FROM runs WHERE state = 'scheduled' AND created_at <= ? ORDER BY created_at, id",
             scheduledBefore, .scheduled,
             "scheduled for more than \(Self.describe(policy.scheduledTimeout)) without a worker"),
            ("SELECT id, attempt, stop_requested FROM runs WHERE state = 'running' AND lease_expires_at < ? ORDER BY created_at, id",
             nowMS, .running, "the worker's lease expired (worker gone)"),
            ("SELECT id, attempt, stop_requested FROM runs WHERE state = 'running' AND last_progress_at <= ? ORDER BY created_at, id",
             progressBefore, .running, "no progress for more than \(Self.describe(policy.runningTimeout))"),
        ]
        return try await write { db in
            var reaped: [FinishedRun] = []
            for rule in rules {
                let rows = try SQLiteRaw.rows(db, rule.sql, [.integer(rule.bound)]) { ($0.text(0), Int($0.integer(1)), $0.integer(2) != 0) }
                for (id, attempt, stopRequested) in rows {
                    let (state, error) = Self.endState(stopRequested: stopRequested, otherwise: rule.error)
                    if let finished = try Self.end(db, runID: id, attempt: attempt, from: rule.from,
                                                   to: state, outputsJSON: nil, error: error, now: nowMS) {
                        reaped.append(finished)
                    }
                }
            }
            return reaped
        }.map(Self.published)
    }

    /// Ends every `running` run (failed; stopped when its stop was requested). Only for start-up, before this process's workers claim
    /// anything: a run another live process holds on the same directory would be failed too.
    public func recoverInterruptedRuns(now: Date) async throws -> [FinishedRun] {
        let nowMS = Self.milliseconds(now)
        return try await write { db in
            try SQLiteRaw.rows(db, "SELECT id, attempt, stop_requested FROM runs WHERE state = 'running' ORDER BY created_at, id", []) {
                ($0.text(0), Int($0.integer(1)), $0.integer(2) != 0)
            }
                .compactMap { id, attempt, stopRequested in
                    let (state, error) = Self.endState(
                        stopRequested: stopRequested, otherwise: "interrupted: flowd restarted while the run was running")
                    return try Self.end(db, runID: id, attempt: attempt, from: .running, to: state,
                                        outputsJSON: nil, error: error, now: nowMS)
                }
        }.map(Self.published)
    }

    /// A stop request is durable: a run whose stop was requested ends `stopped` even when its
    /// worker is gone; any other stuck run ends `failed` with `otherwise` as its error.
    private static func endState(stopRequested: Bool, otherwise error: String) -> (RunState, String) {
        stopRequested ? (.stopped, "stopped by request (its worker is gone)") : (.failed, error)
    }

    /// A record is expired when `expiresAt <= now`, as in `submit`.
    public func purgeExpiredIdempotencyRecords(now: Date) async throws -> Int {
        let nowMS = Self.milliseconds(now)
        return try await write { db in
            try db.database.execute(sql: "DELETE FROM idempotency WHERE expires_at <= ?", arguments: [nowMS])
            return db.database.changesCount
        }
    }

    public func setConcurrencyLimit(tenant: String, limit: Int?) async throws {
        try await write { db in
            if let limit {
                try db.database.execute(sql: """
                    INSERT INTO tenant_limits (tenant, max_active) VALUES (?, ?)
                    ON CONFLICT(tenant) DO UPDATE SET max_active = excluded.max_active
                    """, arguments: [tenant, limit])
            } else {
                try db.database.execute(sql: "DELETE FROM tenant_limits WHERE tenant = ?", arguments: [tenant])
            }
        }
    }

    public func activeRunCounts() async throws -> ActiveRunCounts {
        try read { db in
            try SQLiteRaw.row(db, "SELECT COALESCE(SUM(scheduled), 0), COALESCE(SUM(active), 0) FROM tenants", []) {
                ActiveRunCounts(scheduled: Int($0.integer(0)), running: Int($0.integer(1) - $0.integer(0)))
            } ?? ActiveRunCounts(scheduled: 0, running: 0)
        }
    }

    // MARK: Transitions

    /// Moves a run from `from` to the terminal `to` by compare-and-set on (id, attempt, state),
    /// clears the lease, keeps the tenant's counters, and appends the run's `run_finished`
    /// event; nil when the CAS fails. `appending` node events are stored first, by the same
    /// UPDATE (with their `steps`), as `appendEvents` would; `lastSequence` is then the
    /// sequence of the last of them.
    private static func end(_ db: SQLiteWriter, runID: String, attempt: Int, from: RunState, to: RunState,
                            outputsJSON: String?, error: String?, now: Int64, lastSequence: Int64? = nil,
                            appending events: [NewEvent] = [], steps: Int = 0) throws -> FinishedRun? {
        let count = Int64(events.count)
        // With `lastSequence`, only a run whose last stored event is the one before `events` ends here.
        guard try SQLiteRaw.execute(db, """
            UPDATE runs SET state = ?1, finished_at = ?2, outputs_json = ?3, error = ?4, lease_owner = NULL,
                   lease_expires_at = NULL, last_sequence = last_sequence + ?9 + 1, total_steps = total_steps + ?10,
                   last_progress_at = CASE WHEN ?9 > 0 THEN ?2 ELSE last_progress_at END
            WHERE id = ?5 AND attempt = ?6 AND state = ?7 AND (?8 IS NULL OR last_sequence = ?8)
            """, [.text(to.rawValue), .integer(now), .text(outputsJSON), .text(error), .text(runID), .integer(Int64(attempt)),
                  .text(from.rawValue), .integer(lastSequence.map { $0 - count }), .integer(count),
                  .integer(Int64(steps))]) == 1,
              let run = try fetchRun(db, id: runID, tenant: nil) else { return nil }
        try SQLiteRaw.execute(db, "UPDATE tenants SET active = active - 1, scheduled = scheduled - ? WHERE tenant = ?",
                    [.integer(from == .scheduled ? 1 : 0), .text(run.tenant)])
        var stored: [RunEvent] = []
        stored.reserveCapacity(events.count + 1)
        var sequence = run.lastSequence - count - 1
        for event in events {
            sequence += 1
            stored.append(RunEvent(runID: runID, sequence: sequence, time: date(now), kind: event.kind,
                                   payloadJSON: event.payloadJSON))
        }
        let event = runEvent(of: run, kind: .runFinished, time: now)
        stored.append(event)
        try insertEvents(db, stored)
        stored.removeLast()
        return FinishedRun(run: run, event: event, appended: stored)
    }

    /// The `run_started` or `run_finished` event of `run`, whose `lastSequence` is already
    /// that event's, with the payload a store keeps (the run without its inputs and outputs);
    /// `published` makes the full one, outside the transaction.
    private static func runEvent(of run: RunRecord, kind: RunEventKind, time: Int64) -> RunEvent {
        RunEvent(runID: run.id, sequence: run.lastSequence, time: date(time), kind: kind, payloadJSON: run.storedJSONPayload())
    }

    /// A run event as callers get it: its payload is the run as it was when the event was stored.
    private static func published(_ event: RunEvent, of run: RunRecord) -> RunEvent {
        var event = event
        event.payloadJSON = run.jsonPayload()
        return event
    }

    private static func published(_ finished: FinishedRun) -> FinishedRun {
        var finished = finished
        finished.event = published(finished.event, of: finished.run)
        return finished
    }

    // MARK: Test hooks (internal)

    /// The integer that `sql` (one row, one column) reads (tests look at what is stored with it).
    func integerForTests(sql: String) async throws -> Int64 {
        try read { db in try SQLiteRaw.row(db, sql, [], { $0.integer(0) }) ?? 0 }
    }

    /// Runs `sql` on the writer connection outside any transaction (tests set pragmas with it).
    func executeOnWriter(sql: String) async throws {
        do {
            try await pool.writeWithoutTransaction { db in try db.execute(sql: sql) }
        } catch {
            throw StoreError.mapping(error)
        }
    }

    /// The writer connection's settings that durability and locking depend on.
    func writerSettings() async throws -> [String: String] {
        do {
            return try await pool.writeWithoutTransaction { db in
                var settings: [String: String] = [:]
                for name in ["journal_mode", "synchronous", "foreign_keys", "busy_timeout"] {
                    settings[name] = try String.fetchOne(db, sql: "PRAGMA \(name)")
                }
                return settings
            }
        } catch {
            throw StoreError.mapping(error)
        }
    }

    /// Holds an IMMEDIATE write transaction while `body` runs (it may block), then rolls back:
    /// tests use it to play a writer in another process.
    func holdWriteTransaction(_ body: @escaping @Sendable () -> Void) async throws {
        do {
            try await pool.writeWithoutTransaction { db in
                try db.inTransaction(.immediate) {
                    body()
                    return .rollback
                }
            }
        } catch {
            throw StoreError.mapping(error)
        }
    }
}

extension SQLiteRunStore: APIKeyStore {
    public func createKey(tenant: String, workflow: String, now: Date) async throws -> IssuedAPIKey {
        let (id, secret) = APIKeyFormat.generate()
        let createdAt = Self.milliseconds(now)
        try await write { db in
            try db.database.execute(sql: """
                INSERT INTO api_keys (id, secret_sha256, tenant, workflow, created_at) VALUES (?, ?, ?, ?, ?)
                """, arguments: [id, APIKeyFormat.hash(secret: secret), tenant, workflow, createdAt])
        }
        let record = APIKeyRecord(id: id, tenant: tenant, workflow: workflow, createdAt: Self.date(createdAt))
        return IssuedAPIKey(record: record, key: APIKeyFormat.key(id: id, secret: secret))
    }

    public func listKeys(tenant: String?) async throws -> [APIKeyRecord] {
        try read { db in
            if let tenant {
                return try SQLiteRaw.rows(db, "SELECT \(Self.keyColumns) FROM api_keys WHERE tenant = ? ORDER BY created_at, id",
                                          [.text(tenant)], { Self.storedKey(from: $0).record })
            }
            return try SQLiteRaw.rows(db, "SELECT \(Self.keyColumns) FROM api_keys ORDER BY created_at, id", [],
                                      { Self.storedKey(from: $0).record })
        }
    }

    public func revokeKey(id: String, now: Date) async throws -> Bool {
        let revokedAt = Self.milliseconds(now)
        return try await write { db in
            try db.database.execute(sql: "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?",
                           arguments: [revokedAt, id])
            return db.database.changesCount == 1
        }
    }

    public func storedKey(id: String) async throws -> StoredAPIKey? {
        try read { db in
            try SQLiteRaw.row(db, "SELECT \(Self.keyColumns) FROM api_keys WHERE id = ?", [.text(id)], Self.storedKey(from:))
        }
    }

    /// Columns of `api_keys` in the order `apiKey(from:)` reads them.
    private static let keyColumns = "id, tenant, workflow, created_at, revoked_at, secret_sha256"

    private static func storedKey(from row: SQLiteRaw.Columns) -> StoredAPIKey {
        StoredAPIKey(record: APIKeyRecord(id: row.text(0), tenant: row.text(1), workflow: row.text(2),
                                          createdAt: date(row.integer(3)), revokedAt: row.optionalInteger(4).map(date)),
                     secretSHA256: row.text(5))
    }
}
