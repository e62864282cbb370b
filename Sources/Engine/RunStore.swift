import Foundation

/// A run to admit. The Engine fills it in; the store decides in one transaction.
public struct Submission: Sendable, Equatable {
    public var runID: String
    public var tenant: String
    public var workflow: String
    public var workflowVersion: String
    public var inputsJSON: String
    public var user: String
    public var trigger: Trigger
    public var transport: Transport
    /// 1-255 printable ASCII characters, already validated; nil without a key.
    public var idempotencyKey: String?
    /// Lowercase hex SHA-256 of the canonical request (see `RequestFingerprint`).
    public var fingerprint: String
    /// Stored with the run; not part of the fingerprint (a retry carries a new one).
    public var traceContext: RunTraceContext?

    public init(runID: String, tenant: String, workflow: String, workflowVersion: String, inputsJSON: String,
                user: String, trigger: Trigger, transport: Transport, idempotencyKey: String?, fingerprint: String,
                traceContext: RunTraceContext? = nil) {
        self.runID = runID
        self.tenant = tenant
        self.workflow = workflow
        self.workflowVersion = workflowVersion
        self.inputsJSON = inputsJSON
        self.user = user
        self.trigger = trigger
        self.transport = transport
        self.idempotencyKey = idempotencyKey
        self.fingerprint = fingerprint
        self.traceContext = traceContext
    }
}

/// Admission rules applied inside the submission transaction.
public struct AdmissionPolicy: Sendable, Equatable {
    /// Active (`scheduled` + `running`) runs a tenant may have when it has no override.
    public var defaultConcurrencyLimit: Int
    /// How long an idempotency record is honoured.
    public var idempotencyTTL: Duration

    public init(defaultConcurrencyLimit: Int, idempotencyTTL: Duration) {
        self.defaultConcurrencyLimit = defaultConcurrencyLimit
        self.idempotencyTTL = idempotencyTTL
    }
}

/// The store's decision on a submission.
public enum SubmissionOutcome: Sendable, Equatable {
    /// The run now exists as `scheduled`.
    case created(RunRecord)
    /// Same tenant, key and fingerprint as an earlier submission: that run, unchanged.
    case replayed(RunRecord)
    /// Same tenant and key, another fingerprint: nothing was created.
    case keyReused(existingRunID: String)
    /// The tenant has `active` runs against a limit of `limit`: nothing was created.
    case overLimit(active: Int, limit: Int)
}

/// The result of renewing a lease.
public enum LeaseStatus: Sendable, Equatable {
    /// Still ours; `stopRequested` tells the worker to stop the run.
    case held(stopRequested: Bool)
    /// The run is no longer ours (reaped, finished elsewhere, or another attempt).
    case lost
}

/// The result of a stop request.
public enum StopOutcome: Sendable, Equatable {
    /// It was `scheduled`: now `stopped`, with its `run_finished` event.
    case stopped(RunRecord, RunEvent)
    /// It is `running`: the stop is recorded; its worker ends it.
    case stopRequested(RunRecord)
    /// Already terminal: returned unchanged.
    case alreadyFinished(RunRecord)
    case notFound
}

/// Filters for listing runs. Every field narrows the list; the store evaluates them all.
public struct RunFilter: Sendable, Equatable {
    public var states: Set<RunState>
    public var workflow: String?
    public var user: String?
    /// Runs created at or before this time.
    public var createdBefore: Date?
    /// Runs created at or after this time.
    public var createdAfter: Date?
    /// A run whose id is the keyword, or whose user, inputs or outputs contain it (case-insensitive
    /// for ASCII letters; `%` and `_` are ordinary characters).
    public var keyword: String?

    public init(states: Set<RunState> = [], workflow: String? = nil, user: String? = nil,
                createdBefore: Date? = nil, createdAfter: Date? = nil, keyword: String? = nil) {
        self.states = states
        self.workflow = workflow
        self.user = user
        self.createdBefore = createdBefore
        self.createdAfter = createdAfter
        self.keyword = keyword
    }

