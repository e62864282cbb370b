import Engine
import Foundation
import Testing

/// A real SQLite store whose claims, once committed, wait for `gate` before returning: the
/// window between a claim's commit and the start of what it claimed, held open.
final class HeldClaimStore: RunStore {
    let base: SQLiteRunStore
    let gate = Gate()
    let claimed = Counter()
    let stops = Counter()

    init(base: SQLiteRunStore) { self.base = base }

    func claim(_ request: ClaimRequest, now: Date) async throws -> [ClaimedRun] {
        let runs = try await base.claim(request, now: now)
        if !runs.isEmpty {
            claimed.increment()
            await gate.wait()
        }
        return runs
    }

    func submit(_ submission: Submission, policy: AdmissionPolicy, now: Date) async throws -> SubmissionOutcome {
        try await base.submit(submission, policy: policy, now: now)
    }
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
        defer { stops.increment() }
        return try await base.stop(runID: runID, tenant: tenant, now: now)
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

@Suite("Stop while a claim is between its commit and the start of its runs")
struct StopRaceTests {
    @Test("a run stopped after its claim committed but before it started executing is cancelled at start and ends stopped")
    func stopBeforeStart() async throws {
        try await withDataDirectory { directory in
            let store = HeldClaimStore(base: try makeStore(directory))
            let started = Counter()
            var configuration = EngineConfiguration()
            configuration.reaperEnabled = false
            configuration.stopWait = .seconds(60)
            let engine = Engine(store: store, executor: ForeverExecutor(started: started), configuration: configuration,
                                logger: quietLogger())
            let run = try await engine.submit(request()).run
            try await engine.start()
            await store.claimed.wait(untilAtLeast: 1)
            // The claim is committed (the run is running in the store) and not started here yet.
            #expect(try await store.run(id: run.id, tenant: nil)?.state == .running)
            async let stopped = engine.stop(id: run.id, tenant: "t1")
            // The stop request is stored before the claim is let through.
            await store.stops.wait(untilAtLeast: 1)
            #expect(try await store.run(id: run.id, tenant: nil)?.stopRequested == true)
            store.gate.open()
            let final = try await stopped
            #expect(final.state == .stopped)
            await engine.shutdown(gracePeriod: .seconds(5))
        }
    }
}
