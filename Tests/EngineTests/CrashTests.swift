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
            defer { if child.isRunning { kill(child.processIdentifier, SIGKILL) } }  // never left running
            let greeting = await firstLine(of: output)
            #expect(greeting.hasPrefix("READY"))
            // The crash point: a random moment while submissions and executions are in flight.
            try await Task.sleep(for: .milliseconds(Int.random(in: 300...1500)))
            kill(child.processIdentifier, SIGKILL)
            await waitForExit(child)
            #expect(child.terminationReason == .uncaughtSignal)

            // 2. A new process on the same data directory recovers and finishes the rest.
            let (status, summary) = try await runToEnd(harness, ["recover", directory.path])
            #expect(status == 0, "recovery failed: \(summary)")
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

    @Test("SIGKILL under 32 concurrent submitters: every acknowledged run and its idempotency record survive, no run is half-written, none stays unfinished",
          arguments: 0..<3)
    func killUnderLoad(round: Int) async throws {
        #expect(FileManager.default.isExecutableFile(atPath: harness.path),
                "missing \(harness.path): run swift build --build-tests first")
        let submitters = 32
        try await withDataDirectory { directory in
            // 1. The child submits from 32 tasks at once until it has acknowledged a few hundred
            //    runs plus a random number more; then it is killed in the middle of that load.
            let child = try LoadChild(directory: directory, submitters: submitters)
            defer { child.sigkill() }
            let ready = await child.wait(timeout: .seconds(120)) { $0.output.contains("READY") }
            try #require(ready, "no READY from crash-load: \(child.output)")
            let killAt = 300 + Int.random(in: 1...600)
            for target in [300, killAt] {
                let reached = await child.wait(timeout: .seconds(120)) { $0.acks.count >= target }
                try #require(reached, "\(child.acks.count) acks, waited for \(target); child output: \(child.output)")
            }
            #expect(child.sigkill() == SIGKILL, "crash-load ended before the kill: \(child.output)")
            let acked = try child.acks.map { try LoadAck($0) }
            #expect(Set(acked.map(\.key)).count == acked.count && Set(acked.map(\.runID)).count == acked.count,
                    "a key or run id acknowledged twice")
            // Each submitter submits one at a time: its acks are 1, 2, ..., its last.
            let lastAcked = Dictionary(grouping: acked, by: \.submitter).mapValues { $0.map(\.n).max() ?? 0 }
            for (submitter, acks) in Dictionary(grouping: acked, by: \.submitter) {
                #expect(acks.map(\.n).sorted() == Array(1...lastAcked[submitter]!), "submitter \(submitter)")
            }

            // 2. What the crash left: every acknowledged run with its inputs, nothing half-written.
            let atCrash = try await checkLoadStore(directory, acked: acked, lastAcked: lastAcked, submitters: submitters)

            // 3. A new process recovers the directory and finishes what is left.
            let (status, summary) = try await runToEnd(harness, ["recover", directory.path])
            #expect(status == 0, "recovery failed: \(summary)")

            // 4. The same promises after recovery, no run left scheduled or running, none
            //    executed twice, and every acknowledged key replays its run.
            let recovered = try await checkLoadStore(directory, acked: acked, lastAcked: lastAcked, submitters: submitters)
            #expect(recovered.runs == atCrash.runs, "recovery changed the number of runs")
            #expect(recovered.states.keys.allSatisfy { $0.isTerminal }, "\(recovered.states)")
            let store = try makeStore(directory)
            let unfinished = try await store.listRuns(
                tenant: "crash", filter: RunFilter(states: [.scheduled, .running]), limit: 10, after: nil)
            #expect(unfinished.isEmpty, "unfinished after recovery: \(unfinished.map(\.id))")
            let executed = try lines(of: directory.appendingPathComponent("exec.log")).map { $0.split(separator: " ")[1] }
            let duplicates = Dictionary(grouping: executed, by: { $0 }).filter { $0.value.count > 1 }.keys
            #expect(duplicates.isEmpty, "runs executed twice: \(Array(duplicates))")
            let replayed = try await replay(acked, store: store)

            print("crash-load round \(round): acked \(acked.count) (kill after \(killAt)), runs found \(atCrash.runs) "
                  + "[\(describe(atCrash.states))], recovered [\(describe(recovered.states))] "
                  + "(\(summary.trimmingCharacters(in: .whitespacesAndNewlines))), replayed \(replayed)")
        }
    }

    /// Checks the store of a `crash-load` directory: (a) every acknowledged run exists with its
    /// key and inputs; every other run is the one submission each submitter had in flight at
    /// the kill; (c) each run's events are 1...lastSequence without gaps, with exactly one
    /// `run_finished`, last, when it is terminal and none otherwise; a succeeded run has all of
    /// its events. Returns the number of runs and how many are in each state.
    private func checkLoadStore(_ directory: URL, acked: [LoadAck], lastAcked: [Int: Int],
                                submitters: Int) async throws -> (runs: Int, states: [RunState: Int]) {
        let store = try makeStore(directory)
        for ack in acked {
            let run = try await store.run(id: ack.runID, tenant: "crash")
            #expect(run != nil, "acknowledged run \(ack.runID) (\(ack.key)) is missing")
            guard let run else { continue }
            #expect(run.idempotencyKey == ack.key && run.workflow == "load", "\(ack.key): \(run)")
            let inputs = try JSONDecoder().decode([String: Int].self, from: Data(run.inputsJSON.utf8))
            #expect(inputs == ["s": ack.submitter, "n": ack.n], "\(ack.key): inputs \(run.inputsJSON)")
        }
        let ackedIDs = Set(acked.map(\.runID))
        var states: [RunState: Int] = [:]
        var runs = 0
        var cursor: RunCursor?
        repeat {
            let page = try await store.listRuns(tenant: "crash", filter: RunFilter(), limit: 500, after: cursor)
            cursor = page.count == 500 ? page.last.map { RunCursor(createdAt: $0.createdAt, id: $0.id) } : nil
            for run in page {
                runs += 1
                states[run.state, default: 0] += 1
                if !ackedIDs.contains(run.id) {
                    // Committed but killed before its ack was written: the submitter's next one.
                    let key = try LoadAck(key: run.idempotencyKey ?? "none", runID: run.id)
                    #expect(key.n == (lastAcked[key.submitter] ?? 0) + 1 && key.submitter < submitters,
                            "run \(run.id) (\(key.key)) was never submitted")
                }
                var events: [RunEvent] = []
                while true {
                    let more = try await store.events(runID: run.id, after: events.last?.sequence ?? 0, limit: 500)
                    events += more
                    if more.count < 500 { break }
                }
                let kinds = events.map(\.kind)
                #expect(events.map(\.sequence) == (0..<Int64(events.count)).map { $0 + 1 }
                        && run.lastSequence == Int64(events.count),
                        "run \(run.id) (\(run.state.rawValue)): last sequence \(run.lastSequence), events \(events.map(\.sequence))")
                let finishedEvents = kinds.filter { $0 == .runFinished }.count
                if run.state.isTerminal {
                    #expect(finishedEvents == 1 && kinds.last == .runFinished, "run \(run.id) (\(run.state.rawValue)): \(kinds)")
                } else {
                    #expect(finishedEvents == 0, "run \(run.id) (\(run.state.rawValue)): \(kinds)")
                }
                if run.state == .scheduled { #expect(events.isEmpty, "scheduled run \(run.id): \(kinds)") }
                if run.state == .succeeded {
                    #expect(kinds == [.runStarted, .nodeStarted, .nodeFinished, .nodeStarted, .nodeFinished, .runFinished],
                            "succeeded run \(run.id): \(kinds)")
                }
            }
        } while cursor != nil
        #expect(runs >= acked.count && runs <= acked.count + submitters, "\(runs) runs for \(acked.count) acks")
        return (runs, states)
    }

    /// (b) Submits every acknowledged request again with its key, 16 at a time: each must replay
    /// its run (created false), which proves its idempotency record was committed with it.
    /// Returns how many replayed.
    private func replay(_ acked: [LoadAck], store: SQLiteRunStore) async throws -> Int {
        var configuration = EngineConfiguration()
        configuration.workerCount = 0
        configuration.reaperEnabled = false
        let engine = Engine(store: store, executor: TestExecutor(), configuration: configuration, logger: quietLogger())
        try await engine.start()
        do {
            let replayed = try await withThrowingTaskGroup(of: Int.self) { group in
                for lane in 0..<16 {
                    group.addTask {
                        var replayed = 0
                        for index in stride(from: lane, to: acked.count, by: 16) {
                            let ack = acked[index]
                            // The request crash-load sent (see loadRequest in Tests/EngineHarness/main.swift).
                            let result = try await engine.submit(RunRequest(
                                tenant: "crash", workflow: "load", workflowVersion: "v1",
                                inputsJSON: #"{"s":\#(ack.submitter),"n":\#(ack.n)}"#, user: "harness",
                                trigger: .apiAsync, transport: .grpc, idempotencyKey: ack.key))
                            #expect(!result.created && result.run.id == ack.runID,
                                    "\(ack.key): created \(result.created), run \(result.run.id), acknowledged \(ack.runID)")
                            if !result.created && result.run.id == ack.runID { replayed += 1 }
                        }
                        return replayed
                    }
                }
                return try await group.reduce(0, +)
            }
            await engine.shutdown()
            #expect(replayed == acked.count)
            return replayed
        } catch {
            await engine.shutdown()
            throw error
        }
    }

    private func describe(_ states: [RunState: Int]) -> String {
        states.sorted { $0.key.rawValue < $1.key.rawValue }.map { "\($0.key.rawValue)=\($0.value)" }.joined(separator: " ")
    }

    private func lines(of file: URL) throws -> [Substring] {
        guard FileManager.default.fileExists(atPath: file.path) else { return [] }
        return try String(contentsOf: file, encoding: .utf8).split(separator: "\n")
    }
}