    /// `keyword` as a LIKE pattern whose escape character is a backslash.
    var keywordPattern: String? {
        keyword.map { keyword in
            var pattern = "%"
            for character in keyword {
                if character == "%" || character == "_" || character == "\\" { pattern.append("\\") }
                pattern.append(character)
            }
            return pattern + "%"
        }
    }
}

/// One page of a tenant's run log (REST `GET /v1/workflows/logs`): how many runs match in all,
/// and the page's runs, newest first, as summaries: their `inputsJSON` is empty and their
/// `outputsJSON` nil, so that a page's size does not depend on what the runs carried.
public struct RunLogPage: Sendable, Equatable {
    public var total: Int
    public var runs: [RunRecord]

    public init(total: Int, runs: [RunRecord]) {
        self.total = total
        self.runs = runs
    }
}

/// Where a page of `listRuns` ends: runs are ordered newest first by (createdAt, id).
public struct RunCursor: Sendable, Equatable, Codable {
    public var createdAt: Date
    public var id: String

    public init(createdAt: Date, id: String) {
        self.createdAt = createdAt
        self.id = id
    }
}

/// How many runs are active in a store.
public struct ActiveRunCounts: Sendable, Equatable {
    public var scheduled: Int
    public var running: Int

    public init(scheduled: Int, running: Int) {
        self.scheduled = scheduled
        self.running = running
    }
}

/// Thresholds of the reaper (Dify's ZOMBIE_WORKFLOW_* settings).
public struct ReaperPolicy: Sendable, Equatable {
    /// `scheduled` longer than this: failed.
    public var scheduledTimeout: Duration
    /// `running` without progress for longer than this: failed.
    public var runningTimeout: Duration

    public init(scheduledTimeout: Duration, runningTimeout: Duration) {
        self.scheduledTimeout = scheduledTimeout
        self.runningTimeout = runningTimeout
    }
}

/// What `RunStore.claim` may take.
public struct ClaimRequest: Sendable, Equatable {
    /// Names the claimer in the runs' leases.
    public var worker: String
    public var maxRuns: Int
    public var leaseDuration: Duration
    /// Runs one tenant may hold at once among this claimer's (nil: no cap).
    public var perTenantLimit: Int?
    /// Runs each tenant holds already.
    public var held: [String: Int]

    public init(worker: String, maxRuns: Int, leaseDuration: Duration, perTenantLimit: Int? = nil, held: [String: Int] = [:]) {
        self.worker = worker
        self.maxRuns = maxRuns
        self.leaseDuration = leaseDuration
        self.perTenantLimit = perTenantLimit
        self.held = held
    }
}

/// A run just claimed, with its `run_started` event.
public struct ClaimedRun: Sendable, Equatable {
    public var run: RunRecord
    public var event: RunEvent

    public init(run: RunRecord, event: RunEvent) {
        self.run = run
        self.event = event
    }
}

/// A lease a worker holds: the run and the attempt it claimed.
public struct HeldLease: Sendable, Hashable {
    public var runID: String
    public var attempt: Int

    public init(runID: String, attempt: Int) {
        self.runID = runID
        self.attempt = attempt
    }
}

/// A run that a store operation ended, with its `run_finished` event.
public struct FinishedRun: Sendable, Equatable {
    public var run: RunRecord
    public var event: RunEvent
    /// Node events stored in the same transaction, just before `event` (a finish that
    /// carried the run's last events, see `RunStore.enqueueFinish(…take:…)`); usually empty.
    public var appended: [RunEvent]

    public init(run: RunRecord, event: RunEvent, appended: [RunEvent] = []) {
        self.run = run
        self.event = event
        self.appended = appended
    }
}

