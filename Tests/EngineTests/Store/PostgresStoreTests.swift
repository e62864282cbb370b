@testable import Engine
import Foundation
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

@Suite("PostgreSQL store: several processes on one database", .enabled(if: PostgresTestDatabase.isAvailable, "FLOWD_TEST_POSTGRES_URL is not set (make test starts a PostgreSQL server and sets it)"))
struct PostgresAcrossProcessesTests {
    typealias F = StoreFixture

    @Test("200 concurrent submissions over two store instances against a limit of 50 admit exactly 50")
    func limitAcrossInstances() async throws {
        try await withStores(.postgres) { stores in
            let first = try await stores.open(), second = try await stores.open()
            let outcomes = try await submitConcurrently(200, to: [first, second], policy: F.policy(limit: 50)) {
                F.submission("a\($0)")
            }
            #expect(outcomes.compactMap(\.created).count == 50)
            #expect(outcomes.filter(\.isOverLimit).count == 150)
            // Every refusal saw the limit reached: the tenant's row lock serialised the checks.
            #expect(outcomes.allSatisfy { $0.created != nil || $0 == .overLimit(active: 50, limit: 50) })
            let active = try await first.listRuns(tenant: "t", filter: RunFilter(states: [.scheduled]), limit: 500, after: nil)
            #expect(active.count == 50)
        }
    }

    @Test("1,000 concurrent submissions with one idempotency key over two instances: one run, 999 replays of it")
    func keyAcrossInstances() async throws {
        try await withStores(.postgres) { stores in
            let first = try await stores.open(), second = try await stores.open()
            let outcomes = try await submitConcurrently(1000, to: [first, second], policy: F.policy()) {
                F.submission("r\($0)", key: "order-42", fingerprint: "same")
            }
            let created = outcomes.compactMap(\.created)
            #expect(created.count == 1)
            let run = try #require(created.first)
            #expect(outcomes.compactMap(\.replayed).count == 999)
            #expect(outcomes.compactMap(\.replayed).allSatisfy { $0 == run })
            #expect(try await second.listRuns(tenant: "t", filter: RunFilter(), limit: 2000, after: nil).map(\.id) == [run.id])
        }
    }

    @Test("500 concurrent submissions share transactions (fewer batches than submissions), all durable, replayed by another instance")
    func submissionsShareTransactions() async throws {
        try await withStores(.postgres) { stores in
            let store = try #require(try await stores.open() as? PostgresRunStore)
            let before = store.submitStatistics
            let outcomes = try await submitConcurrently(500, to: [store], policy: F.policy(limit: 1_000)) { i in
                F.submission("run-\(i)", key: "key-\(i)", fingerprint: "f\(i)")
            }
            let after = store.submitStatistics
            #expect(outcomes.compactMap(\.created).count == 500)
            #expect(after.submissions - before.submissions == 500)
            #expect(after.batches - before.batches < 500, "\(before) -> \(after)")
            let other = try await stores.open()
            for i in stride(from: 0, to: 500, by: 7) {
                let replay = try await other.submit(F.submission("again-\(i)", key: "key-\(i)", fingerprint: "f\(i)"),
                                                    policy: F.policy(limit: 1_000), now: F.t0)
                #expect(replay.replayed?.id == "run-\(i)")
            }
        }
    }

