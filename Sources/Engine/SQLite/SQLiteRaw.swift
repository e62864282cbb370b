import Foundation
import GRDB
internal import GRDBSQLite

/// The hot statements of the store, stepped with SQLite's C API on GRDB's cached statements
/// (writes, inside the committer's transactions) or on read-only connections of our own
/// (`ReadConnection`, reads on the caller's thread).
///
/// GRDB's `Row` builds a column-name dictionary and copies every value for each row fetched,
/// and `StatementArguments` boxes each argument; on `GetRun` and inside every group commit
/// that was most of the cost. Here arguments are bound and columns read by index, typed, with
/// no intermediate row. The only file that calls SQLite directly; every result code is mapped
/// to a `DatabaseError` here (and from there to a `StoreError` by the store).
enum SQLiteRaw {
    /// A value to bind.
    enum Value {
        case text(String?)
        case integer(Int64?)
    }

    /// The current row of a stepped statement.
    struct Columns {
        fileprivate let statement: OpaquePointer

        func text(_ index: Int32) -> String {
            guard let pointer = sqlite3_column_text(statement, index) else { return "" }
            let count = Int(sqlite3_column_bytes(statement, index))
            return String(decoding: UnsafeBufferPointer(start: pointer, count: count), as: UTF8.self)
        }

        func optionalText(_ index: Int32) -> String? {
            sqlite3_column_type(statement, index) == SQLITE_NULL ? nil : text(index)
        }

        func integer(_ index: Int32) -> Int64 { sqlite3_column_int64(statement, index) }

        func optionalInteger(_ index: Int32) -> Int64? {
            sqlite3_column_type(statement, index) == SQLITE_NULL ? nil : integer(index)
        }
    }

    /// SQLite's SQLITE_STATIC: SQLite keeps the pointer to bound text instead of copying it.
    private static let staticText = unsafeBitCast(0, to: sqlite3_destructor_type.self)

    /// Runs a prepared statement of `source` with `arguments` and returns `read` of each row
    /// (RETURNING rows of a write included), stepping it to the end.
    static func rows<T>(_ source: some StatementSource, _ sql: String, _ arguments: [Value],
                        _ read: (Columns) throws -> T) throws -> [T] {
        let (statement, handle) = try source.prepared(sql)
        return try rows(statement, handle: handle, sql, arguments, read)
    }

    /// The first row, if any (the statement still runs to its end).
    static func row<T>(_ source: some StatementSource, _ sql: String, _ arguments: [Value],
                       _ read: (Columns) throws -> T) throws -> T? {
        try rows(source, sql, arguments, read).first
    }

    /// Runs a statement that returns no rows; returns the rows it inserted, updated or deleted.
    ///
    /// Single-row writes read this (or a SELECT after them) instead of using RETURNING: SQLite
    /// (3.40) runs a RETURNING clause through a temporary table built for each execution,
    /// about 5 us per statement, more than the write itself.
    @discardableResult
    static func execute(_ source: some StatementSource, _ sql: String, _ arguments: [Value]) throws -> Int {
        let (statement, handle) = try source.prepared(sql)
        _ = try rows(statement, handle: handle, sql, arguments) { _ in () }
        return Int(sqlite3_changes(handle))
    }

    private static func rows<T>(_ raw: OpaquePointer, handle: OpaquePointer, _ sql: String, _ arguments: [Value],
                                _ read: (Columns) throws -> T) throws -> [T] {
        sqlite3_reset(raw)
        // Every parameter is bound below when the counts match; clearing them first cost 800
        // instructions per statement for nothing.
        if sqlite3_bind_parameter_count(raw) != Int32(arguments.count) { sqlite3_clear_bindings(raw) }
        defer { sqlite3_reset(raw) }
        return try bound(raw, handle: handle, sql, arguments, from: 0) {
            var results: [T] = []
            while true {
                let code = sqlite3_step(raw)
                if code == SQLITE_DONE { return results }
                guard code == SQLITE_ROW else { throw error(handle, code, sql) }
                results.append(try read(Columns(statement: raw)))
            }
        }
    }

