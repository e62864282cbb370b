import Engine
import Foundation
import Logging
import Synchronization

// What the Workflows tests share with the Engine tests (a test target cannot import another).

/// A fresh data directory per test, removed afterwards.
func withDataDirectory<T>(_ body: (URL) async throws -> T) async throws -> T {
    let directory = FileManager.default.temporaryDirectory
        .appendingPathComponent("flowd-workflows-tests-\(UUID().uuidString)", isDirectory: true)
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    return try await body(directory)
}

func makeStore(_ directory: URL) throws -> SQLiteRunStore {
    try SQLiteRunStore(directory: directory)
}

func quietLogger() -> Logger {
    var logger = Logger(label: "flowd.workflows.test")
    logger.logLevel = .critical
    return logger
}

/// Counts arrivals; waiters suspend until the count reaches their target.
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
