#if canImport(Glibc)
import Glibc
#endif
import NIOCore
import NIOPosix

/// The threads runs execute on: apart from the threads that answer calls, and scheduled below
/// them (a higher nice value).
///
/// Accepting a submission or answering `GetRun` and a health check is what callers wait for;
/// a queued run is durable and can wait. On a saturated machine the kernel then gives the
/// wire's threads (and the store's committer, which both use) the CPU first, and execution
/// takes what they leave; on a quiet wire execution has every core. The Engine's dispatcher
/// and every run's tasks prefer this executor; lease renewals and the reaper stay on the
/// global executor, so a busy machine cannot starve a lease into expiry. Programs started by
/// `exec` nodes inherit the nice value of the thread that starts them.
///
/// Measured (`make bench-engine`'s async RunWorkflow, 64 in flight, 64 workers executing the
/// backlog meanwhile, 2 cores): nice 0 about 11,000 submissions/s, nice 10 16,000-18,600.
final class ExecutionThreads: TaskExecutor, @unchecked Sendable {
    /// The default nice value (`--execution-nice`, `FLOWD_EXECUTION_NICE`).
    static let defaultNice = 10
    /// What Linux allows an unprivileged process to set above normal priority.
    static let niceRange = 0...19

    private let group: MultiThreadedEventLoopGroup

    /// Starts `count` threads and sets each one's nice value to `nice` (Linux keeps it per
    /// thread: `setpriority(PRIO_PROCESS, 0, …)` is the calling thread).
    init(count: Int, nice: Int) throws {
        precondition(Self.niceRange.contains(nice), "nice \(nice) out of range")
        group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, count))
        guard nice != 0 else { return }
        for loop in group.makeIterator() {
            let failure = try loop.submit { () -> Int32? in
                setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, Int32(nice)) == 0 ? nil : errno
            }.wait()
            if let failure { throw ExecutionThreadsError(nice: nice, errno: failure) }
        }
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        group.next().execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}

/// The kernel refused a nice value.
struct ExecutionThreadsError: Error, CustomStringConvertible {
    var nice: Int
    var errno: Int32
    var description: String {
        "could not set the execution threads' nice value to \(nice): \(String(cString: strerror(errno)))"
    }
}
