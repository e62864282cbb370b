import Engine
import Foundation
import Testing

@Suite("Engine: admission, dispatch, stop, watch and reaping on a real SQLite store")
struct EngineTests {
    private func engine(_ store: any RunStore, _ executor: any WorkflowExecutor, clock: any EngineClock = SystemClock(),
                        configure: (inout EngineConfiguration) -> Void = { _ in }) -> Engine {
        var configuration = EngineConfiguration()
        configuration.reaperEnabled = false
        configure(&configuration)
        return Engine(store: store, executor: executor, configuration: configuration, clock: clock, logger: quietLogger())
    }

    @Test("200 concurrent submissions against a limit of 50 admit exactly 50, and 50 again once they finish")
    func concurrencyGuard() async throws {
        try await withDataDirectory { directory in
            let gate = Gate()
            let executor = TestExecutor(gate: gate)
            let engine = engine(try makeStore(directory), executor)
            try await engine.start()

            func burst() async throws -> (created: [RunRecord], rejected: [EngineError]) {
                try await withThrowingTaskGroup(of: Result<RunRecord, EngineError>.self) { group in
                    for i in 0..<200 {
                        group.addTask {
                            do { return .success(try await engine.submit(request(inputs: #"{"i":\#(i)}"#)).run) }
                            catch let error as EngineError { return .failure(error) }
                        }
                    }
                    var created: [RunRecord] = [], rejected: [EngineError] = []
                    for try await result in group {
                        switch result {
                        case .success(let run): created.append(run)
                        case .failure(let error): rejected.append(error)
                        }
                    }
                    return (created, rejected)
                }
            }

            let first = try await burst()
            #expect(first.created.count == 50)
            #expect(first.rejected.count == 150)
            #expect(first.rejected.allSatisfy { $0.code == .tenantOverLimit && $0.limit == 50 && $0.retryAfter != nil })

            gate.open()
            for run in first.created {
                let finished = try await engine.waitForCompletion(id: run.id, tenant: "t1")
                #expect(finished.state == .succeeded)
            }
            let second = try await burst()
            #expect(second.created.count == 50)
            #expect(second.rejected.count == 150)
            await engine.shutdown()
        }
    }

    @Test("1,000 concurrent submissions with one key create one run; other inputs with that key are refused")
    func idempotency() async throws {
        try await withDataDirectory { directory in
            let store = try makeStore(directory)
            let engine = engine(store, TestExecutor())
            let results = try await withThrowingTaskGroup(of: SubmitResult.self) { group in
                for _ in 0..<1000 {
                    group.addTask { try await engine.submit(request(inputs: #"{"a":1,"b":[1,2]}"#, key: "order-42")) }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(Set(results.map(\.run.id)).count == 1)
            #expect(results.filter(\.created).count == 1)

            // The same request encoded differently is the same request.
            let reordered = try await engine.submit(request(inputs: #"{ "b": [1, 2], "a": 1 }"#, key: "order-42"))
            #expect(!reordered.created)
            #expect(reordered.run.id == results[0].run.id)

            do {
                _ = try await engine.submit(request(inputs: #"{"a":2}"#, key: "order-42"))
                Issue.record("a reused key with other inputs was accepted")
            } catch let error as EngineError {
                #expect(error.code == .idempotencyKeyReused)
                #expect(error.runID == results[0].run.id)
            }
            let original = try await engine.run(id: results[0].run.id, tenant: "t1")
            #expect(original.inputsJSON == #"{"a":1,"b":[1,2]}"#)
            #expect(original.state == .scheduled)

            for bad in ["", String(repeating: "k", count: 256), "tab\there", "é"] {
                await #expect(throws: EngineError.self) { try await engine.submit(request(key: bad)) }
            }
        }
    }

    @Test("fairness: tenant B's 5 runs start within the first 10 claims after tenant A queued 500")
    func fairness() async throws {
        try await withDataDirectory { directory in
            let store = try makeStore(directory)
            let executor = TestExecutor()
            let engine = engine(store, executor) { $0.workerCount = 1 }
            try await engine.setConcurrencyLimit(tenant: "A", limit: 1000)
            for i in 0..<500 { _ = try await engine.submit(request(tenant: "A", inputs: #"{"i":\#(i)}"#)) }
            var bRuns: [String] = []
            for i in 0..<5 { bRuns.append(try await engine.submit(request(tenant: "B", inputs: #"{"i":\#(i)}"#)).run.id) }

            try await engine.start()
            for id in bRuns { _ = try await engine.waitForCompletion(id: id, tenant: "B") }
            await engine.shutdown(gracePeriod: .seconds(5))
            // Round-robin across tenants: with two tenants, B's i-th run is at most the 2i-th claim.
            let order = executor.startOrder
            let positions = bRuns.map { id in order.firstIndex(of: id)! }
            #expect(positions.max()! < 10, "B's runs started at claims \(positions)")
        }
    }

    @Test("stop: a scheduled run stops at once, a running one is cancelled and ends stopped, a finished one is unchanged")
    func stop() async throws {
        try await withDataDirectory { directory in
            let store = try makeStore(directory)
            let started = Counter()
            let engine = engine(store, ForeverExecutor(started: started)) { $0.workerCount = 1 }

            let scheduled = try await engine.submit(request(inputs: #"{"s":1}"#)).run
            let stopped = try await engine.stop(id: scheduled.id, tenant: "t1")
            #expect(stopped.state == .stopped)
            #expect(stopped.finishedAt != nil)

            try await engine.start()
            let running = try await engine.submit(request(inputs: #"{"s":2}"#)).run
            await started.wait(untilAtLeast: 1)
            let afterStop = try await engine.stop(id: running.id, tenant: "t1")
            #expect(afterStop.state == .stopped)
            let events = try await store.events(runID: running.id, after: 0, limit: 100)
            #expect(events.filter(\.isTerminal).count == 1)

            let again = try await engine.stop(id: running.id, tenant: "t1")
            #expect(again == afterStop)
            await #expect(throws: EngineError.self) { try await engine.stop(id: running.id, tenant: "other") }
            await engine.shutdown()
        }
    }

    @Test("100 watchers joining at random points see the same events; a resumed watcher misses nothing")
    func watchers() async throws {
        try await withDataDirectory { directory in
            let store = try makeStore(directory)
            let stepGates = (0..<20).map { _ in Gate() }
            let executor = TestExecutor(steps: 20) { step in await stepGates[step].wait() }
            let engine = engine(store, executor) { $0.watcherBufferSize = 4 }  // tiny: forces gap repair
            try await engine.start()
            let run = try await engine.submit(request()).run

            let joined = Counter()
            let watchers = Task {
                try await withThrowingTaskGroup(of: [Int64].self) { group in
                    for _ in 0..<100 {
                        group.addTask {
                            let events = try await engine.watch(id: run.id, tenant: "t1", after: 0)
                            joined.increment()
                            var seen: [Int64] = []
                            for try await event in events { seen.append(event.sequence) }
                            return seen
                        }
                    }
                    return try await group.reduce(into: []) { $0.append($1) }
                }
            }
            // Release the steps while watchers are still joining.
            for (index, gate) in stepGates.enumerated() {
                if index == 10 { await joined.wait(untilAtLeast: 50) }
                gate.open()
            }
            let all = try await watchers.value
            let final = try await engine.waitForCompletion(id: run.id, tenant: "t1")
            let expected = Array(Int64(1)...final.lastSequence)
            #expect(final.lastSequence == 1 + 40 + 1)  // run_started, 20 x (node_started, node_finished), run_finished
            #expect(all.count == 100)
            for seen in all { #expect(seen == expected) }

            // A watcher that reconnects after sequence 17 gets 18...end, once each.
            var resumed: [Int64] = []
            for try await event in try await engine.watch(id: run.id, tenant: "t1", after: 17) { resumed.append(event.sequence) }
            #expect(resumed == Array(18...final.lastSequence))
            await engine.shutdown()
        }
    }

    @Test("the reaper fails a run that makes no progress, cancels its execution, and writes one terminal event")
    func reaperNoProgress() async throws {
        try await withDataDirectory { directory in
            let store = try makeStore(directory)
            let clock = ManualClock()
            let started = Counter()
            let engine = engine(store, ForeverExecutor(started: started), clock: clock) { configuration in
                configuration.workerCount = 1
                configuration.reaper = ReaperPolicy(scheduledTimeout: .seconds(300), runningTimeout: .seconds(1800))
                configuration.leaseDuration = .seconds(100_000)  // only the progress rule applies
            }
            try await engine.start()
            let run = try await engine.submit(request()).run
            await started.wait(untilAtLeast: 1)
            // Lease renewals keep it alive but are no progress.
            for _ in 0..<4 { clock.advance(by: .seconds(500)) }
            let reaped = try await engine.reapOnce()
            #expect(reaped.map(\.run.id) == [run.id])
            let final = try await engine.waitForCompletion(id: run.id, tenant: "t1")
            #expect(final.state == .failed)
            #expect(final.error?.contains("no progress") == true)
            let events = try await store.events(runID: run.id, after: 0, limit: 100)
            #expect(events.filter(\.isTerminal).count == 1)
            await engine.shutdown()
        }
    }

    @Test("a run scheduled for longer than the threshold is failed by the reaper")
    func reaperScheduled() async throws {
        try await withDataDirectory { directory in
            let store = try makeStore(directory)
            let clock = ManualClock()
            let engine = engine(store, TestExecutor(), clock: clock)  // not started: nothing claims
            let run = try await engine.submit(request()).run
            clock.advance(by: .seconds(299))
            #expect(try await engine.reapOnce().isEmpty)
            clock.advance(by: .seconds(2))
            #expect(try await engine.reapOnce().map(\.run.id) == [run.id])
            let final = try await engine.run(id: run.id, tenant: "t1")
            #expect(final.state == .failed)
            #expect(final.error?.contains("scheduled") == true)
        }
    }

    @Test("a worker finishing as the reaper fires leaves exactly one terminal state and one run_finished event")
    func workerReaperRace() async throws {
        try await withDataDirectory { directory in
            let store = try makeStore(directory)
            for round in 0..<20 {
                let clock = ManualClock()
                let gate = Gate()
                let executor = TestExecutor(gate: gate, steps: 0)
                let engine = engine(store, executor, clock: clock) { configuration in
                    configuration.workerCount = 1
                    configuration.reaper = ReaperPolicy(scheduledTimeout: .seconds(300), runningTimeout: .seconds(60))
                }
                try await engine.start()
                let run = try await engine.submit(request(inputs: #"{"round":\#(round)}"#)).run
                await executor.started.wait(untilAtLeast: 1)
                clock.advance(by: .seconds(61))
                async let reaped = engine.reapOnce()
                gate.open()
                _ = try await reaped
                let final = try await engine.waitForCompletion(id: run.id, tenant: "t1")
                #expect([RunState.succeeded, .failed].contains(final.state))
                let events = try await store.events(runID: run.id, after: 0, limit: 100)
                #expect(events.filter(\.isTerminal).count == 1, "round \(round)")
                #expect(events.last?.isTerminal == true)
                await engine.shutdown()
            }
        }
    }

    @Test("start-up recovery fails runs a previous process left running")
    func recovery() async throws {
        try await withDataDirectory { directory in
            let started = Counter()
            let first = engine(try makeStore(directory), ForeverExecutor(started: started)) { $0.workerCount = 1 }
            try await first.start()
            let run = try await first.submit(request()).run
            await started.wait(untilAtLeast: 1)
            // The "crash": a new engine on the same data directory while the first one still holds the run.
            let second = engine(try makeStore(directory), TestExecutor())
            try await second.start()
            let recovered = try await second.run(id: run.id, tenant: "t1")
            #expect(recovered.state == .failed)
            #expect(recovered.error?.contains("interrupted") == true)
            await first.shutdown(gracePeriod: .milliseconds(10))
            await second.shutdown()
            let events = try await makeStore(directory).events(runID: run.id, after: 0, limit: 100)
            #expect(events.filter(\.isTerminal).count == 1)
        }
    }

    @Test("blocking callers get the terminal run; unknown and foreign runs are not found")
    func blockingAndNotFound() async throws {
        try await withDataDirectory { directory in
            let engine = engine(try makeStore(directory), TestExecutor(steps: 3))
            try await engine.start()
            let run = try await engine.submit(request(trigger: .apiBlocking)).run
            let final = try await engine.waitForCompletion(id: run.id, tenant: "t1")
            #expect(final.state == .succeeded)
            #expect(final.outputsJSON == #"{"ok":true}"#)
            #expect(final.totalSteps == 3)
            #expect(final.trigger == .apiBlocking)
            await #expect(throws: EngineError.self) { try await engine.run(id: run.id, tenant: "t2") }
            await #expect(throws: EngineError.self) { try await engine.run(id: "nope", tenant: "t1") }
            await engine.shutdown()
        }
    }
}

@Suite("Engine: watching from the end of a run")
struct WatchPastEndTests {
    @Test("a watch at or past the terminal event ends at once, for finished runs and for runs that finish later")
    func pastTheEnd() async throws {
        try await withDataDirectory { directory in
            let gate = Gate()
            let executor = TestExecutor(gate: gate, steps: 1)
            let engine = Engine(store: try makeStore(directory), executor: executor, logger: quietLogger())
            try await engine.start()
            let run = try await engine.submit(request()).run
            // Running, asked far beyond its end: ends when the run finishes, without events.
            let ahead = try await engine.watch(id: run.id, tenant: "t1", after: 1000)
            let aheadTask = Task { try await ahead.reduce(into: [Int64]()) { $0.append($1.sequence) } }
            gate.open()
            let final = try await engine.waitForCompletion(id: run.id, tenant: "t1")
            #expect(try await aheadTask.value.isEmpty)
            for after in [final.lastSequence, final.lastSequence + 5] {
                var seen: [Int64] = []
                for try await event in try await engine.watch(id: run.id, tenant: "t1", after: after) { seen.append(event.sequence) }
                #expect(seen.isEmpty)
            }
            var last: [Int64] = []
            for try await event in try await engine.watch(id: run.id, tenant: "t1", after: final.lastSequence - 1) {
                last.append(event.sequence)
            }
            #expect(last == [final.lastSequence])
            await engine.shutdown()
        }
    }
}