/// Durable storage of runs, events, idempotency records and tenant limits.
///
/// Every method is one transaction, or part of one: an implementation may group concurrent
/// calls into one transaction (group commit), answering each only after that transaction
/// committed, and deciding each call as if it ran alone in the order they were taken. Writes by workers and the reaper are compare-and-set on
/// (run id, attempt, state), so a late worker and the reaper can never overwrite each other,
/// and exactly one of them appends the run's single `run_finished` event. Events get
/// consecutive sequence numbers per run in the same transaction that changes the run.
///
/// Implementations: `SQLiteRunStore` (embedded), `PostgresRunStore` (shared by several processes).
public protocol RunStore: Sendable {
    /// Idempotency lookup, concurrency check and insertion as `scheduled`, atomically.
    /// An expired idempotency record counts as absent.
    func submit(_ submission: Submission, policy: AdmissionPolicy, now: Date) async throws -> SubmissionOutcome

    /// Claims up to `request.maxRuns` `scheduled` runs for `request.worker`, one at a time in
    /// one transaction: round-robin across tenants (the tenant with a scheduled run whose last
    /// claim is oldest goes first; never-claimed tenants before all others, the one with the
    /// oldest scheduled run first), oldest run first within a tenant, skipping a tenant once it
    /// holds `request.perTenantLimit` runs (counting `request.held`). Each run becomes `running`
    /// with attempt + 1, `startedAt`, a lease until `now + leaseDuration`, and its `run_started`
    /// event. Returns the claimed runs in claim order (empty when none is available).
    func claim(_ request: ClaimRequest, now: Date) async throws -> [ClaimedRun]

    /// `claim`, and whether it passed over a tenant with scheduled runs because another
    /// transaction held it at that moment (PostgreSQL's `SKIP LOCKED`: another process claiming,
    /// submitting or finishing for that tenant). The dispatcher then claims again shortly
    /// instead of waiting for its idle poll. Stores without such skips report false.
    func claimReportingContention(_ request: ClaimRequest, now: Date) async throws -> (runs: [ClaimedRun], contended: Bool)

    /// Extends the leases `worker` holds, each in its attempt; the status of each, by run id.
    func renewLeases(_ leases: [HeldLease], worker: String, leaseDuration: Duration, now: Date) async throws -> [String: LeaseStatus]

    /// Appends events to a running run held in `attempt`; records progress and adds
    /// `stepsDelta` to `totalSteps`. Nil when the run is not `running` in that attempt.
    func appendEvents(runID: String, attempt: Int, events: [NewEvent], stepsDelta: Int, now: Date) async throws -> [RunEvent]?

    /// `appendEvents` without waiting: the append is queued at once, behind every write this
    /// store already queued (so a later `finish` of the same run comes after it), and
    /// `completion` gets its result once it is stored (on a store thread: keep it short).
    /// `take` is called once, when the append is applied, and returns the events (and steps)
    /// to append: what the caller gathered until then, so one append can carry many events.
    func enqueueEvents(runID: String, attempt: Int, now: Date,
                       take: @escaping @Sendable () -> (events: [NewEvent], steps: Int),
                       completion: @escaping @Sendable (Result<[RunEvent]?, any Error>) -> Void)

    /// Ends a run held in `attempt` with a terminal `state`. Nil when it is not `running` in
    /// that attempt any more (the reaper or a stop got there first).
    ///
    /// With `expectedLastSequence`, the run ends `failed` instead when its last stored event is
    /// not that one (an append queued with `enqueueEvents` failed): a run never ends succeeded
    /// with events missing.
    func finish(runID: String, attempt: Int, state: RunState, outputsJSON: String?, error: String?,
                expectedLastSequence: Int64?, now: Date) async throws -> FinishedRun?

    /// `finish` without waiting: queued at once, behind every write this store already queued
    /// (the run's event appends) and ahead of every write queued after this call returns (so
    /// a claim queued next sees the run ended); `completion` gets its result once stored (on a
    /// store thread: keep it short). Stores without a write queue start the finish at once
    /// (the default implementation), without that ordering.
    func enqueueFinish(runID: String, attempt: Int, state: RunState, outputsJSON: String?, error: String?,
                       expectedLastSequence: Int64?, now: Date,
                       completion: @escaping @Sendable (Result<FinishedRun?, any Error>) -> Void)