/// One line of the `crash-load` ack log: "ack load-<submitter>-<n> <run id>".
private struct LoadAck {
    let key: String
    let submitter: Int
    let n: Int
    let runID: String

    init(_ line: String) throws {
        let fields = line.split(separator: " ")
        guard fields.count == 3, fields[0] == "ack" else { throw LoadAckError(line: line) }
        try self.init(key: String(fields[1]), runID: String(fields[2]))
    }

    init(key: String, runID: String) throws {
        let parts = key.split(separator: "-")
        guard parts.count == 3, parts[0] == "load", let submitter = Int(parts[1]), let n = Int(parts[2]) else {
            throw LoadAckError(line: key)
        }
        self.key = key
        self.submitter = submitter
        self.n = n
        self.runID = runID
    }
}

private struct LoadAckError: Error, CustomStringConvertible {
    let line: String
    var description: String { "not a crash-load ack or key: \(line)" }
}

/// `flowd-engine-harness crash-load` in a child process. Its output (READY, or why it died)
/// and its ack log are awaited without polling: a thread blocks in poll(2) on the child's
/// output and on inotify events of the ack log, and reads the log again when it changed.
private final class LoadChild: @unchecked Sendable {
    private let process = Process()
    private let pipe = Pipe()
    private let ackFile: Int32
    private let watch: Int32
    // Touched by the one thread waiting at a time, and read between waits.
    private var outputBytes = Data()
    private var outputClosed = false
    private var pendingAck = Data()
    private(set) var acks: [String] = []

