@testable import Engine
import Foundation
import Synchronization
import Testing

/// A real SQLite store that counts the reads watchers make (`events` and `run`).
final class CountingReadsStore: ForwardingRunStore, @unchecked Sendable {
    private let counts = Mutex<(events: Int, runs: Int)>((0, 0))

    var eventReads: Int { counts.withLock { $0.events } }
    var runReads: Int { counts.withLock { $0.runs } }

    override func events(runID: String, after: Int64, limit: Int) async throws -> [RunEvent] {
        counts.withLock { $0.events += 1 }
        return try await base.events(runID: runID, after: after, limit: limit)
    }
    override func run(id: String, tenant: String?) async throws -> RunRecord? {
        counts.withLock { $0.runs += 1 }
        return try await base.run(id: id, tenant: tenant)
    }
}

@Suite("Watchers: one fan-out per event, shared heartbeat clocks")
struct WatchFanOutTests {
    @Test("200 watchers of one run read the store once each to catch up; its 21 live events reach them all without another read",
          .timeLimit(.minutes(1)))
    func liveEventsAreFannedOutNotReread() async throws {
        try await withDataDirectory { directory in
            let store = CountingReadsStore(base: try makeStore(directory))
            let gate = Gate()
            let executor = TestExecutor(gate: gate, steps: 10)
            var configuration = EngineConfiguration()
            configuration.reaperEnabled = false
            let engine = Engine(store: store, executor: executor, configuration: configuration, logger: quietLogger())
            try await engine.start()
            let run = try await engine.submit(request()).run
            await executor.started.wait(untilAtLeast: 1)

            let watcherCount = 200
            let caughtUp = Counter()
            let watchers = Task {
                try await withThrowingTaskGroup(of: [Int64].self) { group in
                    for _ in 0..<watcherCount {
                        group.addTask {
                            var seen: [Int64] = []
                            for try await event in try await engine.watch(id: run.id, tenant: "t1", after: 0) {
                                seen.append(event.sequence)
                                // run_started came from the store: this watcher now waits on live events.
                                if seen.count == 1 { caughtUp.increment() }
                            }
                            return seen
                        }
                    }
                    return try await group.reduce(into: []) { $0.append($1) }
                }
            }
            await caughtUp.wait(untilAtLeast: watcherCount)
            let eventReadsBefore = store.eventReads
            let runReadsBefore = store.runReads
            #expect(eventReadsBefore == watcherCount)  // one page each: the run had one stored event
            gate.open()  // 10 steps of 2 events, then run_finished: all of them live
            let all = try await watchers.value
            #expect(store.eventReads == eventReadsBefore)
            #expect(store.runReads == runReadsBefore)

            let final = try await engine.run(id: run.id, tenant: "t1")
            #expect(final.lastSequence == 1 + 20 + 1)
            #expect(all.count == watcherCount)
            for seen in all { #expect(seen == Array(1...final.lastSequence)) }
            await engine.shutdown()
        }
    }

    @Test("a watch with ticks sees ticks while its run is quiet, then every event, and ends after the terminal one",
          .timeLimit(.minutes(1)))
    func tickingWatch() async throws {
        try await withDataDirectory { directory in
            let gate = Gate()
            let executor = TestExecutor(gate: gate, steps: 2)
            let engine = Engine(store: try makeStore(directory), executor: executor, logger: quietLogger())
            try await engine.start()
            let run = try await engine.submit(request()).run
            await executor.started.wait(untilAtLeast: 1)
            var events: [Int64] = []
            var ticks = 0
            for try await item in try await engine.watch(id: run.id, tenant: "t1", after: 0).ticking(every: .milliseconds(20)) {
                switch item {
                case .event(let event): events.append(event.sequence)
                case .tick:
                    ticks += 1
                    if ticks == 3 { gate.open() }
                }
            }
            #expect(ticks >= 3)
            #expect(events == Array(1...6))  // run_started, 2 x (node_started, node_finished), run_finished
            await engine.shutdown()
        }
    }

    @Test("subscribers of one tick interval share one clock, which stops when the last of them is gone",
          .timeLimit(.minutes(1)))
    func sharedClock() async throws {
        let clock = ManualClock()
        let hub = EventHub(bufferSize: 16, clock: clock)
        let interval = Duration.milliseconds(10)
        let ticked = Counter()
        let watchers = (0..<50).map { index in
            let stream = hub.subscribe(runID: "run-\(index % 5)", tickInterval: interval)
            return Task {
                var counted = false
                for await item in stream {
                    if case .tick = item, !counted {
                        counted = true
                        ticked.increment()
                    }
                }
            }
        }
        let quiet = hub.subscribe(runID: "run-0")  // no ticks asked: none come
        #expect(hub.runningClocks == 1)
        await clock.waitForSleepers(atLeast: 1)
        #expect(clock.sleeperCount == 1)  // one sleeping clock for 50 subscribers
        clock.advance(by: interval)
        await ticked.wait(untilAtLeast: 50)
        hub.publish([RunEvent(runID: "run-0", sequence: 1, time: Date(), kind: .runStarted, payloadJSON: "{}")])
        var quietIterator = quiet.makeAsyncIterator()
        let first = await quietIterator.next()
        guard case .event(let event)? = first else {
            Issue.record("a subscriber without ticks got \(String(describing: first))")
            return
        }
        #expect(event.sequence == 1)
        for watcher in watchers { watcher.cancel() }
        for watcher in watchers { await watcher.value }
        // The last one to leave cancelled the clock: nothing to wait for.
        #expect(hub.runningClocks == 0)
        #expect(hub.subscriberCount == 1)  // the quiet one
    }
}
