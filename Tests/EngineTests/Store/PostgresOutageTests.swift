@testable import Engine
import Foundation
import Synchronization
import Testing

/// A PostgreSQL server of this suite's own (tools/pg-test-cluster.sh), which it stops and starts
/// again: the shared test server stays up for the other suites.
private final class OwnCluster: Sendable {
    let directory: String
    let url: String

    private init(directory: String, url: String) {
        self.directory = directory
        self.url = url
    }

    static func start() async throws -> OwnCluster {
        let output = try #require(await script("start"), "tools/pg-test-cluster.sh start failed")
        // `export FLOWD_PG_DIR=… FLOWD_TEST_POSTGRES_URL=…`
        var values: [String: String] = [:]
        for word in output.split(whereSeparator: \.isWhitespace) {
            let parts = word.split(separator: "=", maxSplits: 1)
            if parts.count == 2 { values[String(parts[0])] = String(parts[1]) }
        }
        return OwnCluster(directory: try #require(values["FLOWD_PG_DIR"]), url: try #require(values["FLOWD_TEST_POSTGRES_URL"]))
    }

    func pause() async throws { try #require(await Self.script("pause", directory) != nil, "pause failed") }
    func resume() async throws { try #require(await Self.script("resume", directory) != nil, "resume failed") }
    func stop() async { _ = await Self.script("stop", directory) }

    /// Runs the script to its end on a thread of its own (posix_spawn and waitpid: Foundation's
    /// `Process` was seen to miss the exit of a script started from such a thread); its output,
    /// or nil when it failed.
    private static func script(_ arguments: String...) async -> String? {
        await withCheckedContinuation { continuation in
            Thread {
                let path = repositoryRoot.appendingPathComponent("tools/pg-test-cluster.sh").path
                let outputPath = FileManager.default.temporaryDirectory
                    .appendingPathComponent("flowd-pg-script-\(UUID().uuidString)").path
                defer { unlink(outputPath) }
                var actions = posix_spawn_file_actions_t()
                posix_spawn_file_actions_init(&actions)
                defer { posix_spawn_file_actions_destroy(&actions) }
                posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
                var argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
                defer { for pointer in argv { free(pointer) } }
                var pid = pid_t()
                guard posix_spawn(&pid, path, &actions, nil, &argv, environ) == 0 else {
                    return continuation.resume(returning: nil)
                }
                var status: Int32 = 0
                while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
                let output = try? String(contentsOfFile: outputPath, encoding: .utf8)
                continuation.resume(returning: status == 0 ? output : nil)
            }.start()
        }
    }
}

private let repositoryRoot = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

@Suite("PostgreSQL outages", .enabled(if: PostgresTestDatabase.isAvailable, "FLOWD_TEST_POSTGRES_URL is not set (make test starts a PostgreSQL server and sets it)"))
struct PostgresOutageTests {
    typealias F = StoreFixture

    @Test("stopped under load and started again: calls fail at once and retryably while it is down, no acknowledged run is lost, the store recovers by itself",
          .timeLimit(.minutes(3)))
    func stopAndStart() async throws {
        let cluster = try await OwnCluster.start()
        do {
            try await outage(cluster)
        } catch {
            await cluster.stop()
            throw error
        }
        await cluster.stop()
    }

    private func outage(_ cluster: OwnCluster) async throws {
        var configuration = try PostgresStoreConfiguration(url: cluster.url)
        // Far beyond the test's time limit: a call that fails while the server is down was
        // answered by the outage check, not by this timeout.
        configuration.acquireTimeout = .seconds(600)
        let store = try await PostgresRunStore(configuration: configuration)
        let policy = F.policy(limit: 1_000_000)

        // Load: submitters that go on through the outage; what was acknowledged is recorded.
        let acknowledged = Locked<[String]>([])
        let refusals = Locked<[StoreError]>([])
        let stopLoad = Locked(false)
        let load = Task {
            await withTaskGroup(of: Void.self) { group in
                for submitter in 0..<8 {
                    group.addTask {
                        var index = 0
                        while !stopLoad.withLock({ $0 }) && index < 20_000 {
                            let id = "s\(submitter)-\(index)"
                            index += 1
                            do {
                                if case .created = try await store.submit(F.submission(id), policy: policy, now: F.t0) {
                                    acknowledged.withLock { $0.append(id) }
                                }
                            } catch let error as StoreError {
                                refusals.withLock { $0.append(error) }
                                try? await Task.sleep(for: .milliseconds(20))  // a client's back-off
                            } catch {
                                Issue.record("unexpected error \(error)")
                            }
                        }
                    }
                }
            }
        }
        let progress = { () -> String in
            let refused = refusals.withLock { $0 }
            return "\(acknowledged.withLock { $0.count }) acknowledged, \(refused.count) refused"
                + (refused.last.map { ", the last refusal: \($0)" } ?? "")
        }
        // Some runs acknowledged before the outage.
        try await waitUntil("runs acknowledged before the outage", state: progress) { acknowledged.withLock { $0.count } >= 100 }

        try await cluster.pause()
        let beforeStop = acknowledged.withLock { $0.count }
        // While it is down: a retryable error, answered by the outage check (the acquire
        // timeout is 600 s), and then at once for every call.
        try await waitUntil("refusals while the server is down", state: progress) { refusals.withLock { $0.count } >= 50 }
        let error = await #expect(throws: StoreError.self) {
            try await store.submit(F.submission("during-outage"), policy: policy, now: F.t0)
        }
        #expect(error?.isRetryable == true)
        let message = error?.message ?? ""
        #expect(message.range(of: "does not answer") != nil, "\(message)")
        let refused = refusals.withLock { $0 }
        #expect(refused.allSatisfy { $0.isRetryable })

        try await cluster.resume()
        // Recovers by itself: submissions are acknowledged again.
        let afterResume = acknowledged.withLock { $0.count }
        try await waitUntil("runs acknowledged after the restart", state: progress) { acknowledged.withLock { $0.count } >= afterResume + 100 }
        stopLoad.withLock { $0 = true }
        await load.value

        // Nothing acknowledged is lost: a new handle (another process) reads every one.
        let ids = acknowledged.withLock { $0 }
        #expect(ids.count > beforeStop)
        let reader = try await PostgresRunStore(url: cluster.url)
        let stored = try await reader.listRuns(tenant: "t", filter: RunFilter(), limit: 100_000, after: nil)
        let storedIDs = Set(stored.map(\.id))
        let missing = ids.filter { !storedIDs.contains($0) }
        #expect(missing.isEmpty, "acknowledged but not stored: \(missing.prefix(10))")
        await reader.close()
        await store.close()
    }

    /// Polls `condition` every 10 ms, at most 6,000 times (60 s); `state` describes what was
    /// seen when it never held.
    private func waitUntil(_ what: String, state: () -> String, _ condition: () -> Bool) async throws {
        for _ in 0..<6_000 {
            if condition() { return }
            try await Task.sleep(for: .milliseconds(10))
        }
        Issue.record("timed out waiting for \(what): \(state())")
        throw CancellationError()
    }
}