    /// `enqueueFinish` that also stores the run's last node events, in the same transaction and
    /// before its `run_finished` event (they come back in `FinishedRun.appended`): `take` is
    /// called once, when the finish is applied, and returns what the caller gathered until
    /// then. `expectedLastSequence` counts those events. A quick run's last events then cost
    /// no write of their own.
    func enqueueFinish(runID: String, attempt: Int, state: RunState, outputsJSON: String?, error: String?,
                       expectedLastSequence: Int64?, now: Date,
                       take: @escaping @Sendable () -> (events: [NewEvent], steps: Int),
                       completion: @escaping @Sendable (Result<FinishedRun?, any Error>) -> Void)

    /// A durable stop request (see `StopOutcome`). Runs of other tenants are `notFound`.
    func stop(runID: String, tenant: String, now: Date) async throws -> StopOutcome

    /// The run, if it exists and belongs to `tenant` (any tenant when nil).
    func run(id: String, tenant: String?) async throws -> RunRecord?

    /// `run(id:tenant:)` read on the caller's thread without waiting for anything but a local
    /// read (an embedded store's page cache or file); `.unavailable` when this store cannot
    /// (a network round trip): the caller then uses `run(id:tenant:)`. Reads given the same
    /// `batch` may share one read transaction (see `ReadBatch`).
    func runAtOnce(id: String, tenant: String?, batch: ReadBatch?) throws -> ImmediateRead<RunRecord?>

    /// Stored events with `sequence > after`, in order, at most `limit`.
    func events(runID: String, after: Int64, limit: Int) async throws -> [RunEvent]

    /// A tenant's runs, newest first, strictly after `cursor` when given.
    func listRuns(tenant: String, filter: RunFilter, limit: Int, after cursor: RunCursor?) async throws -> [RunRecord]

    /// The runs of `tenant` matching `filter`, newest first: how many in all, and at most
    /// `limit` summaries after skipping `offset`, read in one transaction.
    func runLog(tenant: String, filter: RunFilter, offset: Int, limit: Int) async throws -> RunLogPage

    /// Fails runs `scheduled` longer than the policy allows, `running` runs whose lease
    /// expired, and `running` runs without progress for too long, each with a clear error.
    /// A run whose stop was requested ends `stopped` instead (stop requests are durable).
    func reap(now: Date, policy: ReaperPolicy) async throws -> [FinishedRun]

    /// Start-up recovery of an embedded store: fails every run left `running` by a previous
    /// process (none can still be alive), so that none stays stuck and none runs twice; a run
    /// whose stop was requested ends `stopped`. Only safe before this process claims anything
    /// and with no other live process on the same store.
    /// A shared store (PostgreSQL) relies on leases instead: it ends only runs whose lease
    /// expired, never a run that another live process holds.
    func recoverInterruptedRuns(now: Date) async throws -> [FinishedRun]

    /// Deletes idempotency records that expired; returns how many.
    func purgeExpiredIdempotencyRecords(now: Date) async throws -> Int

    /// Sets (or with nil removes) a tenant's concurrency limit override.
    func setConcurrencyLimit(tenant: String, limit: Int?) async throws

    /// Runs `scheduled` and `running` in the whole store (every process sharing it), from the
    /// per-tenant counters kept with each transition (one short read; for the metrics).
    func activeRunCounts() async throws -> ActiveRunCounts

    /// Ids of runs whose events another process just stored: a shared store's wake-ups for
    /// this process's watchers (a hint; the stored events stay the truth, and an empty id
    /// means "anything may have changed": re-read every watched run). Nil when no other process
    /// writes to the store. Read once, by one consumer.
    var eventNotifications: AsyncStream<String>? { get }
}

/// Reads on one thread, within a short span, that may share one read transaction of the store
/// (one snapshot, one pair of lock calls): a connection's pass over the requests it read at once.
/// A snapshot is taken at the batch's first read, so it holds everything committed before any
/// request of the pass arrived. The owner calls `end()` when the span is over; the batch may be
/// used again afterwards (a new transaction then). Not for use on several threads.
public final class ReadBatch {
    /// The store's open transaction, if a read began one.
    var session: (any ReadBatchSession)?

