import Engine
import Foundation
import Synchronization
import Testing

@Suite("Fairness by work: one tenant cannot hold every worker")
struct FairnessTests {
    /// Runs of tenant "long" wait on `gate`; others finish at once. Records start order.
    final class TenantExecutor: WorkflowExecutor {
        let gate = Gate()
        let started = Counter()
        private let order = Mutex<[String]>([])
        var startOrder: [String] { order.withLock { $0 } }

        func execute(_ run: RunRecord, context: ExecutionContext) async throws -> ExecutionResult {
            order.withLock { $0.append(run.tenant) }
            started.increment()
            if run.tenant == "long" { await gate.wait() }
            try Task.checkCancellation()
            return .succeeded(outputsJSON: "{}")
        }
    }

    @Test("with 4 workers and 50 long runs queued, another tenant's run starts while 3 long runs execute")
    func otherTenantGetsAWorker() async throws {
        try await withDataDirectory { directory in
            let executor = TenantExecutor()
            var configuration = EngineConfiguration()
            configuration.reaperEnabled = false
            configuration.workerCount = 4
            #expect(configuration.effectiveWorkersPerTenant == 3)
            let engine = Engine(store: try makeStore(directory), executor: executor, configuration: configuration,
                                logger: quietLogger())
            try await engine.setConcurrencyLimit(tenant: "long", limit: 100)
            for i in 0..<50 { _ = try await engine.submit(request(tenant: "long", inputs: #"{"i":\#(i)}"#)) }
            try await engine.start()
            await executor.started.wait(untilAtLeast: 3)
            let short = try await engine.submit(request(tenant: "short"))
            let finished = try await engine.waitForCompletion(id: short.run.id, tenant: "short")
            #expect(finished.state == .succeeded)
            // Only the cap's worth of long runs ever started before the short one finished.
            let order = executor.startOrder
            #expect(order.filter { $0 == "long" }.count == 3, "\(order)")
            executor.gate.open()
            await engine.shutdown(gracePeriod: .seconds(5))
        }
    }

    @Test("the per-tenant cap is configurable and never exceeds the worker count")
    func capConfiguration() {
        var configuration = EngineConfiguration()
        configuration.workerCount = 1
        #expect(configuration.effectiveWorkersPerTenant == 1)
        configuration.workerCount = 64
        #expect(configuration.effectiveWorkersPerTenant == 48)
        configuration.workersPerTenant = 100
        #expect(configuration.effectiveWorkersPerTenant == 64)
        configuration.workersPerTenant = 2
        #expect(configuration.effectiveWorkersPerTenant == 2)
    }
}
