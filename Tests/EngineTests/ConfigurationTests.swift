import Engine
import Testing

@Suite("Engine configuration from the environment")
struct ConfigurationTests {
    @Test("Dify's variable names set the limit and the reaper; defaults stay otherwise")
    func difyNames() throws {
        var configuration = EngineConfiguration()
        #expect(configuration.admission.defaultConcurrencyLimit == 50)
        #expect(configuration.reaper.scheduledTimeout == .seconds(300))
        #expect(configuration.reaper.runningTimeout == .seconds(1800))
        try configuration.apply(environment: [
            "ASYNC_WORKFLOW_MAX_CONCURRENT": "7",
            "ZOMBIE_WORKFLOW_SCHEDULED_TIMEOUT_MINUTES": "2",
            "ZOMBIE_WORKFLOW_RUNNING_TIMEOUT_MINUTES": "45",
            "ENABLE_REAP_ZOMBIE_WORKFLOW_RUNS_TASK": "false",
            "FLOWD_WORKERS": "3",
            "FLOWD_IDEMPOTENCY_TTL_HOURS": "1",
            "FLOWD_LEASE_SECONDS": "6",
            "FLOWD_REAPER_INTERVAL_SECONDS": "4",
        ])
        #expect(configuration.admission.defaultConcurrencyLimit == 7)
        #expect(configuration.reaper.scheduledTimeout == .seconds(120))
        #expect(configuration.reaper.runningTimeout == .seconds(2700))
        #expect(!configuration.reaperEnabled)
        #expect(configuration.workerCount == 3)
        #expect(configuration.admission.idempotencyTTL == .seconds(3600))
        #expect(configuration.leaseDuration == .seconds(6))
        #expect(configuration.leaseRenewalInterval == .seconds(2), "renewed every third of the lease")
        #expect(configuration.reaperInterval == .seconds(4))
    }

    @Test("a bad value is an error naming the variable, and changes nothing")
    func badValues() {
        for (name, value) in [("ASYNC_WORKFLOW_MAX_CONCURRENT", "-1"), ("ZOMBIE_WORKFLOW_RUNNING_TIMEOUT_MINUTES", "soon"),
                              ("ENABLE_REAP_ZOMBIE_WORKFLOW_RUNS_TASK", "maybe"), ("FLOWD_LEASE_SECONDS", "0"),
                              ("FLOWD_REAPER_INTERVAL_SECONDS", "soon")] {
            var configuration = EngineConfiguration()
            do {
                try configuration.apply(environment: [name: value])
                Issue.record("\(name)=\(value) was accepted")
            } catch {
                #expect(error.name == name)
                #expect(error.description.hasPrefix("\(name)=\(value)"))
            }
            #expect(configuration.admission.defaultConcurrencyLimit == 50)
            #expect(configuration.reaperEnabled)
        }
        var configuration = EngineConfiguration()
        #expect(throws: EngineConfiguration.InvalidSetting.self) {
            try configuration.apply(environment: ["ASYNC_WORKFLOW_MAX_CONCURRENT": "9", "FLOWD_WORKERS": "-1"])
        }
        #expect(configuration.admission.defaultConcurrencyLimit == 50, "a valid variable beside a bad one must not apply")
    }
}
