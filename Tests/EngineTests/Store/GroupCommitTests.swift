@testable import Engine
import Foundation
import Synchronization
import Testing

@Suite("Group commit (SQLite) and the batched store contract (SQLite and PostgreSQL): concurrent writes stay exact")
struct GroupCommitTests {
    @Test("500 concurrent submissions are committed in fewer transactions than submissions, all durable")
    func submissionsShareTransactions() async throws {
        try await withDataDirectory { directory in
            let store = try makeStore(directory)
            let before = store.commitStatistics
            let outcomes = try await submitConcurrently(500, to: [store], policy: StoreFixture.policy(limit: 1_000)) { i in
                StoreFixture.submission("run-\(i)", key: "key-\(i)", fingerprint: "f\(i)")
            }
            let after = store.commitStatistics
            #expect(outcomes.compactMap(\.created).count == 500)
            #expect(after.writes - before.writes == 500)
            #expect(after.transactions - before.transactions < 500, "\(before) -> \(after)")
            // Another handle (its own connections) reads every run and every idempotency record.
            let other = try makeStore(directory)
            for i in 0..<500 {
                let replay = try await other.submit(StoreFixture.submission("again-\(i)", key: "key-\(i)", fingerprint: "f\(i)"),
                                                    policy: StoreFixture.policy(limit: 1_000), now: StoreFixture.t0)
                #expect(replay.replayed?.id == "run-\(i)")
            }
        }
    }

    @Test("a write that fails in a batch fails alone; the others of its batch commit", arguments: StoreBackend.all)
    func oneFailureFailsOnlyItsCaller(_ backend: StoreBackend) async throws {
        try await withStores(backend) { stores in
            let store = try await stores.open()
            try await StoreFixture.create(store, StoreFixture.submission("taken"))
            // 200 submissions at once; one reuses the id "taken" (a primary-key violation inside
            // whatever batch it lands in).
            let results = try await withThrowingTaskGroup(of: (Int, Result<SubmissionOutcome, any Error>).self) { group in
                for i in 0..<200 {
                    group.addTask {
                        let id = i == 117 ? "taken" : "run-\(i)"
                        do {
                            return (i, .success(try await store.submit(StoreFixture.submission(id, fingerprint: "f\(i)"),
                                                                       policy: StoreFixture.policy(limit: 1_000),
                                                                       now: StoreFixture.t0)))
                        } catch {
                            return (i, .failure(error))
                        }
                    }
                }
                return try await group.reduce(into: [Int: Result<SubmissionOutcome, any Error>]()) { $0[$1.0] = $1.1 }
            }
            for (i, result) in results {
                switch result {
                case .success(let outcome):
                    #expect(i != 117)
                    #expect(outcome.created?.id == "run-\(i)")
                case .failure(let error):
                    #expect(i == 117)
                    #expect((error as? StoreError)?.code == .integrity, "\(error)")
                }
            }
            let runs = try await store.listRuns(tenant: "t", filter: RunFilter(), limit: 1_000, after: nil)
            #expect(runs.count == 200)  // "taken" and the 199 others
            #expect(try await store.run(id: "taken", tenant: nil)?.inputsJSON == "{}")
        }
    }

    @Test("claims of several runs in one call rotate across tenants and respect the per-tenant cap", arguments: StoreBackend.all)
    func batchedClaimsWithCap(_ backend: StoreBackend) async throws {
        try await withStores(backend) { stores in
            let store = try await stores.open()
            var t = StoreFixture.t0
            for i in 0..<5 {
                for tenant in ["a", "b"] {
                    try await StoreFixture.create(store, StoreFixture.submission("\(tenant)\(i)", tenant: tenant), now: t)
                    t = t.plus(ms: 1)
                }
            }
            try await StoreFixture.create(store, StoreFixture.submission("c0", tenant: "c"), now: t)
            // a already holds 1 here; cap 2: a gets one more, b two, c one.
            let claimed = try await store.claim(
                ClaimRequest(worker: "w", maxRuns: 10, leaseDuration: .seconds(30), perTenantLimit: 2, held: ["a": 1]),
                now: t)
            #expect(claimed.map(\.run.id) == ["a0", "b0", "c0", "b1"])
            #expect(claimed.allSatisfy { $0.run.state == .running && $0.event.kind == .runStarted && $0.event.sequence == 1 })
            // Without a cap the rest come in rotation.
            let rest = try await store.claim(ClaimRequest(worker: "w", maxRuns: 10, leaseDuration: .seconds(30)), now: t)
            #expect(rest.map(\.run.id) == ["a1", "b2", "a2", "b3", "a3", "b4", "a4"])
            #expect(try await store.claim(ClaimRequest(worker: "w", maxRuns: 10, leaseDuration: .seconds(30)), now: t).isEmpty)
        }
    }

