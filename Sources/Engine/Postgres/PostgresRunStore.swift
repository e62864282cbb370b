import CoreMetrics
import Foundation
import Logging
import PostgresNIO
import Synchronization

/// The shared store: one PostgreSQL database for several flowd processes (postgres-nio, a
/// connection pool, parameterised statements).
///
/// The `RunStore` contract holds across processes, each guarantee resting on the database:
/// - Admission: the submit transaction locks the tenant's `tenants` row (`INSERT … ON CONFLICT
///   DO NOTHING`, then `SELECT … FOR UPDATE`), so one tenant's admissions are serialised in every
///   process; its `active` counter, read from the locked row, less the tenant's
///   `tenant_releases`, is exact under READ COMMITTED (or one too high, never too low).
///   Idempotency records are read after that lock and kept exact by the (tenant, key) primary key.
/// - Claims take runs with `FOR UPDATE SKIP LOCKED`: two claimers never take the same run, and
///   neither waits for the other's runs. Round-robin and the per-tenant cap as in SQLite, from
///   an unlocked read of the tenants; their rows are updated at the end of the claim.
/// - Every worker write is a compare-and-set on (id, attempt, state).
/// - The reaper and start-up recovery run under a transaction-scoped advisory lock (one at a
///   time); recovery only ends runs whose lease expired: another live process renews its own.
/// - Schema migrations run at opening under an advisory lock; a database migrated by a newer
///   flowd is refused.
/// - Lock order, so that no two transactions wait on each other: a run's row before its
///   tenant's row (or before one of its tenant's `tenant_releases` rows, which the end of a
///   running run updates instead); a claim locks runs (skipping locked ones), then its
///   tenants' rows in tenant order; a submission batch locks its tenants' rows in tenant order.
///
/// Submissions are group-committed (`PostgresSubmitBatcher`); every other call is one
/// transaction of its own. Times are BIGINT
/// milliseconds since 1970, dates read back truncated to the millisecond, as in SQLite.
public final class PostgresRunStore: RunStore, APIKeyStore {
    let connector: PostgresConnector
    private let submitter: PostgresSubmitBatcher
    private let notifier: PostgresEventNotifier
    /// Per run, the last queued `enqueueEvents` append: appends of a run apply in order, and a
    /// `finish` waits for them (the contract: a later finish comes after queued appends).
    private let queuedAppends = Mutex<[String: (token: UInt64, task: Task<Void, Never>)]>([:])
    private let appendTokens = Atomic<UInt64>(0)
    /// Run ids heard on `eventChannel` (see `eventNotifications`); the listener starts on first use.
    private let notifications = AsyncStream.makeStream(of: String.self, bufferingPolicy: .bufferingNewest(4096))
    private let listener = Locked<Task<Void, Never>?>(nil)

    /// Connects, checks the login and the database, and applies missing migrations under an
    /// advisory lock. Throws a `StoreError` naming the problem (bad address, login, database,
    /// or a schema from a newer flowd).
    ///
    /// `metrics` receives the transactions' latency and the submissions' group-commit batch sizes.
    public init(configuration: PostgresStoreConfiguration, logger: Logger? = nil,
                metrics: any MetricsFactory = MetricsSystem.factory) async throws {
        var quiet = Logger(label: "flowd.postgres")
        quiet.logLevel = .critical
        connector = try await PostgresConnector(configuration: configuration, logger: logger ?? quiet,
                                                metrics: StoreMetrics(factory: metrics, store: "postgres"))
        submitter = PostgresSubmitBatcher(connector: connector)
        notifier = PostgresEventNotifier(connector: connector, channel: Self.eventChannel)
        do {
            try await migrate()
        } catch {
            await connector.close()
            throw error
        }
    }

    /// Opens the store named by a `postgres://` URL.
    public convenience init(url: String, logger: Logger? = nil, metrics: any MetricsFactory = MetricsSystem.factory) async throws {
        try await self.init(configuration: PostgresStoreConfiguration(url: url), logger: logger, metrics: metrics)
    }

    /// Closes the connection pool. Later calls fail.
    public func close() async {
        listener.withLock { $0 }?.cancel()
        notifications.continuation.finish()
        await connector.close()
    }

    deinit {
        listener.withLock { $0 }?.cancel()
        notifications.continuation.finish()
    }

    /// The ids of runs whose events any process stored, heard with LISTEN on one pooled
    /// connection held for it (re-established after a failure, each time followed by an empty
    /// id: notifications sent while nobody listened are gone, so watched runs are re-read).
    public var eventNotifications: AsyncStream<String>? {
        listener.withLock { listener in
            if listener == nil { listener = Task { [connector, notifications] in await Self.listen(connector, notifications.continuation) } }
        }
        return notifications.stream
    }

    /// How long the listener waits before listening again after its connection failed.
    static let relistenDelay: Duration = .seconds(1)