    /// What the child printed so far (stdout and stderr).
    var output: String { String(decoding: outputBytes, as: UTF8.self) }

    init(directory: URL, submitters: Int) throws {
        let ackLog = directory.appendingPathComponent("ack.log").path
        // The log exists, and is watched, before the child writes anything to it.
        close(open(ackLog, O_WRONLY | O_CREAT | O_APPEND, 0o644))
        ackFile = open(ackLog, O_RDONLY | O_CLOEXEC)
        #if canImport(Glibc)
        watch = inotify_init1(Int32(IN_CLOEXEC))
        if watch >= 0 { _ = inotify_add_watch(watch, ackLog, UInt32(IN_MODIFY)) }
        #else
        watch = -1  // no inotify: the log is read again every 10 ms
        #endif
        process.executableURL = harness
        process.arguments = ["crash-load", directory.path, String(submitters)]
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
    }

    deinit {
        close(ackFile)
        if watch >= 0 { close(watch) }
    }

    /// Waits until `done` holds (true), or the child's output ends (it died) or `timeout`
    /// passes (false). On a thread of its own: poll(2) blocks.
    func wait(timeout: Duration, until done: @escaping @Sendable (LoadChild) -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        return await withCheckedContinuation { continuation in
            Thread { continuation.resume(returning: self.blockingWait(deadline: deadline, done)) }.start()
        }
    }

