import Foundation
import GRDB

/// A store failure, mapped once from the database's result codes.
///
/// `isRetryable` is the one bit callers act on: a retryable error means nothing was committed
/// and the same call may succeed later (transports answer gRPC UNAVAILABLE / HTTP 503, never an
/// acknowledgement). Task cancellation is not a `StoreError`: it stays a `CancellationError`.
public struct StoreError: Error, Sendable, CustomStringConvertible {
    /// What went wrong. Extensible: new codes do not break callers.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let name: String
        private init(_ name: String) { self.name = name }
        public var description: String { name }

        /// Another writer held the database longer than the busy timeout
        /// (SQLITE_BUSY, SQLITE_LOCKED, SQLITE_PROTOCOL). Retryable.
        public static let busy = Code("busy")
        /// The disk is full or an I/O error occurred (SQLITE_FULL, SQLITE_IOERR*, SQLITE_CANTOPEN,
        /// SQLITE_READONLY, SQLITE_NOMEM); the transaction was rolled back. Retryable.
        public static let storage = Code("storage")
        /// The statement was interrupted (SQLITE_INTERRUPT); nothing was committed. Retryable.
        public static let interrupted = Code("interrupted")
        /// A constraint, type or schema violation, or a row this version cannot read: a bug or
        /// a damaged database, not a transient condition.
        public static let integrity = Code("integrity")
        /// The caller broke the contract (for example `finish` with a non-terminal state).
        public static let invalidArgument = Code("invalidArgument")
        /// The store was closed; nothing was done.
        public static let closed = Code("closed")
        public static let other = Code("other")
    }

    public var code: Code
    public var message: String
    public var cause: (any Error)?

    public init(code: Code, message: String, cause: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    /// Whether the same call may succeed later; nothing of it was committed.
    public var isRetryable: Bool { code == .busy || code == .storage || code == .interrupted }

    public var description: String { "store \(code): \(message)" }
}

extension StoreError {
    /// Maps any error thrown inside a store operation. `CancellationError` is returned as is.
    static func mapping(_ error: any Error) -> any Error {
        switch error {
        case is CancellationError, is StoreError:
            return error
        case let database as DatabaseError:
            return StoreError(
                code: code(for: database.resultCode),
                message: "\(database)",
                cause: database)
        default:
            return StoreError(code: .other, message: "\(error)", cause: error)
        }
    }

    /// The code for a primary or extended SQLite result code.
    static func code(for resultCode: ResultCode) -> Code {
        switch resultCode.primaryResultCode {
        case .SQLITE_BUSY, .SQLITE_LOCKED, .SQLITE_PROTOCOL:
            return .busy
        case .SQLITE_FULL, .SQLITE_IOERR, .SQLITE_CANTOPEN, .SQLITE_READONLY, .SQLITE_NOMEM:
            return .storage
        case .SQLITE_INTERRUPT:
            return .interrupted
        case .SQLITE_CONSTRAINT, .SQLITE_MISMATCH, .SQLITE_CORRUPT, .SQLITE_SCHEMA, .SQLITE_NOTADB:
            return .integrity
        default:
            return .other
        }
    }
}
