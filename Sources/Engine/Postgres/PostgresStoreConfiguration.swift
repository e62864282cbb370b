import Foundation

/// Where and how `PostgresRunStore` connects, parsed from a store URL:
/// `postgres://USER:PASSWORD@HOST:PORT/DATABASE` (also `postgresql://`; the password may be
/// absent; percent-encoding is decoded; `?sslmode=disable|prefer|require`, default `prefer`).
public struct PostgresStoreConfiguration: Sendable, Equatable {
    /// TLS towards the server, as libpq's `sslmode` names it.
    public enum TLSMode: String, Sendable, Equatable {
        /// Plain TCP.
        case disable
        /// TLS when the server offers it, plain otherwise.
        case prefer
        /// TLS or no connection.
        case require
    }

    public var host: String
    public var port: Int
    public var username: String
    public var password: String?
    public var database: String
    public var tls: TLSMode

    /// Bounds opening one connection: the TCP connect, TLS and the login. Default 5 s.
    public var connectTimeout: Duration = .seconds(5)
    /// How long a call waits for a pooled connection (the server down, or every connection
    /// busy) before it fails with a retryable `StoreError`. Default 10 s.
    public var acquireTimeout: Duration = .seconds(10)
    /// A call that has waited this long for a pooled connection checks whether the server
    /// answers at all (one direct connection attempt, within `connectTimeout`). When it does
    /// not, that call and every call after it fail at once with a retryable `StoreError`
    /// (UNAVAILABLE / 503 with a retry hint on the wire) until the server answers again, instead
    /// of each waiting `acquireTimeout`. Default 250 ms.
    public var outageCheckDelay: Duration = .milliseconds(250)
    /// While the server does not answer, how often it is tried again. Default 1 s.
    public var outageRetryInterval: Duration = .seconds(1)
    /// Connections the pool may open to the server. Default 20.
    public var maximumConnections: Int = 20
    /// The server aborts a statement running longer than this (`statement_timeout`), so no call
    /// waits forever on a lock. Default 30 s.
    public var statementTimeout: Duration = .seconds(30)

    public init(host: String, port: Int = 5432, username: String, password: String?, database: String,
                tls: TLSMode = .prefer) {
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.database = database
        self.tls = tls
    }

    /// Whether `text` names a PostgreSQL store (a `postgres://` or `postgresql://` URL).
    public static func isPostgresURL(_ text: String) -> Bool {
        let lower = text.lowercased()
        return lower.hasPrefix("postgres://") || lower.hasPrefix("postgresql://")
    }

    /// Parses a store URL. Throws a `StoreError` (`invalidArgument`) naming what is wrong; the
    /// message never repeats the password.
    public init(url text: String) throws {
        func invalid(_ problem: String) -> StoreError {
            StoreError(code: .invalidArgument,
                       message: "invalid PostgreSQL store URL (expected postgres://USER:PASSWORD@HOST:PORT/DATABASE): \(problem)")
        }
        guard Self.isPostgresURL(text) else { throw invalid("the scheme must be postgres:// or postgresql://") }
        guard let components = URLComponents(string: text) else { throw invalid("it is not a URL") }
        guard let host = components.host, !host.isEmpty else { throw invalid("no host") }
        guard let user = components.user, !user.isEmpty else { throw invalid("no user") }
        let port = components.port ?? 5432
        guard (1...65535).contains(port) else { throw invalid("port \(port) is out of range") }
        var database = components.path
        if database.hasPrefix("/") { database.removeFirst() }
        guard !database.isEmpty, !database.contains("/") else { throw invalid("no database name after the port") }
        var tls = TLSMode.prefer
        for item in components.queryItems ?? [] {
            switch item.name {
            case "sslmode":
                guard let value = item.value, let mode = TLSMode(rawValue: value) else {
                    throw invalid("sslmode must be disable, prefer or require")
                }
                tls = mode
            default:
                throw invalid("unknown parameter \(item.name)")
            }
        }
        self.init(host: host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host, port: port,
                  username: user, password: components.password,
                  database: database, tls: tls)
    }

    /// `postgres://USER@HOST:PORT/DATABASE`, without the password: for logs and error messages.
    public var redacted: String { "postgres://\(username)@\(host):\(port)/\(database)" }
}
