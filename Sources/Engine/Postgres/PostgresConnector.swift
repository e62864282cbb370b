import Foundation
import Logging
import PostgresNIO
import Synchronization

/// The PostgreSQL connection pool of a store: opening (a probe connection first, so that a bad
/// address, password or database fails at once with a clear message), leasing a connection
/// within `acquireTimeout`, transactions, outages, and the mapping of postgres-nio's errors to
/// `StoreError`.
///
/// Outages: the pool retries its connections in the background and a lease would just wait.
/// A lease still waiting after `outageCheckDelay`, or a call that lost its connection, makes the
/// connector try one direct connection (one check at a time, shared by every caller). When the
/// server does not answer:
///
/// ```
///  reachable ──(check fails)──▶ unreachable: every call fails at once (retryable)
///      ▲                              │ a check every outageRetryInterval
///      └──────────(check succeeds)────┘
/// ```
final class PostgresConnector: Sendable {
    let configuration: PostgresStoreConfiguration
    let logger: Logger
    private let client: PostgresClient
    private let runTask: Task<Void, Never>
    private let closed = Atomic<Bool>(false)
    /// Latency of `transaction`s.
    let metrics: StoreMetrics?
    private let reachability = Mutex(Reachability())

    private struct Reachability {
        var unreachable = false
        /// The check in flight, which every caller that asks meanwhile shares.
        var check: Task<Bool, Never>?
        /// Checks again while unreachable.
        var retry: Task<Void, Never>?
    }

    /// Connects once (within `connectTimeout`) to check the address, the login and the
    /// database, then starts the pool. Throws a `StoreError` whose message names the problem.
    init(configuration: PostgresStoreConfiguration, logger: Logger, metrics: StoreMetrics? = nil) async throws {
        self.configuration = configuration
        self.logger = logger
        self.metrics = metrics
        try await Self.probe(configuration, logger: logger)
        var client = PostgresClient.Configuration(
            host: configuration.host, port: configuration.port, username: configuration.username,
            password: configuration.password, database: configuration.database, tls: Self.tls(configuration.tls))
        client.options.connectTimeout = configuration.connectTimeout
        client.options.maximumConnections = max(1, configuration.maximumConnections)
        client.options.additionalStartupParameters = Self.startupParameters(configuration)
        let pool = PostgresClient(configuration: client, backgroundLogger: logger)
        self.client = pool
        runTask = Task { await pool.run() }
    }

    deinit {
        runTask.cancel()
        reachability.withLock { $0.retry?.cancel() }
    }

    /// Closes the pool; later calls fail.
    func close() async {
        closed.store(true, ordering: .relaxed)
        reachability.withLock { $0.retry?.cancel() }
        runTask.cancel()
        await runTask.value
    }

    // MARK: Outages

    /// The error every call gets at once while the server does not answer.
    private var outageError: StoreError {
        StoreError(code: .storage, message: "PostgreSQL at \(configuration.host):\(configuration.port) does not answer; retry shortly")
    }

    /// Whether the server answers a direct connection now. One check at a time: callers that
    /// ask while one runs share its answer. A failed check starts the retries.
    private func checkReachable() async -> Bool {
        let check = reachability.withLock { state -> Task<Bool, Never> in
            if let check = state.check { return check }
            let check = Task { [configuration] in
                do {
                    try await Self.probe(configuration, logger: Self.silent)
                    return true
                } catch {
                    return false
                }
            }
            state.check = check
            return check
        }
        let answers = await check.value
        let (declared, recovered) = reachability.withLock { state -> (Bool, Bool) in
            if state.check == check { state.check = nil }
            let was = state.unreachable
            state.unreachable = !answers
            if !answers && state.retry == nil && !closed.load(ordering: .relaxed) {
                state.retry = Task { [weak self] in await self?.retryUntilReachable() }
            }
            return (!was && !answers, was && answers)
        }
        if declared {
            logger.error("PostgreSQL does not answer: calls fail at once until it does again",
                         metadata: ["server": "\(configuration.host):\(configuration.port)"])
        }
        if recovered {
            logger.notice("PostgreSQL answers again", metadata: ["server": "\(configuration.host):\(configuration.port)"])
        }
        return answers
    }

    private func retryUntilReachable() async {
        while !Task.isCancelled {
            do { try await Task.sleep(for: configuration.outageRetryInterval) } catch { break }
            if await checkReachable() { break }
        }
        reachability.withLock { $0.retry = nil }
    }

