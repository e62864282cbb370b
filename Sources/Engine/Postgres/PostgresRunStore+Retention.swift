import Foundation
import PostgresNIO

extension PostgresRunStore: RunRetentionStore {
    /// One statement: the batch's ids (locked, skipping runs another purger holds), then their
    /// events, idempotency records and rows.
    public func purgeFinishedRuns(finishedBefore cutoff: Date, limit: Int) async throws -> Int {
        let rows = try await connector.rows("""
            WITH doomed AS (
                SELECT id FROM runs
                WHERE state IN ('succeeded', 'failed', 'stopped', 'partial-succeeded') AND finished_at < \(Self.milliseconds(cutoff))
                LIMIT \(Int64(limit)) FOR UPDATE SKIP LOCKED),
            events AS (DELETE FROM run_events WHERE run_id IN (SELECT id FROM doomed)),
            records AS (DELETE FROM idempotency WHERE run_id IN (SELECT id FROM doomed)),
            deleted AS (DELETE FROM runs WHERE id IN (SELECT id FROM doomed) RETURNING 1)
            SELECT count(*) FROM deleted
            """)
        return Int(try rows.first?.makeRandomAccess()[0].decode(Int64.self) ?? 0)
    }
}