    @Test("claims from two instances at once never take a run twice, and together take every run")
    func claimsAcrossInstances() async throws {
        try await withStores(.postgres) { stores in
            let first = try await stores.open(), second = try await stores.open()
            for tenant in ["a", "b", "c"] {
                for i in 0..<30 {
                    try await F.create(first, F.submission("\(tenant)\(i)", tenant: tenant), now: F.t0.plus(ms: Int64(i)))
                }
            }
            let claimed = try await withThrowingTaskGroup(of: [String].self) { group in
                for (n, store) in [first, second, first, second].enumerated() {
                    group.addTask {
                        var ids: [String] = []
                        while true {
                            let batch = try await store.claim(ClaimRequest(worker: "w\(n)", maxRuns: 3, leaseDuration: .seconds(60)),
                                                              now: F.t0.plus(seconds: 1))
                            if batch.isEmpty { break }
                            ids += batch.map(\.run.id)
                        }
                        return ids
                    }
                }
                return try await group.reduce(into: []) { $0 += $1 }
            }
            #expect(claimed.count == 90)
            #expect(Set(claimed).count == 90)
            for id in ["a0", "b29", "c15"] {
                let events = try await second.events(runID: id, after: 0, limit: 10)
                #expect(events.map(\.kind) == [.runStarted])
            }
        }
    }

