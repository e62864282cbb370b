import Foundation
import GRDB
import Logging

/// A store error, mapped once from SQLite's result codes.
public struct StoreError: Error, Sendable, CustomStringConvertible {
    /// What went wrong. Extensible.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let name: String
        private init(_ name: String) { self.name = name }
        public var description: String { name }
        /// The database is locked by another writer for longer than the busy timeout.
        public static let busy = Code("busy")
        /// The disk is full or an I/O error occurred; nothing was committed.
        public static let storage = Code("storage")
        /// A constraint or schema problem: a bug, not a transient condition.
        public static let integrity = Code("integrity")
        public static let other = Code("other")
    }

    public var code: Code
    public var message: String
    public var cause: (any Error & Sendable)?

    /// Whether the same call may succeed later (callers answer UNAVAILABLE / 503).
    public var isRetryable: Bool { code == .busy || code == .storage }

    public var description: String { "store \(code): \(message)" }

    init(_ error: any Error) {
        if let error = error as? StoreError {
            self = error
            return
        }
        cause = error
        guard let database = error as? DatabaseError else {
            code = .other
            message = "\(error)"
            return
        }
        message = database.message ?? "\(database.resultCode)"
        switch database.resultCode {
        case .SQLITE_BUSY, .SQLITE_LOCKED: code = .busy
        case .SQLITE_FULL, .SQLITE_IOERR, .SQLITE_CANTOPEN, .SQLITE_READONLY: code = .storage
        case .SQLITE_CONSTRAINT, .SQLITE_MISMATCH, .SQLITE_CORRUPT, .SQLITE_SCHEMA: code = .integrity
        default: code = .other
        }
    }
}

/// The embedded store: SQLite in WAL mode in a data directory (`flowd.sqlite`).
///
/// Every write is a `BEGIN IMMEDIATE` transaction (GRDB 7 opens write accesses that way; a
/// deferred read-then-write transaction could fail with SQLITE_BUSY_SNAPSHOT instead of waiting), `synchronous=FULL` so that an
/// acknowledged submission survives a crash, and a 5 s busy timeout when several processes
/// share the file. Times are INTEGER milliseconds since 1970.
public final class SQLiteRunStore: RunStore {
    private let pool: DatabasePool
    private let logger: Logger?

    /// The database file inside the data directory.
    public static let fileName = "flowd.sqlite"

