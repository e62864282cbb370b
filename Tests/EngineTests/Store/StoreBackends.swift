@testable import Engine
import Foundation
import Synchronization
import Testing

/// A store of either backend, as the contract tests use it.
typealias TestStore = any RunStore & APIKeyStore

/// The stores the contract tests run against: SQLite always; PostgreSQL when
/// `FLOWD_TEST_POSTGRES_URL` names a server (`make test` starts a throwaway one and sets it;
/// without it, the PostgreSQL cases are skipped and `PostgresAvailabilityTests` says so).
enum StoreBackend: String, Sendable, CustomTestStringConvertible {
    case sqlite, postgres

    static let all: [StoreBackend] = PostgresTestDatabase.baseURL == nil ? [.sqlite] : [.sqlite, .postgres]
    var testDescription: String { rawValue }
}

/// The throwaway PostgreSQL server of the tests.
enum PostgresTestDatabase {
    static let variable = "FLOWD_TEST_POSTGRES_URL"

    /// `postgres://USER@127.0.0.1:PORT/DB` of a server the tests may create databases on.
    static var baseURL: String? {
        guard let url = ProcessInfo.processInfo.environment[variable], !url.isEmpty else { return nil }
        return url
    }

    static var isAvailable: Bool { baseURL != nil }

    /// The base URL with another database name.
    static func url(database: String) throws -> String {
        var configuration = try PostgresStoreConfiguration(url: try #require(baseURL))
        configuration.database = database
        return configuration.urlForTests
    }

    /// Runs SQL on the base database (CREATE DATABASE and the like).
    static func admin(_ sql: String) async throws {
        var configuration = try PostgresStoreConfiguration(url: try #require(baseURL))
        configuration.maximumConnections = 1
        let connector = try await PostgresConnector(configuration: configuration, logger: quietLogger())
        do {
            try await connector.execute(sql)
        } catch {
            await connector.close()
            throw error
        }
        await connector.close()
    }

    /// A new empty database for one test, dropped afterwards.
    static func withDatabase<T>(_ body: (String) async throws -> T) async throws -> T {
        let name = "flowd_t_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "")
        try await admin("CREATE DATABASE \(name)")
        do {
            let result = try await body(try url(database: name))
            try await admin("DROP DATABASE \(name) WITH (FORCE)")
            return result
        } catch {
            try? await admin("DROP DATABASE \(name) WITH (FORCE)")
            throw error
        }
    }
}

extension PostgresStoreConfiguration {
    /// The URL of this configuration, with its password (tests only).
    var urlForTests: String {
        let password = self.password.map { ":" + ($0.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? $0) } ?? ""
        return "postgres://\(username)\(password)@\(host):\(port)/\(database)?sslmode=\(tls.rawValue)"
    }
}

/// Handles on one fresh store of a backend: a new data directory, or a new PostgreSQL database.
/// Every `open()` is another handle with its own connections, as another process would have.
final class StoreHandles: Sendable {
    let backend: StoreBackend
    /// The data directory (SQLite) or the database URL (PostgreSQL).
    let location: String
    private let opened = Mutex<[TestStore]>([])

    init(backend: StoreBackend, location: String) {
        self.backend = backend
        self.location = location
    }

    var directory: URL { URL(fileURLWithPath: location) }

    func open() async throws -> TestStore {
        let store: TestStore
        switch backend {
        case .sqlite:
            store = try SQLiteRunStore(directory: directory)
        case .postgres:
            var configuration = try PostgresStoreConfiguration(url: location)
            configuration.maximumConnections = 8
            // Tests run in parallel on a small machine: a thousand calls at once may queue for
            // the pool's connections longer than the default allows.
            configuration.acquireTimeout = .seconds(120)
            store = try await PostgresRunStore(configuration: configuration)
        }
        opened.withLock { $0.append(store) }
        return store
    }

    /// The integer that `sql` reads from the store's tables (one row, one column; the same SQL
    /// on both backends).
    func integer(_ sql: String, on store: TestStore) async throws -> Int64 {
        switch store {
        case let store as SQLiteRunStore: return try await store.integerForTests(sql: sql)
        case let store as PostgresRunStore: return try await store.integerForTests(sql: sql)
        default: throw StoreError(code: .other, message: "unknown store \(type(of: store))")
        }
    }

    /// Closes a handle; later calls on it fail with a non-retryable `StoreError`.
    func close(_ store: TestStore) async throws {
        switch store {
        case let store as SQLiteRunStore: try store.close()
        case let store as PostgresRunStore: await store.close()
        default: Issue.record("unknown store \(type(of: store))")
        }
    }

    fileprivate func closeAll() async {
        for store in opened.withLock({ $0 }) {
            try? await close(store)
        }
    }
}

/// Runs `body` with handles on a fresh store of `backend`, removed afterwards.
func withStores<T>(_ backend: StoreBackend, _ body: (StoreHandles) async throws -> T) async throws -> T {
    switch backend {
    case .sqlite:
        return try await withDataDirectory { directory in
            try await body(StoreHandles(backend: .sqlite, location: directory.path))
        }
    case .postgres:
        return try await PostgresTestDatabase.withDatabase { url in
            let handles = StoreHandles(backend: .postgres, location: url)
            do {
                let result = try await body(handles)
                await handles.closeAll()
                return result
            } catch {
                await handles.closeAll()
                throw error
            }
        }
    }
}

/// Runs `body` with one store of `backend` on a fresh database.
func withStore<T>(_ backend: StoreBackend, _ body: (TestStore) async throws -> T) async throws -> T {
    try await withStores(backend) { handles in try await body(try await handles.open()) }
}

@Suite("PostgreSQL tests: available")
struct PostgresAvailabilityTests {
    @Test("the PostgreSQL store tests run (FLOWD_TEST_POSTGRES_URL is set; make test sets it)",
          .enabled(if: PostgresTestDatabase.isAvailable,
                   "FLOWD_TEST_POSTGRES_URL is not set: every PostgreSQL store test is skipped (make test starts a server)"))
    func available() async throws {
        try await PostgresTestDatabase.admin("SELECT 1")
    }
}