    private static func listen(_ connector: PostgresConnector, _ continuation: AsyncStream<String>.Continuation) async {
        while !Task.isCancelled {
            do {
                try await connector.listen(channel: eventChannel, onListening: { continuation.yield("") }) { payload in
                    continuation.yield(payload)
                }
            } catch is CancellationError {
                return
            } catch let error as StoreError where error.code == .closed {
                return
            } catch {
                connector.logger.warning("listening for other processes' events failed; listening again",
                                         metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: relistenDelay)
        }
    }

    /// Runs one statement of SQL text on the store's database (tests play another flowd with it).
    func execute(sql: String) async throws {
        try await connector.execute(sql)
    }

    /// Group-commit counters of submissions: batches sent and the submissions they held.
    public var submitStatistics: (batches: Int, submissions: Int) { submitter.statistics }

    /// Holds the reaper's advisory lock while `body` runs (tests play another process's reaper).
    func withReaperLock<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
        try await connector.transaction { c in
            _ = try await c.rows(
                "SELECT pg_advisory_xact_lock(\(PostgresSchema.Lock.namespace), \(PostgresSchema.Lock.reaper))")
            return try await body()
        }
    }

    /// Runs `body` while a transaction of this store holds `tenant`'s row locked, as a claim,
    /// a submission or a finish of another process does for a moment (tests).
    func withTenantRowLocked<T: Sendable>(_ tenant: String, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        try await connector.transaction { c in
            _ = try await c.rows("SELECT tenant FROM tenants WHERE tenant = \(tenant) FOR UPDATE")
            return try await body()
        }
    }

    /// Runs `body` while a transaction of this handle holds the rows of `tenant`'s scheduled
    /// runs locked, as another process's claim in flight would (tests).
    func withScheduledRunsLocked<T: Sendable>(_ tenant: String, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        try await connector.transaction { c in
            _ = try await c.rows("SELECT id FROM runs WHERE tenant = \(tenant) AND state = 'scheduled' FOR UPDATE")
            return try await body()
        }
    }

    /// The newest schema version this flowd knows.
    public static var schemaVersion: Int { PostgresSchema.migrations.count }

    private func migrate() async throws {
        let known = Int64(PostgresSchema.migrations.count)
        let redacted = connector.configuration.redacted
        try await connector.transaction { c in
            _ = try await c.rows(
                "SELECT pg_advisory_xact_lock(\(PostgresSchema.Lock.namespace), \(PostgresSchema.Lock.migrations))")
            _ = try await c.rows("""
                CREATE TABLE IF NOT EXISTS flowd_schema (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())
                """)
            let applied = try await c.rows("SELECT COALESCE(MAX(version), 0) FROM flowd_schema")
                .first.map { try $0.makeRandomAccess()[0].decode(Int64.self) } ?? 0
            if applied > known {
                throw StoreError(code: .integrity,
                                 message: "\(redacted) has schema version \(applied), newer than this flowd's \(known): it was migrated by a newer flowd; refusing to use it")
            }
            for version in (applied + 1)...max(applied + 1, known) where version <= known {
                let migration = PostgresSchema.migrations[Int(version) - 1]
                for statement in migration.statements {
                    _ = try await c.rows(PostgresQuery(unsafeSQL: statement))
                }
                _ = try await c.rows("INSERT INTO flowd_schema (version, name) VALUES (\(version), \(migration.name))")
            }
        }
    }

    // MARK: Submission

    /// Decided by `flowd_submit` (see `PostgresSchema.submitFunction`): the tenant's row lock,
    /// the idempotency look-up, the count and the insert; concurrent submissions share one
    /// transaction and round trip (`PostgresSubmitBatcher`).
    public func submit(_ submission: Submission, policy: AdmissionPolicy, now: Date) async throws -> SubmissionOutcome {
        let nowMS = ms(now)
        let expiresAt = nowMS + ms(policy.idempotencyTTL)
        let s = submission
        let decision = try await submitter.submit(s, now: nowMS, expiresAt: expiresAt,
                                                  defaultLimit: Int64(policy.defaultConcurrencyLimit))
        let (outcome, runID) = (decision.outcome, decision.runID)
        let active = Int(decision.active), limit = Int(decision.limit)
        switch (outcome, runID) {
        case ("created", _):
            return .created(RunRecord(
                id: s.runID, tenant: s.tenant, workflow: s.workflow, workflowVersion: s.workflowVersion,
                state: .scheduled, inputsJSON: s.inputsJSON, trigger: s.trigger, transport: s.transport, user: s.user,
                idempotencyKey: s.idempotencyKey, createdAt: Self.date(nowMS), traceContext: s.traceContext))
        case ("replayed", let runID?):
            guard let run = try await run(id: runID, tenant: s.tenant) else {
                throw StoreError(code: .other, message: "run \(runID) of a replayed key vanished; retry", cause: nil)
            }
            return .replayed(run)
        case ("keyReused", let runID?):
            return .keyReused(existingRunID: runID)
        case ("overLimit", _):
            return .overLimit(active: active, limit: limit)
        default:
            throw StoreError(code: .integrity, message: "flowd_submit answered \(outcome)")
        }
    }

    // MARK: Workers

    /// As `SQLiteRunStore.claim`: round-robin by each tenant's last claim (never claimed
    /// first), then its oldest scheduled run, then its name; the oldest run of that tenant;
    /// repeated up to `maxRuns` times in one transaction. Tenant rows and runs another
    /// transaction holds are skipped (`SKIP LOCKED`), never waited for.
    public func claim(_ request: ClaimRequest, now: Date) async throws -> [ClaimedRun] {
        try await claimReportingContention(request, now: now).runs
    }

