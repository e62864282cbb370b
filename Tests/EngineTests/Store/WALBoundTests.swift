@testable import Engine
import Foundation
import Testing

@Suite("The WAL stays bounded under steady writes")
struct WALBoundTests {
    @Test("waves of submissions, each committed while the previous is being checkpointed, reuse the start of the WAL")
    func walRestartsUnderSteadyLoad() async throws {
        try await withDataDirectory { directory in
            // A short restart length and a checkpoint pass after every commit, so that a
            // few megabytes of writes cross the restart length many times.
            let store = try SQLiteRunStore(directory: directory, checkpointInterval: .milliseconds(1), walRestartFrames: 64)
            let wal = directory.appendingPathComponent(SQLiteRunStore.fileName + "-wal")
            let inputs = #"{"blob":""# + String(repeating: "x", count: 4_000) + #""}"#
            let policy = StoreFixture.policy(limit: 100_000)
            let waves = 40, perWave = 50
            var largest = 0
            for wave in 0..<waves {
                let passes = store.checkpointPasses
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for i in 0..<perWave {
                        group.addTask {
                            let id = "run-\(wave)-\(i)"
                            _ = try await store.submit(StoreFixture.submission(id, key: id, inputs: inputs),
                                                       policy: policy, now: StoreFixture.t0)
                        }
                    }
                    try await group.waitForAll()
                }
                // The next wave commits after a pass that saw this one (bounded wait).
                let deadline = ContinuousClock.now + .seconds(30)
                while store.checkpointPasses == passes && ContinuousClock.now < deadline { await Task.yield() }
                largest = max(largest, try Self.size(of: wal))
            }
            // 2,000 runs with 4 KB of inputs each wrote more than 8 MB to the WAL; without
            // restarts the file would be at least that long.
            #expect(largest < 3 << 20, "the WAL grew to \(largest) bytes")
            #expect(try await store.run(id: "run-\(waves - 1)-\(perWave - 1)", tenant: nil) != nil)
        }
    }

    private static func size(of url: URL) throws -> Int {
        (try FileManager.default.attributesOfItem(atPath: url.path)[.size] as? Int) ?? 0
    }
}
