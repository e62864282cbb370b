import Dispatch

/// Where runs execute: the threads of one of libdispatch's global queues, chosen by its quality
/// of service, which on Linux libdispatch applies as the threads' nice value (background 10,
/// utility 2, default 0), below the threads that answer calls (NIO's event loops, nice 0).
///
/// Accepting a submission or answering `GetRun` and a health check is what callers wait for;
/// a queued run is durable and can wait. On a saturated machine the kernel then gives the
/// wire's threads (and the store's committer, which both use) the CPU first, and execution
/// takes what they leave; on a quiet wire execution has every core. The Engine's dispatcher
/// and every run's tasks prefer this executor; lease renewals and the reaper stay on the
/// global executor, so a busy machine cannot starve a lease into expiry. Programs started by
/// `exec` nodes inherit the nice value of the thread that starts them.
///
/// libdispatch's pool, not threads of our own: it runs a job where a thread is free without
/// waking a particular one (event-loop threads fed round-robin cost a wake-up per job and
/// doubled the CPU per run).
final class ExecutionExecutor: TaskExecutor, @unchecked Sendable {
    /// `--execution-priority` (`FLOWD_EXECUTION_PRIORITY`).
    enum Priority: String, CaseIterable, Sendable {
        /// nice 10: the default.
        case background
        /// nice 2.
        case utility
        /// nice 0: runs on Swift's global executor, as the wire's tasks would.
        case normal

        static let `default` = Priority.background

        /// The quality of service of the pool (`.unspecified` for the global executor's).
        var qos: DispatchQoS {
            switch self {
            case .background: .background
            case .utility: .utility
            case .normal: .unspecified
            }
        }
    }

    private let queue: DispatchQueue

    /// nil for `.normal`: the global executor is then the place.
    static func make(_ priority: Priority) -> ExecutionExecutor? {
        priority == .normal ? nil : ExecutionExecutor(qos: priority.qos.qosClass)
    }

    private init(qos: DispatchQoS.QoSClass) {
        queue = DispatchQueue.global(qos: qos)
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        queue.async { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}
