import Foundation
import GRDB
internal import GRDBSQLite

/// The hot statements of the store, stepped with SQLite's C API on GRDB's cached statements.
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

    /// SQLite's SQLITE_TRANSIENT: bound text is copied by SQLite before the call returns.
    private static let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

    /// Runs a cached statement with `arguments` and returns `read` of each row (RETURNING rows
    /// of a write included), stepping it to the end.
    static func rows<T>(_ db: Database, _ sql: String, _ arguments: [Value], _ read: (Columns) throws -> T) throws -> [T] {
        let statement = try db.cachedStatement(sql: sql)
        let raw = statement.sqliteStatement
        sqlite3_reset(raw)
        sqlite3_clear_bindings(raw)
        defer { sqlite3_reset(raw) }
        for (offset, argument) in arguments.enumerated() {
            let index = Int32(offset + 1)
            let code: Int32
            switch argument {
            case .text(let text?): code = sqlite3_bind_text(raw, index, text, -1, transient)
            case .integer(let number?): code = sqlite3_bind_int64(raw, index, number)
            case .text(nil), .integer(nil): code = sqlite3_bind_null(raw, index)
            }
            guard code == SQLITE_OK else { throw error(db, code, sql) }
        }
        var results: [T] = []
        while true {
            let code = sqlite3_step(raw)
            if code == SQLITE_DONE { return results }
            guard code == SQLITE_ROW else { throw error(db, code, sql) }
            results.append(try read(Columns(statement: raw)))
        }
    }

    /// The first row, if any (the statement still runs to its end).
    static func row<T>(_ db: Database, _ sql: String, _ arguments: [Value], _ read: (Columns) throws -> T) throws -> T? {
        try rows(db, sql, arguments, read).first
    }

    private static func error(_ db: Database, _ code: Int32, _ sql: String) -> DatabaseError {
        DatabaseError(resultCode: ResultCode(rawValue: code), message: db.lastErrorMessage, sql: sql)
    }
}