    /// Tenants are read once, unlocked, in round-robin order, and served in turn, one run
    /// each, until `maxRuns` (a tenant left alone gets every slot still free, up to the cap);
    /// runs are taken with `FOR UPDATE SKIP LOCKED` (`contended` when a tenant's runs were all
    /// locked by another claim). The tenants' rows are updated last, one statement each in
    /// tenant order: each is locked only from its update to the commit, never while this
    /// claim waits for another row, so claims do not take turns for their whole length and two
    /// cannot wait on each other in a cycle.
    public func claimReportingContention(_ request: ClaimRequest, now: Date) async throws -> (runs: [ClaimedRun], contended: Bool) {
        let nowMS = ms(now)
        let leaseExpiresAt = nowMS + ms(request.leaseDuration)
        guard request.maxRuns > 0 else { return ([], false) }
        let result = try await connector.transaction { c -> (runs: [ClaimedRun], contended: Bool) in
            var held = request.held
            func capped(_ tenant: String) -> Bool {
                request.perTenantLimit.map { held[tenant, default: 0] >= $0 } ?? false
            }
            // (tenant, scheduled runs it had at the read), next to serve first.
            var turn: [(tenant: String, scheduled: Int64)] = try await c.rows("""
                SELECT t.tenant, t.scheduled FROM tenants t WHERE t.scheduled > 0
                ORDER BY t.last_claim,
                         (SELECT MIN(r.created_at) FROM runs r WHERE r.state = 'scheduled' AND r.tenant = t.tenant),
                         t.tenant
                LIMIT \(Int64(request.maxRuns + held.count))
                """).map { row in
                    let cells = row.makeRandomAccess()
                    return (try cells[0].decode(String.self), try cells[1].decode(Int64.self))
                }.filter { !capped($0.tenant) }
            var contended = false
            var claimed: [ClaimedRun] = []
            var order: [(tenant: String, runs: Int64)] = []  // tenants in the order first claimed from
            while claimed.count < request.maxRuns, !turn.isEmpty {
                let (tenant, scheduled) = turn.removeFirst()
                var count: Int64 = 1
                if turn.isEmpty {
                    count = Int64(request.maxRuns - claimed.count)
                    if let cap = request.perTenantLimit { count = min(count, Int64(cap - held[tenant, default: 0])) }
                    count = min(count, scheduled)
                }
                let runs = try await c.rows("""
                    UPDATE runs SET state = 'running', attempt = attempt + 1, started_at = \(nowMS), lease_owner = \(request.worker),
                           lease_expires_at = \(leaseExpiresAt), last_progress_at = \(nowMS), last_sequence = last_sequence + 1
                    WHERE id IN (SELECT id FROM runs WHERE state = 'scheduled' AND tenant = \(tenant)
                                 ORDER BY created_at, id LIMIT \(count) FOR UPDATE SKIP LOCKED)
                    RETURNING \(unescaped: Self.runColumns())
                    """).map { try Self.run(from: $0.makeRandomAccess(), at: 0) }
                    .sorted { ($0.createdAt, $0.id) < ($1.createdAt, $1.id) }
                guard !runs.isEmpty else {
                    // The read said it had runs: another claim holds them (or took them).
                    contended = true
                    continue
                }
                claimed += runs.map { run in
                    ClaimedRun(run: run, event: RunEvent(runID: run.id, sequence: run.lastSequence, time: Self.date(nowMS),
                                                         kind: .runStarted, payloadJSON: run.jsonPayload()))
                }
                if let index = order.firstIndex(where: { $0.tenant == tenant }) {
                    order[index].runs += Int64(runs.count)
                } else {
                    order.append((tenant, Int64(runs.count)))
                }
                held[tenant, default: 0] += runs.count
                let left = scheduled - Int64(runs.count)
                if left > 0 && !capped(tenant) { turn.append((tenant, left)) }
            }
            guard !claimed.isEmpty else { return ([], contended) }
            _ = try await c.rows(PostgresQuery(unsafeSQL: "WITH " + Self.insertEventsSQL,
                                               binds: Self.eventBinds(claimed.map(\.event),
                                                                      payloads: claimed.map { $0.run.storedJSONPayload() })))
            // Claim numbers in the order tenants were first served (round-robin), rows locked in tenant order.
            let numbers = try await c.rows("SELECT nextval('claim_seq') FROM generate_series(1, \(Int64(order.count)))")
                .map { try $0.makeRandomAccess()[0].decode(Int64.self) }.sorted()
            for (index, entry) in order.enumerated().sorted(by: { $0.element.tenant < $1.element.tenant }) {
                _ = try await c.rows("""
                    UPDATE tenants SET last_claim = \(numbers[index]), scheduled = scheduled - \(entry.runs)
                    WHERE tenant = \(entry.tenant)
                    """)
            }
            return (claimed, contended)
        }
        notifier.notify(result.runs.map(\.run.id))
        return result
    }

    public func renewLeases(_ leases: [HeldLease], worker: String, leaseDuration: Duration, now: Date) async throws -> [String: LeaseStatus] {
        guard !leases.isEmpty else { return [:] }
        let leaseExpiresAt = ms(now) + ms(leaseDuration)
        let rows = try await connector.rows("""
            UPDATE runs r SET lease_expires_at = \(leaseExpiresAt)
            FROM unnest(\(leases.map(\.runID))::text[], \(leases.map { Int64($0.attempt) })::int8[]) AS l(id, attempt)
            WHERE r.id = l.id AND r.attempt = l.attempt AND r.state = 'running' AND r.lease_owner = \(worker)
            RETURNING r.id, r.stop_requested
            """)
        var statuses: [String: LeaseStatus] = [:]
        for lease in leases { statuses[lease.runID] = .lost }
        for row in rows {
            let cells = row.makeRandomAccess()
            statuses[try cells[0].decode(String.self)] = .held(stopRequested: try cells[1].decode(Bool.self))
        }
        return statuses
    }

