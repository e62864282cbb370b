import Foundation
import Engine
import Logging
import NIOCore
import RPCServer

/// Starts a real server on 127.0.0.1:0 for the duration of `body`.
/// `http` answers HTTP/1.1 (and h2c `/v1/`) requests on the same port; with `metrics`, the
/// server records there and answers `GET /metrics`.
func withTestServer<T: Sendable>(
    services: [any RegistrableRPCService],
    http: (any HTTPRequestHandling)? = nil, httpConfiguration: HTTP1Configuration = HTTP1Configuration(),
    metrics: ServerMetrics? = nil,
    configure: (inout ServerConfiguration) -> Void = { _ in },
    _ body: (GRPCServer, Int) async throws -> T
) async throws -> T {
    var configuration = ServerConfiguration()
    configuration.host = "127.0.0.1"
    configuration.port = 0
    configuration.eventLoopThreads = 2
    configuration.gracefulShutdownTimeout = .seconds(5)
    configure(&configuration)
    var logger = Logger(label: "flowd.test")
    logger.logLevel = .warning
    let server = GRPCServer(configuration: configuration, services: services, http: http,
                            httpConfiguration: httpConfiguration, metrics: metrics, logger: logger)
    let address = try await server.start()
    do {
        let result = try await body(server, address.port!)
        await server.shutDownGracefully()
        return result
    } catch {
        await server.shutDownGracefully()
        throw error
    }
}

/// The repository root (tests run tools from it).
let repositoryRoot: URL = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// A child process whose output lines can be awaited while it runs.
final class ChildProcess: @unchecked Sendable {
    private let process = Process()
    private let output = Pipe()
    private let lock = NSLock()
    // Guarded by `lock`.
    private var lines: [String] = []
    private var partial = Data()
    private var outputClosed = false
    private var exited = false
    private var lineWaiters: [(id: Int, prefix: String, continuation: CheckedContinuation<Bool, Never>)] = []
    private var nextWaiterID = 0
    private var exitWaiters: [CheckedContinuation<Void, Never>] = []

    /// Starts `arguments[0]` (looked up on PATH) in the repository root; stderr goes to the
    /// same pipe as stdout.
    init(_ arguments: [String]) throws {
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        process.currentDirectoryURL = repositoryRoot
        process.standardOutput = output
        process.standardError = output
        process.terminationHandler = { [weak self] _ in self?.noteExit() }
        try process.run()
        // A thread with blocking reads: FileHandle.readabilityHandler (a DispatchSource in
        // corelibs Foundation) was seen to miss output under heavily parallel test runs.
        let reader = output.fileHandleForReading
        Thread { [weak self] in
            while true {
                let data = reader.availableData  // blocks until data or EOF
                self?.consume(data)
                if data.isEmpty { return }
            }
        }.start()
    }

    private func consume(_ data: Data) {
        lock.lock()
        if data.isEmpty {
            outputClosed = true
            if !partial.isEmpty { lines.append(String(decoding: partial, as: UTF8.self)) }
            partial = Data()
        } else {
            partial.append(data)
            while let newline = partial.firstIndex(of: UInt8(ascii: "\n")) {
                lines.append(String(decoding: partial[partial.startIndex..<newline], as: UTF8.self))
                partial = Data(partial[partial.index(after: newline)...])
            }
        }
        var ready: [(CheckedContinuation<Bool, Never>, Bool)] = []
        lineWaiters.removeAll { waiter in
            let found = lines.contains { $0.hasPrefix(waiter.prefix) }
            if found || outputClosed { ready.append((waiter.continuation, found)) }
            return found || outputClosed
        }
        lock.unlock()
        for (continuation, found) in ready { continuation.resume(returning: found) }
    }

    private func noteExit() {
        lock.lock()
        exited = true
        let waiters = exitWaiters
        exitWaiters = []
        lock.unlock()
        for waiter in waiters { waiter.resume() }
    }

    /// Whether it still runs, and every line printed so far.
    /// The child's process id (`env` execs the command, so it is the command's).
    var pid: Int32 { process.processIdentifier }

    func snapshot() -> (running: Bool, output: String) {
        lock.withLock { (process.isRunning, lines.joined(separator: "\n")) }
    }

    /// A child whose test ended without waiting for it is killed: a survivor would hold the
    /// test run's output open (and `swift test` waiting for its end).
    deinit {
        if process.isRunning { Foundation.kill(process.processIdentifier, SIGKILL) }
    }

    /// Sends SIGTERM.
    func terminate() {
        process.terminate()
    }