    /// Binds `arguments[index...]` and runs `body` while every bound text is alive.
    ///
    /// Text is bound `SQLITE_STATIC`, from the string's own UTF-8, inside nested `withUTF8`
    /// calls, so the pointers stay valid until `body` (the steps) returned; with
    /// `SQLITE_TRANSIENT` SQLite copied each text (a malloc, a copy and a later free). The
    /// bindings dangle once this returns. That is safe: SQLite reads them only in
    /// `sqlite3_step` (and `sqlite3_expanded_sql`, which nothing here calls), and the statements
    /// of this file's SQL texts are stepped only here, after all of their parameters were bound
    /// again (or cleared, above).
    private static func bound<R>(_ raw: OpaquePointer, handle: OpaquePointer, _ sql: String, _ arguments: [Value],
                                 from index: Int, _ body: () throws -> R) throws -> R {
        guard index < arguments.count else { return try body() }
        let position = Int32(index + 1)
        switch arguments[index] {
        case .text(var text?):
            return try text.withUTF8 { bytes in
                // (A nil pointer would bind NULL: the empty string gets a literal.)
                let code = bytes.isEmpty || bytes.baseAddress == nil
                    ? sqlite3_bind_text(raw, position, "", 0, staticText)
                    : bytes.baseAddress!.withMemoryRebound(to: CChar.self, capacity: bytes.count) {
                        sqlite3_bind_text(raw, position, $0, Int32(bytes.count), staticText)
                    }
                guard code == SQLITE_OK else { throw error(handle, code, sql) }
                return try bound(raw, handle: handle, sql, arguments, from: index + 1, body)
            }
        case .integer(let number?):
            let code = sqlite3_bind_int64(raw, position, number)
            guard code == SQLITE_OK else { throw error(handle, code, sql) }
        case .text(nil), .integer(nil):
            let code = sqlite3_bind_null(raw, position)
            guard code == SQLITE_OK else { throw error(handle, code, sql) }
        }
        return try bound(raw, handle: handle, sql, arguments, from: index + 1, body)
    }

    /// Prepared statements found by the address of their SQL text's storage, without hashing
    /// it: the store's statements are string literals or `static let` strings, a few hundred
    /// bytes each, and looking them up by text (GRDB's statement cache, `ReadConnection`'s
    /// dictionary) cost about 1,300 instructions per statement. Each entry keeps its text alive,
    /// so no other text can be at that address while the entry is here (the equality check is
    /// a cheap second guard); bounded, as dynamic SQL comes and goes. Texts of up to 15 bytes
    /// live inline, at no stable address, and are never kept here.
    ///
    /// Confined to one thread at a time, like the connection whose statements it holds.
    struct StatementsByAddress<Statement> {
        private var entries: [UInt: (sql: String, statement: Statement)] = [:]
        static var capacity: Int { 64 }

        static func address(of sql: String) -> UInt? {
            sql.utf8.count > 15 ? sql.utf8.withContiguousStorageIfAvailable { UInt(bitPattern: $0.baseAddress) } : nil
        }

        func statement(for sql: String, at address: UInt) -> Statement? {
            guard let known = entries[address], known.sql == sql else { return nil }
            return known.statement
        }

        mutating func remember(_ statement: Statement, for sql: String, at address: UInt) {
            if entries.count >= Self.capacity { entries.removeAll(keepingCapacity: true) }
            entries[address] = (sql, statement)
        }

        mutating func removeAll(keepingCapacity: Bool = false) { entries.removeAll(keepingCapacity: keepingCapacity) }
    }

    /// A read-only connection opened with SQLite's C API (no mutex: one thread at a time uses
    /// it, see `SQLiteReaders`), with its statements prepared once.
    final class ReadConnection: StatementSource, @unchecked Sendable {
        private let handle: OpaquePointer
        private var statements: [String: OpaquePointer] = [:]
        /// The same statements by the address of their text (dynamic SQL, such as list
        /// filters, is found in `statements` only).
        private var byAddress = StatementsByAddress<OpaquePointer>()

