@testable import Engine
import Foundation
import Testing

/// Two Engines on one PostgreSQL database, each with its own store instance (its own pool):
/// two flowd processes as far as the database can tell.
@Suite("Engine on PostgreSQL: two processes on one database",
       .enabled(if: PostgresTestDatabase.isAvailable, "FLOWD_TEST_POSTGRES_URL is not set (make test starts a PostgreSQL server and sets it)"),
       .timeLimit(.minutes(2)))
struct PostgresEngineTests {
    private func configuration(workers: Int) -> EngineConfiguration {
        var configuration = EngineConfiguration()
        configuration.workerCount = workers
        configuration.reaperEnabled = false
        // Work submitted on the other process is found by polling the store this often.
        configuration.idlePollInterval = .milliseconds(50)
        return configuration
    }

    @Test("a watch on process A receives, in order and without gaps, every event of a run executing on process B")
    func watchAcrossProcesses() async throws {
        try await withStores(.postgres) { stores in
            let gate = Gate()
            let remote = TestExecutor(gate: gate, steps: 5)
            // No periodic re-read on A: only the notifications of B's writes can bring the events.
            var watching = configuration(workers: 0)
            watching.sharedEventRereadInterval = .seconds(3600)
            let a = Engine(store: try await stores.open(), executor: TestExecutor(), configuration: watching,
                           logger: quietLogger())
            let b = Engine(store: try await stores.open(), executor: remote, configuration: configuration(workers: 2),
                           logger: quietLogger())
            try await a.start()
            try await b.start()
            let run = try await a.submit(request()).run
            let events = try await a.watch(id: run.id, tenant: run.tenant, after: 0)
            await remote.started.wait(untilAtLeast: 1)  // executing on B, its node events not yet emitted
            gate.open()
            var received: [RunEvent] = []
            for try await event in events { received.append(event) }
            #expect(received.map(\.sequence) == Array(1...12))
            let nodeEvents: [RunEventKind] = (0..<5).flatMap { _ in [RunEventKind.nodeStarted, .nodeFinished] }
            let expected: [RunEventKind] = [.runStarted] + nodeEvents + [.runFinished]
            #expect(received.map(\.kind) == expected)
            #expect(try await a.run(id: run.id, tenant: run.tenant).state == .succeeded)
            #expect(remote.startOrder == [run.id])
            await a.shutdown()
            await b.shutdown()
        }
    }

    @Test("60 runs submitted on two processes, executed by both: each exactly once, all succeeded; blocking waits see the end")
    func runsSpreadOverProcesses() async throws {
        try await withStores(.postgres) { stores in
            let executors = [TestExecutor(steps: 2), TestExecutor(steps: 2)]
            var engines: [Engine] = []
            for executor in executors {
                let engine = Engine(store: try await stores.open(), executor: executor, configuration: configuration(workers: 3),
                                    logger: quietLogger())
                try await engine.start()
                engines.append(engine)
            }
            let finished = try await withThrowingTaskGroup(of: RunRecord.self) { group in
                for i in 0..<60 {
                    let engine = engines[i % 2]
                    group.addTask {
                        let run = try await engine.submit(request(tenant: "t\(i % 3)", inputs: #"{"i":\#(i)}"#)).run
                        return try await engine.waitForCompletion(id: run.id, tenant: run.tenant)
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(finished.count == 60)
            #expect(finished.allSatisfy { $0.state == .succeeded && $0.attempt == 1 })
            let executed = executors[0].startOrder + executors[1].startOrder
            #expect(executed.count == 60)
            #expect(Set(executed) == Set(finished.map(\.id)))
            for engine in engines { await engine.shutdown() }
        }
    }
}