    /// A call lost its connection: is the server gone?
    private func noteConnectionLost(_ error: any Error) {
        guard let error = error as? PSQLError else { return }
        switch error.code {
        case .connectionError, .serverClosedConnection, .uncleanShutdown:
            Task { _ = await checkReachable() }
        default:
            break
        }
    }

    private static func tls(_ mode: PostgresStoreConfiguration.TLSMode) -> PostgresClient.Configuration.TLS {
        switch mode {
        case .disable: .disable
        case .prefer: .prefer(.makeClientConfiguration())
        case .require: .require(.makeClientConfiguration())
        }
    }

    private static func startupParameters(_ configuration: PostgresStoreConfiguration) -> [(String, String)] {
        let ms = SQLiteRunStore.milliseconds(configuration.statementTimeout)
        return [("application_name", "flowd"), ("statement_timeout", "\(ms)"), ("TimeZone", "UTC")]
    }

    /// One connection, closed again at once: the errors a pool would only retry in the
    /// background (refused, unknown host, wrong password, no such database) surface here.
    private static func probe(_ configuration: PostgresStoreConfiguration, logger: Logger) async throws {
        var connection = PostgresConnection.Configuration(
            host: configuration.host, port: configuration.port, username: configuration.username,
            password: configuration.password, database: configuration.database,
            tls: {
                switch configuration.tls {
                case .disable: return .disable
                case .prefer: return .prefer(try! .init(configuration: .makeClientConfiguration()))
                case .require: return .require(try! .init(configuration: .makeClientConfiguration()))
                }
            }())
        let (seconds, attoseconds) = configuration.connectTimeout.components
        connection.options.connectTimeout = .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
        connection.options.additionalStartupParameters = startupParameters(configuration)
        let eventLoop = PostgresClient.defaultEventLoopGroup.next()
        let settings = connection
        let abandoned = Locked(false)
        // connectTimeout bounds the TCP connect; a peer that accepts and then says nothing is
        // bounded here too (the same timeout again for TLS and the login).
        let opened: PostgresConnection
        do {
            opened = try await firstOf(timeout: configuration.connectTimeout * 2, {
                let opened = try await PostgresConnection.connect(on: eventLoop, configuration: settings, id: 0, logger: logger)
                if abandoned.withLock({ $0 }) { try? await opened.close() }
                return opened
            }, whenTimedOut: {
                abandoned.withLock { $0 = true }
                return true
            }) {
                StoreError(code: .storage, message: "PostgreSQL at \(configuration.host):\(configuration.port) did not answer within \(SQLiteRunStore.describe(configuration.connectTimeout * 2))")
            }
        } catch {
            throw describeOpening(error, configuration)
        }
        try? await opened.close()
    }

    // MARK: Leases and transactions