    public init() {}

    /// Ends the shared transaction, if one began.
    public func end() {
        guard let session else { return }
        self.session = nil
        session.end()
    }
}

/// A store's side of a `ReadBatch`.
protocol ReadBatchSession: AnyObject {
    func end()
}

/// The result of a read a store may or may not answer without suspending.
public enum ImmediateRead<Value: Sendable>: Sendable {
    case value(Value)
    case unavailable
}

extension RunStore {
    /// An embedded store has no other writers to hear from.
    public var eventNotifications: AsyncStream<String>? { nil }

    public func runAtOnce(id: String, tenant: String?, batch: ReadBatch?) throws -> ImmediateRead<RunRecord?> { .unavailable }

    public func enqueueFinish(runID: String, attempt: Int, state: RunState, outputsJSON: String?, error: String?,
                              expectedLastSequence: Int64?, now: Date,
                              completion: @escaping @Sendable (Result<FinishedRun?, any Error>) -> Void) {
        Task {
            do {
                completion(.success(try await finish(runID: runID, attempt: attempt, state: state, outputsJSON: outputsJSON,
                                                      error: error, expectedLastSequence: expectedLastSequence, now: now)))
            } catch {
                completion(.failure(error))
            }
        }
    }

    /// Appends the taken events (when there are any), then finishes, as two writes.
    public func enqueueFinish(runID: String, attempt: Int, state: RunState, outputsJSON: String?, error: String?,
                              expectedLastSequence: Int64?, now: Date,
                              take: @escaping @Sendable () -> (events: [NewEvent], steps: Int),
                              completion: @escaping @Sendable (Result<FinishedRun?, any Error>) -> Void) {
        let (events, steps) = take()
        guard !events.isEmpty else {
            enqueueFinish(runID: runID, attempt: attempt, state: state, outputsJSON: outputsJSON, error: error,
                          expectedLastSequence: expectedLastSequence, now: now, completion: completion)
            return
        }
        enqueueEvents(runID: runID, attempt: attempt, now: now, take: { (events, steps) }, completion: { appended in
            enqueueFinish(runID: runID, attempt: attempt, state: state, outputsJSON: outputsJSON, error: error,
                          expectedLastSequence: expectedLastSequence, now: now) { finished in
                completion(finished.map { finished in
                    guard var finished, case .success(let stored?) = appended else { return finished }
                    finished.appended = stored
                    return finished
                })
            }
        })
    }

    public func claimReportingContention(_ request: ClaimRequest, now: Date) async throws -> (runs: [ClaimedRun], contended: Bool) {
        (try await claim(request, now: now), false)
    }

    /// Claims at most one run (see `claim(_:now:)`).
    public func claimNext(worker: String, leaseDuration: Duration, now: Date) async throws -> (RunRecord, RunEvent)? {
        let claimed = try await claim(ClaimRequest(worker: worker, maxRuns: 1, leaseDuration: leaseDuration), now: now)
        return claimed.first.map { ($0.run, $0.event) }
    }

    /// `finish` without an expected last event.
    public func finish(runID: String, attempt: Int, state: RunState, outputsJSON: String?, error: String?,
                       now: Date) async throws -> FinishedRun? {
        try await finish(runID: runID, attempt: attempt, state: state, outputsJSON: outputsJSON, error: error,
                         expectedLastSequence: nil, now: now)
    }

    /// Extends the lease of a run `worker` holds in `attempt`.
    public func renewLease(runID: String, attempt: Int, worker: String, leaseDuration: Duration, now: Date) async throws -> LeaseStatus {
        let statuses = try await renewLeases([HeldLease(runID: runID, attempt: attempt)], worker: worker,
                                             leaseDuration: leaseDuration, now: now)
        return statuses[runID] ?? .lost
    }
}
