import Engine
import Foundation
import Synchronization
import Testing

@Suite("Store (SQLite and PostgreSQL): retention purges finished runs in batches, submissions going on")
struct StoreRetentionTests {
    typealias F = StoreFixture

    /// Creates run `id` and ends it `succeeded` at `finished`.
    private func finishedRun(_ store: TestStore, _ id: String, key: String? = nil, at finished: Date) async throws {
        try await F.create(store, F.submission(id, key: key), now: finished)
        let (run, _) = try await F.claim(store, now: finished)
        _ = try #require(try await store.finish(runID: run.id, attempt: run.attempt, state: .succeeded, outputsJSON: "{}",
                                                error: nil, now: finished))
    }

    @Test("only terminal runs finished before the cutoff go, with their events and idempotency records; a batch is bounded",
          arguments: StoreBackend.all)
    func purge(_ backend: StoreBackend) async throws {
        try await withStores(backend) { stores in
            let store = try await stores.open()
            let retention = try #require(store as? any RunRetentionStore)
            for i in 0..<5 { try await finishedRun(store, "old\(i)", key: "k\(i)", at: F.t0) }
            try await finishedRun(store, "recent", at: F.t0.plus(seconds: 100))
            try await F.create(store, F.submission("waiting"), now: F.t0)  // scheduled, never finished
            let cutoff = F.t0.plus(seconds: 50)

            #expect(try await retention.purgeFinishedRuns(finishedBefore: cutoff, limit: 3) == 3)
            #expect(try await retention.purgeFinishedRuns(finishedBefore: cutoff, limit: 3) == 2)
            #expect(try await retention.purgeFinishedRuns(finishedBefore: cutoff, limit: 3) == 0)
            for i in 0..<5 {
                #expect(try await store.run(id: "old\(i)", tenant: nil) == nil)
                #expect(try await store.events(runID: "old\(i)", after: 0, limit: 100).isEmpty)
            }
            #expect(try await store.run(id: "recent", tenant: nil)?.state == .succeeded)
            #expect(try await store.events(runID: "recent", after: 0, limit: 100).count == 2)
            #expect(try await store.run(id: "waiting", tenant: nil)?.state == .scheduled)
            // The idempotency record went with its run: the key makes a new run.
            let again = try await store.submit(F.submission("old0-again", key: "k0"), policy: F.policy(ttl: .seconds(86_400 * 365)),
                                               now: cutoff)
            #expect(again.created?.id == "old0-again")
        }
    }

    @Test("a purge of 600 expired runs in batches of 25 while 200 submissions go on: every submission answered, every expired run gone",
          arguments: StoreBackend.all)
    func purgeWhileSubmitting(_ backend: StoreBackend) async throws {
        try await withStores(backend) { stores in
            let store = try await stores.open()
            let retention = try #require(store as? any RunRetentionStore)
            _ = try await submitConcurrently(600, to: [store], policy: F.policy(limit: 100_000)) { F.submission("old\($0)") }
            while let (run, _) = try await store.claimNext(worker: "w", leaseDuration: .seconds(30), now: F.t0) {
                _ = try await store.finish(runID: run.id, attempt: run.attempt, state: .succeeded, outputsJSON: nil, error: nil, now: F.t0)
            }
            var configuration = RetentionConfiguration()
            configuration.days = 1
            configuration.batchSize = 25
            let clock = ManualClock(start: F.t0.plus(seconds: 86_400 + 1))
            let purger = RetentionPurger(store: retention, configuration: configuration, clock: clock)
            let later = F.t0.plus(seconds: 86_400 + 1)
            async let purged = purger.purgeOnce()
            let outcomes = try await submitConcurrently(200, to: [store], policy: F.policy(limit: 100_000), now: later) {
                F.submission("new\($0)")
            }
            #expect(try await purged == 600)
            #expect(outcomes.allSatisfy { $0.created != nil })
            let left = try await store.listRuns(tenant: "t", filter: RunFilter(), limit: 10_000, after: nil)
            #expect(left.count == 200 && left.allSatisfy { $0.id.hasPrefix("new") })
        }
    }

    @Test("days 0 keeps everything")
    func keepEverything() async throws {
        try await withStores(.sqlite) { stores in
            let store = try await stores.open()
            try await finishedRun(store, "old", at: F.t0)
            var configuration = RetentionConfiguration()
            configuration.days = 0
            let purger = RetentionPurger(store: try #require(store as? any RunRetentionStore), configuration: configuration,
                                         clock: ManualClock(start: F.t0.plus(seconds: 86_400 * 10_000)))
            #expect(try await purger.purgeOnce() == 0)
            #expect(try await store.run(id: "old", tenant: nil) != nil)
        }
    }
}
