import NIOCore

/// Runs a handler's task on its connection's event loop.
///
/// A unary call that awaits the engine then goes: event loop → (store's thread) → the same
/// event loop, and its response is written without another hop; on the global executor it
/// would cross two more threads. Handlers must not block: they await the engine, and the
/// engine's reads are short statements on reader connections.
final class EventLoopTaskExecutor: TaskExecutor, @unchecked Sendable {
    let eventLoop: any EventLoop

    init(_ eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        eventLoop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}
