@testable import Engine
import Foundation
import Prometheus
import Testing

@Suite("Store (SQLite and PostgreSQL): active run counts and commit metrics")
struct StoreMetricsTests {
    typealias F = StoreFixture

    @Test("activeRunCounts: scheduled and running across tenants, kept by every transition", arguments: StoreBackend.all)
    func activeRunCounts(_ backend: StoreBackend) async throws {
        try await withStore(backend) { store in
            #expect(try await store.activeRunCounts() == ActiveRunCounts(scheduled: 0, running: 0))
            for id in ["a", "b", "c"] { try await F.create(store, F.submission(id)) }
            try await F.create(store, F.submission("d", tenant: "u"))
            #expect(try await store.activeRunCounts() == ActiveRunCounts(scheduled: 4, running: 0))
            let (running, _) = try await F.claim(store, now: F.t0.plus(seconds: 1))
            #expect(try await store.activeRunCounts() == ActiveRunCounts(scheduled: 3, running: 1))
            _ = try await store.stop(runID: "d", tenant: "u", now: F.t0.plus(seconds: 2))
            #expect(try await store.activeRunCounts() == ActiveRunCounts(scheduled: 2, running: 1))
            _ = try await store.finish(runID: running.id, attempt: running.attempt, state: .succeeded, outputsJSON: "{}",
                                       error: nil, now: F.t0.plus(seconds: 3))
            #expect(try await store.activeRunCounts() == ActiveRunCounts(scheduled: 2, running: 0))
        }
    }

    @Test("PostgreSQL: submissions decided together are one batch of the group-commit histogram; transactions are timed",
          .enabled(if: PostgresTestDatabase.isAvailable))
    func postgresCommitMetrics() async throws {
        try await PostgresTestDatabase.withDatabase { url in
            let registry = PrometheusCollectorRegistry()
            let store = try await PostgresRunStore(url: url, logger: quietLogger(),
                                                   metrics: PrometheusMetricsFactory(registry: registry))
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<20 {
                    group.addTask { _ = try await F.create(store, F.submission("r\(index)")) }
                }
                try await group.waitForAll()
            }
            _ = try await F.claim(store, now: F.t0.plus(seconds: 1))
            await store.close()
            let text = registry.emitToString()
            let batches = try #require(sample(text, #"flowd_store_group_commit_batch_size_count{store="postgres"}"#))
            #expect(sample(text, #"flowd_store_group_commit_batch_size_sum{store="postgres"}"#) == 20)
            #expect(batches >= 1 && batches <= 20)
            // The migration, every submission batch and the claim.
            let transactions = try #require(sample(text, #"flowd_store_transaction_duration_seconds_count{store="postgres"}"#))
            #expect(transactions >= batches + 2, "\(transactions) transactions, \(batches) batches")
        }
    }
}