    @Test("the admission counters follow every transition: finish, stop, reap and recovery free a tenant's slots", arguments: StoreBackend.all)
    func countersFollowTransitions(_ backend: StoreBackend) async throws {
        try await withStores(backend) { stores in
            let store = try await stores.open()
            let policy = StoreFixture.policy(limit: 3)
            let t0 = StoreFixture.t0
            for i in 0..<3 { try await StoreFixture.create(store, StoreFixture.submission("r\(i)"), policy: policy) }
            #expect(try await store.submit(StoreFixture.submission("over"), policy: policy, now: t0).isOverLimit)
            let (claimed, _) = try await StoreFixture.claim(store)
            _ = try await store.finish(runID: claimed.id, attempt: claimed.attempt, state: .succeeded, outputsJSON: "{}",
                                       error: nil, now: t0)
            try await StoreFixture.create(store, StoreFixture.submission("after-finish"), policy: policy)
            _ = try await store.stop(runID: "r1", tenant: "t", now: t0)
            try await StoreFixture.create(store, StoreFixture.submission("after-stop"), policy: policy)
            let reaped = try await store.reap(now: t0.plus(seconds: 301),
                                              policy: ReaperPolicy(scheduledTimeout: .seconds(300), runningTimeout: .seconds(1800)))
            #expect(reaped.count == 3)
            for i in 0..<3 {
                try await StoreFixture.create(store, StoreFixture.submission("after-reap-\(i)"), policy: policy,
                                              now: t0.plus(seconds: 302))
            }
            #expect(try await store.submit(StoreFixture.submission("over-again"), policy: policy,
                                           now: t0.plus(seconds: 302)).isOverLimit)
        }
    }

    @Test("queued appends keep their order before a later finish; a finish expecting events that are missing ends the run failed", arguments: StoreBackend.all)
    func queuedAppends(_ backend: StoreBackend) async throws {
        try await withStores(backend) { stores in
            let store = try await stores.open()
            let t0 = StoreFixture.t0
            for id in ["ok", "gap"] { try await StoreFixture.create(store, StoreFixture.submission(id)) }
            let claimed = try await store.claim(ClaimRequest(worker: "w", maxRuns: 2, leaseDuration: .seconds(30)), now: t0)
            #expect(Set(claimed.map(\.run.id)) == ["ok", "gap"])
            let stored = Mutex<[Int64]>([])
            for step in 0..<20 {
                store.enqueueEvents(runID: "ok", attempt: 1, now: t0, take: {
                    ([NewEvent(kind: .nodeStarted, payloadJSON: #"{"s":\#(step)}"#)], 1)
                }, completion: { result in
                    if case .success(let events?) = result { stored.withLock { $0 += events.map(\.sequence) } }
                })
            }
            // Queued after the 20 appends: it sees all of them.
            let ok = try #require(try await store.finish(runID: "ok", attempt: 1, state: .succeeded, outputsJSON: "{}", error: nil,
                                                          expectedLastSequence: 21, now: t0))
            #expect(ok.run.state == .succeeded && ok.event.sequence == 22)
            #expect(stored.withLock { $0 } == Array(2...21))
            let events = try await store.events(runID: "ok", after: 0, limit: 100)
            #expect(events.map(\.sequence) == Array(1...22))
            #expect(events.dropFirst().prefix(20).map(\.payloadJSON) == (0..<20).map { #"{"s":\#($0)}"# })

            // The executor emitted 3 events, but none was stored: the run cannot end succeeded.
            let gap = try #require(try await store.finish(runID: "gap", attempt: 1, state: .succeeded, outputsJSON: "{}", error: nil,
                                                           expectedLastSequence: 4, now: t0))
            #expect(gap.run.state == .failed)
            #expect(gap.run.error == "some of the run's events could not be stored")
            #expect(gap.run.outputsJSON == nil)
        }
    }

    @Test("SQLite: a finish queued without waiting is applied before every write queued after it")
    func queuedFinishComesFirst() async throws {
        try await withDataDirectory { directory in
            let store = try makeStore(directory)
            let t0 = StoreFixture.t0
            let policy = StoreFixture.policy(limit: 1)
            try await StoreFixture.create(store, StoreFixture.submission("first"), policy: policy)
            _ = try await StoreFixture.claim(store)
            let finished = Mutex<Result<FinishedRun?, any Error>?>(nil)
            let resumed = Gate()
            store.enqueueFinish(runID: "first", attempt: 1, state: .succeeded, outputsJSON: "{}", error: nil,
                                expectedLastSequence: 1, now: t0) { result in
                finished.withLock { $0 = result }
                resumed.open()
            }
            // Queued after the finish: the tenant's only slot is free again when it is applied.
            // (The finish's caller is resumed on the execution lane, in no order with this one.)
            let next = try await store.submit(StoreFixture.submission("next"), policy: policy, now: t0)
            #expect(next.created?.id == "next", "\(next)")
            await resumed.wait()
            let result = try #require(finished.withLock { $0 })
            let run = try #require(try result.get()).run
            #expect(run.state == .succeeded && run.lastSequence == 2)
        }
    }

    @Test("a tenant alone with work gets several runs from one claim, oldest first; rotation resumes when another arrives", arguments: StoreBackend.all)
    func singleTenantClaimsAtOnce(_ backend: StoreBackend) async throws {
        try await withStores(backend) { stores in
            let store = try await stores.open()
            var t = StoreFixture.t0
            for i in 0..<5 {
                try await StoreFixture.create(store, StoreFixture.submission("a\(i)", tenant: "a"), now: t)
                t = t.plus(ms: 1)
            }
            let rounds = (store as? SQLiteRunStore)?.claimRounds
            let first = try await store.claim(ClaimRequest(worker: "w", maxRuns: 3, leaseDuration: .seconds(30)), now: t)
            #expect(first.map(\.run.id) == ["a0", "a1", "a2"])
            if let sqlite = store as? SQLiteRunStore, let rounds {
                // One round of statements for the three, not one per run.
                #expect(sqlite.claimRounds - rounds == 1)
            }
            #expect(first.allSatisfy { $0.run.state == .running && $0.run.attempt == 1 && $0.event.sequence == 1 })
            let capped = try await store.claim(
                ClaimRequest(worker: "w", maxRuns: 3, leaseDuration: .seconds(30), perTenantLimit: 4, held: ["a": 3]), now: t)
            #expect(capped.map(\.run.id) == ["a3"])
            try await StoreFixture.create(store, StoreFixture.submission("b0", tenant: "b"), now: t)
            let rotated = try await store.claim(ClaimRequest(worker: "w", maxRuns: 3, leaseDuration: .seconds(30)), now: t)
            #expect(rotated.map(\.run.id) == ["b0", "a4"])
        }
    }

    @Test("SQLite: the callers of execution's writes (claims, appends, finishes) are resumed at the execution's quality of service, other callers not")
    func executionLane() async throws {
        try await withDataDirectory { directory in
            // libdispatch on Linux applies the background quality of service as nice 10.
            let store = try SQLiteRunStore(directory: directory, executionQoS: .background)
            let nice = { @Sendable in getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0) }
            let seen = Mutex<[String: Int32]>([:])
            try await StoreFixture.create(store, StoreFixture.submission("r1"))
            let claimed = try await store.claim(ClaimRequest(worker: "w", maxRuns: 1, leaseDuration: .seconds(30)), now: StoreFixture.t0)
            #expect(claimed.map(\.run.id) == ["r1"])
            await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
                store.enqueueEvents(runID: "r1", attempt: 1, now: StoreFixture.t0,
                                    take: { ([NewEvent(kind: .nodeStarted, payloadJSON: "{}")], 1) }) { _ in
                    seen.withLock { $0["append"] = nice() }
                    store.enqueueFinish(runID: "r1", attempt: 1, state: .succeeded, outputsJSON: "{}", error: nil,
                                        expectedLastSequence: nil, now: StoreFixture.t0) { result in
                        seen.withLock { $0["finish"] = (try? result.get()) != nil ? nice() : -100 }
                        done.resume()
                    }
                }
            }
            // A caller-lane write (a submission's) is resumed from the other queue: measured in
            // its completion, on the queue's thread (a task resumed by it would run elsewhere).
            let caller = await withCheckedContinuation { (done: CheckedContinuation<Int32, Never>) in
                store.committer.enqueue(lane: .caller, { _ in 0 }) { _ in done.resume(returning: nice()) }
            }
            #expect(seen.withLock { $0 } == ["append": 10, "finish": 10])
            #expect(caller == 0)
        }
    }

    @Test("SQLite: while callers' writes wait, a batch takes all of them and only the oldest few of execution's, in arrival order; the rest follow in the next batch")
    func callersFirst() async throws {
        try await withDataDirectory { directory in
            let store = try SQLiteRunStore(directory: directory)
            let committer = store.committer
            let share = committer.executionWritesPerBatch
            let release = DispatchSemaphore(value: 0)
            // Holds the committer thread inside a batch while the writes below queue up.
            await withCheckedContinuation { (started: CheckedContinuation<Void, Never>) in
                committer.enqueue(lane: .caller, { _ in
                    started.resume()
                    release.wait()
                }, completion: { _ in })
            }
            let applied = Mutex<[(name: String, batch: Int)]>([])
            let executions = share + 6
            await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
                let left = Mutex(executions + 3)
                let finished: @Sendable (Result<Void, any Error>) -> Void = { _ in
                    if left.withLock({ $0 -= 1; return $0 }) == 0 { done.resume() }
                }
                func write(_ name: String, _ lane: SQLiteCommitter.Lane) {
                    committer.enqueue(lane: lane, { _ in
                        applied.withLock { $0.append((name, committer.batchesCommitted)) }
                    }, completion: finished)
                }
                for i in 0..<executions { write("e\(i)", .execution) }
                for i in 0..<3 { write("c\(i)", .caller) }
                release.signal()
            }
            let order = applied.withLock { $0 }
            let first = (0..<share).map { "e\($0)" } + ["c0", "c1", "c2"]
            #expect(order.map(\.name) == first + (share..<executions).map { "e\($0)" })
            let firstBatch = order[0].batch
            #expect(order.prefix(first.count).allSatisfy { $0.batch == firstBatch }, "\(order)")
            #expect(order.dropFirst(first.count).allSatisfy { $0.batch == firstBatch + 1 }, "\(order)")
        }
    }
}
