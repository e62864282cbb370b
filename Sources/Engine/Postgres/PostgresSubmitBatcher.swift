import PostgresNIO

/// Group commit of submissions on PostgreSQL: the submissions waiting at a moment go to the
/// server as one call of `flowd_submit_many`, one transaction and one round trip, decided in
/// arrival order as if each ran alone (see `PostgresSchema.submitManyFunction`); each caller is
/// answered after that transaction committed.
///
/// - One batch in flight at a time: a batch is whatever queued while the previous one was at
///   the server (no timer), at most `maxBatchSize` submissions.
/// - A batch that fails with a submission's own error (e.g. a run id taken, which rolls it all
///   back) is submitted again one by one, so that error fails only its own caller; a retryable
///   error (the server or the connection) fails the batch's callers, and nobody else.
/// - Once queued, a submission is not withdrawn by its caller's cancellation.
final class PostgresSubmitBatcher: Sendable {
    /// What `flowd_submit` answered for one submission.
    struct Decision: Sendable {
        var outcome: String
        var active: Int64
        var limit: Int64
        var runID: String?
    }

    private struct Item: Sendable {
        let submission: Submission
        let now: Int64
        let expiresAt: Int64
        let defaultLimit: Int64
        let continuation: CheckedContinuation<Decision, any Error>
    }

    private struct State {
        var items: [Item] = []
        var draining = false
        var batches = 0
        var submissions = 0
    }

    let maxBatchSize: Int
    private let connector: PostgresConnector
    private let state = Locked(State())

    init(connector: PostgresConnector, maxBatchSize: Int = 256) {
        self.connector = connector
        self.maxBatchSize = max(1, maxBatchSize)
    }

    /// Batches sent and the submissions they held (tests read it to see that calls were grouped).
    var statistics: (batches: Int, submissions: Int) { state.withLock { ($0.batches, $0.submissions) } }

    func submit(_ submission: Submission, now: Int64, expiresAt: Int64, defaultLimit: Int64) async throws -> Decision {
        try Task.checkCancellation()
        return try await withCheckedThrowingContinuation { continuation in
            let start = state.withLock { state -> Bool in
                state.items.append(Item(submission: submission, now: now, expiresAt: expiresAt, defaultLimit: defaultLimit,
                                        continuation: continuation))
                guard !state.draining else { return false }
                state.draining = true
                return true
            }
            if start { Task { await drain() } }
        }
    }

    private func drain() async {
        while true {
            let batch = state.withLock { state -> [Item] in
                guard !state.items.isEmpty else {
                    state.draining = false
                    return []
                }
                let count = min(state.items.count, maxBatchSize)
                defer { state.items.removeFirst(count) }
                return Array(state.items.prefix(count))
            }
            guard !batch.isEmpty else { return }
            await send(batch)
        }
    }

    private func send(_ batch: [Item]) async {
        do {
            let began = StoreMetrics.now()
            let decisions = try await decide(batch)
            connector.metrics?.committed(writes: batch.count, since: began)
            state.withLock { state in
                state.batches += 1
                state.submissions += batch.count
            }
            for (item, decision) in zip(batch, decisions) { item.continuation.resume(returning: decision) }
        } catch let error as StoreError where batch.count > 1 && !error.isRetryable {
            // One submission's own error (a run id taken, ...): alone, each submission gets its
            // own answer. A retryable error (the server, the connection) fails the whole batch.
            for item in batch { await send([item]) }
        } catch {
            for item in batch { item.continuation.resume(throwing: error) }
        }
    }

    private static let submitMany = """
        SELECT ord, outcome, active, max_active, run_id FROM flowd_submit_many(
            $1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[],
            $10::text[], $11::int8[], $12::int8[], $13::int8[])
        """
    /// `submitMany` with the trace contexts as $14 (see `PostgresSchema.submitManyTracedFunction`).
    private static let submitManyTraced = """
        SELECT ord, outcome, active, max_active, run_id FROM flowd_submit_many_traced(
            $1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[],
            $10::text[], $11::int8[], $12::int8[], $13::int8[], $14::text[])
        """

    /// One call of `flowd_submit_many` (`flowd_submit_many_traced` when a submission has a
    /// trace context); the decisions in batch order.
    private func decide(_ batch: [Item]) async throws -> [Decision] {
        var binds = PostgresBindings()
        let submissions = batch.map(\.submission)
        binds.append(submissions.map(\.runID))
        binds.append(submissions.map(\.tenant))
        binds.append(submissions.map(\.workflow))
        binds.append(submissions.map(\.workflowVersion))
        binds.append(submissions.map(\.inputsJSON))
        binds.append(submissions.map(\.trigger.rawValue))
        binds.append(submissions.map(\.transport.rawValue))
        binds.append(submissions.map(\.user))
        binds.append(submissions.map { $0.idempotencyKey ?? "" })
        binds.append(submissions.map(\.fingerprint))
        binds.append(batch.map(\.now))
        binds.append(batch.map(\.expiresAt))
        binds.append(batch.map(\.defaultLimit))
        let traced = submissions.contains { $0.traceContext != nil }
        if traced { binds.append(submissions.map { $0.traceContext?.storedText ?? "" }) }
        let rows = try await connector.rows(PostgresQuery(unsafeSQL: traced ? Self.submitManyTraced : Self.submitMany, binds: binds))
        var decisions = [Decision?](repeating: nil, count: batch.count)
        for row in rows {
            let cells = row.makeRandomAccess()
            let ord = Int(try cells[0].decode(Int32.self))
            guard (1...batch.count).contains(ord) else {
                throw StoreError(code: .integrity, message: "flowd_submit_many answered for submission \(ord) of \(batch.count)")
            }
            decisions[ord - 1] = Decision(outcome: try cells[1].decode(String.self), active: try cells[2].decode(Int64.self),
                                          limit: try cells[3].decode(Int64.self), runID: try cells[4].decode(String?.self))
        }
        guard decisions.allSatisfy({ $0 != nil }) else {
            throw StoreError(code: .integrity, message: "flowd_submit_many left submissions unanswered")
        }
        return decisions.map { $0! }
    }
}