    /// Runs `body` on a leased connection. Waiting for the lease is bounded by `acquireTimeout`
    /// (then a retryable `StoreError`, and `body` never runs); once leased, `body` runs to its end
    /// (the server's `statement_timeout` bounds each statement).
    func withConnection<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        try Task.checkCancellation()
        if closed.load(ordering: .relaxed) { throw StoreError(code: .closed, message: "the PostgreSQL store was closed") }
        if reachability.withLock({ $0.unreachable }) { throw outageError }
        let phase = Locked(LeasePhase.waiting)
        let client = self.client
        let configuration = self.configuration
        do {
            return try await firstOf(timeout: configuration.acquireTimeout, {
                try await client.withConnection { connection in
                    let proceed = phase.withLock { phase in
                        guard phase == .waiting else { return false }
                        phase = .leased
                        return true
                    }
                    guard proceed else { throw CancellationError() }
                    return try await body(connection)
                }
            }, whenTimedOut: {
                phase.withLock { phase in
                    guard phase == .waiting else { return false }
                    phase = .timedOut
                    return true
                }
            }, timedOut: {
                StoreError(code: .storage,
                           message: "no PostgreSQL connection to \(configuration.host):\(configuration.port) within \(SQLiteRunStore.describe(configuration.acquireTimeout)) (server unreachable or every connection busy)")
            }, check: (after: configuration.outageCheckDelay, { [weak self] in
                guard let self, await !self.checkReachable() else { return nil }
                return self.outageError
            }))
        } catch {
            noteConnectionLost(error)
            let mapped = Self.mapping(error)
            // An error this file does not know, e.g. the pool's own "connection creation
            // circuit breaker tripped" after minutes of failed connects: when the server does
            // not answer, it is the outage, and retryable like every other call meanwhile.
            if let unknown = mapped as? StoreError, unknown.code == .other, await !checkReachable() {
                throw StoreError(code: .storage, message: outageError.message, cause: error)
            }
            throw mapped
        }
    }

    /// `body` in one READ COMMITTED transaction on a leased connection (see `withConnection`).
    func transaction<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        let (logger, metrics) = (self.logger, self.metrics)
        return try await withConnection { connection in
            let began = StoreMetrics.now()
            let result = try await connection.withTransaction(logger: logger) { connection in try await body(connection) }
            metrics?.committed(since: began)
            return result
        }
    }

    /// One statement in autocommit; its rows.
    func rows(_ query: PostgresQuery) async throws -> [PostgresRow] {
        let logger = self.logger
        return try await withConnection { connection in try await connection.query(query, logger: logger).collect() }
    }

    /// Holds a connection that LISTENs on `channel` and hands every payload to `consume` until
    /// cancelled or the connection fails; `onListening` is called once the server confirmed.
    func listen(channel: String, onListening: @escaping @Sendable () -> Void,
                _ consume: @escaping @Sendable (String) -> Void) async throws {
        try await withConnection { connection in
            try await connection.listen(on: channel) { notifications in
                onListening()
                for try await notification in notifications { consume(notification.payload) }
            }
        }
    }

    /// Runs one statement of SQL text without parameters (migrations, tests).
    func execute(_ sql: String) async throws {
        _ = try await rows(PostgresQuery(unsafeSQL: sql))
    }

    /// A logger that drops everything.
    static let silent: Logger = {
        var logger = Logger(label: "flowd.postgres.silent")
        logger.logLevel = .critical
        return logger
    }()

    // MARK: Errors

    /// Maps an error of a store operation to a `StoreError` (`CancellationError` stays).
    static func mapping(_ error: any Error) -> any Error {
        switch error {
        case is CancellationError, is StoreError:
            return error
        case let transaction as PostgresTransactionError:
            if let inner = transaction.closureError ?? transaction.beginError ?? transaction.commitError {
                return mapping(inner)
            }
            return StoreError(code: .other, message: "PostgreSQL transaction failed", cause: error)
        case let error as PSQLError:
            return StoreError(code: code(for: error), message: message(for: error), cause: error)
        case let error as PostgresDecodingError:
            return StoreError(code: .integrity, message: "a PostgreSQL row this version cannot read: \(String(reflecting: error))",
                              cause: error)
        default:
            return StoreError(code: .other, message: "\(error)", cause: error)
        }
    }

    /// The SQLSTATE of a server error, e.g. "23505".
    static func sqlState(_ error: any Error) -> String? {
        if let transaction = error as? PostgresTransactionError {
            return (transaction.closureError ?? transaction.beginError ?? transaction.commitError).flatMap(sqlState)
        }
        return (error as? PSQLError)?.serverInfo?[.sqlState]
    }

    private static func code(for error: PSQLError) -> StoreError.Code {
        switch error.code {
        case .server:
            let state = error.serverInfo?[.sqlState] ?? ""
            switch state {
            case "40P01", "40001", "55P03": return .busy          // deadlock, serialization, lock not available
            case "57014": return .interrupted                     // statement timeout or cancel
            case "57P01", "57P02", "57P03": return .storage       // the server is shutting down or starting
            default: break
            }
            switch state.prefix(2) {
            case "08", "53", "58": return .storage               // connection, resources, system errors
            case "23", "22", "42", "XX": return .integrity        // constraints, data, schema, corruption
            default: return .other
            }
        case .connectionError, .serverClosedConnection, .clientClosedConnection, .uncleanShutdown, .poolClosed:
            return .storage
        case .queryCancelled:
            return .interrupted
        default:
            return .other
        }
    }

    private static func message(for error: PSQLError) -> String {
        if let info = error.serverInfo {
            let text = [info[.sqlState].map { "SQLSTATE \($0)" }, info[.message], info[.detail]].compactMap { $0 }
            return "PostgreSQL: " + text.joined(separator: ": ")
        }
        if let underlying = error.underlying { return "PostgreSQL connection: \(error.code): \(underlying)" }
        return "PostgreSQL connection: \(error.code)"
    }

    /// Why a connection failed, in a few words ("Connection refused", "Connect timeout (5 s)").
    private static func reason(_ error: PSQLError) -> String {
        guard let underlying = error.underlying else { return "\(error.code)" }
        if let failures = underlying as? NIOConnectionError {
            if let io = failures.connectionErrors.lazy.compactMap({ $0.error as? IOError }).first {
                return String(cString: strerror(io.errnoCode))
            }
            if let dns = failures.dnsAError ?? failures.dnsAAAAError { return "cannot resolve the host: \(dns)" }
        }
        if let io = underlying as? IOError { return String(cString: strerror(io.errnoCode)) }
        return "\(underlying)"
    }

    /// The one line a failed opening is reported with.
    private static func describeOpening(_ error: any Error, _ configuration: PostgresStoreConfiguration) -> StoreError {
        let at = "PostgreSQL at \(configuration.host):\(configuration.port)"
        if let error = error as? StoreError { return error }
        guard let error = error as? PSQLError else {
            return StoreError(code: .storage, message: "cannot connect to \(at): \(error)", cause: error)
        }
        if let info = error.serverInfo {
            let state = info[.sqlState] ?? ""
            let text = info[.message] ?? "\(error.code)"
            switch state {
            case "28P01", "28000":
                return StoreError(code: .invalidArgument,
                                  message: "\(at) refused the login of user \(configuration.username): \(text)", cause: error)
            case "3D000":
                return StoreError(code: .invalidArgument, message: "\(at): \(text)", cause: error)
            default:
                return StoreError(code: code(for: error), message: "\(at): \(text) (SQLSTATE \(state))", cause: error)
            }
        }
        switch error.code {
        case .authMechanismRequiresPassword:
            return StoreError(code: .invalidArgument,
                              message: "\(at) asks for a password for user \(configuration.username); the store URL has none",
                              cause: error)
        case .sslUnsupported:
            return StoreError(code: .invalidArgument, message: "\(at) does not offer TLS (sslmode=require)", cause: error)
        default:
            return StoreError(code: .storage, message: "cannot connect to \(at): \(reason(error))", cause: error)
        }
    }
}