    /// Only node events may be appended (see `SQLiteRunStore.appendEvents`). One statement:
    /// the compare-and-set on the run and the insert of its events.
    public func appendEvents(runID: String, attempt: Int, events: [NewEvent], stepsDelta: Int, now: Date) async throws -> [RunEvent]? {
        if let event = events.first(where: { $0.kind == .runStarted || $0.kind == .runFinished }) {
            throw StoreError(code: .invalidArgument,
                             message: "\(event.kind.rawValue) events are written by the store, not appended")
        }
        let nowMS = ms(now)
        let count = Int64(events.count)
        let rows = try await connector.rows("""
            WITH u AS (
                UPDATE runs SET last_sequence = last_sequence + \(count), last_progress_at = \(nowMS),
                       total_steps = total_steps + \(Int64(stepsDelta))
                WHERE id = \(runID) AND attempt = \(Int64(attempt)) AND state = 'running'
                RETURNING last_sequence
            ), i AS (
                INSERT INTO run_events (run_id, sequence, time, kind, payload_json)
                SELECT \(runID), u.last_sequence - \(count) + e.n, \(nowMS), e.kind, e.payload
                FROM u, unnest(\(events.map(\.kind.rawValue))::text[], \(events.map(\.payloadJSON))::text[])
                     WITH ORDINALITY AS e(kind, payload, n)
            )
            SELECT u.last_sequence FROM u
            """)
        guard let row = rows.first else { return nil }
        notifier.notify([runID])
        var sequence = try row.makeRandomAccess()[0].decode(Int64.self) - count
        return events.map { event in
            sequence += 1
            return RunEvent(runID: runID, sequence: sequence, time: Self.date(nowMS), kind: event.kind, payloadJSON: event.payloadJSON)
        }
    }

    public func enqueueEvents(runID: String, attempt: Int, now: Date,
                              take: @escaping @Sendable () -> (events: [NewEvent], steps: Int),
                              completion: @escaping @Sendable (Result<[RunEvent]?, any Error>) -> Void) {
        let token = appendTokens.add(1, ordering: .relaxed).newValue
        queuedAppends.withLock { queued in
            let previous = queued[runID]?.task
            let task = Task { [self] in
                await previous?.value
                let result: Result<[RunEvent]?, any Error>
                do {
                    let (events, steps) = take()
                    // Nothing taken (a finish carries them instead): nothing to write.
                    result = events.isEmpty && steps == 0 ? .success([])
                        : .success(try await appendEvents(runID: runID, attempt: attempt, events: events,
                                                          stepsDelta: steps, now: now))
                } catch {
                    result = .failure(error)
                }
                queuedAppends.withLock { queued in
                    if queued[runID]?.token == token { queued[runID] = nil }
                }
                completion(result)
            }
            queued[runID] = (token, task)
        }
    }

    /// Waits until the appends queued for `runID` so far are applied.
    private func appendsApplied(runID: String) async {
        await queuedAppends.withLock { $0[runID]?.task }?.value
    }

    /// `state` must be terminal, else `StoreError.Code.invalidArgument`. Applied after the
    /// appends queued for the run before it.
    public func finish(runID: String, attempt: Int, state: RunState, outputsJSON: String?, error: String?,
                       expectedLastSequence: Int64?, now: Date) async throws -> FinishedRun? {
        guard state.isTerminal else {
            throw StoreError(code: .invalidArgument, message: "finish needs a terminal state, not \(state.rawValue)")
        }
        await appendsApplied(runID: runID)
        let nowMS = ms(now)
        let finished = try await connector.transaction { c -> FinishedRun? in
            if let finished = try await Self.end(c, runID: runID, attempt: attempt, from: .running, to: state,
                                                 outputsJSON: outputsJSON, error: error, now: nowMS,
                                                 lastSequence: expectedLastSequence) {
                return finished
            }
            guard expectedLastSequence != nil else { return nil }
            // Not ended: either no longer running in this attempt (nil again below), or some of
            // its events are missing, and then it cannot end as reported.
            return try await Self.end(c, runID: runID, attempt: attempt, from: .running, to: .failed, outputsJSON: nil,
                                      error: "some of the run's events could not be stored", now: nowMS)
        }
        if let finished { notifier.notify([finished.run.id]) }
        return finished
    }

    // MARK: Callers

    public func stop(runID: String, tenant: String, now: Date) async throws -> StopOutcome {
        let nowMS = ms(now)
        let outcome = try await connector.transaction { c -> StopOutcome in
            // The run's row is locked first (before its tenant's, in `end`).
            guard let row = try await c.rows("""
                SELECT \(unescaped: Self.runColumns()) FROM runs WHERE id = \(runID) AND tenant = \(tenant) FOR UPDATE
                """).first else { return .notFound }
            let run = try Self.run(from: row.makeRandomAccess(), at: 0)
            switch run.state {
            case .scheduled:
                guard let finished = try await Self.end(c, runID: runID, attempt: run.attempt, from: .scheduled, to: .stopped,
                                                        outputsJSON: nil, error: "stopped before it started", now: nowMS)
                else { return .notFound }
                return .stopped(finished.run, finished.event)
            case .running:
                _ = try await c.rows("UPDATE runs SET stop_requested = TRUE WHERE id = \(runID)")
                var requested = run
                requested.stopRequested = true
                return .stopRequested(requested)
            case .succeeded, .failed, .stopped, .partialSucceeded:
                return .alreadyFinished(run)
            }
        }
        if case .stopped(let run, _) = outcome { notifier.notify([run.id]) }
        return outcome
    }

