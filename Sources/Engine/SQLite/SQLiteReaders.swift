import Foundation
import Synchronization

/// Read-only connections to the store's database, used on the caller's own thread.
///
/// A read takes an idle connection from a stack (one uncontended lock), runs its statements
/// through SQLite's C API (`SQLiteRaw.ReadConnection`: statements prepared once per
/// connection, no per-call queue or actor), and puts the connection back. No thread hop and no
/// task switch, unlike `DatabasePool.read` from async code (a semaphore actor, the reader's
/// queue and back: up to four executor switches per read).
///
/// Reads are synchronous and short, so at most as many connections are in use as threads
/// read at once; idle connections beyond `maxIdle` are closed. In WAL mode readers never wait
/// for the writer.
final class SQLiteReaders: Sendable {
    private let path: String
    private let busyTimeout: Duration
    private let idle = Mutex<(connections: [SQLiteRaw.ReadConnection], closed: Bool)>(([], false))
    let maxIdle: Int

    init(path: String, busyTimeout: Duration, maxIdle: Int = 16) {
        self.path = path
        self.busyTimeout = busyTimeout
        self.maxIdle = maxIdle
    }

    /// Runs `body` on an idle read-only connection (opened when none is idle).
    func read<T>(_ body: (SQLiteRaw.ReadConnection) throws -> T) throws -> T {
        let connection = try take()
        defer { giveBack(connection) }
        return try body(connection)
    }

    /// An idle connection, or a new one when none is idle.
    private func take() throws -> SQLiteRaw.ReadConnection {
        let (taken, closed) = idle.withLock { idle in (idle.closed ? nil : idle.connections.popLast(), idle.closed) }
        if closed { throw StoreError(code: .closed, message: "the run store is closed") }
        return try taken ?? SQLiteRaw.ReadConnection(path: path, busyTimeout: busyTimeout)
    }

    /// Keeps `connection` for the next read, unless the store closed or enough are idle.
    private func giveBack(_ connection: SQLiteRaw.ReadConnection) {
        idle.withLock { idle in
            if !idle.closed, idle.connections.count < maxIdle { idle.connections.append(connection) }
        }
    }

    /// Runs `body` on the batch's connection, inside the batch's read transaction (begun by
    /// the batch's first read); without a batch, as `read`. Each read transaction of WAL mode
    /// takes and drops a lock on the shared-memory file (two `fcntl` calls): a batch of 32
    /// `GetRun`s pays them once, not 32 times.
    func read<T>(in batch: ReadBatch?, _ body: (SQLiteRaw.ReadConnection) throws -> T) throws -> T {
        guard let batch else { return try read(body) }
        if let session = batch.session as? Session { return try body(session.connection) }
        let connection = try take()
        do {
            _ = try SQLiteRaw.execute(connection, "BEGIN", [])
        } catch {
            giveBack(connection)
            throw error
        }
        batch.session = Session(connection: connection, readers: self)
        return try body(connection)
    }

    /// A batch's connection, with its read transaction open until `end`.
    private final class Session: ReadBatchSession {
        let connection: SQLiteRaw.ReadConnection
        let readers: SQLiteReaders

        init(connection: SQLiteRaw.ReadConnection, readers: SQLiteReaders) {
            self.connection = connection
            self.readers = readers
        }

        func end() {
            // A read transaction has nothing to lose; one that cannot end leaves with its connection.
            if (try? SQLiteRaw.execute(connection, "COMMIT", [])) != nil { readers.giveBack(connection) }
        }
    }

    /// Closes the idle connections; later reads fail.
    func close() {
        idle.withLock { idle in
            idle.closed = true
            idle.connections.removeAll()
        }
    }
}
