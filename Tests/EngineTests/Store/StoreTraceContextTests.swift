import Engine
import Foundation
import Testing

@Suite("Store (SQLite and PostgreSQL): a run's trace context")
struct StoreTraceContextTests {
    typealias F = StoreFixture

    static let traced = RunTraceContext(traceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                                        traceState: "rojo=00f067aa0ba902b7")!

    @Test("a submission's trace context is stored with the run and read back by run, list, claim and finish; without one it stays nil",
          arguments: StoreBackend.all)
    func recorded(_ backend: StoreBackend) async throws {
        try await withStore(backend) { store in
            var submission = F.submission("a")
            submission.traceContext = Self.traced
            #expect(try await F.create(store, submission).traceContext == Self.traced)
            #expect(try await F.create(store, F.submission("b")).traceContext == nil)

            #expect(try await store.run(id: "a", tenant: "t")?.traceContext == Self.traced)
            #expect(try await store.run(id: "b", tenant: nil)?.traceContext == nil)
            let listed = try await store.listRuns(tenant: "t", filter: RunFilter(), limit: 10, after: nil)
            #expect(Dictionary(uniqueKeysWithValues: listed.map { ($0.id, $0.traceContext) }) == ["a": Self.traced, "b": nil])

            let (claimed, event) = try #require(try await store.claimNext(worker: "w", leaseDuration: .seconds(60), now: F.t0))
            #expect(claimed.id == "a")
            #expect(claimed.traceContext == Self.traced)
            #expect(try F.decodePayload(event).traceContext == Self.traced)
            let finished = try #require(try await store.finish(runID: "a", attempt: claimed.attempt, state: .succeeded,
                                                               outputsJSON: "{}", error: nil, now: F.t0.plus(seconds: 1)))
            #expect(finished.run.traceContext == Self.traced)
        }
    }

    @Test("concurrent submissions, some traced and some not, each keep their own (one group commit)", arguments: StoreBackend.all)
    func batched(_ backend: StoreBackend) async throws {
        try await withStore(backend) { store in
            let outcomes = try await submitConcurrently(20, to: [store], policy: F.policy(limit: 100)) { i in
                var submission = F.submission("r\(i)")
                if i % 2 == 0 { submission.traceContext = Self.traced }
                return submission
            }
            #expect(outcomes.compactMap(\.created).count == 20)
            for i in 0..<20 {
                let run = try #require(try await store.run(id: "r\(i)", tenant: "t"))
                #expect(run.traceContext == (i % 2 == 0 ? Self.traced : nil), "run r\(i)")
            }
        }
    }

    @Test("an idempotent replay answers the first run with its trace context, whatever the retry carried", arguments: StoreBackend.all)
    func replay(_ backend: StoreBackend) async throws {
        try await withStore(backend) { store in
            var first = F.submission("a", key: "k")
            first.traceContext = Self.traced
            try await F.create(store, first)
            var retry = F.submission("b", key: "k")
            retry.traceContext = RunTraceContext(traceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
            let outcome = try await store.submit(retry, policy: F.policy(), now: F.t0)
            guard case .replayed(let run) = outcome else { Issue.record("not replayed: \(outcome)"); return }
            #expect(run.id == "a")
            #expect(run.traceContext == Self.traced)
            #expect(try await store.run(id: "b", tenant: "t") == nil)
        }
    }
}
