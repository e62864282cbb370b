import Engine
import Foundation
import Prometheus
import Testing

/// The value of one series (`name{labels}` exactly as emitted) in a text exposition.
func sample(_ text: String, _ series: String) -> Double? {
    for line in text.split(separator: "\n") where line.hasPrefix(series + " ") {
        return Double(line.dropFirst(series.count + 1))
    }
    return nil
}

@Suite("Engine and store metrics (issue 14)")
struct EngineMetricsTests {
    @Test("reaper actions and start-up recovery are counted by action, with the runs they end and the store's commits")
    func reaperAndRecovery() async throws {
        try await withDataDirectory { directory in
            let registry = PrometheusCollectorRegistry()
            let factory = PrometheusMetricsFactory(registry: registry)
            let store = try SQLiteRunStore(directory: directory, metrics: factory)
            let clock = ManualClock()
            func engine(_ executor: any WorkflowExecutor) -> Engine {
                var configuration = EngineConfiguration()
                configuration.reaperEnabled = false
                configuration.workerCount = 1
                configuration.reaper = ReaperPolicy(scheduledTimeout: .seconds(300), runningTimeout: .seconds(1800))
                configuration.leaseDuration = .seconds(100_000)  // only the progress rule applies to running runs
                return Engine(store: store, executor: executor, configuration: configuration, clock: clock,
                              logger: quietLogger(), metrics: factory)
            }

            // Scheduled too long: nothing claims on an engine that was not started.
            let idle = engine(TestExecutor())
            _ = try await idle.submit(request(inputs: #"{"n":1}"#))
            clock.advance(by: .seconds(301))
            #expect(try await idle.reapOnce().count == 1)

            // Running without progress.
            let started = Counter()
            let stuck = engine(ForeverExecutor(started: started))
            try await stuck.start()
            _ = try await stuck.submit(request(inputs: #"{"n":2}"#))
            await started.wait(untilAtLeast: 1)
            for _ in 0..<4 { clock.advance(by: .seconds(500)) }
            #expect(try await stuck.reapOnce().count == 1)

            // Left running by "a previous process": a new engine's start-up recovery ends it.
            _ = try await stuck.submit(request(inputs: #"{"n":3}"#))
            await started.wait(untilAtLeast: 2)
            let successor = engine(TestExecutor())
            try await successor.start()
            await stuck.shutdown(gracePeriod: .zero)
            await successor.shutdown(gracePeriod: .zero)

            await successor.metrics.refreshRunGauges()
            let text = registry.emitToString()
            #expect(sample(text, #"flowd_reaper_actions_total{action="scheduled_timeout"}"#) == 1)
            #expect(sample(text, #"flowd_reaper_actions_total{action="running_timeout"}"#) == 1)
            #expect(sample(text, #"flowd_reaper_actions_total{action="recovered"}"#) == 1)
            #expect(sample(text, #"flowd_reaper_actions_total{action="stopped"}"#) == 0)
            #expect(sample(text, #"flowd_runs_finished_total{state="failed"}"#) == 3)
            #expect(sample(text, #"flowd_submissions_total{outcome="created"}"#) == 3)
            #expect(sample(text, "flowd_run_schedule_delay_seconds_count") == 2)
            #expect(sample(text, "flowd_run_duration_seconds_count") == 2)
            #expect(sample(text, "flowd_runs_scheduled") == 0)
            #expect(sample(text, "flowd_runs_running") == 0)
            // Every engine is down: the committer is idle, its counters final.
            let commits = store.commitStatistics
            #expect(sample(text, #"flowd_store_transaction_duration_seconds_count{store="sqlite"}"#) == Double(commits.transactions))
            #expect(sample(text, #"flowd_store_group_commit_batch_size_count{store="sqlite"}"#) == Double(commits.transactions))
            #expect(sample(text, #"flowd_store_group_commit_batch_size_sum{store="sqlite"}"#) == Double(commits.writes))
        }
    }

    @Test("the run gauges read the store's scheduled and running counts")
    func runGauges() async throws {
        try await withDataDirectory { directory in
            let registry = PrometheusCollectorRegistry()
            let factory = PrometheusMetricsFactory(registry: registry)
            let store = try SQLiteRunStore(directory: directory, metrics: factory)
            let started = Counter()
            var configuration = EngineConfiguration()
            configuration.reaperEnabled = false
            configuration.workerCount = 1
            let engine = Engine(store: store, executor: ForeverExecutor(started: started), configuration: configuration,
                                logger: quietLogger(), metrics: factory)
            try await engine.start()
            _ = try await engine.submit(request(inputs: #"{"n":1}"#))
            await started.wait(untilAtLeast: 1)
            for n in 2...3 { _ = try await engine.submit(request(inputs: #"{"n":\#(n)}"#)) }
            #expect(try await store.activeRunCounts() == ActiveRunCounts(scheduled: 2, running: 1))
            await engine.metrics.refreshRunGauges()
            let text = registry.emitToString()
            #expect(sample(text, "flowd_runs_scheduled") == 2)
            #expect(sample(text, "flowd_runs_running") == 1)
            await engine.shutdown(gracePeriod: .zero)
        }
    }
}