    /// Opens (creating and migrating when needed) the store in `directory`.
    public init(directory: URL, logger: Logger? = nil) throws {
        self.logger = logger
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            var configuration = Configuration()
            configuration.busyMode = .timeout(5)
            configuration.prepareDatabase { db in
                try db.execute(sql: "PRAGMA synchronous = FULL")
                try db.execute(sql: "PRAGMA foreign_keys = ON")
            }
            pool = try DatabasePool(path: directory.appendingPathComponent(Self.fileName).path, configuration: configuration)
            try Self.migrator.migrate(pool)
        } catch {
            throw StoreError(error)
        }
    }

    private static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1: runs, events, idempotency, tenants") { db in
            try db.execute(sql: """
                CREATE TABLE runs (
                    id TEXT PRIMARY KEY NOT NULL,
                    tenant TEXT NOT NULL,
                    workflow TEXT NOT NULL,
                    workflow_version TEXT NOT NULL,
                    state TEXT NOT NULL,
                    inputs_json TEXT NOT NULL,
                    outputs_json TEXT,
                    error TEXT,
                    trigger TEXT NOT NULL,
                    transport TEXT NOT NULL,
                    user TEXT NOT NULL,
                    idempotency_key TEXT,
                    created_at INTEGER NOT NULL,
                    started_at INTEGER,
                    finished_at INTEGER,
                    attempt INTEGER NOT NULL DEFAULT 0,
                    last_sequence INTEGER NOT NULL DEFAULT 0,
                    total_steps INTEGER NOT NULL DEFAULT 0,
                    total_tokens INTEGER NOT NULL DEFAULT 0,
                    lease_owner TEXT,
                    lease_expires_at INTEGER,
                    last_progress_at INTEGER,
                    stop_requested INTEGER NOT NULL DEFAULT 0
                ) STRICT;
                CREATE INDEX runs_by_tenant ON runs(tenant, created_at DESC, id DESC);
                CREATE INDEX runs_by_tenant_state ON runs(tenant, state);
                CREATE INDEX runs_by_state ON runs(state, tenant, created_at, id);
                CREATE TABLE run_events (
                    run_id TEXT NOT NULL REFERENCES runs(id),
                    sequence INTEGER NOT NULL,
                    time INTEGER NOT NULL,
                    kind TEXT NOT NULL,
                    payload_json TEXT NOT NULL,
                    PRIMARY KEY (run_id, sequence)
                ) STRICT, WITHOUT ROWID;
                CREATE TABLE idempotency (
                    tenant TEXT NOT NULL,
                    key TEXT NOT NULL,
                    fingerprint TEXT NOT NULL,
                    run_id TEXT NOT NULL,
                    expires_at INTEGER NOT NULL,
                    PRIMARY KEY (tenant, key)
                ) STRICT, WITHOUT ROWID;
                CREATE INDEX idempotency_by_expiry ON idempotency(expires_at);
                CREATE TABLE tenant_limits (tenant TEXT PRIMARY KEY NOT NULL, max_active INTEGER NOT NULL) STRICT;
                CREATE TABLE tenant_dispatch (tenant TEXT PRIMARY KEY NOT NULL, last_claim INTEGER NOT NULL) STRICT;
                CREATE TABLE counters (name TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL) STRICT;
                INSERT INTO counters(name, value) VALUES ('claims', 0);
                """)
        }
        migrator.registerMigration("v2: api keys") { db in
            try db.execute(sql: """
                CREATE TABLE api_keys (
                    id TEXT PRIMARY KEY NOT NULL,
                    secret_sha256 TEXT NOT NULL,
                    tenant TEXT NOT NULL,
                    workflow TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    revoked_at INTEGER
                ) STRICT;
                CREATE INDEX api_keys_by_tenant ON api_keys(tenant, created_at);
                """)
        }
        return migrator
    }

    private func write<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        do {
            return try await pool.write(body)
        } catch {
            throw StoreError(error)
        }
    }

    private func read<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        do {
            return try await pool.read(body)
        } catch {
            throw StoreError(error)
        }
    }

    // MARK: RunStore

    public func submit(_ submission: Submission, policy: AdmissionPolicy, now: Date) async throws -> SubmissionOutcome {
        let nowMS = Self.milliseconds(now)
        let ttlMS = Int64(policy.idempotencyTTL.seconds * 1000)
        return try await write { db in
            if let key = submission.idempotencyKey {
                if let row = try Row.fetchOne(db, sql: """
                    SELECT fingerprint, run_id, expires_at FROM idempotency WHERE tenant = ? AND key = ?
                    """, arguments: [submission.tenant, key]) {
                    let expiresAt: Int64 = row["expires_at"]
                    if expiresAt > nowMS {
                        let runID: String = row["run_id"]
                        guard row["fingerprint"] as String == submission.fingerprint else {
                            return .keyReused(existingRunID: runID)
                        }
                        if let run = try Self.fetchRun(db, id: runID, tenant: submission.tenant) {
                            return .replayed(run)
                        }
                    }
                    try db.execute(sql: "DELETE FROM idempotency WHERE tenant = ? AND key = ?", arguments: [submission.tenant, key])
                }
            }
            let limit = try Int.fetchOne(db, sql: "SELECT max_active FROM tenant_limits WHERE tenant = ?",
                                         arguments: [submission.tenant]) ?? policy.defaultConcurrencyLimit
            let active = try Int.fetchOne(db, sql: """
                SELECT COUNT(*) FROM runs WHERE tenant = ? AND state IN ('scheduled', 'running')
                """, arguments: [submission.tenant]) ?? 0
            if active >= limit { return .overLimit(active: active, limit: limit) }
            try db.execute(sql: """
                INSERT INTO runs (id, tenant, workflow, workflow_version, state, inputs_json, trigger, transport, user,
                                  idempotency_key, created_at)
                VALUES (?, ?, ?, ?, 'scheduled', ?, ?, ?, ?, ?, ?)
                """, arguments: [submission.runID, submission.tenant, submission.workflow, submission.workflowVersion,
                                 submission.inputsJSON, submission.trigger.rawValue, submission.transport.rawValue,
                                 submission.user, submission.idempotencyKey, nowMS])
            if let key = submission.idempotencyKey {
                try db.execute(sql: """
                    INSERT INTO idempotency (tenant, key, fingerprint, run_id, expires_at) VALUES (?, ?, ?, ?, ?)
                    """, arguments: [submission.tenant, key, submission.fingerprint, submission.runID, nowMS + ttlMS])
            }
            return .created(try Self.fetchRun(db, id: submission.runID, tenant: nil)!)
        }
    }

    public func claimNext(worker: String, leaseDuration: Duration, now: Date) async throws -> (RunRecord, RunEvent)? {
        let nowMS = Self.milliseconds(now)
        let leaseMS = Int64(leaseDuration.seconds * 1000)
        return try await write { db in
            // Round-robin: the tenant with a scheduled run whose last claim is oldest.
            guard let tenant = try String.fetchOne(db, sql: """
                SELECT r.tenant FROM runs r LEFT JOIN tenant_dispatch d ON d.tenant = r.tenant
                WHERE r.state = 'scheduled'
                GROUP BY r.tenant
                ORDER BY COALESCE(MAX(d.last_claim), 0), MIN(r.created_at), r.tenant
                LIMIT 1
                """) else { return nil }
            guard let id = try String.fetchOne(db, sql: """
                SELECT id FROM runs WHERE state = 'scheduled' AND tenant = ? ORDER BY created_at, id LIMIT 1
                """, arguments: [tenant]) else { return nil }
            let claim = try Int64.fetchOne(db, sql: "UPDATE counters SET value = value + 1 WHERE name = 'claims' RETURNING value")!
            try db.execute(sql: """
                INSERT INTO tenant_dispatch (tenant, last_claim) VALUES (?, ?)
                ON CONFLICT(tenant) DO UPDATE SET last_claim = excluded.last_claim
                """, arguments: [tenant, claim])
            try db.execute(sql: """
                UPDATE runs SET state = 'running', attempt = attempt + 1, started_at = ?, lease_owner = ?,
                       lease_expires_at = ?, last_progress_at = ?
                WHERE id = ? AND state = 'scheduled'
                """, arguments: [nowMS, worker, nowMS + leaseMS, nowMS, id])
            let event = try Self.appendRunEvent(db, runID: id, kind: .runStarted, time: nowMS)
            return (try Self.fetchRun(db, id: id, tenant: nil)!, event)
        }
    }

    public func renewLease(runID: String, attempt: Int, worker: String, leaseDuration: Duration, now: Date) async throws -> LeaseStatus {
        let expiry = Self.milliseconds(now) + Int64(leaseDuration.seconds * 1000)
        return try await write { db in
            try db.execute(sql: """
                UPDATE runs SET lease_expires_at = ?
                WHERE id = ? AND attempt = ? AND state = 'running' AND lease_owner = ?
                """, arguments: [expiry, runID, attempt, worker])
            guard db.changesCount == 1 else { return .lost }
            let stop = try Bool.fetchOne(db, sql: "SELECT stop_requested FROM runs WHERE id = ?", arguments: [runID]) ?? false
            return .held(stopRequested: stop)
        }
    }

    public func appendEvents(runID: String, attempt: Int, events: [NewEvent], stepsDelta: Int, now: Date) async throws -> [RunEvent]? {
        let nowMS = Self.milliseconds(now)
        return try await write { db in
            guard var sequence = try Int64.fetchOne(db, sql: """
                SELECT last_sequence FROM runs WHERE id = ? AND attempt = ? AND state = 'running'
                """, arguments: [runID, attempt]) else { return nil }
            var stored: [RunEvent] = []
            for event in events {
                sequence += 1
                try Self.insertEvent(db, RunEvent(runID: runID, sequence: sequence, time: Self.date(nowMS),
                                                  kind: event.kind, payloadJSON: event.payloadJSON))
                stored.append(RunEvent(runID: runID, sequence: sequence, time: Self.date(nowMS), kind: event.kind,
                                       payloadJSON: event.payloadJSON))
            }
            try db.execute(sql: """
                UPDATE runs SET last_sequence = ?, last_progress_at = ?, total_steps = total_steps + ? WHERE id = ?
                """, arguments: [sequence, nowMS, stepsDelta, runID])
            return stored
        }
    }

    public func finish(runID: String, attempt: Int, state: RunState, outputsJSON: String?, error: String?, now: Date) async throws -> FinishedRun? {
        precondition(state.isTerminal, "finish needs a terminal state")
        let nowMS = Self.milliseconds(now)
        return try await write { db in
            try Self.end(db, runID: runID, attempt: attempt, from: .running, to: state, outputsJSON: outputsJSON,
                         error: error, now: nowMS)
        }
    }

    public func stop(runID: String, tenant: String, now: Date) async throws -> StopOutcome {
        let nowMS = Self.milliseconds(now)
        return try await write { db in
            guard let run = try Self.fetchRun(db, id: runID, tenant: tenant) else { return .notFound }
            switch run.state {
            case .scheduled:
                guard let finished = try Self.end(db, runID: runID, attempt: run.attempt, from: .scheduled, to: .stopped,
                                                  outputsJSON: nil, error: "stopped before it started", now: nowMS)
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
        try await read { db in
            try Row.fetchAll(db, sql: """
                SELECT run_id, sequence, time, kind, payload_json FROM run_events
                WHERE run_id = ? AND sequence > ? ORDER BY sequence LIMIT ?
                """, arguments: [runID, after, limit]).map(Self.event(from:))
        }
    }

    public func listRuns(tenant: String, filter: RunFilter, limit: Int, after cursor: RunCursor?) async throws -> [RunRecord] {
        var conditions = ["tenant = ?"]
        var arguments: StatementArguments = [tenant]
        if !filter.states.isEmpty {
            let states = filter.states.map(\.rawValue).sorted()
            conditions.append("state IN (\(states.map { _ in "?" }.joined(separator: ", ")))")
            for state in states { _ = arguments.append(contentsOf: [state]) }
        }
        if let workflow = filter.workflow {
            conditions.append("workflow = ?")
            _ = arguments.append(contentsOf: [workflow])
        }
        if let user = filter.user {
            conditions.append("user = ?")
            _ = arguments.append(contentsOf: [user])
        }
        if let cursor {
            let createdAt = Self.milliseconds(cursor.createdAt)
            conditions.append("(created_at < ? OR (created_at = ? AND id < ?))")
            _ = arguments.append(contentsOf: [createdAt, createdAt, cursor.id])
        }
        _ = arguments.append(contentsOf: [limit])
        let sql = "SELECT * FROM runs WHERE \(conditions.joined(separator: " AND ")) ORDER BY created_at DESC, id DESC LIMIT ?"
        let finalArguments = arguments
        return try await read { db in try Row.fetchAll(db, sql: sql, arguments: finalArguments).map(Self.run(from:)) }
    }

    public func reap(now: Date, policy: ReaperPolicy) async throws -> [FinishedRun] {
        let nowMS = Self.milliseconds(now)
        let scheduledBefore = nowMS - Int64(policy.scheduledTimeout.seconds * 1000)
        let progressBefore = nowMS - Int64(policy.runningTimeout.seconds * 1000)
        let scheduledMinutes = Self.minutes(policy.scheduledTimeout)
        let runningMinutes = Self.minutes(policy.runningTimeout)
        return try await write { db in
            var reaped: [FinishedRun] = []
            let candidates = try Row.fetchAll(db, sql: """
                SELECT id, attempt, state, lease_expires_at, last_progress_at, created_at FROM runs
                WHERE (state = 'scheduled' AND created_at <= ?)
                   OR (state = 'running' AND (lease_expires_at < ? OR last_progress_at <= ?))
                """, arguments: [scheduledBefore, nowMS, progressBefore])
            for row in candidates {
                let state = RunState(rawValue: row["state"])!
                let error: String
                if state == .scheduled {
                    error = "scheduled for more than \(scheduledMinutes) without a worker"
                } else if (row["lease_expires_at"] as Int64?).map({ $0 < nowMS }) == true {
                    error = "the worker's lease expired (worker gone)"
                } else {
                    error = "no progress for more than \(runningMinutes)"
                }
                if let finished = try Self.end(db, runID: row["id"], attempt: row["attempt"], from: state, to: .failed,
                                               outputsJSON: nil, error: error, now: nowMS) {
                    reaped.append(finished)
                }
            }
            return reaped
        }
    }

    public func recoverInterruptedRuns(now: Date) async throws -> [FinishedRun] {
        let nowMS = Self.milliseconds(now)
        return try await write { db in
            try Row.fetchAll(db, sql: "SELECT id, attempt FROM runs WHERE state = 'running'").compactMap { row in
                try Self.end(db, runID: row["id"], attempt: row["attempt"], from: .running, to: .failed, outputsJSON: nil,
                             error: "interrupted: flowd restarted while the run was running", now: nowMS)
            }
        }
    }

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

    // MARK: Rows

    /// Moves a run from `from` to the terminal `to` by compare-and-set on (id, attempt, state)
    /// and appends its `run_finished` event; nil when the CAS fails.
    private static func end(_ db: Database, runID: String, attempt: Int, from: RunState, to: RunState,
                            outputsJSON: String?, error: String?, now: Int64) throws -> FinishedRun? {
        try db.execute(sql: """
            UPDATE runs SET state = ?, finished_at = ?, outputs_json = ?, error = ?, lease_owner = NULL,
                   lease_expires_at = NULL
            WHERE id = ? AND attempt = ? AND state = ?
            """, arguments: [to.rawValue, now, outputsJSON, error, runID, attempt, from.rawValue])
        guard db.changesCount == 1 else { return nil }
        let event = try appendRunEvent(db, runID: runID, kind: .runFinished, time: now)
        return FinishedRun(run: try fetchRun(db, id: runID, tenant: nil)!, event: event)
    }

    /// Appends a `run_started`/`run_finished` event whose payload is the run as it is after the
    /// event (its `lastSequence` already the event's sequence).
    private static func appendRunEvent(_ db: Database, runID: String, kind: RunEventKind, time: Int64) throws -> RunEvent {
        try db.execute(sql: "UPDATE runs SET last_sequence = last_sequence + 1 WHERE id = ?", arguments: [runID])
        let run = try fetchRun(db, id: runID, tenant: nil)!
        let event = RunEvent(runID: runID, sequence: run.lastSequence, time: date(time), kind: kind,
                             payloadJSON: run.jsonPayload())
        try insertEvent(db, event)
        return event
    }

    private static func insertEvent(_ db: Database, _ event: RunEvent) throws {
        try db.execute(sql: """
            INSERT INTO run_events (run_id, sequence, time, kind, payload_json) VALUES (?, ?, ?, ?, ?)
            """, arguments: [event.runID, event.sequence, milliseconds(event.time), event.kind.rawValue, event.payloadJSON])
    }

    private static func fetchRun(_ db: Database, id: String, tenant: String?) throws -> RunRecord? {
        let row: Row?
        if let tenant {
            row = try Row.fetchOne(db, sql: "SELECT * FROM runs WHERE id = ? AND tenant = ?", arguments: [id, tenant])
        } else {
            row = try Row.fetchOne(db, sql: "SELECT * FROM runs WHERE id = ?", arguments: [id])
        }
        return try row.map(run(from:))
    }

    private static func run(from row: Row) throws -> RunRecord {
        guard let state = RunState(rawValue: row["state"]), let trigger = Trigger(rawValue: row["trigger"]),
              let transport = Transport(rawValue: row["transport"])
        else { throw StoreError(CorruptRow(id: row["id"])) }
        return RunRecord(
            id: row["id"], tenant: row["tenant"], workflow: row["workflow"], workflowVersion: row["workflow_version"],
            state: state, inputsJSON: row["inputs_json"], outputsJSON: row["outputs_json"], error: row["error"],
            trigger: trigger, transport: transport, user: row["user"], idempotencyKey: row["idempotency_key"],
            createdAt: date(row["created_at"]), startedAt: (row["started_at"] as Int64?).map(date),
            finishedAt: (row["finished_at"] as Int64?).map(date), attempt: row["attempt"],
            lastSequence: row["last_sequence"], totalSteps: row["total_steps"], totalTokens: row["total_tokens"],
            leaseOwner: row["lease_owner"], leaseExpiresAt: (row["lease_expires_at"] as Int64?).map(date),
            lastProgressAt: (row["last_progress_at"] as Int64?).map(date), stopRequested: row["stop_requested"])
    }

    private static func event(from row: Row) throws -> RunEvent {
        guard let kind = RunEventKind(rawValue: row["kind"]) else { throw StoreError(CorruptRow(id: row["run_id"])) }
        return RunEvent(runID: row["run_id"], sequence: row["sequence"], time: date(row["time"]), kind: kind,
                        payloadJSON: row["payload_json"])
    }

    private struct CorruptRow: Error, CustomStringConvertible {
        let id: String
        var description: String { "row of run \(id) holds a value this version does not know" }
    }

    // MARK: Time

    /// Milliseconds since 1970, truncated; a date read back from the store converts exactly.
    static func milliseconds(_ date: Date) -> Int64 {
        let exact = date.timeIntervalSince1970 * 1000
        let nearest = exact.rounded()
        return abs(exact - nearest) < 1e-3 ? Int64(nearest) : Int64(exact.rounded(.down))
    }

    static func date(_ milliseconds: Int64) -> Date {
        Date(timeIntervalSince1970: Double(milliseconds) / 1000)
    }

    private static func minutes(_ duration: Duration) -> String {
        let minutes = duration.seconds / 60
        return minutes == minutes.rounded() ? "\(Int(minutes)) minutes" : String(format: "%.1f minutes", minutes)
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
