import Foundation
import GRDB

/// Row access shared by the store's transactions. Hot statements are cached per connection.
extension SQLiteRunStore {
    static func fetchRun(_ db: Database, id: String, tenant: String?) throws -> RunRecord? {
        let row: Row?
        if let tenant {
            row = try Row.fetchOne(db.cachedStatement(sql: "SELECT * FROM runs WHERE id = ? AND tenant = ?"),
                                   arguments: [id, tenant])
        } else {
            row = try Row.fetchOne(db.cachedStatement(sql: "SELECT * FROM runs WHERE id = ?"), arguments: [id])
        }
        return try row.map(run(from:))
    }

    static func run(from row: Row) throws -> RunRecord {
        let id: String = row["id"]
        guard let state = RunState(rawValue: row["state"]) else { throw unreadable(id, "state", row["state"]) }
        guard let trigger = Trigger(rawValue: row["trigger"]) else { throw unreadable(id, "trigger", row["trigger"]) }
        guard let transport = Transport(rawValue: row["transport"]) else {
            throw unreadable(id, "transport", row["transport"])
        }
        return RunRecord(
            id: id, tenant: row["tenant"], workflow: row["workflow"], workflowVersion: row["workflow_version"],
            state: state, inputsJSON: row["inputs_json"], outputsJSON: row["outputs_json"], error: row["error"],
            trigger: trigger, transport: transport, user: row["user"], idempotencyKey: row["idempotency_key"],
            createdAt: date(row["created_at"]), startedAt: (row["started_at"] as Int64?).map(date),
            finishedAt: (row["finished_at"] as Int64?).map(date), attempt: row["attempt"],
            lastSequence: row["last_sequence"], totalSteps: row["total_steps"], totalTokens: row["total_tokens"],
            leaseOwner: row["lease_owner"], leaseExpiresAt: (row["lease_expires_at"] as Int64?).map(date),
            lastProgressAt: (row["last_progress_at"] as Int64?).map(date), stopRequested: row["stop_requested"])
    }

    static func event(from row: Row) throws -> RunEvent {
        let runID: String = row["run_id"]
        guard let kind = RunEventKind(rawValue: row["kind"]) else { throw unreadable(runID, "event kind", row["kind"]) }
        return RunEvent(runID: runID, sequence: row["sequence"], time: date(row["time"]), kind: kind,
                        payloadJSON: row["payload_json"])
    }

    static func insertEvent(_ db: Database, _ event: RunEvent) throws {
        try db.cachedStatement(sql: """
            INSERT INTO run_events (run_id, sequence, time, kind, payload_json) VALUES (?, ?, ?, ?, ?)
            """).execute(arguments: [event.runID, event.sequence, milliseconds(event.time), event.kind.rawValue,
                                     event.payloadJSON])
    }

    private static func unreadable(_ id: String, _ column: String, _ value: String?) -> StoreError {
        StoreError(code: .integrity,
                   message: "run \(id) has a \(column) this version does not know: \(value ?? "NULL")")
    }

    // MARK: Time

    /// Milliseconds since 1970, truncated towards the past.
    ///
    /// A date read back from the store (`date(_:)`) is a whole millisecond up to floating-point
    /// error, so a product within a microsecond of an integer is that integer; anything else is
    /// floored. Hence `milliseconds(date(m)) == m` for every stored `m`, and `date(milliseconds(d))`
    /// is `d` truncated to the millisecond.
    static func milliseconds(_ date: Date) -> Int64 {
        let exact = date.timeIntervalSince1970 * 1000
        let nearest = exact.rounded()
        let value = abs(exact - nearest) < 1e-3 ? nearest : exact.rounded(.down)
        // Outside ±2^61 ms (about 73 million years) a Date is not a real instant; clamping keeps
        // sums with durations (at most 2^61 ms too) from overflowing.
        return Int64(max(-0x1p61, min(0x1p61, value)))
    }

    /// The date of a stored millisecond count.
    static func date(_ milliseconds: Int64) -> Date {
        Date(timeIntervalSince1970: Double(milliseconds) / 1000)
    }

    /// Whole milliseconds of a non-negative duration, truncated, saturating at 2^61.
    static func milliseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        guard seconds >= 0 else { return 0 }
        let (ms, overflow) = seconds.multipliedReportingOverflow(by: 1000)
        if overflow || ms > 1 << 61 { return 1 << 61 }
        return ms + attoseconds / 1_000_000_000_000_000
    }

    /// "5 minutes", "1 minute", "90 seconds", "1500 ms": for the reaper's error messages.
    static func describe(_ duration: Duration) -> String {
        let ms = milliseconds(duration)
        func plural(_ n: Int64, _ unit: String) -> String { "\(n) \(unit)\(n == 1 ? "" : "s")" }
        if ms % 60_000 == 0 { return plural(ms / 60_000, "minute") }
        if ms % 1000 == 0 { return plural(ms / 1000, "second") }
        return "\(ms) ms"
    }
}
