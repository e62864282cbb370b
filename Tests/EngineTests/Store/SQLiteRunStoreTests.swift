import Engine
import Foundation
import Testing

@Suite("SQLite run store: the RunStore contract on real files")
struct SQLiteRunStoreTests {
    private let policy = AdmissionPolicy(defaultConcurrencyLimit: 50, idempotencyTTL: .seconds(3600))
    private let t0 = Date(timeIntervalSince1970: 1_800_000_000.123)

    private func submission(_ id: String, tenant: String = "t", key: String? = nil, fingerprint: String = "f") -> Submission {
        Submission(runID: id, tenant: tenant, workflow: "wf", workflowVersion: "v1", inputsJSON: "{}", user: "u",
                   trigger: .apiAsync, transport: .rest, idempotencyKey: key, fingerprint: fingerprint)
    }

    @Test("what is written reads back equal, also after reopening the directory")
    func roundTrip() async throws {
        try await withDataDirectory { directory in
            let store = try makeStore(directory)
            guard case .created(let created) = try await store.submit(submission("r1", key: "k"), policy: policy, now: t0)
            else { Issue.record("not created"); return }
            #expect(created.createdAt == Date(timeIntervalSince1970: 1_800_000_000.123))
            #expect(created.trigger == .apiAsync && created.transport == .rest && created.idempotencyKey == "k")
            let reopened = try makeStore(directory)
            #expect(try await reopened.run(id: "r1", tenant: "t") == created)
            #expect(try await reopened.run(id: "r1", tenant: "other") == nil)
        }
    }

    @Test("an expired idempotency key counts as absent; purge removes expired records")
    func keyExpiry() async throws {
        try await withDataDirectory { directory in
            let store = try makeStore(directory)
            _ = try await store.submit(submission("r1", key: "k", fingerprint: "a"), policy: policy, now: t0)
            let replay = try await store.submit(submission("r2", key: "k", fingerprint: "a"), policy: policy, now: t0 + 3599)
            #expect(replay == .replayed(try await store.run(id: "r1", tenant: nil)!))
            let reused = try await store.submit(submission("r3", key: "k", fingerprint: "b"), policy: policy, now: t0 + 3599)
            #expect(reused == .keyReused(existingRunID: "r1"))
            guard case .created(let fresh) = try await store.submit(submission("r4", key: "k", fingerprint: "b"),
                                                                    policy: policy, now: t0 + 3601)
            else { Issue.record("an expired key was honoured"); return }
            #expect(fresh.id == "r4")
            _ = try await store.submit(submission("r5", key: "k2"), policy: policy, now: t0)
            #expect(try await store.purgeExpiredIdempotencyRecords(now: t0 + 3600) == 1)  // k2; k was renewed by r4
        }
    }

