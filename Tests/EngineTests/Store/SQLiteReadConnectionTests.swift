@testable import Engine
import Foundation
import Testing

@Suite("SQLite read connections: statements found by their text's address stay the right ones; read batches share a snapshot")
struct SQLiteReadConnectionTests {
    @Test("200 distinct long SQL texts built at run time (more than the address map holds) each run their own statement, and a copy of a text finds its statement")
    func statementsByAddress() async throws {
        try await withDataDirectory { directory in
            _ = try makeStore(directory)  // creates flowd.sqlite
            let connection = try SQLiteRaw.ReadConnection(
                path: directory.appendingPathComponent(SQLiteRunStore.fileName).path, busyTimeout: .seconds(1))
            for round in 0..<2 {
                for n in 0..<200 {
                    // Built afresh each time: a freed text's address may come back for another text.
                    let sql = "SELECT \(n) + ? AS value -- a comment long enough to live on the heap, round \(round)"
                    let value = try SQLiteRaw.row(connection, sql, [.integer(1000)]) { $0.integer(0) }
                    #expect(value == Int64(n + 1000), "\(sql)")
                }
            }
            let text = "SELECT COUNT(*) FROM runs WHERE state = 'scheduled' -- static-like"
            let copy = String(decoding: Array(text.utf8), as: UTF8.self)
            #expect(try SQLiteRaw.row(connection, text, []) { $0.integer(0) } == 0)
            #expect(try SQLiteRaw.row(connection, copy, []) { $0.integer(0) } == 0)
        }
    }

    @Test("reads in one ReadBatch share a read transaction: a run committed after the batch's first read is seen once the batch ends, and reads without a batch see it at once")
    func readBatchSnapshot() async throws {
        try await withDataDirectory { directory in
            let store = try makeStore(directory)
            defer { try? store.close() }
            try await StoreFixture.create(store, StoreFixture.submission("run-a"))
            func read(_ id: String, _ batch: ReadBatch?) throws -> String? {
                guard case .value(let run) = try store.runAtOnce(id: id, tenant: "t", batch: batch) else {
                    Issue.record("an embedded store reads at once")
                    return nil
                }
                return run?.id
            }
            let batch = ReadBatch()
            #expect(try read("run-a", batch) == "run-a")  // begins the batch's transaction
            try await StoreFixture.create(store, StoreFixture.submission("run-b"))  // committed meanwhile
            #expect(try read("run-b", nil) == "run-b")
            #expect(try read("run-b", batch) == nil, "the batch reads the snapshot of its first read")
            batch.end()
            #expect(try read("run-b", batch) == "run-b", "a batch used again after end() takes a new snapshot")
            batch.end()
            batch.end()  // ending an ended batch does nothing
        }
    }
}
