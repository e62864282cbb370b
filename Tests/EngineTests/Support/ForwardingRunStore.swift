import Engine
import Foundation

/// A real SQLite store behind a class whose methods tests override to watch or hold one kind
/// of call (`HeldClaimStore`, `CountingReadsStore`); everything else goes to `base`. The queued
/// writes (`enqueueFinish`, `claimReportingContention`) are the protocol's default
/// implementations on top of these, so wrapped stores also exercise those defaults.
class ForwardingRunStore: RunStore, @unchecked Sendable {
    let base: SQLiteRunStore

    init(base: SQLiteRunStore) { self.base = base }

    func submit(_ submission: Submission, policy: AdmissionPolicy, now: Date) async throws -> SubmissionOutcome {
        try await base.submit(submission, policy: policy, now: now)
    }
    func claim(_ request: ClaimRequest, now: Date) async throws -> [ClaimedRun] { try await base.claim(request, now: now) }
    func renewLeases(_ leases: [HeldLease], worker: String, leaseDuration: Duration, now: Date) async throws -> [String: LeaseStatus] {
        try await base.renewLeases(leases, worker: worker, leaseDuration: leaseDuration, now: now)
    }
    func appendEvents(runID: String, attempt: Int, events: [NewEvent], stepsDelta: Int, now: Date) async throws -> [RunEvent]? {
        try await base.appendEvents(runID: runID, attempt: attempt, events: events, stepsDelta: stepsDelta, now: now)
    }
    func enqueueEvents(runID: String, attempt: Int, now: Date, take: @escaping @Sendable () -> (events: [NewEvent], steps: Int),
                       completion: @escaping @Sendable (Result<[RunEvent]?, any Error>) -> Void) {
        base.enqueueEvents(runID: runID, attempt: attempt, now: now, take: take, completion: completion)
    }
    func finish(runID: String, attempt: Int, state: RunState, outputsJSON: String?, error: String?,
                expectedLastSequence: Int64?, now: Date) async throws -> FinishedRun? {
        try await base.finish(runID: runID, attempt: attempt, state: state, outputsJSON: outputsJSON, error: error,
                              expectedLastSequence: expectedLastSequence, now: now)
    }
    func stop(runID: String, tenant: String, now: Date) async throws -> StopOutcome {
        try await base.stop(runID: runID, tenant: tenant, now: now)
    }
    func run(id: String, tenant: String?) async throws -> RunRecord? { try await base.run(id: id, tenant: tenant) }
    func events(runID: String, after: Int64, limit: Int) async throws -> [RunEvent] {
        try await base.events(runID: runID, after: after, limit: limit)
    }
    func listRuns(tenant: String, filter: RunFilter, limit: Int, after cursor: RunCursor?) async throws -> [RunRecord] {
        try await base.listRuns(tenant: tenant, filter: filter, limit: limit, after: cursor)
    }
    func runLog(tenant: String, filter: RunFilter, offset: Int, limit: Int) async throws -> RunLogPage {
        try await base.runLog(tenant: tenant, filter: filter, offset: offset, limit: limit)
    }
    func reap(now: Date, policy: ReaperPolicy) async throws -> [FinishedRun] { try await base.reap(now: now, policy: policy) }
    func recoverInterruptedRuns(now: Date) async throws -> [FinishedRun] { try await base.recoverInterruptedRuns(now: now) }
    func purgeExpiredIdempotencyRecords(now: Date) async throws -> Int { try await base.purgeExpiredIdempotencyRecords(now: now) }
    func setConcurrencyLimit(tenant: String, limit: Int?) async throws { try await base.setConcurrencyLimit(tenant: tenant, limit: limit) }
    func activeRunCounts() async throws -> ActiveRunCounts { try await base.activeRunCounts() }
}
