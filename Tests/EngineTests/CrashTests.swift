import Engine
import Foundation
import Testing

/// The harness executable, built next to the test bundle by `swift build --build-tests`.
private let harness: URL = URL(fileURLWithPath: CommandLine.arguments[0])
    .deletingLastPathComponent().appendingPathComponent("flowd-engine-harness")

@Suite("Crash safety", .serialized)
struct CrashTests {
    @Test("SIGKILL at a random moment: every acknowledged run exists, none ran twice, none stays unfinished", arguments: 0..<3)
    func killAndRecover(round: Int) async throws {
        #expect(FileManager.default.isExecutableFile(atPath: harness.path),
                "missing \(harness.path): run swift build --build-tests first")
        try await withDataDirectory { directory in
            // 1. A child submits and executes runs until it is killed.
            let child = Process()
            child.executableURL = harness
            child.arguments = ["crash-child", directory.path]
            let output = Pipe()
            child.standardOutput = output
            try child.run()
            var greeting = Data()
            while !greeting.contains(UInt8(ascii: "\n")) {
                let chunk = output.fileHandleForReading.availableData  // blocks until the child writes
                if chunk.isEmpty { break }
                greeting.append(chunk)
            }
            #expect(String(decoding: greeting, as: UTF8.self).hasPrefix("READY"))
            // The crash point: a random moment while submissions and executions are in flight.
            try await Task.sleep(for: .milliseconds(Int.random(in: 300...1500)))
            kill(child.processIdentifier, SIGKILL)
            child.waitUntilExit()
            #expect(child.terminationReason == .uncaughtSignal)

            // 2. A new process on the same data directory recovers and finishes the rest.
            let recovery = Process()
            recovery.executableURL = harness
            recovery.arguments = ["recover", directory.path]
            let recoveryOutput = Pipe()
            recovery.standardOutput = recoveryOutput
            try recovery.run()
            let summary = String(decoding: recoveryOutput.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            recovery.waitUntilExit()
            #expect(recovery.terminationStatus == 0, "recovery failed: \(summary)")
            print("round \(round): \(summary.trimmingCharacters(in: .whitespacesAndNewlines))")

            // 3. Check the promises.
            let acked = try lines(of: directory.appendingPathComponent("ack.log")).map { $0.split(separator: " ")[1] }
            let executed = try lines(of: directory.appendingPathComponent("exec.log")).map { $0.split(separator: " ")[1] }
            #expect(acked.count > 0, "the child acknowledged nothing before the kill")
            let store = try makeStore(directory)
            for id in acked {
                let run = try await store.run(id: String(id), tenant: "crash")
                #expect(run != nil, "acknowledged run \(id) is missing")
                #expect(run?.state.isTerminal == true, "run \(id) is \(run?.state.rawValue ?? "missing")")
            }
            let duplicates = Dictionary(grouping: executed, by: { $0 }).filter { $0.value.count > 1 }.keys
            #expect(duplicates.isEmpty, "runs executed twice: \(Array(duplicates))")
            let unfinished = try await store.listRuns(
                tenant: "crash", filter: RunFilter(states: [.scheduled, .running]), limit: 10, after: nil)
            #expect(unfinished.isEmpty)
        }
    }

    private func lines(of file: URL) throws -> [Substring] {
        guard FileManager.default.fileExists(atPath: file.path) else { return [] }
        return try String(contentsOf: file, encoding: .utf8).split(separator: "\n")
    }
}