    public func run(id: String, tenant: String?) async throws -> RunRecord? {
        let rows: [PostgresRow]
        if let tenant {
            rows = try await connector.rows("SELECT \(unescaped: Self.runColumns()) FROM runs WHERE id = \(id) AND tenant = \(tenant)")
        } else {
            rows = try await connector.rows("SELECT \(unescaped: Self.runColumns()) FROM runs WHERE id = \(id)")
        }
        return try rows.first.map { try Self.run(from: $0.makeRandomAccess(), at: 0) }
    }

    public func events(runID: String, after: Int64, limit: Int) async throws -> [RunEvent] {
        guard limit > 0 else { return [] }
        // Run events get the run's inputs and outputs back (see `RunRecord.storedJSONPayload`).
        return try await connector.rows("""
            SELECT e.run_id, e.sequence, e.time, e.kind, e.payload_json,
                   CASE WHEN e.kind IN ('run_started', 'run_finished') THEN r.inputs_json END,
                   CASE WHEN e.kind = 'run_finished' THEN r.outputs_json END
            FROM run_events e JOIN runs r ON r.id = e.run_id
            WHERE e.run_id = \(runID) AND e.sequence > \(after) ORDER BY e.sequence LIMIT \(Int64(limit))
            """).map { row in
                let row = row.makeRandomAccess()
                let event = try Self.event(from: row)
                guard let inputs = try row[5].decode(String?.self) else { return event }
                return event.restoringData(inputsJSON: inputs, outputsJSON: try row[6].decode(String?.self))
            }
    }

    public func listRuns(tenant: String, filter: RunFilter, limit: Int, after cursor: RunCursor?) async throws -> [RunRecord] {
        guard limit > 0 else { return [] }
        var binds = PostgresBindings()
        var conditions = Self.conditions(tenant: tenant, filter: filter, binds: &binds)
        if let cursor {
            binds.append(Self.milliseconds(cursor.createdAt))
            binds.append(cursor.id)
            conditions.append("(created_at, id) < ($\(binds.count - 1), $\(binds.count))")
        }
        binds.append(Int64(limit))
        let sql = """
            SELECT \(Self.runColumns()) FROM runs WHERE \(conditions.joined(separator: " AND "))
            ORDER BY created_at DESC, id DESC LIMIT $\(binds.count)
            """
        return try await connector.rows(PostgresQuery(unsafeSQL: sql, binds: binds))
            .map { try Self.run(from: $0.makeRandomAccess(), at: 0) }
    }

