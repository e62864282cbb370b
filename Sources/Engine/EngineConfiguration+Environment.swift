import Foundation

extension EngineConfiguration {
    /// A configuration value that could not be read.
    public struct InvalidSetting: Error, Sendable, CustomStringConvertible {
        public var name: String
        public var value: String
        public var expected: String
        public var description: String { "\(name)=\(value): expected \(expected)" }
    }

    /// Applies the environment variables that configure the Engine; Dify's names where Dify
    /// has one:
    ///
    /// | variable | meaning |
    /// | --- | --- |
    /// | `ASYNC_WORKFLOW_MAX_CONCURRENT` | active runs per tenant (default 50) |
    /// | `ZOMBIE_WORKFLOW_SCHEDULED_TIMEOUT_MINUTES` | reaper: scheduled for longer (default 5) |
    /// | `ZOMBIE_WORKFLOW_RUNNING_TIMEOUT_MINUTES` | reaper: running without progress (default 30) |
    /// | `ENABLE_REAP_ZOMBIE_WORKFLOW_RUNS_TASK` | reaper on (`true`, default) or off (`false`) |
    /// | `FLOWD_WORKERS` | runs executed at once by this process |
    /// | `FLOWD_WORKERS_PER_TENANT` | runs one tenant may execute at once in this process |
    /// | `FLOWD_IDEMPOTENCY_TTL_HOURS` | how long idempotency keys are honoured (default 24) |
    /// | `FLOWD_LEASE_SECONDS` | how long a claim lasts without renewal (default 30; renewed every third of it) |
    /// | `FLOWD_REAPER_INTERVAL_SECONDS` | how often the reaper runs (default 30) |
    ///
    /// All or nothing: on an invalid value nothing is changed.
    public mutating func apply(environment: [String: String]) throws(InvalidSetting) {
        var updated = self
        if let value = environment["ASYNC_WORKFLOW_MAX_CONCURRENT"] {
            updated.admission.defaultConcurrencyLimit = try Self.positiveInt(value, name: "ASYNC_WORKFLOW_MAX_CONCURRENT")
        }
        if let value = environment["ZOMBIE_WORKFLOW_SCHEDULED_TIMEOUT_MINUTES"] {
            updated.reaper.scheduledTimeout = .seconds(60 * (try Self.positiveInt(value, name: "ZOMBIE_WORKFLOW_SCHEDULED_TIMEOUT_MINUTES")))
        }
        if let value = environment["ZOMBIE_WORKFLOW_RUNNING_TIMEOUT_MINUTES"] {
            updated.reaper.runningTimeout = .seconds(60 * (try Self.positiveInt(value, name: "ZOMBIE_WORKFLOW_RUNNING_TIMEOUT_MINUTES")))
        }
        if let value = environment["ENABLE_REAP_ZOMBIE_WORKFLOW_RUNS_TASK"] {
            switch value.lowercased() {
            case "true", "1", "yes", "on": updated.reaperEnabled = true
            case "false", "0", "no", "off": updated.reaperEnabled = false
            default: throw InvalidSetting(name: "ENABLE_REAP_ZOMBIE_WORKFLOW_RUNS_TASK", value: value, expected: "true or false")
            }
        }
        if let value = environment["FLOWD_WORKERS"] {
            guard let count = Int(value.trimmingCharacters(in: .whitespaces)), count >= 0 else {
                throw InvalidSetting(name: "FLOWD_WORKERS", value: value, expected: "a whole number, 0 or more")
            }
            updated.workerCount = count
        }
        if let value = environment["FLOWD_WORKERS_PER_TENANT"] {
            updated.workersPerTenant = try Self.positiveInt(value, name: "FLOWD_WORKERS_PER_TENANT")
        }
        if let value = environment["FLOWD_IDEMPOTENCY_TTL_HOURS"] {
            updated.admission.idempotencyTTL = .seconds(3600 * (try Self.positiveInt(value, name: "FLOWD_IDEMPOTENCY_TTL_HOURS")))
        }
        if let value = environment["FLOWD_LEASE_SECONDS"] {
            let seconds = try Self.positiveInt(value, name: "FLOWD_LEASE_SECONDS")
            updated.leaseDuration = .seconds(seconds)
            updated.leaseRenewalInterval = .milliseconds(seconds * 1000 / 3)
        }
        if let value = environment["FLOWD_REAPER_INTERVAL_SECONDS"] {
            updated.reaperInterval = .seconds(try Self.positiveInt(value, name: "FLOWD_REAPER_INTERVAL_SECONDS"))
        }
        self = updated
    }

    private static func positiveInt(_ value: String, name: String) throws(InvalidSetting) -> Int {
        guard let number = Int(value.trimmingCharacters(in: .whitespaces)), number > 0 else {
            throw InvalidSetting(name: name, value: value, expected: "a positive whole number")
        }
        return number
    }
}
