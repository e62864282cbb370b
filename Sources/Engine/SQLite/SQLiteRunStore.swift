import Foundation
import GRDB
import Logging

/// The embedded store: SQLite in WAL mode, in `flowd.sqlite` inside a data directory.
///
/// - Every write is one `BEGIN IMMEDIATE` transaction (asked for explicitly): a deferred
///   read-then-write transaction would fail at once with SQLITE_BUSY_SNAPSHOT when another
///   connection (or process) committed in between, whatever the busy timeout. With one writer
///   at a time, the admission check and the insert cannot race.
/// - `synchronous=FULL`: an acknowledged commit survives a crash and a power loss.
/// - A busy timeout (5 s by default) when several processes share the file; past it the call
///   fails with a retryable `StoreError`.
/// - Reads are deferred transactions on a snapshot, concurrent with the writer.
/// - Times are INTEGER milliseconds since 1970; dates come back truncated to the millisecond.
///
/// Several handles (or processes) may open the same directory; admission, claims and
/// compare-and-set writes stay exact across them. `recoverInterruptedRuns` assumes it is the
/// only process using the directory (see there).
public final class SQLiteRunStore: RunStore {
    private let pool: DatabasePool
    private let logger: Logger?

    /// The database file inside the data directory.
    public static let fileName = "flowd.sqlite"

    /// Opens the store in `directory` (created when missing), creating or migrating the
    /// schema. Throws a `StoreError` when the database cannot be opened, or when it was written
    /// by a newer flowd (unknown migrations).
    ///
    /// `busyTimeout` bounds every wait for another writer, including the wait at opening while
    /// another process turns a new database to WAL (SQLite answers that with SQLITE_BUSY at
    /// once, without its busy handler, so opening retries with a short backoff until then).
    public init(directory: URL, logger: Logger? = nil, busyTimeout: Duration = .seconds(5)) throws {
        self.logger = logger
        let path = directory.appendingPathComponent(Self.fileName).path
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
        logger?.debug("opened the run store", metadata: ["path": "\(path)"])
    }

    /// The pool, in WAL mode, its writer with `synchronous=FULL`. GRDB sets NORMAL on the writer
    /// when it turns WAL on, after `prepareDatabase` has run, so FULL is set again here.
    private static func openPool(path: String, configuration: Configuration) throws -> DatabasePool {
        let pool = try DatabasePool(path: path, configuration: configuration)
        try pool.writeWithoutTransaction { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
        }
        return pool
    }

    /// Closes the database connections. Later calls fail with a `StoreError`. Optional: the
    /// connections also close when the store is released.
    public func close() throws {
        do {
            try pool.close()
        } catch {
            throw StoreError.mapping(error)
        }
    }

    // MARK: Transactions