/// Where a lease stands: still waiting for a connection, leased, or given up.
private enum LeasePhase { case waiting, leased, timedOut }

/// The result of `operation`, or `timedOut()` thrown once `timeout` passes first. An operation
/// still running then is left to finish in the background (`whenTimedOut` may refuse the
/// timeout, returning false, when the operation already got past its waiting point). `check`,
/// run once after its delay while the operation still runs, may end the wait early with an error
/// (under the same `whenTimedOut` rule).
func firstOf<T: Sendable>(timeout: Duration, _ operation: @escaping @Sendable () async throws -> T,
                          whenTimedOut: @escaping @Sendable () -> Bool = { true },
                          timedOut: @escaping @Sendable () -> any Error,
                          check: (after: Duration, @Sendable () async -> (any Error)?)? = nil) async throws -> T {
    let slot = Locked<CheckedContinuation<T, any Error>?>(nil)
    let tasks = Locked<[Task<Void, Never>]>([])
    return try await withTaskCancellationHandler {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            slot.withLock { $0 = continuation }
            let work = Locked<Task<Void, Never>?>(nil)
            let timer = Task {
                do { try await Task.sleep(for: timeout) } catch { return }
                guard whenTimedOut() else { return }  // past its wait: the result will come
                slot.withLock { slot in
                    defer { slot = nil }
                    return slot
                }?.resume(throwing: timedOut())
                work.withLock { $0 }?.cancel()
            }
            let checker = check.map { delay, check in
                Task {
                    do { try await Task.sleep(for: delay) } catch { return }
                    guard let error = await check(), whenTimedOut() else { return }
                    timer.cancel()
                    slot.withLock { slot in
                        defer { slot = nil }
                        return slot
                    }?.resume(throwing: error)
                    work.withLock { $0 }?.cancel()
                }
            }
            let operationTask = Task {
                let result: Result<T, any Error>
                do { result = .success(try await operation()) } catch { result = .failure(error) }
                timer.cancel()
                checker?.cancel()
                slot.withLock { slot in
                    defer { slot = nil }
                    return slot
                }?.resume(with: result)
            }
            work.withLock { $0 = operationTask }
            tasks.withLock { $0 = [operationTask, timer] + (checker.map { [$0] } ?? []) }
        }
    } onCancel: {
        for task in tasks.withLock({ $0 }) { task.cancel() }
    }
}

/// A value behind a lock that escaping closures can share (a `Mutex` cannot be captured).
final class Locked<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>

    init(_ value: Value) { mutex = Mutex(value) }

    func withLock<Result: Sendable>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        try mutex.withLock { value in try body(&value) }
    }
}

extension PostgresConnection {
    /// Every row of one statement (postgres-nio's own logging stays off: the store reports its errors).
    func rows(_ query: PostgresQuery) async throws -> [PostgresRow] {
        try await self.query(query, logger: PostgresConnector.silent).collect()
    }
}
