import Engine
import Foundation
import Testing

@Suite("Store (SQLite and PostgreSQL): reaper, start-up recovery and durability across reopening")
struct StoreMaintenanceTests {
    typealias F = StoreFixture
    let reaper = ReaperPolicy(scheduledTimeout: .seconds(5 * 60), runningTimeout: .seconds(30 * 60))

    @Test("reaper (a): scheduled for the timeout or longer fails; 1 ms less does not", arguments: StoreBackend.all)
    func reapScheduled(_ backend: StoreBackend) async throws {
        try await withStores(backend) { stores in
            let store = try await stores.open()
            try await F.create(store, F.submission("r"))
            #expect(try await store.reap(now: F.t0.plus(ms: 300_000 - 1), policy: reaper).isEmpty)
            let now = F.t0.plus(ms: 300_000)
            let reaped = try await store.reap(now: now, policy: reaper)
            #expect(reaped.count == 1)
            let finished = try #require(reaped.first)
            #expect(finished.run.id == "r" && finished.run.state == .failed && finished.run.finishedAt == now)
            #expect(finished.run.error == "scheduled for more than 5 minutes without a worker")
            #expect(finished.event.kind == .runFinished && finished.event.sequence == 1)
            #expect(try F.decodePayload(finished.event) == finished.run)
            #expect(try await store.reap(now: now.plus(seconds: 3600), policy: reaper).isEmpty)
            #expect(try await store.claimNext(worker: "w", leaseDuration: .seconds(30), now: now) == nil)
        }
    }