    @Test("the concurrency limit holds across two store handles on one file (two processes)")
    func limitAcrossHandles() async throws {
        try await withDataDirectory { directory in
            let first = try makeStore(directory)
            let second = try makeStore(directory)
            try await first.setConcurrencyLimit(tenant: "t", limit: 10)
            let outcomes = try await withThrowingTaskGroup(of: SubmissionOutcome.self) { group in
                for i in 0..<40 {
                    let store = i.isMultiple(of: 2) ? first : second
                    group.addTask { try await store.submit(self.submission("r\(i)"), policy: self.policy, now: self.t0) }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            let created = outcomes.filter { if case .created = $0 { return true } else { return false } }
            #expect(created.count == 10)
        }
    }

    @Test("each reaper rule, at its threshold: scheduled too long, lease expired, no progress")
    func reaperRules() async throws {
        try await withDataDirectory { directory in
            let store = try makeStore(directory)
            let reaper = ReaperPolicy(scheduledTimeout: .seconds(300), runningTimeout: .seconds(1800))
            for id in ["waiting", "leased", "stalled"] {
                _ = try await store.submit(submission(id), policy: policy, now: t0)
            }
            // Claim two of them; their leases differ.
            let (a, _) = try #require(try await store.claimNext(worker: "w", leaseDuration: .seconds(60), now: t0))
            let (b, _) = try #require(try await store.claimNext(worker: "w", leaseDuration: .seconds(7200), now: t0))
            #expect(try await store.reap(now: t0 + 59, policy: reaper).isEmpty)
            let first = try await store.reap(now: t0 + 61, policy: reaper)
            #expect(first.map(\.run.id) == [a.id])
            #expect(first.first?.run.error?.contains("lease expired") == true)
            let second = try await store.reap(now: t0 + 300, policy: reaper)
            #expect(second.map(\.run.error) == ["scheduled for more than 5 minutes without a worker"])
            #expect(try await store.reap(now: t0 + 1799, policy: reaper).isEmpty)
            let third = try await store.reap(now: t0 + 1800, policy: reaper)
            #expect(third.map(\.run.id) == [b.id])
            #expect(third.first?.run.error == "no progress for more than 30 minutes")
            // A late worker cannot overwrite the reaper's verdict.
            #expect(try await store.finish(runID: b.id, attempt: b.attempt, state: .succeeded, outputsJSON: "{}",
                                           error: nil, now: t0 + 1801) == nil)
            #expect(try await store.renewLease(runID: b.id, attempt: b.attempt, worker: "w", leaseDuration: .seconds(60),
                                               now: t0 + 1801) == .lost)
            for id in [a.id, b.id] {
                let events = try await store.events(runID: id, after: 0, limit: 10)
                #expect(events.map(\.kind) == [.runStarted, .runFinished])
                #expect(events.map(\.sequence) == [1, 2])
            }
        }
    }

    @Test("events get consecutive sequences; run payloads carry the run as of their event")
    func eventSequences() async throws {
        try await withDataDirectory { directory in
            let store = try makeStore(directory)
            _ = try await store.submit(submission("r"), policy: policy, now: t0)
            let (run, started) = try #require(try await store.claimNext(worker: "w", leaseDuration: .seconds(60), now: t0))
            #expect(started.sequence == 1)
            let appended = try #require(try await store.appendEvents(
                runID: run.id, attempt: run.attempt,
                events: [NewEvent(kind: .nodeStarted, payloadJSON: "{}"), NewEvent(kind: .nodeFinished, payloadJSON: "{}")],
                stepsDelta: 1, now: t0 + 1))
            #expect(appended.map(\.sequence) == [2, 3])
            #expect(try await store.appendEvents(runID: run.id, attempt: run.attempt + 1, events: [], stepsDelta: 0, now: t0) == nil)
            let finished = try #require(try await store.finish(runID: run.id, attempt: run.attempt, state: .succeeded,
                                                             outputsJSON: #"{"x":1}"#, error: nil, now: t0 + 2))
            #expect(finished.event.sequence == 4)
            #expect(finished.run.lastSequence == 4)
            #expect(finished.run.totalSteps == 1)
            let payload = try RunRecord.jsonDecoder.decode(RunRecord.self, from: Data(finished.event.payloadJSON.utf8))
            #expect(payload == finished.run)
            #expect(try await store.events(runID: run.id, after: 2, limit: 10).map(\.sequence) == [3, 4])
        }
    }

    @Test("list pages stay correct while newer runs arrive between pages")
    func paging() async throws {
        try await withDataDirectory { directory in
            let store = try makeStore(directory)
            try await store.setConcurrencyLimit(tenant: "t", limit: 1000)
            for i in 0..<25 {  // several runs share a millisecond: the id breaks ties
                _ = try await store.submit(submission(String(format: "r%02d", i)), policy: policy, now: t0 + Double(i / 3))
            }
            var seen: [String] = []
            var cursor: RunCursor?
            var extra = 0
            repeat {
                let page = try await store.listRuns(tenant: "t", filter: RunFilter(), limit: 7, after: cursor)
                seen += page.map(\.id)
                cursor = page.count == 7 ? RunCursor(createdAt: page.last!.createdAt, id: page.last!.id) : nil
                extra += 1
                _ = try await store.submit(submission("new\(extra)"), policy: policy, now: t0 + 100)  // newer than all
            } while cursor != nil
            let expected = (0..<25).map { (time: $0 / 3, id: String(format: "r%02d", $0)) }
                .sorted { ($0.time, $0.id) > ($1.time, $1.id) }.map(\.id)
            #expect(seen == expected)
            #expect(Set(seen).count == 25)
            let filtered = try await store.listRuns(tenant: "t", filter: RunFilter(states: [.running]), limit: 10, after: nil)
            #expect(filtered.isEmpty)
        }
    }
}

@Suite("SQLite run store: durable stop requests")
struct DurableStopTests {
    @Test("a running run whose stop was requested ends stopped when its worker is gone (reaper and recovery)")
    func stopSurvivesWorkerLoss() async throws {
        try await withDataDirectory { directory in
            let store = try makeStore(directory)
            let t0 = Date(timeIntervalSince1970: 1_800_000_000)
            let policy = AdmissionPolicy(defaultConcurrencyLimit: 50, idempotencyTTL: .seconds(60))
            for (id, lease) in [("reaped", 30), ("recovered", 3600)] {
                _ = try await store.submit(Submission(runID: id, tenant: "t", workflow: "wf", workflowVersion: "v", inputsJSON: "{}",
                                                      user: "u", trigger: .apiAsync, transport: .grpc, idempotencyKey: nil,
                                                      fingerprint: id), policy: policy, now: t0)
                _ = try await store.claimNext(worker: "w", leaseDuration: .seconds(lease), now: t0)
                guard case .stopRequested = try await store.stop(runID: id, tenant: "t", now: t0) else {
                    Issue.record("expected a stop request"); return
                }
            }
            // One lease expired: the reaper ends that run; start-up recovery ends the other.
            let reaped = try await store.reap(now: t0 + 31, policy: ReaperPolicy(scheduledTimeout: .seconds(300), runningTimeout: .seconds(1800)))
            let recovered = try await store.recoverInterruptedRuns(now: t0 + 32)
            #expect(reaped.map(\.run.id) == ["reaped"])
            #expect(recovered.map(\.run.id) == ["recovered"])
            for finished in reaped + recovered {
                #expect(finished.run.state == .stopped)
                #expect(finished.run.error == "stopped by request (its worker is gone)")
                #expect(finished.event.kind == .runFinished)
            }
        }
    }
}
