import Engine
import Foundation
import Testing

/// A real SQLite store whose claims, once committed, wait for `gate` before returning: the
/// window between a claim's commit and the start of what it claimed, held open.
final class HeldClaimStore: ForwardingRunStore, @unchecked Sendable {
    let gate = Gate()
    let claimed = Counter()
    let stops = Counter()

    override func claim(_ request: ClaimRequest, now: Date) async throws -> [ClaimedRun] {
        let runs = try await base.claim(request, now: now)
        if !runs.isEmpty {
            claimed.increment()
            await gate.wait()
        }
        return runs
    }

    override func stop(runID: String, tenant: String, now: Date) async throws -> StopOutcome {
        defer { stops.increment() }
        return try await base.stop(runID: runID, tenant: tenant, now: now)
    }
}

@Suite("Stop while a claim is between its commit and the start of its runs")
struct StopRaceTests {
    @Test("a run stopped after its claim committed but before it started executing is cancelled at start and ends stopped")
    func stopBeforeStart() async throws {
        try await withDataDirectory { directory in
            let store = HeldClaimStore(base: try makeStore(directory))
            let started = Counter()
            var configuration = EngineConfiguration()
            configuration.reaperEnabled = false
            configuration.stopWait = .seconds(60)
            let engine = Engine(store: store, executor: ForeverExecutor(started: started), configuration: configuration,
                                logger: quietLogger())
            let run = try await engine.submit(request()).run
            try await engine.start()
            await store.claimed.wait(untilAtLeast: 1)
            // The claim is committed (the run is running in the store) and not started here yet.
            #expect(try await store.run(id: run.id, tenant: nil)?.state == .running)
            async let stopped = engine.stop(id: run.id, tenant: "t1")
            // The stop request is stored before the claim is let through.
            await store.stops.wait(untilAtLeast: 1)
            #expect(try await store.run(id: run.id, tenant: nil)?.stopRequested == true)
            store.gate.open()
            let final = try await stopped
            #expect(final.state == .stopped)
            await engine.shutdown(gracePeriod: .seconds(5))
        }
    }
}
