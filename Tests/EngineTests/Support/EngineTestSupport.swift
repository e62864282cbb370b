import Engine
import Foundation
import Logging
import Synchronization
import Testing

/// A fresh data directory per test, removed afterwards.
func withDataDirectory<T>(_ body: (URL) async throws -> T) async throws -> T {
    let directory = FileManager.default.temporaryDirectory
        .appendingPathComponent("flowd-engine-tests-\(UUID().uuidString)", isDirectory: true)
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    return try await body(directory)
}

func makeStore(_ directory: URL) throws -> SQLiteRunStore {
    try SQLiteRunStore(directory: directory)
}

func request(tenant: String = "t1", inputs: String = #"{"n":1}"#, key: String? = nil,
             trigger: Trigger = .apiAsync) -> RunRequest {
    RunRequest(tenant: tenant, workflow: "wf", workflowVersion: "v1", inputsJSON: inputs, user: "u",
               trigger: trigger, transport: .grpc, idempotencyKey: key)
}

func quietLogger() -> Logger {
    var logger = Logger(label: "flowd.engine.test")
    logger.logLevel = .critical
    return logger
}

/// An async gate: waiters suspend until `open()`.
final class Gate: Sendable {
    private let state = Mutex<(open: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    func open() {
        let waiters = state.withLock { state in
            state.open = true
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    func wait() async {
        await withCheckedContinuation { continuation in
            let passNow = state.withLock { state in
                if state.open { return true }
                state.waiters.append(continuation)
                return false
            }
            if passNow { continuation.resume() }
        }
    }
}

/// Counts up and lets tasks wait until the count reaches a value.
final class Counter: Sendable {
    private let state = Mutex<(value: Int, waiters: [(Int, CheckedContinuation<Void, Never>)])>((0, []))

    var value: Int { state.withLock { $0.value } }

    func increment() {
        let ready = state.withLock { state in
            state.value += 1
            let value = state.value
            let ready = state.waiters.filter { $0.0 <= value }.map(\.1)
            state.waiters.removeAll { $0.0 <= value }
            return ready
        }
        for waiter in ready { waiter.resume() }
    }

    func wait(untilAtLeast target: Int) async {
        await withCheckedContinuation { continuation in
            let passNow = state.withLock { state in
                if state.value >= target { return true }
                state.waiters.append((target, continuation))
                return false
            }
            if passNow { continuation.resume() }
        }
    }
}

/// A minimal executor for tests (the real node executors come with the workflows issue):
/// emits `steps` node events, waiting on `gate` first when one is given, and records the
/// order in which runs started.
final class TestExecutor: WorkflowExecutor {
    let gate: Gate?
    let steps: Int
    let started = Counter()
    let finished = Counter()
    private let order = Mutex<[String]>([])
    /// Called before each step with the step number; lets a test pace a run.
    let beforeStep: (@Sendable (Int) async -> Void)?

    init(gate: Gate? = nil, steps: Int = 1, beforeStep: (@Sendable (Int) async -> Void)? = nil) {
        self.gate = gate
        self.steps = steps
        self.beforeStep = beforeStep
    }

    var startOrder: [String] { order.withLock { $0 } }

    func execute(_ run: RunRecord, context: ExecutionContext) async throws -> ExecutionResult {
        order.withLock { $0.append(run.id) }
        started.increment()
        defer { finished.increment() }
        if let gate { await gate.wait() }
        try Task.checkCancellation()
        for step in 0..<steps {
            if let beforeStep { await beforeStep(step) }
            try Task.checkCancellation()
            try await context.emit([
                NewEvent(kind: .nodeStarted, payloadJSON: #"{"node":"n\#(step)"}"#),
                NewEvent(kind: .nodeFinished, payloadJSON: #"{"node":"n\#(step)","status":"succeeded"}"#),
            ], steps: 1)
        }
        return .succeeded(outputsJSON: #"{"ok":true}"#)
    }
}

/// An executor that never finishes on its own; it ends only when cancelled.
struct ForeverExecutor: WorkflowExecutor {
    let started: Counter

    func execute(_ run: RunRecord, context: ExecutionContext) async throws -> ExecutionResult {
        started.increment()
        try await Task.sleep(for: .seconds(3600))
        return .succeeded(outputsJSON: "{}")
    }
}
