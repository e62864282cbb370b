import Foundation
import GRDB

extension SQLiteRunStore: RunRetentionStore {
    /// One write through the committer: the ids first, then their events, idempotency records
    /// and rows.
    public func purgeFinishedRuns(finishedBefore cutoff: Date, limit: Int) async throws -> Int {
        let cutoffMS = Self.milliseconds(cutoff)
        return try await write { db in
            let ids = try String.fetchAll(db.database, sql: """
                SELECT id FROM runs
                WHERE state IN ('succeeded', 'failed', 'stopped', 'partial-succeeded') AND finished_at < ?
                LIMIT ?
                """, arguments: [cutoffMS, limit])
            guard !ids.isEmpty else { return 0 }
            let list = String(decoding: try JSONEncoder().encode(ids), as: UTF8.self)
            try db.database.execute(sql: "DELETE FROM run_events WHERE run_id IN (SELECT value FROM json_each(?))", arguments: [list])
            try db.database.execute(sql: "DELETE FROM idempotency WHERE run_id IN (SELECT value FROM json_each(?))", arguments: [list])
            try db.database.execute(sql: "DELETE FROM runs WHERE id IN (SELECT value FROM json_each(?))", arguments: [list])
            return db.database.changesCount
        }
    }
}
