import Foundation
import GRDB
import Synchronization

/// Read-only connections to the store's database, used on the caller's own thread.
///
/// A read takes an idle connection from a stack (one uncontended lock), runs its statements
/// with GRDB's synchronous API (`DatabaseQueue.inDatabase`, which runs inline on the calling
/// thread when nothing else uses that connection), and puts the connection back. No thread
/// hop and no task switch, unlike `DatabasePool.read` from async code (a semaphore actor, the
/// reader's queue and back: up to four executor switches per read).
///
/// Reads are synchronous and short, so at most as many connections are in use as threads
/// read at once; idle connections beyond `maxIdle` are closed. In WAL mode readers never wait
/// for the writer.
final class SQLiteReaders: Sendable {
    private let path: String
    private let configuration: Configuration
    private let idle = Mutex<(connections: [DatabaseQueue], closed: Bool)>(([], false))
    let maxIdle: Int

    init(path: String, busyTimeout: Duration, maxIdle: Int = 16) {
        self.path = path
        var configuration = Configuration()
        configuration.readonly = true
        let (seconds, attoseconds) = busyTimeout.components
        configuration.busyMode = .timeout(Double(seconds) + Double(attoseconds) / 1e18)
        configuration.label = "flowd.sqlite.reader"
        self.configuration = configuration
        self.maxIdle = maxIdle
    }

    /// Runs `body` on an idle read-only connection (opened when none is idle).
    func read<T>(_ body: (Database) throws -> T) throws -> T {
        let taken = idle.withLock { idle -> DatabaseQueue? in
            idle.closed ? nil : idle.connections.popLast()
        }
        let connection = try taken ?? open()
        defer {
            let keep = idle.withLock { idle -> Bool in
                guard !idle.closed, idle.connections.count < maxIdle else { return false }
                idle.connections.append(connection)
                return true
            }
            if !keep { try? connection.close() }
        }
        return try connection.inDatabase(body)
    }

    private func open() throws -> DatabaseQueue {
        if idle.withLock({ $0.closed }) {
            throw StoreError(code: .closed, message: "the run store is closed")
        }
        return try DatabaseQueue(path: path, configuration: configuration)
    }

    /// Closes the idle connections; later reads fail.
    func close() {
        let connections = idle.withLock { idle -> [DatabaseQueue] in
            idle.closed = true
            defer { idle.connections.removeAll() }
            return idle.connections
        }
        for connection in connections { try? connection.close() }
    }
}