    /// SIGKILL: the process dies at once, with no chance to clean up (a crash).
    func kill() {
        _ = Foundation.kill(process.processIdentifier, SIGKILL)
    }

    /// Waits until the child prints a line starting with `prefix`; false if its output ends
    /// first or `timeout` passes.
    func waitForLine(startingWith prefix: String, timeout: Duration = .seconds(60)) async -> Bool {
        let id = lock.withLock { () -> Int in
            nextWaiterID += 1
            return nextWaiterID
        }
        let timer = Task { [weak self] in
            try? await Task.sleep(for: timeout)
            self?.expireWaiter(id)
        }
        defer { timer.cancel() }
        return await withCheckedContinuation { continuation in
            lock.lock()
            let found = lines.contains { $0.hasPrefix(prefix) }
            if found || outputClosed {
                lock.unlock()
                continuation.resume(returning: found)
                return
            }
            lineWaiters.append((id, prefix, continuation))
            lock.unlock()
        }
    }

    private func expireWaiter(_ id: Int) {
        let waiter: CheckedContinuation<Bool, Never>? = lock.withLock {
            guard let index = lineWaiters.firstIndex(where: { $0.id == id }) else { return nil }
            return lineWaiters.remove(at: index).continuation
        }
        waiter?.resume(returning: false)
    }

    private func waitForExit() async {
        await withCheckedContinuation { continuation in
            lock.lock()
            if exited { lock.unlock(); continuation.resume(); return }
            exitWaiters.append(continuation)
            lock.unlock()
        }
    }

    /// Waits for the child to exit, terminating it after `timeout`, and returns its exit
    /// status and every line it printed.
    func finish(timeout: Duration) async -> (status: Int32, output: String) {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.waitForExit() }
            group.addTask {
                try? await Task.sleep(for: timeout)
                if self.process.isRunning { self.process.terminate() }
            }
            await group.next()
            group.cancelAll()
        }
        _ = await waitForLine(startingWith: "\u{0}")  // returns once the pipe reached EOF
        let output = lock.withLock { lines.joined(separator: "\n") }
        return (process.terminationStatus, output)
    }
}

/// A real Engine on a temporary SQLite store with the scripted test executor, and the API keys
/// the end-to-end suites use: tenants acme, globex and limited (all bound to `echo`) and a
/// revoked acme key.
struct APIFixture: Sendable {
    let store: SQLiteRunStore
    let engine: Engine
    let authenticator: Authenticator
    let acme: IssuedAPIKey
    let globex: IssuedAPIKey
    let limited: IssuedAPIKey
    let revoked: IssuedAPIKey

    /// The key arguments every suite script takes.
    var keyArguments: [String] {
        ["--key", acme.key, "--other-tenant-key", globex.key, "--limit-key", limited.key, "--revoked-key", revoked.key]
    }

    /// `metrics`: the store and the Engine record there (the server's `ServerMetrics`).
    static func with<T: Sendable>(configuration: EngineConfiguration = EngineConfiguration(),
                                  metrics: ServerMetrics? = nil,
                                  _ body: (APIFixture) async throws -> T) async throws -> T {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("flowd-api-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        var logger = Logger(label: "flowd.test.engine")
        logger.logLevel = .critical
        let store: SQLiteRunStore
        let engine: Engine
        if let metrics {
            store = try SQLiteRunStore(directory: directory, metrics: metrics.factory)
            engine = Engine(store: store, executor: ScriptedExecutor(), workflows: EchoResolver(), configuration: configuration,
                            logger: logger, metrics: metrics.factory)
        } else {
            store = try SQLiteRunStore(directory: directory)
            engine = Engine(store: store, executor: ScriptedExecutor(), workflows: EchoResolver(), configuration: configuration,
                            logger: logger)
        }
        try await engine.start()
        let revoked = try await store.createKey(tenant: "acme", workflow: "echo", now: Date())
        _ = try await store.revokeKey(id: revoked.record.id, now: Date())
        let fixture = APIFixture(
            store: store, engine: engine, authenticator: Authenticator(keys: store),
            acme: try await store.createKey(tenant: "acme", workflow: "echo", now: Date()),
            globex: try await store.createKey(tenant: "globex", workflow: "echo", now: Date()),
            limited: try await store.createKey(tenant: "limited", workflow: "echo", now: Date()),
            revoked: revoked)
        do {
            let result = try await body(fixture)
            await engine.shutdown(gracePeriod: .seconds(1))
            return result
        } catch {
            await engine.shutdown(gracePeriod: .seconds(1))
            throw error
        }
    }
}
