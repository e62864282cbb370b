import Engine
import Foundation
import Synchronization
import Testing

/// A task executor on one serial queue that marks its jobs, so code can tell it runs there.
private final class MarkedExecutor: TaskExecutor, @unchecked Sendable {
    static let key = DispatchSpecificKey<Bool>()
    private let queue = DispatchQueue(label: "flowd.tests.execution")
    let jobs = Atomic<Int>(0)

    init() { queue.setSpecific(key: Self.key, value: true) }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        jobs.add(1, ordering: .relaxed)
        queue.async { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }

    static var isCurrent: Bool { DispatchQueue.getSpecific(key: key) == true }
}

/// Records, at each step of a run, whether it ran on the marked executor.
private final class WhereExecutor: WorkflowExecutor {
    let placements = Mutex<[Bool]>([])

    func execute(_ run: RunRecord, context: ExecutionContext) async throws -> ExecutionResult {
        placements.withLock { $0.append(MarkedExecutor.isCurrent) }
        try await context.emit([NewEvent(kind: .nodeStarted, payloadJSON: #"{"node":"n"}"#)], steps: 1)
        placements.withLock { $0.append(MarkedExecutor.isCurrent) }
        return .succeeded(outputsJSON: "{}")
    }
}

@Suite("Where runs execute")
struct ExecutionExecutorTests {
    @Test("with an execution executor, every run executes on it, also after awaiting the store")
    func runsPreferTheExecutionExecutor() async throws {
        try await withDataDirectory { directory in
            let marked = MarkedExecutor()
            let executor = WhereExecutor()
            var configuration = EngineConfiguration()
            configuration.reaperEnabled = false
            configuration.workerCount = 4
            let engine = Engine(store: try makeStore(directory), executor: executor, configuration: configuration,
                                logger: quietLogger(), executionExecutor: marked)
            try await engine.start()
            var ids: [String] = []
            for i in 0..<20 {
                ids.append(try await engine.submit(request(inputs: #"{"i":\#(i)}"#)).run.id)
            }
            for id in ids {
                #expect(try await engine.waitForCompletion(id: id, tenant: "t1").state == .succeeded)
            }
            let placements = executor.placements.withLock { $0 }
            #expect(placements.count == 40)
            #expect(placements.allSatisfy { $0 }, "\(placements)")
            #expect(marked.jobs.load(ordering: .relaxed) >= 40)
            await engine.shutdown()
        }
    }

    @Test("without one, runs execute on the global executor")
    func defaultIsGlobal() async throws {
        try await withDataDirectory { directory in
            let executor = WhereExecutor()
            var configuration = EngineConfiguration()
            configuration.reaperEnabled = false
            let engine = Engine(store: try makeStore(directory), executor: executor, configuration: configuration,
                                logger: quietLogger())
            try await engine.start()
            let id = try await engine.submit(request()).run.id
            #expect(try await engine.waitForCompletion(id: id, tenant: "t1").state == .succeeded)
            #expect(executor.placements.withLock { $0 } == [false, false])
            await engine.shutdown()
        }
    }
}
