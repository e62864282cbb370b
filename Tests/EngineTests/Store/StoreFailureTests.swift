@testable import Engine
import Dispatch
import Foundation
import Testing

@Suite("SQLite store: busy and full databases fail retryably; times are whole milliseconds")
struct StoreFailureTests {
    typealias F = StoreFixture

    @Test("a writer held elsewhere past the busy timeout gives a retryable busy error; reads go on; a retry succeeds")
    func busy() async throws {
        try await withDataDirectory { directory in
            let store = try SQLiteRunStore(directory: directory, busyTimeout: .milliseconds(200))
            let other = try makeStore(directory)  // another process on the same file
            try await F.create(store, F.submission("before"))
            let release = DispatchSemaphore(value: 0)
            defer { release.signal() }  // never leave the other writer blocked
            let (locked, lockedContinuation) = AsyncStream<Void>.makeStream()
            let holder = Task {
                defer { lockedContinuation.finish() }
                try await other.holdWriteTransaction {
                    lockedContinuation.yield()
                    release.wait()
                }
            }
            var held = false
            for await _ in locked {
                held = true
                break
            }
            try #require(held, "the other handle could not take the write lock")
            let error = try await #require(throws: StoreError.self) {
                try await store.submit(F.submission("during"), policy: F.policy(), now: F.t0)
            }
            #expect(error.code == .busy && error.isRetryable)
            #expect(try await store.run(id: "before", tenant: "t") != nil)  // WAL: readers are not blocked
            release.signal()
            try await holder.value
            try await F.create(store, F.submission("during"))
            #expect(try await other.run(id: "during", tenant: "t") != nil)
        }
    }

    @Test("a full database gives a retryable storage error, commits nothing of the call and keeps earlier commits")
    func full() async throws {
        try await withDataDirectory { directory in
            let store = try makeStore(directory)
            let first = try await F.create(store, F.submission("first"))
            // The file may not grow any more (SQLite caps max_page_count at the current size).
            try await store.executeOnWriter(sql: "PRAGMA max_page_count = 1")
            let big = #"{"blob":""# + String(repeating: "x", count: 256 * 1024) + #""}"#
            let error = try await #require(throws: StoreError.self) {
                try await store.submit(F.submission("big", key: "k", inputs: big), policy: F.policy(), now: F.t0)
            }
            #expect(error.code == .storage && error.isRetryable)
            try await store.executeOnWriter(sql: "PRAGMA max_page_count = 1073741823")
            #expect(try await store.run(id: "big", tenant: nil) == nil)
            #expect(try await store.run(id: "first", tenant: "t") == first)
            // Nothing half-written: the key is free and the retry creates the run.
            try await F.create(store, F.submission("big", key: "k", inputs: big))
        }
    }

    @Test("a cancelled call throws CancellationError, not a StoreError")
    func cancellation() async throws {
        try await withDataDirectory { directory in
            let store = try makeStore(directory)
            let task = Task {
                withUnsafeCurrentTask { $0?.cancel() }
                return try await store.submit(F.submission("r"), policy: F.policy(), now: F.t0)
            }
            await #expect(throws: CancellationError.self) { try await task.value }
            #expect(try await store.run(id: "r", tenant: nil) == nil)
        }
    }

    @Test("dates are truncated to the millisecond on write and read back exactly")
    func millisecondRoundTrip() async throws {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<20_000 {
            let ms = Int64.random(in: -1_000_000_000_000...4_000_000_000_000, using: &generator)
            let date = SQLiteRunStore.date(ms)
            #expect(SQLiteRunStore.milliseconds(date) == ms)
            #expect(date == Date(timeIntervalSince1970: Double(ms) / 1000))
            // Any instant inside that millisecond stores as it.
            let inside = Date(timeIntervalSince1970: Double(ms) / 1000 + Double.random(in: 0.000_01..<0.000_99))
            #expect(SQLiteRunStore.milliseconds(inside) == ms)
        }
        #expect(SQLiteRunStore.milliseconds(Duration.milliseconds(1500)) == 1500)
        #expect(SQLiteRunStore.milliseconds(Duration.microseconds(1999)) == 1)
        #expect(SQLiteRunStore.milliseconds(Duration.seconds(-1)) == 0)
        #expect(SQLiteRunStore.milliseconds(Duration.seconds(Int64.max)) == 1 << 61)  // saturates, no overflow
        #expect(SQLiteRunStore.milliseconds(Date.distantFuture) == 64_092_211_200_000)
        #expect(SQLiteRunStore.describe(.seconds(300)) == "5 minutes")
        #expect(SQLiteRunStore.describe(.seconds(60)) == "1 minute")
        #expect(SQLiteRunStore.describe(.seconds(90)) == "90 seconds")
        #expect(SQLiteRunStore.describe(.milliseconds(1500)) == "1500 ms")

        try await withDataDirectory { directory in
            let store = try makeStore(directory)
            let created = try await F.create(store, F.submission("r"), now: Date(timeIntervalSince1970: 1_800_000_000.123_9))
            #expect(created.createdAt == Date(timeIntervalSince1970: 1_800_000_000.123))
            let (run, event) = try await F.claim(store, lease: .milliseconds(2500), now: Date(timeIntervalSince1970: 1_800_000_001.000_4))
            #expect(run.startedAt == Date(timeIntervalSince1970: 1_800_000_001))
            #expect(run.leaseExpiresAt == Date(timeIntervalSince1970: 1_800_000_003.5))
            #expect(event.time == run.startedAt)
            #expect(try await store.run(id: "r", tenant: nil) == run)
        }
    }
}

@Suite("SQLite store: connection settings")
struct StoreSettingsTests {
    @Test("the writer runs in WAL mode with synchronous=FULL, foreign keys on and the busy timeout")
    func writerSettings() async throws {
        try await withDataDirectory { directory in
            let store = try SQLiteRunStore(directory: directory, busyTimeout: .milliseconds(1500))
            let settings = try await store.writerSettings()
            #expect(settings["journal_mode"] == "wal")
            #expect(settings["synchronous"] == "2")  // FULL
            #expect(settings["foreign_keys"] == "1")
            #expect(settings["busy_timeout"] == "1500")
        }
    }
}
