// A test driver for the Engine on a real data directory (not shipped): the crash tests run it.
//
//   flowd-engine-harness crash-child DIR     submit and execute runs until killed; log every
//                                            acknowledged submission and every execution start
//   flowd-engine-harness crash-load DIR SUBMITTERS
//                                            like crash-child, with SUBMITTERS concurrent
//                                            submitters as fast as they can (idempotency key
//                                            load-<submitter>-<n>, inputs {"s":submitter,"n":n});
//                                            logs "ack <key> <run id>" once submit returned
//   flowd-engine-harness recover DIR         start on DIR (recovery), run what is left, then
//                                            print a summary line and exit
//
// Logs are appended with write(2), so a SIGKILL loses nothing that was written.
import Engine
import Foundation
import Logging

let tenant = "crash"

/// Appends lines to a file with plain write(2) calls (no user-space buffer to lose on SIGKILL).
final class LineLog: @unchecked Sendable {
    private let descriptor: Int32
    private let lock = NSLock()

    init(path: String) {
        descriptor = open(path, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        precondition(descriptor >= 0, "cannot open \(path)")
    }

    func append(_ line: String) {
        let bytes = Array((line + "\n").utf8)
        lock.lock()
        defer { lock.unlock() }
        _ = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
    }
}

/// Logs each execution start, emits two node events with a short pause, then succeeds.
struct LoggingExecutor: WorkflowExecutor {
    let log: LineLog

    func execute(_ run: RunRecord, context: ExecutionContext) async throws -> ExecutionResult {
        log.append("exec \(run.id) \(run.attempt)")
        for step in 0..<2 {
            try await Task.sleep(for: .milliseconds(3))
            try await context.emit([
                NewEvent(kind: .nodeStarted, payloadJSON: #"{"node":"s\#(step)"}"#),
                NewEvent(kind: .nodeFinished, payloadJSON: #"{"node":"s\#(step)"}"#),
            ], steps: 1)
        }
        return .succeeded(outputsJSON: #"{"done":true}"#)
    }
}

func makeEngine(_ directory: String, executor: any WorkflowExecutor, workers: Int) throws -> Engine {
    var logger = Logger(label: "flowd.harness")
    logger.logLevel = .error
    var configuration = EngineConfiguration()
    configuration.workerCount = workers
    configuration.reaperEnabled = false
    let store = try SQLiteRunStore(directory: URL(fileURLWithPath: directory))
    return Engine(store: store, executor: executor, configuration: configuration, logger: logger)
}

func crashChild(_ directory: String) async throws {
    let engine = try makeEngine(directory, executor: LoggingExecutor(log: LineLog(path: directory + "/exec.log")), workers: 2)
    let acks = LineLog(path: directory + "/ack.log")
    try await engine.setConcurrencyLimit(tenant: tenant, limit: 1_000_000)
    try await engine.start()
    print("READY")
    fflush(nil)
    var index = 0
    while true {
        index += 1
        let result = try await engine.submit(RunRequest(
            tenant: tenant, workflow: "crash", workflowVersion: "v1", inputsJSON: #"{"i":\#(index)}"#,
            user: "harness", trigger: .apiAsync, transport: .grpc, idempotencyKey: "crash-\(index)"))
        acks.append("ack \(result.run.id)")
    }
}

/// The request of submission `n` (1, 2, ...) of `submitter` in `crash-load`. CrashTests
/// re-submits the same requests (same workflow, user and inputs) to check the replays.
func loadRequest(submitter: Int, n: Int) -> RunRequest {
    RunRequest(tenant: tenant, workflow: "load", workflowVersion: "v1", inputsJSON: #"{"s":\#(submitter),"n":\#(n)}"#,
               user: "harness", trigger: .apiAsync, transport: .grpc, idempotencyKey: "load-\(submitter)-\(n)")
}

/// `submitters` concurrent tasks submitting as fast as they can (each one submission at a time),
/// and two workers executing, until killed: the load under which concurrent submissions share
/// a commit. A submission is logged as acknowledged only after `Engine.submit` returned.
func crashLoad(_ directory: String, submitters: Int) async throws {
    let engine = try makeEngine(directory, executor: LoggingExecutor(log: LineLog(path: directory + "/exec.log")), workers: 2)
    let acks = LineLog(path: directory + "/ack.log")
    try await engine.setConcurrencyLimit(tenant: tenant, limit: 1_000_000)
    try await engine.start()
    print("READY")
    fflush(nil)
    try await withThrowingTaskGroup(of: Void.self) { group in
        for submitter in 0..<submitters {
            group.addTask {
                var n = 0
                while true {
                    n += 1
                    let request = loadRequest(submitter: submitter, n: n)
                    let result = try await engine.submit(request)
                    acks.append("ack \(request.idempotencyKey!) \(result.run.id)")
                }
            }
        }
        try await group.waitForAll()
    }
}

func recover(_ directory: String) async throws {
    let store = try SQLiteRunStore(directory: URL(fileURLWithPath: directory))
    let engine = try makeEngine(directory, executor: LoggingExecutor(log: LineLog(path: directory + "/exec.log")), workers: 2)
    try await engine.start()
    let active = RunFilter(states: [.scheduled, .running])
    while true {
        let (pending, _) = try await engine.list(tenant: tenant, filter: active, pageSize: 100, after: nil)
        if pending.isEmpty { break }
        for run in pending { _ = try await engine.waitForCompletion(id: run.id, tenant: tenant) }
    }
    await engine.shutdown()
    var counts: [String: Int] = [:]
    var cursor: RunCursor?
    repeat {
        let page = try await store.listRuns(tenant: tenant, filter: RunFilter(), limit: 500, after: cursor)
        for run in page { counts[run.state.rawValue, default: 0] += 1 }
        cursor = page.count == 500 ? page.last.map { RunCursor(createdAt: $0.createdAt, id: $0.id) } : nil
    } while cursor != nil
    let summary = counts.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
    print("RECOVERED \(summary)")
}


let arguments = CommandLine.arguments
switch (arguments.count > 1 ? arguments[1] : "", arguments.count) {
case ("crash-child", 3): try await crashChild(arguments[2])
case ("crash-load", 4): try await crashLoad(arguments[2], submitters: Int(arguments[3])!)
case ("recover", 3): try await recover(arguments[2])
default:
    FileHandle.standardError.write(Data("usage: flowd-engine-harness crash-child DIR | crash-load DIR SUBMITTERS | recover DIR\n".utf8))
    exit(2)
}