    @Test("reaper (b): a lease that expired strictly before now fails the run (worker gone)", arguments: StoreBackend.all)
    func reapExpiredLease(_ backend: StoreBackend) async throws {
        try await withStores(backend) { stores in
            let store = try await stores.open()
            try await F.create(store, F.submission("r"))
            let (run, _) = try await F.claim(store, lease: .seconds(30))
            // Renewed at +20 s: the lease now ends at +50 s.
            #expect(try await store.renewLease(runID: "r", attempt: run.attempt, worker: "w", leaseDuration: .seconds(30),
                                               now: F.t0.plus(seconds: 20)) == .held(stopRequested: false))
            #expect(try await store.reap(now: F.t0.plus(seconds: 50), policy: reaper).isEmpty)
            let reaped = try await store.reap(now: F.t0.plus(ms: 50_001), policy: reaper)
            #expect(reaped.map(\.run.id) == ["r"])
            #expect(reaped.first?.run.error == "the worker's lease expired (worker gone)")
            #expect(reaped.first?.run.leaseOwner == nil && reaped.first?.run.leaseExpiresAt == nil)
        }
    }

    @Test("reaper (c): no progress for the timeout fails a run whose lease is still renewed; events are progress", arguments: StoreBackend.all)
    func reapNoProgress(_ backend: StoreBackend) async throws {
        try await withStores(backend) { stores in
            let store = try await stores.open()
            let policy = ReaperPolicy(scheduledTimeout: .seconds(60), runningTimeout: .seconds(60))
            try await F.create(store, F.submission("r"))
            let (run, _) = try await F.claim(store, lease: .seconds(3600))
            _ = try #require(try await store.appendEvents(runID: "r", attempt: run.attempt,
                                                          events: [NewEvent(kind: .nodeStarted, payloadJSON: "{}")],
                                                          stepsDelta: 0, now: F.t0.plus(seconds: 30)))
            #expect(try await store.renewLease(runID: "r", attempt: run.attempt, worker: "w", leaseDuration: .seconds(3600),
                                               now: F.t0.plus(seconds: 80)) == .held(stopRequested: false))
            #expect(try await store.reap(now: F.t0.plus(ms: 89_999), policy: policy).isEmpty)
            let reaped = try await store.reap(now: F.t0.plus(seconds: 90), policy: policy)
            #expect(reaped.map(\.run.error) == ["no progress for more than 1 minute"])
            #expect(reaped.first?.event.sequence == 3)
        }
    }

    @Test("reaper vs a late worker: the reaper's verdict stands, the worker's writes return nil, one run_finished", arguments: StoreBackend.all)
    func reaperThenLateWorker(_ backend: StoreBackend) async throws {
        try await withStores(backend) { stores in
            let store = try await stores.open()
            try await F.create(store, F.submission("r"))
            let (run, started) = try await F.claim(store, lease: .seconds(10))
            let reaped = try await store.reap(now: F.t0.plus(seconds: 11), policy: reaper)
            let verdict = try #require(reaped.first)
            #expect(try await store.finish(runID: "r", attempt: run.attempt, state: .succeeded, outputsJSON: "{}",
                                           error: nil, now: F.t0.plus(seconds: 12)) == nil)
            #expect(try await store.appendEvents(runID: "r", attempt: run.attempt,
                                                 events: [NewEvent(kind: .nodeFinished, payloadJSON: "{}")],
                                                 stepsDelta: 1, now: F.t0.plus(seconds: 12)) == nil)
            #expect(try await store.renewLease(runID: "r", attempt: run.attempt, worker: "w", leaseDuration: .seconds(10),
                                               now: F.t0.plus(seconds: 12)) == .lost)
            #expect(try await store.run(id: "r", tenant: nil) == verdict.run)
            #expect(try await store.events(runID: "r", after: 0, limit: 10) == [started, verdict.event])
        }
    }

    @Test("reaper and workers racing on 50 expired runs: each run ends once, by exactly one of them", arguments: StoreBackend.all)
    func reaperRace(_ backend: StoreBackend) async throws {
        try await withStores(backend) { stores in
            let store = try await stores.open()
            let count = 50
            for i in 0..<count { try await F.create(store, F.submission("r\(i)")) }
            var runs: [RunRecord] = []
            for _ in 0..<count { runs.append(try await F.claim(store, lease: .seconds(10)).0) }
            let late = F.t0.plus(seconds: 11)
            let policy = reaper
            enum Result: Sendable { case reaped([FinishedRun]), finished(String, FinishedRun?) }
            let results = try await withThrowingTaskGroup(of: Result.self) { group in
                for (i, run) in runs.enumerated() {
                    if i == count / 2 { group.addTask { .reaped(try await store.reap(now: late, policy: policy)) } }
                    group.addTask {
                        .finished(run.id, try await store.finish(runID: run.id, attempt: run.attempt, state: .succeeded,
                                                                 outputsJSON: "{}", error: nil, now: late))
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            var winners: [String: RunState] = [:]
            for result in results {
                switch result {
                case .reaped(let reaped):
                    for finished in reaped {
                        #expect(winners.updateValue(.failed, forKey: finished.run.id) == nil)
                    }
                case .finished(let id, let finished?):
                    #expect(finished.run.state == .succeeded)
                    #expect(winners.updateValue(.succeeded, forKey: id) == nil)
                case .finished:
                    break
                }
            }
            #expect(winners.count == count)
            for run in runs {
                let stored = try #require(try await store.run(id: run.id, tenant: nil))
                #expect(stored.state == winners[run.id])
                let events = try await store.events(runID: run.id, after: 0, limit: 10)
                #expect(events.map(\.kind) == [.runStarted, .runFinished])
            }
        }
    }

    @Test("start-up recovery ends every running run once (stopped if its stop was requested), leaves the others, and the queue goes on")
    func recovery() async throws {
        try await withDataDirectory { directory in
            do {
                let store = try makeStore(directory)
                for id in ["a", "b", "c", "d"] {
                    try await F.create(store, F.submission(id), now: F.t0.plus(ms: Int64(id.unicodeScalars.first!.value)))
                }
                let (a, _) = try await F.claim(store)
                let (b, _) = try await F.claim(store)
                let (c, _) = try await F.claim(store)
                #expect([a.id, b.id, c.id] == ["a", "b", "c"])
                guard case .stopRequested = try await store.stop(runID: "b", tenant: "t", now: F.t0) else {
                    Issue.record("no stop request recorded")
                    return
                }
                _ = try #require(try await store.finish(runID: "c", attempt: c.attempt, state: .succeeded,
                                                        outputsJSON: "{}", error: nil, now: F.t0))
                try store.close()
            }
            // The next process on this directory.
            let store = try makeStore(directory)
            let now = F.t0.plus(seconds: 60)
            let recovered = try await store.recoverInterruptedRuns(now: now)
            #expect(recovered.map(\.run.id) == ["a", "b"])
            for finished in recovered {
                #expect(finished.run.finishedAt == now)
                if finished.run.id == "b" {  // its stop was requested: a stop request is durable
                    #expect(finished.run.state == .stopped)
                    #expect(finished.run.error == "stopped by request (its worker is gone)")
                } else {
                    #expect(finished.run.state == .failed)
                    #expect(finished.run.error == "interrupted: flowd restarted while the run was running")
                }
                #expect(try await store.events(runID: finished.run.id, after: 0, limit: 10).map(\.kind)
                        == [.runStarted, .runFinished])
            }
            #expect(try await store.run(id: "c", tenant: nil)?.state == .succeeded)
            #expect(try await store.recoverInterruptedRuns(now: now).isEmpty)
            #expect(try await F.claim(store, now: now).0.id == "d")
        }
    }

    @Test("closing and reopening the directory keeps runs, events, keys, limits and the dispatch order", arguments: StoreBackend.all)
    func reopen(_ backend: StoreBackend) async throws {
        try await withStores(backend) { stores in
            let before: (RunRecord, [RunEvent])
            do {
                let store = try await stores.open()
                try await store.setConcurrencyLimit(tenant: "t", limit: 1)
                try await F.create(store, F.submission("r1", key: "k", fingerprint: "a"), now: F.t0.plus(ms: -1))
                for id in ["x1", "x2"] { try await F.create(store, F.submission(id, tenant: "x")) }
                for id in ["y1", "y2"] { try await F.create(store, F.submission(id, tenant: "y"), now: F.t0.plus(ms: 1)) }
                #expect(try await F.claim(store).0.id == "r1")
                #expect(try await F.claim(store).0.id == "x1")
                _ = try #require(try await store.appendEvents(runID: "r1", attempt: 1,
                                                              events: [NewEvent(kind: .textChunk, payloadJSON: #""hi""#)],
                                                              stepsDelta: 1, now: F.t0.plus(ms: 5)))
                before = (try #require(try await store.run(id: "r1", tenant: "t")),
                          try await store.events(runID: "r1", after: 0, limit: 10))
                try await stores.close(store)
                let closed = try await #require(throws: StoreError.self) { try await store.run(id: "r1", tenant: nil) }
                #expect(!closed.isRetryable)
            }
            let store = try await stores.open()
            #expect(try await store.run(id: "r1", tenant: "t") == before.0)
            #expect(try await store.events(runID: "r1", after: 0, limit: 10) == before.1)
            #expect(try await store.submit(F.submission("r2", key: "k", fingerprint: "a"), policy: F.policy(),
                                           now: F.t0) == .replayed(before.0))
            #expect(try await store.submit(F.submission("r3"), policy: F.policy(), now: F.t0)
                    == .overLimit(active: 1, limit: 1))
            // x was claimed before the restart and y never: y goes first although x2 is older.
            #expect(try await F.claim(store).0.id == "y1")
            #expect(try await F.claim(store).0.id == "x2")
        }
    }
}
