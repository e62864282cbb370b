import Engine
import Foundation
import Testing

@Suite("Store (SQLite and PostgreSQL): claims, leases, events, compare-and-set and stop")
struct StoreDispatchTests {
    typealias F = StoreFixture

    @Test("a claim takes the oldest run: running, attempt 1, a lease, and a run_started event carrying the run", arguments: StoreBackend.all)
    func claim(_ backend: StoreBackend) async throws {
        try await withStores(backend) { stores in
            let store = try await stores.open()
            #expect(try await store.claimNext(worker: "w", leaseDuration: .seconds(30), now: F.t0) == nil)
            try await F.create(store, F.submission("young"), now: F.t0.plus(ms: 1))
            let old = try await F.create(store, F.submission("old"))
            let now = F.t0.plus(seconds: 5)
            let (run, event) = try await F.claim(store, worker: "w1", lease: .seconds(30), now: now)
            #expect(run.id == old.id)
            #expect(run.state == .running && run.attempt == 1 && run.lastSequence == 1)
            #expect(run.startedAt == now && run.lastProgressAt == now)
            #expect(run.leaseOwner == "w1" && run.leaseExpiresAt == now.plus(seconds: 30))
            #expect(run.createdAt == old.createdAt && run.trigger == old.trigger && run.transport == old.transport)
            #expect(event == RunEvent(runID: run.id, sequence: 1, time: now, kind: .runStarted, payloadJSON: event.payloadJSON))
            #expect(try F.decodePayload(event) == run)
            #expect(try await store.run(id: run.id, tenant: "t") == run)
            #expect(try await store.events(runID: run.id, after: 0, limit: 10) == [event])
        }
    }

    @Test("fairness: after tenant A queues 500 runs and B 5, B's 5 are all claimed within the first 10 claims", arguments: StoreBackend.all)
    func fairness(_ backend: StoreBackend) async throws {
        // The bound: while k tenants have scheduled runs, each gets one of every k consecutive
        // claims, so with A and B waiting, B's n-th run is claimed by claim 2n.
        try await withStores(backend) { stores in
            let store = try await stores.open()
            try await store.setConcurrencyLimit(tenant: "A", limit: 1000)
            let policy = F.policy(limit: 50)
            for i in 0..<500 {
                try await F.create(store, F.submission(String(format: "a%03d", i), tenant: "A"), policy: policy,
                                   now: F.t0.plus(ms: Int64(i)))
            }
            for i in 0..<5 {
                try await F.create(store, F.submission("b\(i)", tenant: "B"), policy: policy, now: F.t0.plus(seconds: 10))
            }
            var claimed: [RunRecord] = []
            for _ in 0..<10 {
                claimed.append(try await F.claim(store, now: F.t0.plus(seconds: 20)).0)
            }
            let firstTen = claimed.map(\.id)
            #expect(Set(firstTen).isSuperset(of: (0..<5).map { "b\($0)" }))
            #expect(firstTen == ["a000", "b0", "a001", "b1", "a002", "b2", "a003", "b3", "a004", "b4"])
            // B has nothing left: A's backlog continues in order.
            #expect(try await F.claim(store, now: F.t0.plus(seconds: 20)).0.id == "a005")
        }
    }

    @Test("round-robin rotates by claim order, not time: three tenants claimed in one millisecond alternate", arguments: StoreBackend.all)
    func rotationWithinOneMillisecond(_ backend: StoreBackend) async throws {
        try await withStores(backend) { stores in
            let store = try await stores.open()
            for tenant in ["C", "A", "B"] {
                for i in 0..<3 { try await F.create(store, F.submission("\(tenant)\(i)", tenant: tenant)) }
            }
            var order: [String] = []
            while let (run, _) = try await store.claimNext(worker: "w", leaseDuration: .seconds(30), now: F.t0) {
                order.append(run.id)
            }
            // All runs share one createdAt: never-claimed tenants go first, by name; then rotation.
            #expect(order == ["A0", "B0", "C0", "A1", "B1", "C1", "A2", "B2", "C2"])
        }
    }

