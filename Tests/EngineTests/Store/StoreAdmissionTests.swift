import Engine
import Foundation
import Testing

@Suite("Store (SQLite and PostgreSQL): admission (idempotency and the concurrency guard)")
struct StoreAdmissionTests {
    typealias F = StoreFixture

    @Test("200 concurrent submissions against a limit of 50 admit exactly 50, and 50 again once those finish", arguments: StoreBackend.all)
    func concurrencyLimit(_ backend: StoreBackend) async throws {
        try await withStores(backend) { stores in
            let store = try await stores.open()
            let policy = F.policy(limit: 50)
            let first = try await submitConcurrently(200, to: [store], policy: policy) { F.submission("a\($0)") }
            let created = first.compactMap(\.created)
            #expect(created.count == 50)
            #expect(first.filter(\.isOverLimit).count == 150)
            // With one writer at a time, every refusal saw exactly the limit.
            #expect(first.allSatisfy { $0.created != nil || $0 == .overLimit(active: 50, limit: 50) })
            let scheduled = try await store.listRuns(tenant: "t", filter: RunFilter(states: [.scheduled]), limit: 500,
                                                     after: nil)
            #expect(Set(scheduled.map(\.id)) == Set(created.map(\.id)))

            // Running runs are active too.
            var claimed: [RunRecord] = []
            while let (run, _) = try await store.claimNext(worker: "w", leaseDuration: .seconds(60), now: F.t0) {
                claimed.append(run)
            }
            #expect(claimed.count == 50)
            #expect(try await store.submit(F.submission("x"), policy: policy, now: F.t0)
                    == .overLimit(active: 50, limit: 50))
            for run in claimed {
                _ = try #require(try await store.finish(runID: run.id, attempt: run.attempt, state: .succeeded,
                                                        outputsJSON: "{}", error: nil, now: F.t0.plus(seconds: 1)))
            }

            let second = try await submitConcurrently(200, to: [store], policy: policy, now: F.t0.plus(seconds: 2)) {
                F.submission("b\($0)")
            }
            #expect(second.compactMap(\.created).count == 50)
            #expect(second.filter(\.isOverLimit).count == 150)
        }
    }

    @Test("1,000 concurrent submissions with one key and one fingerprint: one run, 999 replays, one run id", arguments: StoreBackend.all)
    func concurrentIdempotency(_ backend: StoreBackend) async throws {
        try await withStores(backend) { stores in
            let store = try await stores.open()
            let outcomes = try await submitConcurrently(1000, to: [store], policy: F.policy()) {
                F.submission("r\($0)", key: "order-42", fingerprint: "same")
            }
            let created = outcomes.compactMap(\.created)
            let replayed = outcomes.compactMap(\.replayed)
            #expect(created.count == 1)
            #expect(replayed.count == 999)
            let run = try #require(created.first)
            #expect(replayed.allSatisfy { $0 == run })
            let all = try await store.listRuns(tenant: "t", filter: RunFilter(), limit: 2000, after: nil)
            #expect(all.map(\.id) == [run.id])
        }
    }

    @Test("the same key with another fingerprint is refused, naming the run, which stays untouched", arguments: StoreBackend.all)
    func keyReused(_ backend: StoreBackend) async throws {
        try await withStores(backend) { stores in
            let store = try await stores.open()
            let original = try await F.create(store, F.submission("r1", key: "k", fingerprint: "a", inputs: #"{"n":1}"#))
            let refused = try await store.submit(F.submission("r2", key: "k", fingerprint: "b", inputs: #"{"n":2}"#),
                                                 policy: F.policy(), now: F.t0.plus(seconds: 1))
            #expect(refused == .keyReused(existingRunID: "r1"))
            #expect(try await store.run(id: "r1", tenant: "t") == original)
            #expect(try await store.run(id: "r2", tenant: nil) == nil)
            #expect(try await store.events(runID: "r1", after: 0, limit: 10).isEmpty)
            // The key still belongs to the original request...
            #expect(try await store.submit(F.submission("r3", key: "k", fingerprint: "a"), policy: F.policy(),
                                           now: F.t0.plus(seconds: 2)) == .replayed(original))
            // ...and is scoped to its tenant.
            let other = try await F.create(store, F.submission("r4", tenant: "t2", key: "k", fingerprint: "b"))
            #expect(other.tenant == "t2")
        }
    }

    @Test("a key expires at created + TTL: replayed 1 ms before, a new run at that instant, then the key names it", arguments: StoreBackend.all)
    func keyExpiry(_ backend: StoreBackend) async throws {
        try await withStores(backend) { stores in
            let store = try await stores.open()
            let policy = F.policy(ttl: .seconds(60))
            let first = try await F.create(store, F.submission("r1", key: "k", fingerprint: "a"), policy: policy)
            #expect(try await store.submit(F.submission("r2", key: "k", fingerprint: "a"), policy: policy,
                                           now: F.t0.plus(ms: 59_999)) == .replayed(first))
            #expect(try await store.submit(F.submission("r2", key: "k", fingerprint: "b"), policy: policy,
                                           now: F.t0.plus(ms: 59_999)) == .keyReused(existingRunID: "r1"))
            let fresh = try await F.create(store, F.submission("r3", key: "k", fingerprint: "b"), policy: policy,
                                           now: F.t0.plus(ms: 60_000))
            #expect(try await store.submit(F.submission("r4", key: "k", fingerprint: "b"), policy: policy,
                                           now: F.t0.plus(ms: 60_001)) == .replayed(fresh))
            #expect(try await store.run(id: "r1", tenant: "t") == first)
        }
    }

    @Test("a replay is answered even when the tenant is at its limit; a refused submission creates nothing", arguments: StoreBackend.all)
    func replayAtLimit(_ backend: StoreBackend) async throws {
        try await withStores(backend) { stores in
            let store = try await stores.open()
            let policy = F.policy(limit: 1)
            let run = try await F.create(store, F.submission("r1", key: "k"), policy: policy)
            #expect(try await store.submit(F.submission("r2", key: "k"), policy: policy, now: F.t0) == .replayed(run))
            #expect(try await store.submit(F.submission("r3", key: "k3"), policy: policy, now: F.t0)
                    == .overLimit(active: 1, limit: 1))
            #expect(try await store.run(id: "r3", tenant: nil) == nil)
            // The refused call left no idempotency record behind: once there is room, k3 creates.
            _ = try #require(try await store.stop(runID: "r1", tenant: "t", now: F.t0).stoppedRun)
            _ = try await F.create(store, F.submission("r4", key: "k3", fingerprint: "other"), policy: policy)
        }
    }

    @Test("a tenant's override wins over the default limit; removing it restores the default", arguments: StoreBackend.all)
    func limitOverride(_ backend: StoreBackend) async throws {
        try await withStores(backend) { stores in
            let store = try await stores.open()
            let policy = F.policy(limit: 3)
            try await store.setConcurrencyLimit(tenant: "t", limit: 2)
            try await F.create(store, F.submission("r1"), policy: policy)
            try await F.create(store, F.submission("r2"), policy: policy)
            #expect(try await store.submit(F.submission("r3"), policy: policy, now: F.t0) == .overLimit(active: 2, limit: 2))
            try await F.create(store, F.submission("o1", tenant: "other"), policy: policy)
            try await store.setConcurrencyLimit(tenant: "t", limit: nil)
            try await F.create(store, F.submission("r3"), policy: policy)
            #expect(try await store.submit(F.submission("r4"), policy: policy, now: F.t0) == .overLimit(active: 3, limit: 3))
            try await store.setConcurrencyLimit(tenant: "t", limit: 0)
            #expect(try await store.submit(F.submission("r4"), policy: policy, now: F.t0) == .overLimit(active: 3, limit: 0))
        }
    }

    @Test("two store handles on one directory (two processes) share admission: limit and key hold across them", arguments: StoreBackend.all)
    func admissionAcrossHandles(_ backend: StoreBackend) async throws {
        try await withStores(backend) { stores in
            let first = try await stores.open()
            let second = try await stores.open()
            let limited = try await submitConcurrently(200, to: [first, second], policy: F.policy(limit: 50)) {
                F.submission("a\($0)")
            }
            #expect(limited.compactMap(\.created).count == 50)
            #expect(limited.filter(\.isOverLimit).count == 150)

            let keyed = try await submitConcurrently(100, to: [first, second], policy: F.policy(limit: 50)) {
                F.submission("k\($0)", tenant: "t2", key: "one", fingerprint: "same")
            }
            let created = try #require(keyed.compactMap(\.created).first)
            #expect(keyed.compactMap(\.created).count == 1)
            #expect(keyed.compactMap(\.replayed).count == 99)
            #expect(try await first.run(id: created.id, tenant: "t2") == created)
            #expect(try await second.run(id: created.id, tenant: "t2") == created)
        }
    }

    @Test("several handles opening a new directory at once all succeed and share one schema", arguments: StoreBackend.all)
    func concurrentOpen(_ backend: StoreBackend) async throws {
        try await withStores(backend) { stores in
            let opened = try await withThrowingTaskGroup(of: TestStore.self) { group in
                for _ in 0..<8 { group.addTask { try await stores.open() } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            for (i, store) in opened.enumerated() {
                try await F.create(store, F.submission("r\(i)"))
            }
            for store in opened {
                #expect(try await store.listRuns(tenant: "t", filter: RunFilter(), limit: 10, after: nil).count == opened.count)
            }
        }
    }
}

extension StopOutcome {
    var stoppedRun: RunRecord? {
        if case .stopped(let run, _) = self { run } else { nil }
    }
}
