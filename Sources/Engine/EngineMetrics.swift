public import CoreMetrics
import Dispatch
import Foundation
import Logging

/// Names of the Engine's and the stores' metrics (README, "Metrics"). Public so that an
/// exporter can configure histogram buckets per name.
public enum EngineMetricName {
    /// Counter, label `outcome`: `created`, `replayed`, `over_limit`, `key_reused`.
    public static let submissions = "flowd_submissions_total"
    /// Counter, label `state`: the terminal state a run ended in (ended by this process).
    public static let runsFinished = "flowd_runs_finished_total"
    /// Gauge: runs `scheduled` in the store (every process sharing it), read at each scrape.
    public static let runsScheduled = "flowd_runs_scheduled"
    /// Gauge: runs `running` in the store (every process sharing it), read at each scrape.
    public static let runsRunning = "flowd_runs_running"
    /// Histogram (seconds): from submission (`scheduled`) to the claim (`running`).
    public static let scheduleDelay = "flowd_run_schedule_delay_seconds"
    /// Histogram (seconds): from the claim to the end, of runs that ran.
    public static let runDuration = "flowd_run_duration_seconds"
    /// Counter, label `action`: `scheduled_timeout`, `running_timeout` (lease expired or no
    /// progress), `stopped` (a stop request whose worker is gone), `recovered` (at start-up).
    public static let reaperActions = "flowd_reaper_actions_total"
    /// Gauge, label `transport` (`grpc`, `rest`): open streams of a run's events (`WatchRun`,
    /// `StreamWorkflow`, REST streaming).
    public static let watchStreamsOpen = "flowd_watch_streams_open"
    /// Histogram (seconds), label `store`: committed write transactions, BEGIN to COMMIT.
    public static let storeTransaction = "flowd_store_transaction_duration_seconds"
    /// Histogram, label `store`: writes per group-committed transaction (submissions on PostgreSQL).
    public static let groupCommitBatchSize = "flowd_store_group_commit_batch_size"
}

/// The Engine's metrics, made once from the factory it was given with every label value up
/// front: recording is a counter add or a histogram observation, with no lookup, lock or
/// string building of its own.
public final class EngineMetrics: Sendable {
    private let submissions: [Counter]  // indexed by `SubmissionIndex`
    private let succeeded: Counter
    private let failed: Counter
    private let stopped: Counter
    private let partialSucceeded: Counter
    private let scheduledGauge: Gauge
    private let runningGauge: Gauge
    private let scheduleDelay: CoreMetrics.Timer
    private let runDuration: CoreMetrics.Timer
    private let reaperScheduled: Counter
    private let reaperRunning: Counter
    private let reaperStopped: Counter
    private let reaperRecovered: Counter
    private let grpcWatchStreams: Meter
    private let restWatchStreams: Meter
    private let store: any RunStore
    private let logger: Logger

    private enum SubmissionIndex: Int, CaseIterable {
        case created, replayed, overLimit, keyReused

        var label: String {
            switch self {
            case .created: "created"
            case .replayed: "replayed"
            case .overLimit: "over_limit"
            case .keyReused: "key_reused"
            }
        }
    }

    init(factory: any MetricsFactory, store: any RunStore, logger: Logger) {
        self.store = store
        self.logger = logger
        submissions = SubmissionIndex.allCases.map {
            Counter(label: EngineMetricName.submissions, dimensions: [("outcome", $0.label)], factory: factory)
        }
        func finished(_ state: RunState) -> Counter {
            Counter(label: EngineMetricName.runsFinished, dimensions: [("state", state.rawValue)], factory: factory)
        }
        succeeded = finished(.succeeded)
        failed = finished(.failed)
        stopped = finished(.stopped)
        partialSucceeded = finished(.partialSucceeded)
        scheduledGauge = Gauge(label: EngineMetricName.runsScheduled, factory: factory)
        runningGauge = Gauge(label: EngineMetricName.runsRunning, factory: factory)
        scheduleDelay = CoreMetrics.Timer(label: EngineMetricName.scheduleDelay, factory: factory)
        runDuration = CoreMetrics.Timer(label: EngineMetricName.runDuration, factory: factory)
        func reaper(_ action: String) -> Counter {
            Counter(label: EngineMetricName.reaperActions, dimensions: [("action", action)], factory: factory)
        }
        reaperScheduled = reaper("scheduled_timeout")
        reaperRunning = reaper("running_timeout")
        reaperStopped = reaper("stopped")
        reaperRecovered = reaper("recovered")
        grpcWatchStreams = Meter(label: EngineMetricName.watchStreamsOpen, dimensions: [("transport", "grpc")], factory: factory)
        restWatchStreams = Meter(label: EngineMetricName.watchStreamsOpen, dimensions: [("transport", "rest")], factory: factory)
    }

