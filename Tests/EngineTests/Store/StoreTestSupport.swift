import Engine
import Foundation
import Testing

/// Shared values and helpers of the store tests (real SQLite files, explicit times).
enum StoreFixture {
    /// A time with a whole number of milliseconds, so it reads back equal.
    static let t0 = Date(timeIntervalSince1970: 1_800_000_000.123)

    static func policy(limit: Int = 50, ttl: Duration = .seconds(3600)) -> AdmissionPolicy {
        AdmissionPolicy(defaultConcurrencyLimit: limit, idempotencyTTL: ttl)
    }

    static func submission(_ id: String, tenant: String = "t", key: String? = nil, fingerprint: String = "f",
                           workflow: String = "wf", user: String = "u", inputs: String = "{}") -> Submission {
        Submission(runID: id, tenant: tenant, workflow: workflow, workflowVersion: "v1", inputsJSON: inputs, user: user,
                   trigger: .apiAsync, transport: .grpc, idempotencyKey: key, fingerprint: fingerprint)
    }

    /// Submits `submission`, which must be created.
    @discardableResult
    static func create(_ store: some RunStore, _ submission: Submission, policy: AdmissionPolicy = policy(),
                       now: Date = t0, sourceLocation: SourceLocation = #_sourceLocation) async throws -> RunRecord {
        let outcome = try await store.submit(submission, policy: policy, now: now)
        return try #require(outcome.created, "\(submission.runID) was not created: \(outcome)", sourceLocation: sourceLocation)
    }

    /// Claims the next run, which must exist.
    static func claim(_ store: some RunStore, worker: String = "w", lease: Duration = .seconds(30), now: Date = t0,
                      sourceLocation: SourceLocation = #_sourceLocation) async throws -> (RunRecord, RunEvent) {
        try #require(try await store.claimNext(worker: worker, leaseDuration: lease, now: now),
                     "nothing to claim", sourceLocation: sourceLocation)
    }

    static func decodePayload(_ event: RunEvent) throws -> RunRecord {
        try RunRecord.jsonDecoder.decode(RunRecord.self, from: Data(event.payloadJSON.utf8))
    }
}

extension SubmissionOutcome {
    var created: RunRecord? {
        if case .created(let run) = self { run } else { nil }
    }

    var replayed: RunRecord? {
        if case .replayed(let run) = self { run } else { nil }
    }

    var isOverLimit: Bool {
        if case .overLimit = self { true } else { false }
    }
}

/// Runs `count` submissions concurrently, `make(i)` building the i-th; returns the outcomes.
func submitConcurrently(_ count: Int, to stores: [any RunStore], policy: AdmissionPolicy, now: Date = StoreFixture.t0,
                        _ make: @escaping @Sendable (Int) -> Submission) async throws -> [SubmissionOutcome] {
    try await withThrowingTaskGroup(of: SubmissionOutcome.self) { group in
        for i in 0..<count {
            let store = stores[i % stores.count]
            group.addTask { try await store.submit(make(i), policy: policy, now: now) }
        }
        return try await group.reduce(into: []) { $0.append($1) }
    }
}

extension Date {
    /// This whole-millisecond date plus `milliseconds`, built the way the store reads dates back
    /// (so that it compares equal to a stored time).
    func plus(ms milliseconds: Int64) -> Date {
        let base = Int64((timeIntervalSince1970 * 1000).rounded())
        return Date(timeIntervalSince1970: Double(base + milliseconds) / 1000)
    }

    func plus(seconds: Int64) -> Date { plus(ms: seconds * 1000) }
}