    public func runLog(tenant: String, filter: RunFilter, offset: Int, limit: Int) async throws -> RunLogPage {
        var binds = PostgresBindings()
        let whereClause = Self.conditions(tenant: tenant, filter: filter, binds: &binds).joined(separator: " AND ")
        let countQuery = PostgresQuery(unsafeSQL: "SELECT COUNT(*) FROM runs WHERE \(whereClause)", binds: binds)
        binds.append(Int64(max(0, limit)))
        binds.append(Int64(max(0, offset)))
        let summaryColumns = Self.runColumns().replacingOccurrences(of: "inputs_json, outputs_json",
                                                                    with: "'' AS inputs_json, NULL::text AS outputs_json")
        let pageQuery = PostgresQuery(unsafeSQL: """
            SELECT \(summaryColumns) FROM runs WHERE \(whereClause)
            ORDER BY created_at DESC, id DESC LIMIT $\(binds.count - 1) OFFSET $\(binds.count)
            """, binds: binds)
        // One snapshot for the count and the page.
        return try await connector.transaction { c in
            _ = try await c.rows("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            let total = try await c.rows(countQuery).first.map { Int(try $0.decode(Int64.self)) } ?? 0
            let runs = limit > 0 ? try await c.rows(pageQuery).map { try Self.run(from: $0.makeRandomAccess(), at: 0) } : []
            return RunLogPage(total: total, runs: runs)
        }
    }

    /// The WHERE conditions (joined by AND) for a tenant's runs matching `filter`; their values
    /// are appended to `binds`.
    private static func conditions(tenant: String, filter: RunFilter, binds: inout PostgresBindings) -> [String] {
        func parameter(_ value: some PostgresDynamicTypeEncodable) -> String {
            binds.append(value)
            return "$\(binds.count)"
        }
        var conditions = ["tenant = \(parameter(tenant))"]
        if !filter.states.isEmpty {
            conditions.append("state = ANY(\(parameter(filter.states.map(\.rawValue).sorted()))::text[])")
        }
        if let workflow = filter.workflow { conditions.append("workflow = \(parameter(workflow))") }
        if let user = filter.user { conditions.append("run_user = \(parameter(user))") }
        if let before = filter.createdBefore { conditions.append("created_at <= \(parameter(milliseconds(before)))") }
        if let after = filter.createdAfter { conditions.append("created_at >= \(parameter(milliseconds(after)))") }
        if let keyword = filter.keyword, let pattern = filter.keywordPattern {
            let id = parameter(keyword), like = parameter(pattern)
            // ILIKE folds case beyond ASCII too; the SQLite store folds ASCII letters only.
            conditions.append("""
                (id = \(id) OR run_user ILIKE \(like) ESCAPE '\\' OR inputs_json ILIKE \(like) ESCAPE '\\' \
                OR outputs_json ILIKE \(like) ESCAPE '\\')
                """)
        }
        return conditions
    }

    // MARK: Maintenance

    /// The rules of `SQLiteRunStore.reap`, in one transaction that only the process holding the
    /// reaper's advisory lock runs (another process's pass at the same moment returns nothing).
    /// Runs another transaction holds are skipped (a worker finishing one wins or loses by
    /// compare-and-set as usual).
    public func reap(now: Date, policy: ReaperPolicy) async throws -> [FinishedRun] {
        let nowMS = ms(now)
        let scheduledBefore = nowMS - ms(policy.scheduledTimeout)
        let progressBefore = nowMS - ms(policy.runningTimeout)
        let scheduledError = "scheduled for more than \(Self.describe(policy.scheduledTimeout)) without a worker"
        let progressError = "no progress for more than \(Self.describe(policy.runningTimeout))"
        let reaped = try await connector.transaction { c -> [FinishedRun] in
            guard try await Self.reaperLock(c) else { return [] }
            var reaped: [FinishedRun] = []
            reaped += try await Self.endAll(c, """
                SELECT id, attempt, stop_requested FROM runs WHERE state = 'scheduled' AND created_at <= \(scheduledBefore)
                ORDER BY created_at, id FOR UPDATE SKIP LOCKED
                """, from: .scheduled, error: scheduledError, now: nowMS)
            reaped += try await Self.endAll(c, """
                SELECT id, attempt, stop_requested FROM runs WHERE state = 'running' AND lease_expires_at < \(nowMS)
                ORDER BY created_at, id FOR UPDATE SKIP LOCKED
                """, from: .running, error: Self.leaseExpired, now: nowMS)
            reaped += try await Self.endAll(c, """
                SELECT id, attempt, stop_requested FROM runs WHERE state = 'running' AND last_progress_at <= \(progressBefore)
                ORDER BY created_at, id FOR UPDATE SKIP LOCKED
                """, from: .running, error: progressError, now: nowMS)
            return reaped
        }
        notifier.notify(reaped.map(\.run.id))
        return reaped
    }

    private static let leaseExpired = "the worker's lease expired (worker gone)"

    /// On a shared database, start-up recovery relies on leases: it ends the `running` runs
    /// whose lease expired (their process is gone), never a run whose lease another live
    /// process keeps renewing. Runs of a process that died moments ago end once their lease
    /// expires, by the reaper of any process.
    public func recoverInterruptedRuns(now: Date) async throws -> [FinishedRun] {
        let nowMS = ms(now)
        let recovered = try await connector.transaction { c -> [FinishedRun] in
            guard try await Self.reaperLock(c) else { return [] }
            return try await Self.endAll(c, """
                SELECT id, attempt, stop_requested FROM runs WHERE state = 'running' AND lease_expires_at < \(nowMS)
                ORDER BY created_at, id FOR UPDATE SKIP LOCKED
                """, from: .running, error: Self.leaseExpired, now: nowMS)
        }
        notifier.notify(recovered.map(\.run.id))
        return recovered
    }

    /// Whether this transaction got the reaper's advisory lock (released at its end).
    private static func reaperLock(_ c: PostgresConnection) async throws -> Bool {
        try await c.rows("""
            SELECT pg_try_advisory_xact_lock(\(PostgresSchema.Lock.namespace), \(PostgresSchema.Lock.reaper))
            """).first?.makeRandomAccess()[0].decode(Bool.self) ?? false
    }

    /// Ends each run `select` returns (id, attempt, stop_requested), oldest first.
    private static func endAll(_ c: PostgresConnection, _ select: PostgresQuery, from: RunState, error: String,
                               now: Int64) async throws -> [FinishedRun] {
        var finished: [FinishedRun] = []
        for row in try await c.rows(select) {
            let cells = row.makeRandomAccess()
            let (id, attempt, stopRequested) = (try cells[0].decode(String.self), try cells[1].decode(Int64.self),
                                                try cells[2].decode(Bool.self))
            let (state, message) = stopRequested ? (RunState.stopped, "stopped by request (its worker is gone)") : (.failed, error)
            if let ended = try await end(c, runID: id, attempt: Int(attempt), from: from, to: state, outputsJSON: nil,
                                         error: message, now: now) {
                finished.append(ended)
            }
        }
        return finished
    }

    public func purgeExpiredIdempotencyRecords(now: Date) async throws -> Int {
        let rows = try await connector.rows("""
            WITH d AS (DELETE FROM idempotency WHERE expires_at <= \(ms(now)) RETURNING 1) SELECT count(*) FROM d
            """)
        return Int(try rows.first?.makeRandomAccess()[0].decode(Int64.self) ?? 0)
    }

    public func activeRunCounts() async throws -> ActiveRunCounts {
        let rows = try await connector.rows("""
            SELECT COALESCE(SUM(scheduled), 0)::BIGINT,
                   (COALESCE(SUM(active), 0) - (SELECT COALESCE(SUM(released), 0) FROM tenant_releases))::BIGINT
            FROM tenants
            """)
        guard let row = rows.first?.makeRandomAccess() else { return ActiveRunCounts(scheduled: 0, running: 0) }
        let (scheduled, active) = (try row[0].decode(Int64.self), try row[1].decode(Int64.self))
        return ActiveRunCounts(scheduled: Int(scheduled), running: Int(active - scheduled))
    }

    public func setConcurrencyLimit(tenant: String, limit: Int?) async throws {
        if let limit {
            _ = try await connector.rows("""
                INSERT INTO tenant_limits (tenant, max_active) VALUES (\(tenant), \(Int64(limit)))
                ON CONFLICT (tenant) DO UPDATE SET max_active = EXCLUDED.max_active
                """)
        } else {
            _ = try await connector.rows("DELETE FROM tenant_limits WHERE tenant = \(tenant)")
        }
    }

    // MARK: Transitions

    /// Moves a run from `from` to the terminal `to` by compare-and-set on (id, attempt, state),
    /// clears the lease, keeps the tenant's counters, and appends the run's `run_finished`
    /// event; nil when the CAS fails. With `lastSequence`, only a run whose last stored event is
    /// that one ends here. Locks the run's row, then its tenant's.
    private static func end(_ c: PostgresConnection, runID: String, attempt: Int, from: RunState, to: RunState,
                            outputsJSON: String?, error: String?, now: Int64,
                            lastSequence: Int64? = nil) async throws -> FinishedRun? {
        // A scheduled run's end also changes the tenant's `scheduled` count, on its row; a
        // running run's end only releases a slot (see `PostgresSchema`, `tenant_releases`).
        let n = PostgresSchema.releaseShards
        let release = from == .scheduled ? """
            UPDATE tenants SET active = active - 1, scheduled = scheduled - 1 WHERE tenant = (SELECT tenant FROM r)
            """ : """
            INSERT INTO tenant_releases (tenant, shard, released)
            SELECT tenant, (hashtext(id) % \(n) + \(n)) % \(n), 1 FROM r
            ON CONFLICT (tenant, shard) DO UPDATE SET released = tenant_releases.released + 1
            """
        guard let row = try await c.rows("""
            WITH r AS (
                UPDATE runs SET state = \(to.rawValue), finished_at = \(now), outputs_json = \(outputsJSON), error = \(error),
                       lease_owner = NULL, lease_expires_at = NULL, last_sequence = last_sequence + 1
                WHERE id = \(runID) AND attempt = \(Int64(attempt)) AND state = \(from.rawValue)
                      AND last_sequence = COALESCE(\(lastSequence)::bigint, last_sequence)
                RETURNING \(unescaped: runColumns())
            ), t AS (\(unescaped: release))
            SELECT * FROM r
            """).first else { return nil }
        let run = try self.run(from: row.makeRandomAccess(), at: 0)
        let event = RunEvent(runID: run.id, sequence: run.lastSequence, time: date(now), kind: .runFinished,
                             payloadJSON: run.jsonPayload())
        _ = try await c.rows(PostgresQuery(unsafeSQL: "WITH " + insertEventsSQL,
                                           binds: eventBinds([event], payloads: [run.storedJSONPayload()])))
        return FinishedRun(run: run, event: event)
    }

    /// The integer that `sql` (one row, one column) reads (tests look at what is stored with it).
    func integerForTests(sql: String) async throws -> Int64 {
        try await connector.rows(PostgresQuery(unsafeSQL: sql)).first.map { try $0.decode(Int64.self) } ?? 0
    }

    // MARK: Rows

    /// The columns of `runs` in the order `run(from:at:)` reads them.
    private static func runColumns(alias: String? = nil) -> String {
        let prefix = alias.map { "\($0)." } ?? ""
        return ["id", "tenant", "workflow", "workflow_version", "state", "inputs_json", "outputs_json", "error", "trigger",
                "transport", "run_user", "idempotency_key", "created_at", "started_at", "finished_at", "attempt",
                "last_sequence", "total_steps", "total_tokens", "lease_owner", "lease_expires_at", "last_progress_at",
                "stop_requested", "trace_context"].map { prefix + $0 }.joined(separator: ", ")
    }

    /// A run from `runColumns()` starting at column `at`.
    private static func run(from row: PostgresRandomAccessRow, at base: Int) throws -> RunRecord {
        func text(_ i: Int) throws -> String { try row[base + i].decode(String.self) }
        func optionalText(_ i: Int) throws -> String? { try row[base + i].decode(String?.self) }
        func integer(_ i: Int) throws -> Int64 { try row[base + i].decode(Int64.self) }
        func optionalDate(_ i: Int) throws -> Date? { try row[base + i].decode(Int64?.self).map(date) }
        let id = try text(0)
        let stateText = try text(4), triggerText = try text(8), transportText = try text(9)
        guard let state = RunState(rawValue: stateText) else { throw unreadable(id, "state", stateText) }
        guard let trigger = Trigger(rawValue: triggerText) else { throw unreadable(id, "trigger", triggerText) }
        guard let transport = Transport(rawValue: transportText) else { throw unreadable(id, "transport", transportText) }
        return RunRecord(
            id: id, tenant: try text(1), workflow: try text(2), workflowVersion: try text(3),
            state: state, inputsJSON: try text(5), outputsJSON: try optionalText(6), error: try optionalText(7),
            trigger: trigger, transport: transport, user: try text(10), idempotencyKey: try optionalText(11),
            createdAt: date(try integer(12)), startedAt: try optionalDate(13), finishedAt: try optionalDate(14),
            attempt: Int(try integer(15)), lastSequence: try integer(16), totalSteps: Int(try integer(17)),
            totalTokens: try integer(18), leaseOwner: try optionalText(19), leaseExpiresAt: try optionalDate(20),
            lastProgressAt: try optionalDate(21), stopRequested: try row[base + 22].decode(Bool.self),
            traceContext: try optionalText(23).map(RunTraceContext.init(storedText:)))
    }

    /// An event from `run_id, sequence, time, kind, payload_json`.
    private static func event(from row: PostgresRandomAccessRow) throws -> RunEvent {
        let runID = try row[0].decode(String.self)
        let kindText = try row[3].decode(String.self)
        guard let kind = RunEventKind(rawValue: kindText) else { throw unreadable(runID, "event kind", kindText) }
        return RunEvent(runID: runID, sequence: try row[1].decode(Int64.self), time: date(try row[2].decode(Int64.self)),
                        kind: kind, payloadJSON: try row[4].decode(String.self))
    }

    /// Inserts the events bound by `eventBinds` as $1 to $5 (one array per column); the caller
    /// notifies the other processes once its transaction committed (`PostgresEventNotifier`).
    private static let insertEventsSQL = """
        e AS (
            INSERT INTO run_events (run_id, sequence, time, kind, payload_json)
            SELECT * FROM unnest($1::text[], $2::int8[], $3::int8[], $4::text[], $5::text[])
            RETURNING run_id
        )
        SELECT count(*) FROM e
        """

    /// The channel on which every process hears of events stored by the others; the payload
    /// is the run id.
    static let eventChannel = "flowd_events"

    /// `payloads` are what is stored for `events` (see `RunRecord.storedJSONPayload`).
    private static func eventBinds(_ events: [RunEvent], payloads: [String]) -> PostgresBindings {
        var binds = PostgresBindings()
        binds.append(events.map(\.runID))
        binds.append(events.map(\.sequence))
        binds.append(events.map { milliseconds($0.time) })
        binds.append(events.map(\.kind.rawValue))
        binds.append(payloads)
        return binds
    }

    private static func unreadable(_ id: String, _ column: String, _ value: String) -> StoreError {
        StoreError(code: .integrity, message: "run \(id) has a \(column) this version does not know: \(value)")
    }

    // MARK: Time (the embedded store's conventions)

    private func ms(_ date: Date) -> Int64 { Self.milliseconds(date) }
    private func ms(_ duration: Duration) -> Int64 { Self.milliseconds(duration) }
    static func milliseconds(_ date: Date) -> Int64 { SQLiteRunStore.milliseconds(date) }
    static func milliseconds(_ duration: Duration) -> Int64 { SQLiteRunStore.milliseconds(duration) }
    static func date(_ milliseconds: Int64) -> Date { SQLiteRunStore.date(milliseconds) }
    static func describe(_ duration: Duration) -> String { SQLiteRunStore.describe(duration) }
}

extension PostgresRunStore {
    public func createKey(tenant: String, workflow: String, now: Date) async throws -> IssuedAPIKey {
        let (id, secret) = APIKeyFormat.generate()
        let createdAt = ms(now)
        _ = try await connector.rows("""
            INSERT INTO api_keys (id, secret_sha256, tenant, workflow, created_at)
            VALUES (\(id), \(APIKeyFormat.hash(secret: secret)), \(tenant), \(workflow), \(createdAt))
            """)
        let record = APIKeyRecord(id: id, tenant: tenant, workflow: workflow, createdAt: Self.date(createdAt))
        return IssuedAPIKey(record: record, key: APIKeyFormat.key(id: id, secret: secret))
    }