    private func blockingWait(deadline: ContinuousClock.Instant, _ done: (LoadChild) -> Bool) -> Bool {
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        let outputFile = pipe.fileHandleForReading.fileDescriptor
        while true {
            readAcks(&buffer)
            if done(self) { return true }
            let left = deadline - ContinuousClock.now
            if outputClosed || left <= .zero { return false }
            var fds = [pollfd(fd: outputFile, events: Int16(POLLIN), revents: 0), pollfd(fd: watch, events: Int16(POLLIN), revents: 0)]
            let milliseconds = min(left / .milliseconds(1), watch >= 0 ? 60_000 : 10)
            _ = poll(&fds, nfds_t(fds.count), Int32(milliseconds.rounded(.up)))
            if fds[1].revents != 0 { _ = read(watch, &buffer, buffer.count) }  // the events only say "changed"
            if fds[0].revents != 0 {
                let count = read(outputFile, &buffer, buffer.count)
                if count > 0 { outputBytes.append(contentsOf: buffer[0..<count]) } else { outputClosed = true }
            }
        }
    }

    /// Reads what was appended to the ack log since the last call; keeps complete lines.
    private func readAcks(_ buffer: inout [UInt8]) {
        while true {
            let count = read(ackFile, &buffer, buffer.count)
            guard count > 0 else { break }
            pendingAck.append(contentsOf: buffer[0..<count])
        }
        while let newline = pendingAck.firstIndex(of: UInt8(ascii: "\n")) {
            acks.append(String(decoding: pendingAck[pendingAck.startIndex..<newline], as: UTF8.self))
            pendingAck = Data(pendingAck[pendingAck.index(after: newline)...])
        }
    }

    /// SIGKILL (when it still runs) and reap; the signal that ended it, 0 when it exited on
    /// its own. The ack log is read to its end afterwards: every line the child wrote counts.
    @discardableResult
    func sigkill() -> Int32 {
        if process.isRunning { _ = kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        readAcks(&buffer)
        return process.terminationReason == .uncaughtSignal ? process.terminationStatus : 0
    }
}

/// The first line `pipe` carries ("" when it ends first), read on a thread of its own: the
/// reads block, and a blocked task thread would stall every other test in the process.
private func firstLine(of pipe: Pipe) async -> String {
    await withCheckedContinuation { continuation in
        Thread {
            var bytes = Data()
            while !bytes.contains(UInt8(ascii: "\n")) {
                let chunk = pipe.fileHandleForReading.availableData
                if chunk.isEmpty { break }
                bytes.append(chunk)
            }
            continuation.resume(returning: String(decoding: bytes, as: UTF8.self))
        }.start()
    }
}

/// Waits for `process` to exit, on a thread of its own (`waitUntilExit` blocks).
private func waitForExit(_ process: Process) async {
    await withCheckedContinuation { continuation in
        Thread {
            process.waitUntilExit()
            continuation.resume()
        }.start()
    }
}

/// Runs the harness to its end on a thread of its own (its output is read with blocking
/// reads); its exit status and output.
private func runToEnd(_ executable: URL, _ arguments: [String]) async throws -> (Int32, String) {
    let process = Process()
    process.executableURL = executable
    process.arguments = arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    try process.run()
    return await withCheckedContinuation { continuation in
        Thread {
            let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            continuation.resume(returning: (process.terminationStatus, output))
        }.start()
    }
}