    @Test("start-up recovery relies on leases: a run another live process holds stays running, an expired one ends")
    func recoveryByLease() async throws {
        try await withStores(.postgres) { stores in
            let alive = try await stores.open()
            try await F.create(alive, F.submission("held"))
            try await F.create(alive, F.submission("abandoned"), now: F.t0.plus(ms: -1))
            let (abandoned, _) = try await F.claim(alive, worker: "dead", lease: .seconds(10))
            let (held, _) = try await F.claim(alive, worker: "alive", lease: .seconds(60))
            #expect([abandoned.id, held.id] == ["abandoned", "held"])

            // Another process starts 30 s later: the dead worker's lease expired, the live one's did not.
            let starting = try await stores.open()
            let recovered = try await starting.recoverInterruptedRuns(now: F.t0.plus(seconds: 30))
            #expect(recovered.map(\.run.id) == ["abandoned"])
            #expect(recovered.first?.run.state == .failed)
            #expect(recovered.first?.run.error == "the worker's lease expired (worker gone)")
            #expect(try await starting.run(id: "held", tenant: nil)?.state == .running)
            #expect(try await alive.renewLease(runID: "held", attempt: held.attempt, worker: "alive",
                                               leaseDuration: .seconds(60), now: F.t0.plus(seconds: 31)) == .held(stopRequested: false))
            _ = try #require(try await alive.finish(runID: "held", attempt: held.attempt, state: .succeeded, outputsJSON: "{}",
                                                    error: nil, now: F.t0.plus(seconds: 32)))
        }
    }

    @Test("a claim that finds a tenant's runs locked by another process's claim says it was contended; with the lock gone it claims; with nothing left it is not contended")
    func contendedClaim() async throws {
        try await withStores(.postgres) { stores in
            let first = try #require(try await stores.open() as? PostgresRunStore)
            let second = try await stores.open()
            for i in 0..<3 { try await F.create(first, F.submission("c\(i)")) }
            let request = ClaimRequest(worker: "w2", maxRuns: 10, leaseDuration: .seconds(30))
            let duringLock = try await first.withScheduledRunsLocked("t") {
                try await second.claimReportingContention(request, now: F.t0)
            }
            #expect(duringLock.runs.isEmpty)
            #expect(duringLock.contended)
            let after = try await second.claimReportingContention(request, now: F.t0)
            #expect(after.runs.map(\.run.id) == ["c0", "c1", "c2"])
            let idle = try await second.claimReportingContention(request, now: F.t0)
            #expect(idle.runs.isEmpty)
            #expect(!idle.contended)
        }
    }

    @Test("a claim does not hold its tenant's row while it claims: with the row locked elsewhere it takes the runs, then waits only to count them, and the counts stay exact")
    func claimWaitsOnlyToCount() async throws {
        try await withStores(.postgres) { stores in
            let first = try #require(try await stores.open() as? PostgresRunStore)
            let second = try await stores.open()
            for i in 0..<3 { try await F.create(first, F.submission("c\(i)")) }
            let request = ClaimRequest(worker: "w2", maxRuns: 2, leaseDuration: .seconds(30))
            let claim = Task { try await second.claimReportingContention(request, now: F.t0) }
            // With the tenant's row locked, the claim takes its runs and then waits at its
            // count (seen in pg_stat_activity: polled, at most 30 s), until the lock goes.
            try await first.withTenantRowLocked("t") {
                let deadline = ContinuousClock.now + .seconds(30)
                while try await first.integerForTests(sql: """
                    SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'UPDATE tenants%'
                    """) == 0 {
                    guard ContinuousClock.now < deadline else {
                        Issue.record("the claim never waited for the tenant's row")
                        return
                    }
                    try await Task.sleep(for: .milliseconds(10))
                }
            }
            let claimed = try await claim.value
            #expect(claimed.runs.map(\.run.id) == ["c0", "c1"])
            #expect(try await second.activeRunCounts() == ActiveRunCounts(scheduled: 1, running: 2))
            #expect(try await first.claimReportingContention(request, now: F.t0).runs.map(\.run.id) == ["c2"])
            #expect(try await second.activeRunCounts() == ActiveRunCounts(scheduled: 0, running: 3))
        }
    }

    @Test("one reaper at a time: while another process holds the reaper's lock, a pass reaps nothing; then it reaps")
    func oneReaperAtATime() async throws {
        try await withStores(.postgres) { stores in
            let first = try #require(try await stores.open() as? PostgresRunStore)
            let second = try await stores.open()
            for i in 0..<5 { try await F.create(first, F.submission("r\(i)")) }
            let policy = ReaperPolicy(scheduledTimeout: .seconds(60), runningTimeout: .seconds(600))
            let late = F.t0.plus(seconds: 120)
            let duringLock = try await first.withReaperLock {
                try await second.reap(now: late, policy: policy)
            }
            #expect(duringLock.isEmpty)
            let reaped = try await second.reap(now: late, policy: policy)
            #expect(reaped.map(\.run.id).sorted() == (0..<5).map { "r\($0)" })
            #expect(try await first.reap(now: late, policy: policy).isEmpty)
        }
    }

    @Test("two instances reaping and workers finishing 40 expired runs at once: each run ends once")
    func reapersRace() async throws {
        try await withStores(.postgres) { stores in
            let first = try await stores.open(), second = try await stores.open()
            var runs: [RunRecord] = []
            for i in 0..<40 { try await F.create(first, F.submission("r\(i)")) }
            for _ in 0..<40 { runs.append(try await F.claim(first, lease: .seconds(10)).0) }
            let late = F.t0.plus(seconds: 11)
            let policy = ReaperPolicy(scheduledTimeout: .seconds(600), runningTimeout: .seconds(600))
            let ended = try await withThrowingTaskGroup(of: [String].self) { group in
                group.addTask { try await first.reap(now: late, policy: policy).map(\.run.id) }
                group.addTask { try await second.reap(now: late, policy: policy).map(\.run.id) }
                for (i, run) in runs.enumerated() {
                    let store = i % 2 == 0 ? first : second
                    group.addTask {
                        try await store.finish(runID: run.id, attempt: run.attempt, state: .succeeded, outputsJSON: "{}",
                                               error: nil, now: late).map { [$0.run.id] } ?? []
                    }
                }
                return try await group.reduce(into: []) { $0 += $1 }
            }
            // Reaped by one reaper or finished by its worker: never both, never twice.
            let leftover = try await first.reap(now: late, policy: policy).map(\.run.id)
            #expect((ended + leftover).sorted() == runs.map(\.id).sorted())
            for run in runs {
                #expect(try await second.events(runID: run.id, after: 0, limit: 10).map(\.kind) == [.runStarted, .runFinished])
            }
        }
    }
}