    @Test("a stale attempt, a finished run or another worker changes nothing: nil or lost", arguments: StoreBackend.all)
    func compareAndSet(_ backend: StoreBackend) async throws {
        try await withStores(backend) { stores in
            let store = try await stores.open()
            try await F.create(store, F.submission("r"))
            let (run, started) = try await F.claim(store, worker: "w1")
            let later = F.t0.plus(seconds: 1)
            #expect(try await store.finish(runID: "r", attempt: 0, state: .succeeded, outputsJSON: "{}", error: nil,
                                           now: later) == nil)
            #expect(try await store.finish(runID: "r", attempt: 2, state: .failed, outputsJSON: nil, error: "x",
                                           now: later) == nil)
            #expect(try await store.appendEvents(runID: "r", attempt: 0, events: [NewEvent(kind: .nodeStarted, payloadJSON: "{}")],
                                                 stepsDelta: 1, now: later) == nil)
            #expect(try await store.renewLease(runID: "r", attempt: 1, worker: "w2", leaseDuration: .seconds(30),
                                               now: later) == .lost)
            #expect(try await store.renewLease(runID: "r", attempt: 0, worker: "w1", leaseDuration: .seconds(30),
                                               now: later) == .lost)
            #expect(try await store.run(id: "r", tenant: nil) == run)
            #expect(try await store.events(runID: "r", after: 0, limit: 10) == [started])

            let finished = try #require(try await store.finish(runID: "r", attempt: 1, state: .partialSucceeded,
                                                               outputsJSON: #"{"a":1}"#, error: "node b failed", now: later))
            #expect(finished.run.state == .partialSucceeded && finished.run.finishedAt == later)
            #expect(finished.run.outputsJSON == #"{"a":1}"# && finished.run.error == "node b failed")
            #expect(finished.run.leaseOwner == nil && finished.run.leaseExpiresAt == nil)
            #expect(finished.event.kind == .runFinished && finished.event.sequence == 2 && finished.run.lastSequence == 2)
            #expect(try F.decodePayload(finished.event) == finished.run)
            // Finished: every worker write is refused now.
            #expect(try await store.finish(runID: "r", attempt: 1, state: .succeeded, outputsJSON: "{}", error: nil,
                                           now: later) == nil)
            #expect(try await store.appendEvents(runID: "r", attempt: 1, events: [], stepsDelta: 0, now: later) == nil)
            #expect(try await store.renewLease(runID: "r", attempt: 1, worker: "w1", leaseDuration: .seconds(30),
                                               now: later) == .lost)
            #expect(try await store.run(id: "r", tenant: nil) == finished.run)
            #expect(try await store.events(runID: "r", after: 0, limit: 10) == [started, finished.event])
        }
    }

    @Test("contract violations throw a non-retryable invalidArgument and store nothing", arguments: StoreBackend.all)
    func invalidArguments(_ backend: StoreBackend) async throws {
        try await withStores(backend) { stores in
            let store = try await stores.open()
            try await F.create(store, F.submission("r"))
            let (run, _) = try await F.claim(store)
            let notTerminal = try await #require(throws: StoreError.self) {
                try await store.finish(runID: "r", attempt: run.attempt, state: .running, outputsJSON: nil, error: nil,
                                       now: F.t0)
            }
            #expect(notTerminal.code == .invalidArgument && !notTerminal.isRetryable)
            let finishedEvent = try await #require(throws: StoreError.self) {
                try await store.appendEvents(runID: "r", attempt: run.attempt,
                                             events: [NewEvent(kind: .nodeStarted, payloadJSON: "{}"),
                                                      NewEvent(kind: .runFinished, payloadJSON: "{}")],
                                             stepsDelta: 1, now: F.t0)
            }
            #expect(finishedEvent.code == .invalidArgument)
            #expect(try await store.run(id: "r", tenant: nil) == run)
            #expect(try await store.events(runID: "r", after: 0, limit: 10).map(\.kind) == [.runStarted])
        }
    }

    @Test("events: consecutive sequences across appends, in order, paged by after and limit; progress recorded", arguments: StoreBackend.all)
    func events(_ backend: StoreBackend) async throws {
        try await withStores(backend) { stores in
            let store = try await stores.open()
            try await F.create(store, F.submission("r"))
            let (run, _) = try await F.claim(store, lease: .seconds(30))
            var expectedKinds: [RunEventKind] = [.runStarted]
            for (batch, size) in [2, 3, 0, 1].enumerated() {
                let events = (0..<size).map { NewEvent(kind: $0 % 2 == 0 ? .nodeStarted : .textChunk,
                                                       payloadJSON: #"{"batch":\#(batch),"i":\#($0)}"#) }
                let stored = try #require(try await store.appendEvents(runID: "r", attempt: run.attempt, events: events,
                                                                       stepsDelta: size, now: F.t0.plus(seconds: Int64(batch + 1))))
                let first = Int64(expectedKinds.count + 1)
                #expect(stored.map(\.sequence) == Array(first..<(first + Int64(size))))
                #expect(stored.map(\.payloadJSON) == events.map(\.payloadJSON))
                #expect(stored.allSatisfy { $0.time == F.t0.plus(seconds: Int64(batch + 1)) })
                expectedKinds += events.map(\.kind)
            }
            // A lease renewal is not progress.
            #expect(try await store.renewLease(runID: "r", attempt: 1, worker: "w", leaseDuration: .seconds(30),
                                               now: F.t0.plus(seconds: 9)) == .held(stopRequested: false))
            let current = try #require(try await store.run(id: "r", tenant: nil))
            #expect(current.lastSequence == 7 && current.totalSteps == 6)
            #expect(current.lastProgressAt == F.t0.plus(seconds: 4))
            #expect(current.leaseExpiresAt == F.t0.plus(seconds: 39))

            let all = try await store.events(runID: "r", after: 0, limit: 100)
            #expect(all.map(\.sequence) == Array(1...7))
            #expect(all.map(\.kind) == expectedKinds)
            var paged: [RunEvent] = []
            var after: Int64 = 0
            while case let page = try await store.events(runID: "r", after: after, limit: 3), !page.isEmpty {
                #expect(page.count <= 3)
                paged += page
                after = page.last!.sequence
            }
            #expect(paged == all)
            #expect(try await store.events(runID: "r", after: 5, limit: 100).map(\.sequence) == [6, 7])
            #expect(try await store.events(runID: "r", after: 7, limit: 100).isEmpty)
            #expect(try await store.events(runID: "r", after: 0, limit: 0).isEmpty)
            #expect(try await store.events(runID: "r", after: 0, limit: -1).isEmpty)
            #expect(try await store.events(runID: "nope", after: 0, limit: 10).isEmpty)
        }
    }

    @Test("a finish carrying the run's last events stores them before run_finished, or ends failed when events before them are missing", arguments: StoreBackend.all)
    func finishCarryingEvents(_ backend: StoreBackend) async throws {
        try await withStores(backend) { stores in
            let store = try await stores.open()
            for id in ["r", "gap"] { try await F.create(store, F.submission(id)) }
            let (run, started) = try await F.claim(store, lease: .seconds(30))
            let stored = try #require(try await store.appendEvents(
                runID: run.id, attempt: run.attempt, events: [NewEvent(kind: .nodeStarted, payloadJSON: #"{"n":1}"#)],
                stepsDelta: 0, now: F.t0.plus(seconds: 1)))
            let last = [NewEvent(kind: .nodeFinished, payloadJSON: #"{"n":1}"#), NewEvent(kind: .nodeStarted, payloadJSON: #"{"n":2}"#),
                        NewEvent(kind: .nodeFinished, payloadJSON: #"{"n":2}"#)]
            let now = F.t0.plus(seconds: 2)
            let takes = Counter()
            let finished = try #require(try await finish(store, run, expectedLastSequence: 5, now: now) {
                takes.increment()
                return (last, 2)
            })
            #expect(takes.value == 1)
            #expect(finished.run.state == .succeeded && finished.run.lastSequence == 6 && finished.run.totalSteps == 2)
            #expect(finished.run.lastProgressAt == now)
            #expect(finished.appended.map(\.sequence) == [3, 4, 5] && finished.appended.map(\.payloadJSON) == last.map(\.payloadJSON))
            #expect(finished.appended.allSatisfy { $0.time == now && $0.runID == run.id })
            #expect(finished.event.kind == .runFinished && finished.event.sequence == 6)
            #expect(try F.decodePayload(finished.event) == finished.run)
            #expect(try await store.events(runID: run.id, after: 0, limit: 10) == [started] + stored + finished.appended + [finished.event])

            // An event before the carried ones is missing (as after a lost append): the run
            // cannot end as reported.
            let (gap, _) = try await F.claim(store, lease: .seconds(30))
            let failed = try #require(try await finish(store, gap, expectedLastSequence: 5, now: now) { (last, 2) })
            #expect(failed.run.state == .failed && failed.run.error == "some of the run's events could not be stored")
            let gapEvents = try await store.events(runID: gap.id, after: 0, limit: 10)
            #expect(gapEvents.first?.kind == .runStarted && gapEvents.last == failed.event)
            #expect(gapEvents.map(\.sequence) == Array(1...Int64(gapEvents.count)))
            // Not running any more: nothing is stored.
            #expect(try await finish(store, gap, expectedLastSequence: 2, now: now) { (last, 2) } == nil)
            #expect(try await store.events(runID: gap.id, after: 0, limit: 10) == gapEvents)
        }
    }

    private func finish(_ store: any RunStore, _ run: RunRecord, expectedLastSequence: Int64, now: Date,
                        take: @escaping @Sendable () -> (events: [NewEvent], steps: Int)) async throws -> FinishedRun? {
        try await withCheckedThrowingContinuation { continuation in
            store.enqueueFinish(runID: run.id, attempt: run.attempt, state: .succeeded, outputsJSON: "{}", error: nil,
                                expectedLastSequence: expectedLastSequence, now: now, take: take) {
                continuation.resume(with: $0)
            }
        }
    }

    @Test("stop: scheduled ends at once, running gets a durable request, finished is unchanged, others are not found", arguments: StoreBackend.all)
    func stop(_ backend: StoreBackend) async throws {
        try await withStores(backend) { stores in
            let store = try await stores.open()
            let policy = F.policy(limit: 2)
            try await F.create(store, F.submission("waiting"), policy: policy)
            try await F.create(store, F.submission("busy"), policy: policy, now: F.t0.plus(ms: -1))
            let (busy, _) = try await F.claim(store)
            #expect(busy.id == "busy")
            let now = F.t0.plus(seconds: 1)

            // Scheduled: stopped now, with its single run_finished event; its slot is free again.
            guard case .stopped(let stopped, let event) = try await store.stop(runID: "waiting", tenant: "t", now: now)
            else { Issue.record("a scheduled run was not stopped"); return }
            #expect(stopped.state == .stopped && stopped.finishedAt == now && stopped.startedAt == nil)
            #expect(stopped.error == "stopped before it started" && stopped.attempt == 0)
            #expect(event.kind == .runFinished && event.sequence == 1 && stopped.lastSequence == 1)
            #expect(try F.decodePayload(event) == stopped)
            #expect(try await store.events(runID: "waiting", after: 0, limit: 10) == [event])
            try await F.create(store, F.submission("next"), policy: policy, now: now)
            #expect(try await store.stop(runID: "waiting", tenant: "t", now: now) == .alreadyFinished(stopped))

            // Running: the request is recorded; the worker sees it at its next renewal and ends the run.
            guard case .stopRequested(let requested) = try await store.stop(runID: "busy", tenant: "t", now: now)
            else { Issue.record("a running run did not get a stop request"); return }
            #expect(requested.state == .running && requested.stopRequested && requested.finishedAt == nil)
            #expect(try await store.stop(runID: "busy", tenant: "t", now: now) == .stopRequested(requested))
            let reopened = try await stores.open()
            #expect(try await reopened.renewLease(runID: "busy", attempt: busy.attempt, worker: "w",
                                                  leaseDuration: .seconds(30), now: now) == .held(stopRequested: true))
            let ended = try #require(try await store.finish(runID: "busy", attempt: busy.attempt, state: .stopped,
                                                            outputsJSON: nil, error: "stopped by request", now: now))
            #expect(try await store.stop(runID: "busy", tenant: "t", now: now) == .alreadyFinished(ended.run))

            // Another tenant's run, or no run at all.
            #expect(try await store.stop(runID: "next", tenant: "intruder", now: now) == .notFound)
            #expect(try await store.stop(runID: "missing", tenant: "t", now: now) == .notFound)
            #expect(try await store.run(id: "next", tenant: nil)?.state == .scheduled)
        }
    }

    @Test("listing filters by state, workflow and user, pages with a cursor and stays in the tenant", arguments: StoreBackend.all)
    func listingFilters(_ backend: StoreBackend) async throws {
        try await withStores(backend) { stores in
            let store = try await stores.open()
            try await store.setConcurrencyLimit(tenant: "t", limit: 100)
            for i in 0..<12 {
                try await F.create(store, F.submission(String(format: "r%02d", i), workflow: i % 2 == 0 ? "even" : "odd",
                                                       user: i % 3 == 0 ? "alice" : "bob"),
                                   now: F.t0.plus(ms: Int64(i)))
            }
            try await F.create(store, F.submission("foreign", tenant: "t2", workflow: "even", user: "alice"))
            let (claimed, _) = try await F.claim(store)  // r00, the oldest
            #expect(claimed.id == "r00")

            func list(_ filter: RunFilter, limit: Int = 100, after: RunCursor? = nil) async throws -> [String] {
                try await store.listRuns(tenant: "t", filter: filter, limit: limit, after: after).map(\.id)
            }
            #expect(try await list(RunFilter(states: [.running])) == ["r00"])
            #expect(try await list(RunFilter(states: [.running, .scheduled])).count == 12)
            #expect(try await list(RunFilter(states: [.succeeded])).isEmpty)
            #expect(try await list(RunFilter(workflow: "even", user: "alice")) == ["r06", "r00"])
            #expect(try await list(RunFilter(states: [.scheduled], workflow: "odd")) == ["r11", "r09", "r07", "r05", "r03", "r01"])
            let cursor = RunCursor(createdAt: F.t0.plus(ms: 7), id: "r07")
            #expect(try await list(RunFilter(workflow: "odd"), limit: 2, after: cursor) == ["r05", "r03"])
            #expect(try await list(RunFilter(), limit: 0).isEmpty)
            #expect(try await store.listRuns(tenant: "t2", filter: RunFilter(), limit: 10, after: nil).map(\.id) == ["foreign"])
        }
    }

    @Test("the run log filters by dates and keyword in the store, counts every match and pages by offset without the runs' data", arguments: StoreBackend.all)
    func runLogFilters(_ backend: StoreBackend) async throws {
        try await withStores(backend) { stores in
            let store = try await stores.open()
            try await store.setConcurrencyLimit(tenant: "t", limit: 100)
            for i in 0..<10 {
                let inputs = i == 4 ? #"{"note":"Quarterly 50%_off REPORT"}"# : #"{"note":"plain \#(i)"}"#
                try await F.create(store, F.submission(String(format: "r%02d", i), user: i == 7 ? "Zoe-Keyword" : "u",
                                                       inputs: inputs),
                                   now: F.t0.plus(seconds: Int64(i)))
            }
            try await F.create(store, F.submission("foreign", tenant: "t2", inputs: #"{"note":"report"}"#))
            func log(_ filter: RunFilter, offset: Int = 0, limit: Int = 100) async throws -> (Int, [String]) {
                let page = try await store.runLog(tenant: "t", filter: filter, offset: offset, limit: limit)
                #expect(page.runs.allSatisfy { $0.inputsJSON.isEmpty && $0.outputsJSON == nil })
                return (page.total, page.runs.map(\.id))
            }
            // Dates: both bounds inclusive.
            #expect(try await log(RunFilter(createdBefore: F.t0.plus(seconds: 2))) == (3, ["r02", "r01", "r00"]))
            #expect(try await log(RunFilter(createdBefore: F.t0.plus(seconds: 6), createdAfter: F.t0.plus(seconds: 5)))
                    == (2, ["r06", "r05"]))
            // Keyword: a run's id exactly, or a part of its user, inputs or outputs, any ASCII case;
            // `%` and `_` match only themselves.
            #expect(try await log(RunFilter(keyword: "report")) == (1, ["r04"]))
            #expect(try await log(RunFilter(keyword: "50%_OFF")) == (1, ["r04"]))
            #expect(try await log(RunFilter(keyword: "5_%")) == (0, []))
            #expect(try await log(RunFilter(keyword: "keyword")) == (1, ["r07"]))
            #expect(try await log(RunFilter(keyword: "r03")) == (1, ["r03"]))
            #expect(try await log(RunFilter(keyword: "r0")) == (0, []))
            // Pages: the total counts every match; the page holds `limit` after `offset`.
            #expect(try await log(RunFilter(), offset: 3, limit: 2) == (10, ["r06", "r05"]))
            #expect(try await log(RunFilter(), offset: 9, limit: 5) == (10, ["r00"]))
            #expect(try await log(RunFilter(), offset: 10, limit: 5) == (10, []))
            #expect(try await log(RunFilter(keyword: "plain"), limit: 0) == (9, []))
            // Another tenant's runs never show.
            #expect(try await store.runLog(tenant: "t2", filter: RunFilter(keyword: "report"), offset: 0, limit: 10).total == 1)
        }
    }

    @Test("a run's inputs and outputs are stored once, in its row; its run events read back exactly as they were delivered", arguments: StoreBackend.all)
    func inputsStoredOnce(_ backend: StoreBackend) async throws {
        try await withStores(backend) { stores in
            let store = try await stores.open()
            let inputs = #"{"note":"INPUT-MARK \"quoted\" ,\"inputsJSON\":\"\" ünï"}"#
            let outputs = #"{"reply":"OUTPUT-MARK"}"#
            try await F.create(store, F.submission("r", inputs: inputs))
            let (claimed, started) = try await F.claim(store)
            let finished = try #require(try await store.finish(runID: "r", attempt: claimed.attempt, state: .succeeded,
                                                               outputsJSON: outputs, error: nil, now: F.t0))
            try await F.create(store, F.submission("failed", inputs: inputs))
            let (other, _) = try await F.claim(store)
            let failed = try #require(try await store.finish(runID: "failed", attempt: other.attempt, state: .failed,
                                                             outputsJSON: nil, error: "boom", now: F.t0))

            // Delivered live: the whole run, inputs and outputs included.
            #expect(try F.decodePayload(started).inputsJSON == inputs)
            #expect(try F.decodePayload(finished.event).outputsJSON == outputs)
            // Stored: the row holds them, the events do not.
            func count(_ sql: String) async throws -> Int64 { try await stores.integer(sql, on: store) }
            #expect(try await count("SELECT COUNT(*) FROM runs WHERE inputs_json LIKE '%INPUT-MARK%'") == 2)
            #expect(try await count("SELECT COUNT(*) FROM run_events WHERE payload_json LIKE '%INPUT-MARK%'") == 0)
            #expect(try await count("SELECT COUNT(*) FROM run_events WHERE payload_json LIKE '%OUTPUT-MARK%'") == 0)
            // Read back: byte for byte what was delivered.
            #expect(try await store.events(runID: "r", after: 0, limit: 10) == [started, finished.event])
            let failedEvents = try await store.events(runID: "failed", after: 0, limit: 10)
            #expect(failedEvents.last == failed.event)
            #expect(try F.decodePayload(try #require(failedEvents.last)).outputsJSON == nil)
            #expect(try F.decodePayload(try #require(failedEvents.first)).inputsJSON == inputs)
        }
    }
}
