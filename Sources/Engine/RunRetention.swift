import Foundation
import Logging

/// A store that deletes old runs: terminal runs finished before a time, with their events and
/// the idempotency records that point at them, a bounded batch per call (one short write
/// transaction, so submissions go on between batches). Both stores implement it.
public protocol RunRetentionStore: Sendable {
    /// Deletes at most `limit` runs in a terminal state whose `finishedAt` is before `cutoff`,
    /// their events and their idempotency records; the number of runs deleted.
    func purgeFinishedRuns(finishedBefore cutoff: Date, limit: Int) async throws -> Int
}

/// How long finished runs are kept (DESIGN.md, "Storage": `--retention-days`,
/// `FLOWD_RETENTION_DAYS`).
public struct RetentionConfiguration: Sendable, Equatable {
    /// Terminal runs and their events older than this many days are deleted; 0 keeps everything.
    public var days = 30
    /// Runs deleted per transaction.
    public var batchSize = 500
    /// Time between two purges.
    public var interval: Duration = .seconds(3600)

    public init() {}
}

/// Deletes the runs past the retention period, batch by batch, periodically. It runs beside
/// the Engine (started by `flowd serve`) and talks to the store only.
public struct RetentionPurger: Sendable {
    public let store: any RunRetentionStore
    public let configuration: RetentionConfiguration
    let clock: any EngineClock
    let logger: Logger

    public init(store: any RunRetentionStore, configuration: RetentionConfiguration, clock: any EngineClock = SystemClock(),
                logger: Logger = Logger(label: "flowd.retention")) {
        self.store = store
        self.configuration = configuration
        self.clock = clock
        self.logger = logger
    }

    /// One purge: batches until one comes back short; the runs deleted. Yields between batches.
    @discardableResult
    public func purgeOnce() async throws -> Int {
        guard configuration.days > 0 else { return 0 }
        let cutoff = clock.now().addingTimeInterval(-Double(configuration.days) * 86_400)
        let batch = max(1, configuration.batchSize)
        var total = 0
        while true {
            try Task.checkCancellation()
            let deleted = try await store.purgeFinishedRuns(finishedBefore: cutoff, limit: batch)
            total += deleted
            if deleted < batch { break }
            await Task.yield()
        }
        if total > 0 { logger.info("purged finished runs past retention", metadata: ["count": "\(total)", "days": "\(configuration.days)"]) }
        return total
    }

    /// Purges now and then every `interval` until cancelled; a failed purge is logged and tried
    /// again at the next interval.
    public func run() async {
        guard configuration.days > 0 else { return }
        while !Task.isCancelled {
            do {
                try await purgeOnce()
            } catch is CancellationError {
                return
            } catch {
                logger.warning("retention purge failed", metadata: ["error": "\(error)"])
            }
            do {
                try await clock.sleep(for: configuration.interval)
            } catch {
                return
            }
        }
    }
}