    /// One `BEGIN IMMEDIATE` transaction; it commits when `body` returns, rolls back when it throws.
    private func write<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        do {
            return try await pool.writeWithoutTransaction { db in
                var result: T?
                try db.inTransaction(.immediate) {
                    result = try body(db)
                    return .commit
                }
                return result!
            }
        } catch {
            throw StoreError.mapping(error)
        }
    }

    /// One read-only (deferred) transaction on a snapshot.
    private func read<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        do {
            return try await pool.read(body)
        } catch {
            throw StoreError.mapping(error)
        }
    }

    // MARK: Submission

    public func submit(_ submission: Submission, policy: AdmissionPolicy, now: Date) async throws -> SubmissionOutcome {
        let nowMS = Self.milliseconds(now)
        let expiresAt = nowMS + Self.milliseconds(policy.idempotencyTTL)
        return try await write { db in
            if let key = submission.idempotencyKey,
               let record = try Row.fetchOne(db.cachedStatement(sql: """
                   SELECT fingerprint, run_id, expires_at FROM idempotency WHERE tenant = ? AND key = ?
                   """), arguments: [submission.tenant, key]) {
                let runID: String = record["run_id"]
                if record["expires_at"] as Int64 > nowMS {
                    guard record["fingerprint"] as String == submission.fingerprint else {
                        return .keyReused(existingRunID: runID)
                    }
                    if let run = try Self.fetchRun(db, id: runID, tenant: submission.tenant) {
                        return .replayed(run)
                    }
                }
                // Expired (or naming a run that no longer exists): as if absent.
                try db.cachedStatement(sql: "DELETE FROM idempotency WHERE tenant = ? AND key = ?")
                    .execute(arguments: [submission.tenant, key])
            }
            let limit = try Int.fetchOne(db.cachedStatement(sql: "SELECT max_active FROM tenant_limits WHERE tenant = ?"),
                                         arguments: [submission.tenant]) ?? policy.defaultConcurrencyLimit
            let active = try Int.fetchOne(db.cachedStatement(sql: """
                SELECT COUNT(*) FROM runs WHERE tenant = ? AND state IN ('scheduled', 'running')
                """), arguments: [submission.tenant]) ?? 0
            if active >= limit { return .overLimit(active: active, limit: limit) }
            try db.cachedStatement(sql: """
                INSERT INTO runs (id, tenant, workflow, workflow_version, state, inputs_json, trigger, transport, user,
                                  idempotency_key, created_at)
                VALUES (?, ?, ?, ?, 'scheduled', ?, ?, ?, ?, ?, ?)
                """).execute(arguments: [
                    submission.runID, submission.tenant, submission.workflow, submission.workflowVersion,
                    submission.inputsJSON, submission.trigger.rawValue, submission.transport.rawValue,
                    submission.user, submission.idempotencyKey, nowMS])
            if let key = submission.idempotencyKey {
                try db.cachedStatement(sql: """
                    INSERT INTO idempotency (tenant, key, fingerprint, run_id, expires_at) VALUES (?, ?, ?, ?, ?)
                    """).execute(arguments: [submission.tenant, key, submission.fingerprint, submission.runID, expiresAt])
            }
            return .created(try Self.fetchRun(db, id: submission.runID, tenant: nil)!)
        }
    }

    // MARK: Workers

    /// Round-robin: among tenants with a `scheduled` run, the one whose last claim has the
    /// smallest claim number (never claimed = 0, so first), ties broken by the tenant's oldest
    /// scheduled run, then by name. Then that tenant's oldest run by (createdAt, id).
    ///
    /// Bound: while k tenants have scheduled runs, each of them gets one of every k consecutive
    /// claims. The tenant choice reads every scheduled run (covering index), which the
    /// per-tenant concurrency limit keeps to tenants × limit rows.
    public func claimNext(worker: String, leaseDuration: Duration, now: Date) async throws -> (RunRecord, RunEvent)? {
        let nowMS = Self.milliseconds(now)
        let leaseExpiresAt = nowMS + Self.milliseconds(leaseDuration)
        return try await write { db in
            guard let tenant = try String.fetchOne(db.cachedStatement(sql: """
                SELECT r.tenant FROM runs r LEFT JOIN tenant_dispatch d ON d.tenant = r.tenant
                WHERE r.state = 'scheduled'
                GROUP BY r.tenant
                ORDER BY COALESCE(MAX(d.last_claim), 0), MIN(r.created_at), r.tenant
                LIMIT 1
                """)) else { return nil }
            guard let id = try String.fetchOne(db.cachedStatement(sql: """
                SELECT id FROM runs WHERE state = 'scheduled' AND tenant = ? ORDER BY created_at, id LIMIT 1
                """), arguments: [tenant]) else { return nil }
            let claim = try Int64.fetchOne(db.cachedStatement(sql: """
                UPDATE counters SET value = value + 1 WHERE name = 'claims' RETURNING value
                """))!
            try db.cachedStatement(sql: """
                INSERT INTO tenant_dispatch (tenant, last_claim) VALUES (?, ?)
                ON CONFLICT(tenant) DO UPDATE SET last_claim = excluded.last_claim
                """).execute(arguments: [tenant, claim])
            try db.cachedStatement(sql: """
                UPDATE runs SET state = 'running', attempt = attempt + 1, started_at = ?, lease_owner = ?,
                       lease_expires_at = ?, last_progress_at = ?
                WHERE id = ? AND state = 'scheduled'
                """).execute(arguments: [nowMS, worker, leaseExpiresAt, nowMS, id])
            return try Self.appendRunEvent(db, runID: id, kind: .runStarted, time: nowMS)
        }
    }

    public func renewLease(runID: String, attempt: Int, worker: String, leaseDuration: Duration, now: Date) async throws -> LeaseStatus {
        let leaseExpiresAt = Self.milliseconds(now) + Self.milliseconds(leaseDuration)
        return try await write { db in
            guard let stopRequested = try Bool.fetchOne(db.cachedStatement(sql: """
                UPDATE runs SET lease_expires_at = ?
                WHERE id = ? AND attempt = ? AND state = 'running' AND lease_owner = ?
                RETURNING stop_requested
                """), arguments: [leaseExpiresAt, runID, attempt, worker]) else { return .lost }
            return .held(stopRequested: stopRequested)
        }
    }

    /// Only node events (`node_started`, `node_finished`, `text_chunk`) may be appended:
    /// `run_started` and `run_finished` belong to `claimNext` and the calls that end a run;
    /// other kinds throw `StoreError.Code.invalidArgument` and store nothing.
    public func appendEvents(runID: String, attempt: Int, events: [NewEvent], stepsDelta: Int, now: Date) async throws -> [RunEvent]? {
        if let event = events.first(where: { $0.kind == .runStarted || $0.kind == .runFinished }) {
            throw StoreError(code: .invalidArgument,
                             message: "\(event.kind.rawValue) events are written by the store, not appended")
        }
        let nowMS = Self.milliseconds(now)
        return try await write { db in
            guard var sequence = try Int64.fetchOne(db.cachedStatement(sql: """
                SELECT last_sequence FROM runs WHERE id = ? AND attempt = ? AND state = 'running'
                """), arguments: [runID, attempt]) else { return nil }
            var stored: [RunEvent] = []
            stored.reserveCapacity(events.count)
            for event in events {
                sequence += 1
                let runEvent = RunEvent(runID: runID, sequence: sequence, time: Self.date(nowMS), kind: event.kind,
                                        payloadJSON: event.payloadJSON)
                try Self.insertEvent(db, runEvent)
                stored.append(runEvent)
            }
            try db.cachedStatement(sql: """
                UPDATE runs SET last_sequence = ?, last_progress_at = ?, total_steps = total_steps + ? WHERE id = ?
                """).execute(arguments: [sequence, nowMS, stepsDelta, runID])
            return stored
        }
    }

    /// `state` must be terminal, else `StoreError.Code.invalidArgument`.
    public func finish(runID: String, attempt: Int, state: RunState, outputsJSON: String?, error: String?, now: Date) async throws -> FinishedRun? {
        guard state.isTerminal else {
            throw StoreError(code: .invalidArgument, message: "finish needs a terminal state, not \(state.rawValue)")
        }
        let nowMS = Self.milliseconds(now)
        return try await write { db in
            try Self.end(db, runID: runID, attempt: attempt, from: .running, to: state, outputsJSON: outputsJSON,
                         error: error, now: nowMS)
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
                return .stopped(finished.run, finished.event)
            case .running:
                try db.execute(sql: "UPDATE runs SET stop_requested = 1 WHERE id = ?", arguments: [runID])
                return .stopRequested(try Self.fetchRun(db, id: runID, tenant: nil)!)
            case .succeeded, .failed, .stopped, .partialSucceeded:
                return .alreadyFinished(run)
            }
        }
    }

    public func run(id: String, tenant: String?) async throws -> RunRecord? {
        try await read { db in try Self.fetchRun(db, id: id, tenant: tenant) }
    }

    public func events(runID: String, after: Int64, limit: Int) async throws -> [RunEvent] {
        let limit = max(0, limit)  // SQLite reads a negative LIMIT as "no limit"
        return try await read { db in
            try Row.fetchAll(db.cachedStatement(sql: """
                SELECT run_id, sequence, time, kind, payload_json FROM run_events
                WHERE run_id = ? AND sequence > ? ORDER BY sequence LIMIT ?
                """), arguments: [runID, after, limit]).map(Self.event(from:))
        }
    }

    public func listRuns(tenant: String, filter: RunFilter, limit: Int, after cursor: RunCursor?) async throws -> [RunRecord] {
        var conditions = ["tenant = ?"]
        var arguments: StatementArguments = [tenant]
        if !filter.states.isEmpty {
            let states = filter.states.map(\.rawValue).sorted()
            conditions.append("state IN (\(Array(repeating: "?", count: states.count).joined(separator: ", ")))")
            arguments += StatementArguments(states)
        }
        if let workflow = filter.workflow {
            conditions.append("workflow = ?")
            arguments += [workflow]
        }
        if let user = filter.user {
            conditions.append("user = ?")
            arguments += [user]
        }
        if let cursor {
            conditions.append("(created_at, id) < (?, ?)")
            arguments += [Self.milliseconds(cursor.createdAt), cursor.id]
        }
        arguments += [max(0, limit)]
        let sql = "SELECT * FROM runs WHERE \(conditions.joined(separator: " AND ")) ORDER BY created_at DESC, id DESC LIMIT ?"
        let statementArguments = arguments
        return try await read { db in
            try Row.fetchAll(db.cachedStatement(sql: sql), arguments: statementArguments).map(Self.run(from:))
        }
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
                for row in try Row.fetchAll(db.cachedStatement(sql: rule.sql), arguments: [rule.bound]) {
                    let (state, error) = Self.endState(stopRequested: row["stop_requested"], otherwise: rule.error)
                    if let finished = try Self.end(db, runID: row["id"], attempt: row["attempt"], from: rule.from,
                                                   to: state, outputsJSON: nil, error: error, now: nowMS) {
                        reaped.append(finished)
                    }
                }
            }
            return reaped
        }
    }

    /// Ends every `running` run (failed; stopped when its stop was requested). Only for start-up, before this process's workers claim
    /// anything: a run another live process holds on the same directory would be failed too.
    public func recoverInterruptedRuns(now: Date) async throws -> [FinishedRun] {
        let nowMS = Self.milliseconds(now)
        return try await write { db in
            try Row.fetchAll(db, sql: "SELECT id, attempt, stop_requested FROM runs WHERE state = 'running' ORDER BY created_at, id")
                .compactMap { row in
                    let (state, error) = Self.endState(
                        stopRequested: row["stop_requested"], otherwise: "interrupted: flowd restarted while the run was running")
                    return try Self.end(db, runID: row["id"], attempt: row["attempt"], from: .running, to: state,
                                        outputsJSON: nil, error: error, now: nowMS)
                }
        }
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
            try db.execute(sql: "DELETE FROM idempotency WHERE expires_at <= ?", arguments: [nowMS])
            return db.changesCount
        }
    }

    public func setConcurrencyLimit(tenant: String, limit: Int?) async throws {
        try await write { db in
            if let limit {
                try db.execute(sql: """
                    INSERT INTO tenant_limits (tenant, max_active) VALUES (?, ?)
                    ON CONFLICT(tenant) DO UPDATE SET max_active = excluded.max_active
                    """, arguments: [tenant, limit])
            } else {
                try db.execute(sql: "DELETE FROM tenant_limits WHERE tenant = ?", arguments: [tenant])
            }
        }
    }

    // MARK: Transitions

    /// Moves a run from `from` to the terminal `to` by compare-and-set on (id, attempt, state),
    /// clears the lease and appends the run's `run_finished` event; nil when the CAS fails.
    private static func end(_ db: Database, runID: String, attempt: Int, from: RunState, to: RunState,
                            outputsJSON: String?, error: String?, now: Int64) throws -> FinishedRun? {
        try db.cachedStatement(sql: """
            UPDATE runs SET state = ?, finished_at = ?, outputs_json = ?, error = ?, lease_owner = NULL,
                   lease_expires_at = NULL
            WHERE id = ? AND attempt = ? AND state = ?
            """).execute(arguments: [to.rawValue, now, outputsJSON, error, runID, attempt, from.rawValue])
        guard db.changesCount == 1 else { return nil }
        let (run, event) = try appendRunEvent(db, runID: runID, kind: .runFinished, time: now)
        return FinishedRun(run: run, event: event)
    }

    /// Appends a `run_started` or `run_finished` event whose payload is the run as it is with
    /// the event stored (its `lastSequence` already the event's sequence).
    private static func appendRunEvent(_ db: Database, runID: String, kind: RunEventKind,
                                       time: Int64) throws -> (RunRecord, RunEvent) {
        try db.cachedStatement(sql: "UPDATE runs SET last_sequence = last_sequence + 1 WHERE id = ?")
            .execute(arguments: [runID])
        let run = try fetchRun(db, id: runID, tenant: nil)!
        let event = RunEvent(runID: runID, sequence: run.lastSequence, time: date(time), kind: kind,
                             payloadJSON: run.jsonPayload())
        try insertEvent(db, event)
        return (run, event)
    }

    // MARK: Test hooks (internal)

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
            try db.execute(sql: """
                INSERT INTO api_keys (id, secret_sha256, tenant, workflow, created_at) VALUES (?, ?, ?, ?, ?)
                """, arguments: [id, APIKeyFormat.hash(secret: secret), tenant, workflow, createdAt])
        }
        let record = APIKeyRecord(id: id, tenant: tenant, workflow: workflow, createdAt: Self.date(createdAt))
        return IssuedAPIKey(record: record, key: APIKeyFormat.key(id: id, secret: secret))
    }

    public func listKeys(tenant: String?) async throws -> [APIKeyRecord] {
        try await read { db in
            let rows: [Row]
            if let tenant {
                rows = try Row.fetchAll(db, sql: "SELECT * FROM api_keys WHERE tenant = ? ORDER BY created_at, id",
                                        arguments: [tenant])
            } else {
                rows = try Row.fetchAll(db, sql: "SELECT * FROM api_keys ORDER BY created_at, id")
            }
            return rows.map(Self.apiKey(from:))
        }
    }

    public func revokeKey(id: String, now: Date) async throws -> Bool {
        let revokedAt = Self.milliseconds(now)
        return try await write { db in
            try db.execute(sql: "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?",
                           arguments: [revokedAt, id])
            return db.changesCount == 1
        }
    }

    public func authenticate(_ presented: String) async throws -> APIKeyRecord? {
        guard let (id, secret) = APIKeyFormat.parse(presented) else { return nil }
        let hash = APIKeyFormat.hash(secret: secret)
        return try await read { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT * FROM api_keys WHERE id = ?", arguments: [id]),
                  APIKeyFormat.constantTimeEqual(row["secret_sha256"], hash)
            else { return nil }
            let record = Self.apiKey(from: row)
            return record.revokedAt == nil ? record : nil
        }
    }

    private static func apiKey(from row: Row) -> APIKeyRecord {
        APIKeyRecord(id: row["id"], tenant: row["tenant"], workflow: row["workflow"], createdAt: date(row["created_at"]),
                     revokedAt: (row["revoked_at"] as Int64?).map(date))
    }
}
