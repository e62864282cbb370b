import Foundation
import GRDB

/// Row access shared by the store's transactions. Hot statements are cached per connection.
extension SQLiteRunStore {
    /// The columns of `runs` in the order `run(from:)` reads them (by index: a look-up by
    /// name costs a case-insensitive search per column).
    static let runColumns = """
        id, tenant, workflow, workflow_version, state, inputs_json, outputs_json, error, trigger, transport, user, \
        idempotency_key, created_at, started_at, finished_at, attempt, last_sequence, total_steps, total_tokens, \
        lease_owner, lease_expires_at, last_progress_at, stop_requested, trace_context
        """

    /// `runColumns` with the inputs empty and the outputs NULL (`RunLogPage`'s summaries).
    static let runSummaryColumns = runColumns
        .replacingOccurrences(of: "inputs_json, outputs_json", with: "'' AS inputs_json, NULL AS outputs_json")

    static func fetchRun(_ db: some StatementSource, id: String, tenant: String?) throws -> RunRecord? {
        if let tenant {
            return try SQLiteRaw.row(db, selectRunOfTenant, [.text(id), .text(tenant)], run(from:))
        }
        return try SQLiteRaw.row(db, selectRun, [.text(id)], run(from:))
    }

    // Statements are looked up by their text: built once, not on every call.
    private static let selectRun = "SELECT \(runColumns) FROM runs WHERE id = ?"
    private static let selectRunOfTenant = "SELECT \(runColumns) FROM runs WHERE id = ? AND tenant = ?"
    /// A tenant's oldest `count` scheduled runs, in claim order.
    static let selectScheduledRuns = """
        SELECT \(runColumns) FROM runs WHERE state = 'scheduled' AND tenant = ? ORDER BY created_at, id LIMIT ?
        """

    /// A run from a row of `runColumns`.
    static func run(from row: SQLiteRaw.Columns) throws -> RunRecord {
        let id = row.text(0)
        let stateText = row.text(4), triggerText = row.text(8), transportText = row.text(9)
        guard let state = RunState(rawValue: stateText) else { throw unreadable(id, "state", stateText) }
        guard let trigger = Trigger(rawValue: triggerText) else { throw unreadable(id, "trigger", triggerText) }
        guard let transport = Transport(rawValue: transportText) else { throw unreadable(id, "transport", transportText) }
        return RunRecord(
            id: id, tenant: row.text(1), workflow: row.text(2), workflowVersion: row.text(3),
            state: state, inputsJSON: row.text(5), outputsJSON: row.optionalText(6), error: row.optionalText(7),
            trigger: trigger, transport: transport, user: row.text(10), idempotencyKey: row.optionalText(11),
            createdAt: date(row.integer(12)), startedAt: row.optionalInteger(13).map(date),
            finishedAt: row.optionalInteger(14).map(date), attempt: Int(row.integer(15)),
            lastSequence: row.integer(16), totalSteps: Int(row.integer(17)), totalTokens: row.integer(18),
            leaseOwner: row.optionalText(19), leaseExpiresAt: row.optionalInteger(20).map(date),
            lastProgressAt: row.optionalInteger(21).map(date), stopRequested: row.integer(22) != 0,
            traceContext: row.optionalText(23).map(RunTraceContext.init(storedText:)))
    }

    /// An event from a row of `run_id, sequence, time, kind, payload_json`.
    static func event(from row: SQLiteRaw.Columns) throws -> RunEvent {
        let runID = row.text(0)
        let kindText = row.text(3)
        guard let kind = RunEventKind(rawValue: kindText) else { throw unreadable(runID, "event kind", kindText) }
        return RunEvent(runID: runID, sequence: row.integer(1), time: date(row.integer(2)), kind: kind, payloadJSON: row.text(4))
    }

    /// Stores `events` with one INSERT of up to `eventsPerInsert` rows at a time.
    static func insertEvents(_ db: some StatementSource, _ events: [RunEvent]) throws {
        var start = events.startIndex
        while start < events.endIndex {
            let chunk = events[start..<min(start + eventsPerInsert, events.endIndex)]
            var arguments: [SQLiteRaw.Value] = []
            arguments.reserveCapacity(chunk.count * 5)
            for event in chunk {
                arguments += [.text(event.runID), .integer(event.sequence), .integer(milliseconds(event.time)),
                              .text(event.kind.rawValue), .text(event.payloadJSON)]
            }
            try SQLiteRaw.execute(db, insertEventRows[chunk.count - 1], arguments)
            start = chunk.endIndex
        }
    }

    private static let eventsPerInsert = 16
    /// `insertEventRows[n - 1]` inserts n events.
    private static let insertEventRows = (1...eventsPerInsert).map { count in
        "INSERT INTO run_events (run_id, sequence, time, kind, payload_json) VALUES "
            + Array(repeating: "(?, ?, ?, ?, ?)", count: count).joined(separator: ", ")
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