    func submitted(_ outcome: SubmissionOutcome) {
        let index: SubmissionIndex
        switch outcome {
        case .created: index = .created
        case .replayed: index = .replayed
        case .overLimit: index = .overLimit
        case .keyReused: index = .keyReused
        }
        submissions[index.rawValue].increment()
    }

    /// A claimed run starts: its time in `scheduled`.
    func started(_ run: RunRecord) {
        guard let startedAt = run.startedAt else { return }
        scheduleDelay.recordNanoseconds(Self.nanoseconds(from: run.createdAt, to: startedAt))
    }

    /// A run ended (by its worker, a stop, the reaper or recovery).
    func finished(_ run: RunRecord) {
        switch run.state {
        case .succeeded: succeeded.increment()
        case .failed: failed.increment()
        case .stopped: stopped.increment()
        case .partialSucceeded: partialSucceeded.increment()
        case .scheduled, .running: return
        }
        if let startedAt = run.startedAt, let finishedAt = run.finishedAt {
            runDuration.recordNanoseconds(Self.nanoseconds(from: startedAt, to: finishedAt))
        }
    }

    /// The reaper ended a stuck run.
    func reaped(_ run: RunRecord) {
        if run.state == .stopped {
            reaperStopped.increment()
        } else if run.startedAt == nil {
            reaperScheduled.increment()
        } else {
            reaperRunning.increment()
        }
        finished(run)
    }

    /// Start-up recovery ended a run a previous process left running.
    func recovered(_ run: RunRecord) {
        reaperRecovered.increment()
        finished(run)
    }

    /// A transport opened (`opened: true`) or closed a stream of a run's events.
    public func watchStream(_ transport: Transport, opened: Bool) {
        let meter = transport == .grpc ? grpcWatchStreams : restWatchStreams
        if opened { meter.increment() } else { meter.decrement() }
    }

    /// Sets the `scheduled` and `running` gauges from the store's counters (one short read);
    /// an exporter calls it before each scrape. A failed read leaves them as they were.
    public func refreshRunGauges() async {
        do {
            let counts = try await store.activeRunCounts()
            scheduledGauge.record(counts.scheduled)
            runningGauge.record(counts.running)
        } catch {
            logger.warning("reading the run counts for the metrics failed", metadata: ["error": "\(error)"])
        }
    }

    private static func nanoseconds(from start: Date, to end: Date) -> Int64 {
        Int64(max(0, end.timeIntervalSince(start)) * 1e9)
    }
}

/// A store's metrics: committed transaction latency and group-commit batch sizes.
public final class StoreMetrics: Sendable {
    private let transaction: CoreMetrics.Timer
    private let batchSize: Recorder

    /// `store` labels the series (`sqlite`, `postgres`).
    public init(factory: any MetricsFactory, store: String) {
        transaction = CoreMetrics.Timer(label: EngineMetricName.storeTransaction, dimensions: [("store", store)],
                                        factory: factory)
        batchSize = Recorder(label: EngineMetricName.groupCommitBatchSize, dimensions: [("store", store)],
                             aggregate: true, factory: factory)
    }

    /// The monotonic time a transaction began, for `committed(writes:since:)`.
    static func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

    /// A transaction holding `writes` writes committed; it began at `since` (`now()`).
    func committed(writes: Int, since start: UInt64) {
        transaction.recordNanoseconds(Int64(DispatchTime.now().uptimeNanoseconds &- start))
        batchSize.record(writes)
    }

    /// A transaction that is not a group commit committed.
    func committed(since start: UInt64) {
        transaction.recordNanoseconds(Int64(DispatchTime.now().uptimeNanoseconds &- start))
    }

    /// Submissions decided together in one transaction.
    func grouped(writes: Int) {
        batchSize.record(writes)
    }
}