@Suite("PostgreSQL store: opening, schema and connection errors", .enabled(if: PostgresTestDatabase.isAvailable, "FLOWD_TEST_POSTGRES_URL is not set (make test starts a PostgreSQL server and sets it)"))
struct PostgresOpeningTests {
    @Test("a database migrated by a newer flowd is refused with an error naming both versions")
    func newerSchemaRefused() async throws {
        try await withStores(.postgres) { stores in
            let store = try #require(try await stores.open() as? PostgresRunStore)
            try await store.execute(sql: "INSERT INTO flowd_schema (version, name) VALUES (99, 'from the future')")
            let error = try await #require(throws: StoreError.self) { try await stores.open() }
            #expect(error.description.contains("schema version 99, newer than this flowd's \(PostgresRunStore.schemaVersion)"),
                    "\(error)")
        }
    }

    @Test("a store URL without a host, user or database, or with another scheme, is refused naming the problem")
    func badURLs() async throws {
        for (url, problem) in [("mysql://u@h/db", "scheme"), ("postgres://h:5432/db", "no user"),
                               ("postgres://u@h:5432", "no database"), ("postgres://u@h:5432/db?sslmode=maybe", "sslmode"),
                               ("postgres://u@h:99999/db", "port")] {
            let error = try #require(throws: StoreError.self) { try PostgresStoreConfiguration(url: url) }
            #expect(error.code == .invalidArgument)
            #expect(error.message.contains(problem), "\(url): \(error)")
        }
        let parsed = try PostgresStoreConfiguration(url: "postgresql://me:p%40ss@db.example:6543/flowd?sslmode=require")
        #expect(parsed == PostgresStoreConfiguration(host: "db.example", port: 6543, username: "me", password: "p@ss",
                                                     database: "flowd", tls: .require))
        #expect(!parsed.redacted.contains("p@ss"))
    }

    @Test("a wrong password is reported as a refused login, not retried")
    func wrongPassword() async throws {
        var configuration = try PostgresStoreConfiguration(url: try #require(PostgresTestDatabase.baseURL))
        configuration.username = "flowd_password_check"
        configuration.password = "wrong-password"
        let error = try await #require(throws: StoreError.self) { try await PostgresRunStore(configuration: configuration) }
        #expect(error.message.contains("refused the login of user flowd_password_check"), "\(error)")
        #expect(error.message.contains("password authentication failed"), "\(error)")
        #expect(!error.isRetryable)
        configuration.password = "right-password"
        let connector = try await PostgresConnector(configuration: configuration, logger: quietLogger())
        await connector.close()
    }

    @Test("an unknown database is named in the error")
    func unknownDatabase() async throws {
        var configuration = try PostgresStoreConfiguration(url: try #require(PostgresTestDatabase.baseURL))
        configuration.database = "flowd_no_such_database"
        let error = try await #require(throws: StoreError.self) { try await PostgresRunStore(configuration: configuration) }
        #expect(error.message.contains("flowd_no_such_database"), "\(error)")
    }

    @Test("nothing listening on the port: a connection error naming the address, at once")
    func refused() async throws {
        let socket = try LoopbackSocket(listening: false)
        var configuration = PostgresStoreConfiguration(host: "127.0.0.1", port: socket.port, username: "flowd",
                                                      password: nil, database: "flowd", tls: .disable)
        configuration.connectTimeout = .seconds(30)  // a refusal must not wait for it
        let error = try await #require(throws: StoreError.self) { try await PostgresRunStore(configuration: configuration) }
        #expect(error.message.contains("cannot connect to PostgreSQL at 127.0.0.1:\(socket.port)"), "\(error)")
        #expect(error.isRetryable)
    }

    @Test("a peer that accepts the connection and never answers: an error within the connect timeout, no hang")
    func silentPeer() async throws {
        let socket = try LoopbackSocket(listening: true)
        var configuration = PostgresStoreConfiguration(host: "127.0.0.1", port: socket.port, username: "flowd",
                                                      password: nil, database: "flowd", tls: .disable)
        configuration.connectTimeout = .milliseconds(200)
        let error = try await #require(throws: StoreError.self) { try await PostgresRunStore(configuration: configuration) }
        // postgres-nio's connect timeout or the store's own bound on the login, whichever fires.
        #expect(error.message.contains("127.0.0.1:\(socket.port)"), "\(error)")
        #expect(error.message.contains("timeout") || error.message.contains("did not answer within"), "\(error)")
        #expect(error.isRetryable)
    }

    @Test("every pooled connection busy: a call fails with a retryable error after acquireTimeout, and runs nothing",
          .timeLimit(.minutes(1)))
    func poolExhausted() async throws {
        var configuration = try PostgresStoreConfiguration(url: try #require(PostgresTestDatabase.baseURL))
        configuration.maximumConnections = 1
        configuration.acquireTimeout = .milliseconds(200)
        let connector = try await PostgresConnector(configuration: configuration, logger: .init(label: "test"))
        // The pool's one connection is opened first (on a busy machine opening it may take longer
        // than the 200 ms a waiting call is given), so that the holder leases it at once.
        var opened = false
        for _ in 0..<100 where !opened {
            do {
                try await connector.execute("SELECT 1")
                opened = true
            } catch let error as StoreError where error.isRetryable {}
        }
        try #require(opened, "no connection to PostgreSQL in 100 attempts")
        let (holding, release) = (Gate(), Gate())
        // The only connection stays leased until the second call has failed.
        let holder = Task {
            do {
                try await connector.withConnection { _ in
                    holding.open()
                    await release.wait()
                }
            } catch {
                holding.open()  // never leased: the test fails below instead of waiting here
                throw error
            }
        }
        await holding.wait()
        let ran = Counter()
        let error = try await #require(throws: StoreError.self) {
            try await connector.withConnection { _ in ran.increment() }
        }
        #expect(error.code == .storage && error.isRetryable, "\(error)")
        #expect(error.message.contains("no PostgreSQL connection") && error.message.contains("every connection busy"), "\(error)")
        #expect(ran.value == 0)
        release.open()
        try await holder.value
        await connector.close()
    }

    @Test("a statement running past statementTimeout is aborted by the server with an error, not waited for",
          .timeLimit(.minutes(1)))
    func statementTimeout() async throws {
        var configuration = try PostgresStoreConfiguration(url: try #require(PostgresTestDatabase.baseURL))
        configuration.statementTimeout = .milliseconds(200)
        let connector = try await PostgresConnector(configuration: configuration, logger: .init(label: "test"))
        // An hour-long sleep: only the server's statement_timeout can end it within the limit.
        await #expect(throws: StoreError.self) { try await connector.execute("SELECT pg_sleep(3600)") }
        // The connection is usable afterwards.
        try await connector.execute("SELECT 1")
        await connector.close()
    }

    @Test("after close, calls fail with a non-retryable closed error")
    func closed() async throws {
        try await withStores(.postgres) { stores in
            let store = try await stores.open()
            try await stores.close(store)
            let error = try await #require(throws: StoreError.self) { try await store.run(id: "x", tenant: nil) }
            #expect(error.code == .closed && !error.isRetryable)
        }
    }
}

/// A TCP socket bound to a free port on 127.0.0.1: listening (the kernel completes connections
/// that nobody ever answers) or not (connections are refused). Closed on deinit.
final class LoopbackSocket {
    let port: Int
    private let descriptor: Int32

    init(listening: Bool) throws {
        #if canImport(Glibc)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #else
        let fd = socket(AF_INET, SOCK_STREAM, 0)
        #endif
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard fd >= 0, bound == 0, !listening || listen(fd, 16) == 0 else {
            if fd >= 0 { close(fd) }
            throw StoreError(code: .other, message: "could not bind a loopback socket: errno \(errno)")
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        descriptor = fd
        port = Int(UInt16(bigEndian: address.sin_port))
    }

    deinit { close(descriptor) }
}