        init(path: String, busyTimeout: Duration) throws {
            var handle: OpaquePointer?
            let code = sqlite3_open_v2(path, &handle, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nil)
            guard code == SQLITE_OK, let handle else {
                let message = handle.map { String(cString: sqlite3_errmsg($0)) }
                sqlite3_close_v2(handle)
                throw DatabaseError(resultCode: ResultCode(rawValue: code), message: message)
            }
            self.handle = handle
            let milliseconds = busyTimeout.components.seconds * 1000 + busyTimeout.components.attoseconds / 1_000_000_000_000_000
            sqlite3_busy_timeout(handle, Int32(clamping: milliseconds))
        }

        func prepared(_ sql: String) throws -> (statement: OpaquePointer, handle: OpaquePointer) {
            (try statement(sql), handle)
        }

        private func statement(_ sql: String) throws -> OpaquePointer {
            let address = StatementsByAddress<OpaquePointer>.address(of: sql)
            if let address, let known = byAddress.statement(for: sql, at: address) { return known }
            let statement = try preparedOnce(sql)
            if let address { byAddress.remember(statement, for: sql, at: address) }
            return statement
        }

        private func preparedOnce(_ sql: String) throws -> OpaquePointer {
            if let statement = statements[sql] { return statement }
            var statement: OpaquePointer?
            let code = sqlite3_prepare_v3(handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &statement, nil)
            guard code == SQLITE_OK, let statement else { throw SQLiteRaw.error(handle, code, sql) }
            statements[sql] = statement
            return statement
        }

        deinit {
            for statement in statements.values { sqlite3_finalize(statement) }
            sqlite3_close_v2(handle)
        }
    }

    private static func error(_ handle: OpaquePointer, _ code: Int32, _ sql: String) -> DatabaseError {
        DatabaseError(resultCode: ResultCode(rawValue: code), message: String(cString: sqlite3_errmsg(handle)), sql: sql)
    }
}

/// Where `SQLiteRaw` gets a prepared statement: the writer connection inside a committer's
/// transaction (`SQLiteWriter`) or one of our read-only connections.
protocol StatementSource {
    /// The statement for `sql`, prepared once and reused, and its connection.
    func prepared(_ sql: String) throws -> (statement: OpaquePointer, handle: OpaquePointer)
}

/// The store's writer connection as the committer's ops see it: GRDB's `Database` (for its
/// own API) and SQLiteRaw's statements, found by the address of their text before GRDB's
/// statement cache (see `SQLiteRaw.StatementsByAddress`).
struct SQLiteWriter: StatementSource {
    let database: Database
    let statements: Statements

    /// The statements one committer transaction used, on the committer thread only: GRDB's
    /// cached statements, held for one batch (its ops run the same few statements many times)
    /// and let go at its end, so that GRDB alone decides how long a statement lives and none
    /// outlives a closing connection.
    final class Statements: @unchecked Sendable {
        fileprivate var byAddress = SQLiteRaw.StatementsByAddress<Statement>()

        func removeAll() { byAddress.removeAll(keepingCapacity: true) }
    }

    func prepared(_ sql: String) throws -> (statement: OpaquePointer, handle: OpaquePointer) {
        guard let handle = database.sqliteConnection else { throw DatabaseError(resultCode: .SQLITE_MISUSE, message: "closed") }
        let address = SQLiteRaw.StatementsByAddress<Statement>.address(of: sql)
        if let address, let known = statements.byAddress.statement(for: sql, at: address) {
            return (known.sqliteStatement, handle)
        }
        let statement = try database.cachedStatement(sql: sql)
        if let address { statements.byAddress.remember(statement, for: sql, at: address) }
        return (statement.sqliteStatement, handle)
    }
}