    public func listKeys(tenant: String?) async throws -> [APIKeyRecord] {
        let rows: [PostgresRow]
        if let tenant {
            rows = try await connector.rows("SELECT \(unescaped: Self.keyColumns) FROM api_keys WHERE tenant = \(tenant) ORDER BY created_at, id")
        } else {
            rows = try await connector.rows("SELECT \(unescaped: Self.keyColumns) FROM api_keys ORDER BY created_at, id")
        }
        return try rows.map { try Self.storedKey(from: $0.makeRandomAccess()).record }
    }

    public func revokeKey(id: String, now: Date) async throws -> Bool {
        let rows = try await connector.rows("""
            UPDATE api_keys SET revoked_at = COALESCE(revoked_at, \(ms(now))) WHERE id = \(id) RETURNING id
            """)
        return rows.count == 1
    }

    public func storedKey(id: String) async throws -> StoredAPIKey? {
        try await connector.rows("SELECT \(unescaped: Self.keyColumns) FROM api_keys WHERE id = \(id)")
            .first.map { try Self.storedKey(from: $0.makeRandomAccess()) }
    }

    private static let keyColumns = "id, tenant, workflow, created_at, revoked_at, secret_sha256"

    private static func storedKey(from row: PostgresRandomAccessRow) throws -> StoredAPIKey {
        StoredAPIKey(record: APIKeyRecord(id: try row[0].decode(String.self), tenant: try row[1].decode(String.self),
                                          workflow: try row[2].decode(String.self),
                                          createdAt: date(try row[3].decode(Int64.self)),
                                          revokedAt: try row[4].decode(Int64?.self).map(date)),
                     secretSHA256: try row[5].decode(String.self))
    }
}
