public import CoreMetrics
import Foundation
import Logging
import Synchronization

/// Settings of the Engine, with Dify's defaults where Dify has one.
public struct EngineConfiguration: Sendable {
    /// Runs executed at once by this process. 0: this process executes no runs; it admits,
    /// serves, watches, stops and reaps them, and processes sharing its store execute them.
    public var workerCount: Int = 4
    /// Runs one tenant may execute at once in this process (`FLOWD_WORKERS_PER_TENANT`); nil
    /// means the default of `effectiveWorkersPerTenant`: all workers but a quarter (at least
    /// one) stay open to other tenants, so a tenant with long runs cannot hold every worker.
    public var workersPerTenant: Int?
    /// Admission: per-tenant active-run limit (`ASYNC_WORKFLOW_MAX_CONCURRENT`, default 50) and
    /// how long idempotency keys are honoured (24 h).
    public var admission = AdmissionPolicy(defaultConcurrencyLimit: 50, idempotencyTTL: .seconds(24 * 3600))
    /// How long a claim lasts without renewal; a worker renews every `leaseRenewalInterval`.
    public var leaseDuration: Duration = .seconds(30)
    public var leaseRenewalInterval: Duration = .seconds(10)
    /// Reaper thresholds (`ZOMBIE_WORKFLOW_SCHEDULED_TIMEOUT_MINUTES` = 5,
    /// `ZOMBIE_WORKFLOW_RUNNING_TIMEOUT_MINUTES` = 30).
    public var reaper = ReaperPolicy(scheduledTimeout: .seconds(5 * 60), runningTimeout: .seconds(30 * 60))
    /// `ENABLE_REAP_ZOMBIE_WORKFLOW_RUNS_TASK`.
    public var reaperEnabled = true
    /// How often the reaper (and the idempotency purge) runs.
    public var reaperInterval: Duration = .seconds(30)
    /// Idle workers look for work submitted by other processes this often (local submissions
    /// wake them at once).
    public var idlePollInterval: Duration = .seconds(2)
    /// After a claim that passed over work another process held at that moment (a shared
    /// PostgreSQL store), the dispatcher claims again after this instead of `idlePollInterval`.
    public var contendedClaimRetryInterval: Duration = .milliseconds(25)
    /// Suggested retry delay for a tenant over its limit.
    public var retryAfter: Duration = .seconds(1)
    /// Live events buffered per watcher before the oldest are dropped (and re-read from the store).
    public var watcherBufferSize: Int = 256
    /// Stored events read per query when a watcher catches up.
    public var eventPageSize: Int = 256
    /// How long `stop` waits for a locally running run to end before returning it.
    public var stopWait: Duration = .seconds(5)
    /// On a shared store (PostgreSQL), watchers of runs executing in other processes are woken
    /// by the store's notifications; as the safety net for a lost one, their runs' stored
    /// events are also re-read this often (default 1 s).
    public var sharedEventRereadInterval: Duration = .seconds(1)

    public init() {}

    /// The per-tenant cap in force: `workersPerTenant`, or `workerCount` minus a quarter of
    /// it (at least one worker kept for others; 1 with a single worker).
    public var effectiveWorkersPerTenant: Int {
        if let workersPerTenant { return max(1, min(workersPerTenant, workerCount)) }
        return max(1, workerCount - max(1, workerCount / 4))
    }
}

/// A submission through the front door: the caller's key decides the tenant and the workflow
/// it may run; the Engine resolves the workflow and checks the inputs itself.
public struct SubmitRequest: Sendable, Equatable {
    public var key: APIKeyRecord
    /// Empty: the key's workflow. Another workflow than the key's is `workflowNotAllowed`.
    public var workflow: String
    /// A JSON object as text; empty means `{}`.
    public var inputsJSON: String
    public var user: String
    public var trigger: Trigger
    public var transport: Transport
    public var idempotencyKey: String?
    /// The caller's W3C trace context (`traceparent` metadata or header), when valid.
    public var traceContext: RunTraceContext?

    public init(key: APIKeyRecord, workflow: String = "", inputsJSON: String, user: String, trigger: Trigger,
                transport: Transport, idempotencyKey: String? = nil,
                traceContext: RunTraceContext? = nil) {
        self.key = key
        self.workflow = workflow
        self.inputsJSON = inputsJSON
        self.user = user
        self.trigger = trigger
        self.transport = transport
        self.idempotencyKey = idempotencyKey
        self.traceContext = traceContext
    }
}

/// A request to run a workflow that is already resolved (tenant, version and complete inputs).
public struct RunRequest: Sendable, Equatable {
    public var tenant: String
    public var workflow: String
    public var workflowVersion: String
    /// A JSON object as text.
    public var inputsJSON: String
    public var user: String
    public var trigger: Trigger
    public var transport: Transport
    public var idempotencyKey: String?
    /// The caller's W3C trace context (`traceparent` metadata or header), when valid.
    public var traceContext: RunTraceContext?

    public init(tenant: String, workflow: String, workflowVersion: String, inputsJSON: String, user: String,
                trigger: Trigger, transport: Transport, idempotencyKey: String? = nil,
                traceContext: RunTraceContext? = nil) {
        self.tenant = tenant
        self.workflow = workflow
        self.workflowVersion = workflowVersion
        self.inputsJSON = inputsJSON
        self.user = user
        self.trigger = trigger
        self.transport = transport
        self.idempotencyKey = idempotencyKey
        self.traceContext = traceContext
    }
}

/// The answer to a submission: the run, and whether this call created it.
public struct SubmitResult: Sendable, Equatable {
    public var run: RunRecord
    /// False when an idempotency key replayed an earlier submission.
    public var created: Bool
}

/// The run lifecycle: admission, dispatch to workers, events, stop and reaping
/// (DESIGN.md, "The run lifecycle"). Transports call it; it knows nothing of the wire.
public final class Engine: Sendable {
    private struct State {
        var started = false
        var shuttingDown = false
        /// Claims work; stopped first at shutdown, so that the set of executions is final.
        var dispatcher: Task<Void, Never>?
        /// Lease renewals and the reaper.
        var background: [Task<Void, Never>] = []
        /// Runs executing in this process, by id.
        var executing: [String: Execution] = [:]
        /// The tasks that record each executing run's result, by run id.
        var completions: [String: Task<Void, Never>] = [:]
        /// A claim is between its commit and the start of what it claimed.
        var claimInFlight = false
        /// Stops of running runs not (yet) executing here while a claim was in flight: the
        /// claim may hold them; its runs are cancelled at start when they are listed here.
        var stopsBeforeStart: Set<String> = []
    }

    /// A run executing in this process.
    private final class Execution: Sendable {
        let run: RunRecord
        let task: Task<ExecutionResult, any Error>
        let events: EventWriter
        let stopRequested = Atomic<Bool>(false)
        let lost = Atomic<Bool>(false)
        init(run: RunRecord, task: Task<ExecutionResult, any Error>, events: EventWriter) {
            self.run = run
            self.task = task
            self.events = events
        }

        /// Ends the execution as stopped by request.
        func requestStop() {
            stopRequested.store(true, ordering: .relaxed)
            task.cancel()
        }

        /// Ends the execution without writing anything more: the run is no longer ours.
        func markLost() {
            lost.store(true, ordering: .relaxed)
            task.cancel()
        }
    }

    /// Queues an execution's events for storage without waiting (the executor goes on; the
    /// store keeps them in order and the run's `finish`, queued later, after them), publishes
    /// each batch once stored, and remembers the first failure: the next `emit` throws it, and
    /// `finish` checks that every event was stored (`expectedLastSequence`). Events emitted
    /// while an append is queued but not yet applied join it: a quick run's node events cost
    /// one append, not one each; and the events still waiting when the run ends go with its
    /// finish (`takeForFinish`), so a quick run's events cost no append at all.
    private final class EventWriter: Sendable {
        private struct State {
            /// Events emitted so far (all of them, whether stored yet or not).
            var emitted: Int64 = 0
            /// Emitted, not yet taken by an append.
            var buffer: [NewEvent] = []
            var steps = 0
            /// An append is queued and has not taken the buffer yet.
            var appendQueued = false
            /// The run's finish is queued: it takes the buffer, a queued append leaves it.
            var finishing = false
            var failure: (any Error)?
        }

        private let run: RunRecord
        private let store: any RunStore
        private let hub: EventHub
        private let clock: any EngineClock
        private let state = Mutex(State())

        init(run: RunRecord, store: any RunStore, hub: EventHub, clock: any EngineClock) {
            self.run = run
            self.store = store
            self.hub = hub
            self.clock = clock
        }

        func emit(_ events: [NewEvent], steps: Int) throws {
            let enqueue = try state.withLock { state -> Bool in
                if let failure = state.failure { throw failure }
                state.emitted += Int64(events.count)
                state.buffer += events
                state.steps += steps
                defer { state.appendQueued = true }
                return !state.appendQueued
            }
            guard enqueue else { return }
            let (hub, runID) = (self.hub, run.id)
            store.enqueueEvents(runID: run.id, attempt: run.attempt, now: clock.now(), take: { [self] in
                state.withLock { state in
                    if state.finishing { return ([], 0) }
                    defer {
                        state.buffer = []
                        state.steps = 0
                        state.appendQueued = false
                    }
                    return (state.buffer, state.steps)
                }
            }, completion: { [self] result in
                switch result {
                case .success(let stored?): hub.publish(stored)
                case .success(nil): fail(ExecutionLostError(runID: runID))
                case .failure(let error): fail(error)
                }
            })
        }

        private func fail(_ error: any Error) {
            state.withLock { state in
                if state.failure == nil { state.failure = error }
            }
        }

        /// From now on the run's finish takes the events not yet taken by an append (an
        /// append queued before and applied after this leaves them to it). Call it before
        /// queueing the finish.
        func beginFinish() {
            state.withLock { $0.finishing = true }
        }

        /// The events (and steps) no append took; called by the finish when it is applied.
        func takeForFinish() -> (events: [NewEvent], steps: Int) {
            state.withLock { state in
                defer {
                    state.buffer = []
                    state.steps = 0
                }
                return (state.buffer, state.steps)
            }
        }

        /// The sequence of the last event once everything emitted is stored.
        var expectedLastSequence: Int64 { run.lastSequence + state.withLock { $0.emitted } }
        var failure: (any Error)? { state.withLock { $0.failure } }
    }

    public let configuration: EngineConfiguration
    private let store: any RunStore
    private let executor: any WorkflowExecutor
    /// Where runs execute (nil: the global concurrent executor); see `init`.
    private let executionExecutor: (any TaskExecutor)?
    private let workflows: (any WorkflowResolving)?
    private let clock: any EngineClock
    private let logger: Logger
    private let hub: EventHub
    private let workSignal = WorkSignal()
    private let state = Mutex(State())
    /// Names this process's workers in leases.
    public let processID = UUID().uuidString.lowercased()
    /// Submissions, finished runs, reaper actions, watch streams (README, "Metrics").
    public let metrics: EngineMetrics

    /// `workflows` resolves the submissions of `submit(_: SubmitRequest)` (the front door of
    /// the transports); without it only already resolved `RunRequest`s can be submitted.
    /// `metrics` makes the Engine's metrics (one factory per server keeps tests apart).
    /// `executionExecutor` runs the claiming and the executing of runs (their tasks prefer it;
    /// nil: the global concurrent executor): a server passes threads of lower CPU priority
    /// than those answering callers, so that execution takes the CPU the wire leaves.
    public init(store: any RunStore, executor: any WorkflowExecutor, workflows: (any WorkflowResolving)? = nil,
                configuration: EngineConfiguration = EngineConfiguration(),
                clock: any EngineClock = SystemClock(), logger: Logger = Logger(label: "flowd.engine"),
                metrics: any MetricsFactory = MetricsSystem.factory, executionExecutor: (any TaskExecutor)? = nil) {
        self.executionExecutor = executionExecutor
        self.metrics = EngineMetrics(factory: metrics, store: store, logger: logger)
        self.store = store
        self.executor = executor
        self.workflows = workflows
        self.configuration = configuration
        self.clock = clock
        self.logger = logger
        self.hub = EventHub(bufferSize: configuration.watcherBufferSize, clock: clock)
    }

    // MARK: Lifecycle

    /// Recovers runs a previous process left running, then starts the workers and the reaper.
    public func start() async throws {
        guard state.withLock({ state in
            defer { state.started = true }
            return !state.started
        }) else { return }
        let recovered = try await store.recoverInterruptedRuns(now: clock.now())
        for finished in recovered {
            metrics.recovered(finished.run)
            hub.publish([finished.event])
        }
        if !recovered.isEmpty {
            logger.warning("failed runs interrupted by a restart", metadata: ["count": "\(recovered.count)"])
        }
        // Claiming is part of executing: it runs where the runs do (the lease renewals do not,
        // so that a busy machine cannot starve a lease into expiry).
        let dispatcher = configuration.workerCount > 0
            ? Task(executorPreference: executionExecutor) { [self] in await dispatchLoop() } : nil
        var tasks: [Task<Void, Never>] = [Task { [self] in await leaseRenewalLoop() }]
        if configuration.reaperEnabled {
            tasks.append(Task { [self] in await reaperLoop() })
        }
        if let notifications = store.eventNotifications {
            let relay = EventRelay(store: store, hub: hub, clock: clock, logger: logger,
                                   rereadInterval: configuration.sharedEventRereadInterval,
                                   pageSize: configuration.eventPageSize,
                                   isLocal: { [self] runID in state.withLock { $0.executing[runID] != nil } })
            tasks.append(Task { await relay.run(notifications) })
        }
        state.withLock { state in
            state.dispatcher = dispatcher
            state.background = tasks
        }
    }

    /// Stops claiming work, lets executing runs finish for up to `gracePeriod`, then cancels
    /// them (they end `failed`, as an interrupted run would after a restart).
    public func shutdown(gracePeriod: Duration = .seconds(10)) async {
        let dispatcher = state.withLock { state in
            state.shuttingDown = true
            return state.dispatcher
        }
        workSignal.wakeAll()
        // A claim in flight still starts what it claimed; after this, nothing new starts.
        dispatcher?.cancel()
        await dispatcher?.value
        let (background, executing) = state.withLock { ($0.background, Array($0.executing.values)) }
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                for execution in executing { _ = await execution.task.result }
            }
            group.addTask { [clock] in
                // Cancelled when everything drained in time; otherwise ends the stragglers.
                try? await clock.sleep(for: gracePeriod)
                if !Task.isCancelled { for execution in executing { execution.task.cancel() } }
            }
            await group.next()
            group.cancelAll()
        }
        for task in background { task.cancel() }
        for task in background { await task.value }
        // Each ended execution's result is being recorded; wait for those writes.
        for completion in state.withLock({ Array($0.completions.values) }) { await completion.value }
    }

    private var isShuttingDown: Bool { state.withLock { $0.shuttingDown } }

    // MARK: Submission

    /// The front door: checks that the key may run the workflow, resolves it (version, inputs
    /// checked and completed with defaults), and admits the run as `submit(_: RunRequest)` does.
    public func submit(_ request: SubmitRequest) async throws -> SubmitResult {
        guard let workflows else {
            throw EngineError(code: .invalidRequest, message: "this engine has no workflow catalog", field: "workflow")
        }
        let workflow = request.workflow.isEmpty ? request.key.workflow : request.workflow
        guard workflow == request.key.workflow else {
            throw EngineError(code: .workflowNotAllowed, message: "this API key cannot run workflow \(workflow)",
                              field: "workflow", workflow: workflow)
        }
        if let key = request.idempotencyKey { try IdempotencyKey.validate(key) }
        let resolved = try workflows.resolve(workflow: workflow,
                                             inputsJSON: request.inputsJSON.isEmpty ? "{}" : request.inputsJSON)
        // The resolver's inputs are canonical already: no second parse for the fingerprint.
        let fingerprint = RequestFingerprint.compute(workflow: resolved.name, user: request.user,
                                                     canonicalInputs: resolved.inputsJSON)
        return try await admit(RunRequest(
            tenant: request.key.tenant, workflow: resolved.name, workflowVersion: resolved.version,
            inputsJSON: resolved.inputsJSON, user: request.user, trigger: request.trigger, transport: request.transport,
            idempotencyKey: request.idempotencyKey, traceContext: request.traceContext), fingerprint: fingerprint)
    }

    /// Admits a resolved run: it exists as `scheduled` when this returns, and a worker picks it up.
    public func submit(_ request: RunRequest) async throws -> SubmitResult {
        if let key = request.idempotencyKey { try IdempotencyKey.validate(key) }
        let fingerprint = try RequestFingerprint.compute(
            workflow: request.workflow, user: request.user, inputsJSON: request.inputsJSON)
        return try await admit(request, fingerprint: fingerprint)
    }

    private func admit(_ request: RunRequest, fingerprint: String) async throws -> SubmitResult {
        guard !isShuttingDown else { throw EngineError(code: .unavailable, message: "the server is shutting down") }
        let submission = Submission(
            runID: RunID.make(now: clock.now()), tenant: request.tenant, workflow: request.workflow,
            workflowVersion: request.workflowVersion, inputsJSON: request.inputsJSON, user: request.user,
            trigger: request.trigger, transport: request.transport, idempotencyKey: request.idempotencyKey,
            fingerprint: fingerprint, traceContext: request.traceContext)
        let outcome = try await store.submit(submission, policy: configuration.admission, now: clock.now())
        metrics.submitted(outcome)
        switch outcome {
        case .created(let run):
            workSignal.notify()
            return SubmitResult(run: run, created: true)
        case .replayed(let run):
            return SubmitResult(run: run, created: false)
        case .keyReused(let existing):
            throw EngineError(code: .idempotencyKeyReused,
                              message: "the idempotency key was used for a different request (run \(existing))",
                              runID: existing, field: "idempotency_key")
        case .overLimit(let active, let limit):
            throw EngineError(code: .tenantOverLimit,
                              message: "the tenant has \(active) active runs, its limit is \(limit)",
                              retryAfter: configuration.retryAfter, limit: limit, active: active)
        }
    }

    // MARK: Queries

    /// The run, or `runNotFound` (also for another tenant's run).
    public func run(id: String, tenant: String) async throws -> RunRecord {
        guard let run = try await store.run(id: id, tenant: tenant) else { throw Self.notFound(id) }
        return run
    }

    /// `run(id:tenant:)` read on the caller's thread when the store can (`RunStore.runAtOnce`),
    /// within `batch`'s read transaction when given; nil when it cannot.
    public func runAtOnce(id: String, tenant: String, batch: ReadBatch? = nil) throws -> RunRecord? {
        guard case .value(let found) = try store.runAtOnce(id: id, tenant: tenant, batch: batch) else { return nil }
        guard let run = found else { throw Self.notFound(id) }
        return run
    }

    /// Waits until the run is terminal and returns it; cancellable. Woken by the run's own
    /// `run_finished` event, not by polling.
    public func waitForCompletion(id: String, tenant: String) async throws -> RunRecord {
        let events = try await watch(id: id, tenant: tenant, after: 0, replayStored: false)
        for try await event in events where event.isTerminal {
            return try await run(id: id, tenant: tenant)
        }
        try Task.checkCancellation()
        return try await run(id: id, tenant: tenant)
    }

    /// The run's events with `sequence > after`: stored ones first, then live ones, without gap
    /// or duplicate, ending after the terminal event.
    public func watch(id: String, tenant: String, after: Int64) async throws -> RunEventSequence {
        try await watch(id: id, tenant: tenant, after: after, replayStored: true)
    }

    private func watch(id: String, tenant: String, after: Int64, replayStored: Bool) async throws -> RunEventSequence {
        guard let run = try await store.run(id: id, tenant: tenant) else { throw Self.notFound(id) }
        // Without replay (blocking callers), start from the current end of the log.
        let start = replayStored ? after : max(after, run.state.isTerminal ? run.lastSequence - 1 : run.lastSequence)
        // A finished run asked for events past its last one has nothing more to say.
        let finished = run.state.isTerminal && start >= run.lastSequence
        return RunEventSequence(runID: id, after: start, store: store, hub: hub, pageSize: configuration.eventPageSize,
                                finished: finished)
    }

    /// A page of the tenant's runs, newest first, and the cursor of the next page (nil at the end).
    public func list(tenant: String, filter: RunFilter, pageSize: Int, after cursor: RunCursor?) async throws -> ([RunRecord], RunCursor?) {
        let size = max(1, pageSize)
        var runs = try await store.listRuns(tenant: tenant, filter: filter, limit: size + 1, after: cursor)
        var next: RunCursor?
        if runs.count > size {
            runs.removeLast()
            next = runs.last.map { RunCursor(createdAt: $0.createdAt, id: $0.id) }
        }
        return (runs, next)
    }

    /// One page of a tenant's run log (`RunStore.runLog`).
    public func runLog(tenant: String, filter: RunFilter, offset: Int, limit: Int) async throws -> RunLogPage {
        try await store.runLog(tenant: tenant, filter: filter, offset: offset, limit: limit)
    }

    // MARK: Stop

    /// Stops a run: a scheduled one at once; a running one by cancelling its execution (this
    /// waits up to `stopWait` for it to end); a finished one is returned unchanged.
    public func stop(id: String, tenant: String) async throws -> RunRecord {
        switch try await store.stop(runID: id, tenant: tenant, now: clock.now()) {
        case .notFound:
            throw Self.notFound(id)
        case .alreadyFinished(let run):
            return run
        case .stopped(let run, let event):
            metrics.finished(run)
            hub.publish([event])
            return run
        case .stopRequested:
            // Not executing here and no claim in flight: another process holds it and sees the
            // durable request at its next lease renewal.
            let (execution, beforeStart) = state.withLock { state -> (Execution?, Bool) in
                if let execution = state.executing[id] { return (execution, false) }
                guard state.claimInFlight else { return (nil, false) }
                state.stopsBeforeStart.insert(id)
                return (nil, true)
            }
            // Not executing here any more: its finish may have committed after this stop and
            // been handled before this caller resumed (the store resumes the two from different
            // queues), so the record above can be stale.
            guard execution != nil || beforeStart else { return try await self.run(id: id, tenant: tenant) }
            let events = try await watch(id: id, tenant: tenant, after: 0, replayStored: false)
            execution?.requestStop()
            return try await withThrowingTaskGroup(of: RunRecord?.self) { group in
                group.addTask { [self] in
                    for try await event in events where event.isTerminal { return try await self.run(id: id, tenant: tenant) }
                    return nil
                }
                group.addTask { [clock, configuration] in
                    try await clock.sleep(for: configuration.stopWait)
                    return nil
                }
                let first = try await group.next() ?? nil
                group.cancelAll()
                if let first { return first }
                return try await self.run(id: id, tenant: tenant)
            }
        }
    }

    /// Sets a tenant's concurrency limit (nil: the default).
    public func setConcurrencyLimit(tenant: String, limit: Int?) async throws {
        try await store.setConcurrencyLimit(tenant: tenant, limit: limit)
    }

    // MARK: Reaper

    /// One reaper pass: fails stuck runs and purges expired idempotency records.
    @discardableResult
    public func reapOnce() async throws -> [FinishedRun] {
        let now = clock.now()
        let reaped = try await store.reap(now: now, policy: configuration.reaper)
        for finished in reaped {
            metrics.reaped(finished.run)
            hub.publish([finished.event])
            if let execution = state.withLock({ $0.executing[finished.run.id] }) {
                execution.markLost()
            }
            logger.warning("reaped a stuck run", metadata: ["run": "\(finished.run.id)", "error": "\(finished.run.error ?? "")"])
        }
        let purged = try await store.purgeExpiredIdempotencyRecords(now: now)
        if purged > 0 { logger.debug("purged expired idempotency records", metadata: ["count": "\(purged)"]) }
        return reaped
    }

    private func reaperLoop() async {
        while !Task.isCancelled && !isShuttingDown {
            do {
                try await clock.sleep(for: configuration.reaperInterval)
                try await reapOnce()
            } catch is CancellationError {
                return
            } catch {
                logger.error("reaper pass failed", metadata: ["error": "\(error)"])
            }
        }
    }

    // MARK: Workers

    /// Names this process in the leases it holds.
    private var worker: String { processID }

    /// One loop claims work for every free worker slot at once (one store call, round-robin
    /// across tenants, each tenant capped at `effectiveWorkersPerTenant`), starts each claimed
    /// run as a task, and sleeps until a submission or a finished run wakes it (or
    /// `idlePollInterval` passes, for work submitted by other processes). It never spins: it
    /// claims again only after such a wake-up or after a claim that filled every free slot.
    private func dispatchLoop() async {
        let cap = configuration.effectiveWorkersPerTenant
        while !Task.isCancelled && !isShuttingDown {
            let (busy, held) = state.withLock { state in
                (state.executing.count, state.executing.values.reduce(into: [String: Int]()) { $0[$1.run.tenant, default: 0] += 1 })
            }
            let slots = configuration.workerCount - busy
            var filled = false
            var contended = false
            if slots > 0 {
                state.withLock { $0.claimInFlight = true }
                do {
                    let (claimed, wasContended) = try await store.claimReportingContention(
                        ClaimRequest(worker: worker, maxRuns: slots, leaseDuration: configuration.leaseDuration,
                                     perTenantLimit: cap, held: held),
                        now: clock.now())
                    for claim in claimed { start(claim) }
                    filled = claimed.count == slots
                    contended = wasContended
                } catch {
                    logger.error("claiming runs failed", metadata: ["error": "\(error)"])
                }
                // Stops that came while the claim was in flight, for runs it started here.
                let stopped = state.withLock { state -> [Execution] in
                    state.claimInFlight = false
                    defer { state.stopsBeforeStart = [] }
                    return state.stopsBeforeStart.compactMap { state.executing[$0] }
                }
                for execution in stopped { execution.requestStop() }
            }
            if filled { continue }
            await workSignal.wait(orAfter: contended ? configuration.contendedClaimRetryInterval : configuration.idlePollInterval,
                                  clock: clock)
        }
    }

    /// Starts executing a claimed run in a task of its own.
    private func start(_ claim: ClaimedRun) {
        let run = claim.run
        metrics.started(run)
        hub.publish([claim.event])
        let writer = EventWriter(run: run, store: store, hub: hub, clock: clock)
        let context = ExecutionContext(runID: run.id, attempt: run.attempt) { events, steps in
            try writer.emit(events, steps: steps)
        }
        let executor = self.executor, preferred = executionExecutor
        state.withLock { state in
            // Created under the lock, so that the task's end (which removes it) comes after.
            let execution = Execution(run: run, task: Task(executorPreference: preferred) { try await executor.execute(run, context: context) },
                                      events: writer)
            state.executing[run.id] = execution
            state.completions[run.id] = Task(executorPreference: preferred) { [self] in await complete(execution) }
        }
    }

    /// Waits for an execution to end, records its result, frees its slot and wakes the dispatcher.
    private func complete(_ execution: Execution) async {
        let run = execution.run
        let outcome = await execution.task.result
        let final: (RunState, String?, String?)?
        if execution.lost.load(ordering: .relaxed) || execution.events.failure is ExecutionLostError {
            final = nil
        } else if execution.stopRequested.load(ordering: .relaxed) {
            final = (.stopped, nil, "stopped by request")
        } else {
            switch outcome {
            case .success(let result):
                final = (result.state, result.outputsJSON, result.error)
            case .failure(is ExecutionLostError):
                final = nil
            case .failure(is CancellationError):
                final = (.failed, nil, "interrupted: the server shut down while the run was running")
            case .failure(let error):
                final = (.failed, nil, "the workflow failed: \(error)")
            }
        }
        if let (state, outputs, error) = final {
            let writer = execution.events
            writer.beginFinish()
            let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<FinishedRun?, any Error>, Never>) in
                store.enqueueFinish(runID: run.id, attempt: run.attempt, state: state, outputsJSON: outputs, error: error,
                                    expectedLastSequence: writer.expectedLastSequence, now: clock.now(),
                                    take: { writer.takeForFinish() }) {
                    continuation.resume(returning: $0)
                }
                // A claim from now on is queued behind this finish: the slot is free already,
                // and the next run's claim can share the finish's transaction.
                release(run.id)
            }
            switch result {
            case .success(let finished?):
                metrics.finished(finished.run)
                hub.publish(finished.appended + [finished.event])
            case .success(nil): break
            case .failure(let error):
                logger.error("recording a run's result failed", metadata: ["run": "\(run.id)", "error": "\(error)"])
            }
        } else {
            release(run.id)
        }
        state.withLock { $0.completions[run.id] = nil }
    }

    /// Frees an execution's worker slot and wakes the dispatcher.
    private func release(_ runID: String) {
        state.withLock { $0.executing[runID] = nil }
        workSignal.notify()
    }

    /// Renews the leases of every run executing here in one store call per interval; a stop
    /// request or a lost lease cancels the execution.
    private func leaseRenewalLoop() async {
        while !Task.isCancelled {
            do {
                try await clock.sleep(for: configuration.leaseRenewalInterval)
                let executions = state.withLock { Array($0.executing.values) }
                guard !executions.isEmpty else { continue }
                let statuses = try await store.renewLeases(
                    executions.map { HeldLease(runID: $0.run.id, attempt: $0.run.attempt) }, worker: worker,
                    leaseDuration: configuration.leaseDuration, now: clock.now())
                for execution in executions {
                    switch statuses[execution.run.id] ?? .lost {
                    case .held(stopRequested: false):
                        continue
                    case .held(stopRequested: true):
                        execution.requestStop()
                    case .lost:
                        execution.markLost()
                    }
                }
            } catch is CancellationError {
                return
            } catch {
                logger.error("renewing leases failed", metadata: ["error": "\(error)"])
            }
        }
    }

    static func notFound(_ id: String) -> EngineError {
        EngineError(code: .runNotFound, message: "run \(id) not found", runID: id)
    }
}

/// Wakes the idle dispatcher when work arrives or a slot frees; notifications with nobody
/// waiting coalesce into one, kept for the next wait (so a burst of submissions costs one
/// wake-up, not one claim each).
final class WorkSignal: Sendable {
    private struct State {
        var pending = false
        var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
        var nextID = 0
        var closed = false
    }

    private let state = Mutex(State())

    func notify() {
        let waiter: CheckedContinuation<Void, Never>? = state.withLock { state in
            if let id = state.waiters.keys.first { return state.waiters.removeValue(forKey: id) }
            state.pending = true
            return nil
        }
        waiter?.resume()
    }

    func wakeAll() {
        let waiters = state.withLock { state in
            state.closed = true
            defer { state.waiters.removeAll() }
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Returns on a notification, after `timeout` of `clock` time, or on cancellation.
    func wait(orAfter timeout: Duration, clock: any EngineClock) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.waitForNotification() }
            group.addTask { try? await clock.sleep(for: timeout) }
            await group.next()
            group.cancelAll()
        }
    }

    private func waitForNotification() async {
        let id = state.withLock { state -> Int in
            state.nextID += 1
            return state.nextID
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLock { state -> Bool in
                    if state.closed || Task.isCancelled { return true }
                    if state.pending {
                        state.pending = false
                        return true
                    }
                    state.waiters[id] = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            let waiter = state.withLock { $0.waiters.removeValue(forKey: id) }
            waiter?.resume()
        }
    }
}

/// The events of one run with `sequence > after`: the stored ones page by page, then live ones
/// from the hub. Gaps (live events dropped by a full buffer, or the switch from stored to live)
/// are filled from the store; duplicates are skipped; the sequence ends after `run_finished`.
/// Pull-based: nothing is read ahead of the consumer beyond one page.
public struct RunEventSequence: AsyncSequence, Sendable {
    public typealias Element = RunEvent

    let runID: String
    let after: Int64
    let store: any RunStore
    let hub: EventHub
    let pageSize: Int
    /// The run ended at or before `after`: the sequence is empty.
    let finished: Bool

    public func makeAsyncIterator() -> Iterator {
        Iterator(cursor: cursor(tickInterval: nil))
    }

    /// The same events with a `.tick` about every `interval` in between (for heartbeats and
    /// pings): the ticks come from a clock the hub shares between all watchers of that
    /// interval, through the watcher's own subscription, so watching costs no task or timer
    /// beyond the caller's own.
    public func ticking(every interval: Duration) -> TickingRunEventSequence {
        TickingRunEventSequence(base: self, interval: interval)
    }

    func cursor(tickInterval: Duration?) -> WatchCursor {
        // Subscribe before the first store read, so that nothing falls between the two.
        WatchCursor(runID: runID, last: after, store: store,
                    live: hub.subscribe(runID: runID, tickInterval: tickInterval).makeAsyncIterator(),
                    pageSize: pageSize, done: finished)
    }

    public struct Iterator: AsyncIteratorProtocol {
        var cursor: WatchCursor

        public mutating func next() async throws -> RunEvent? {
            while let item = try await cursor.next() {
                if case .event(let event) = item { return event }
            }
            return nil
        }
    }
}

/// An item of `TickingRunEventSequence`.
public enum RunWatchItem: Sendable {
    case event(RunEvent)
    /// The shared clock ticked (nothing need have happened to the run).
    case tick
}

/// A run's events (`RunEventSequence`) with ticks in between; ends after the terminal event.
public struct TickingRunEventSequence: AsyncSequence, Sendable {
    public typealias Element = RunWatchItem

    let base: RunEventSequence
    let interval: Duration

    public func makeAsyncIterator() -> Iterator {
        Iterator(cursor: base.cursor(tickInterval: interval))
    }

    public struct Iterator: AsyncIteratorProtocol {
        var cursor: WatchCursor

        public mutating func next() async throws -> RunWatchItem? {
            try await cursor.next()
        }
    }
}

/// Where a watcher is in its run's events: the stored ones, then the live ones from its
/// subscription, without gap or duplicate.
struct WatchCursor {
    let runID: String
    var last: Int64
    let store: any RunStore
    var live: AsyncStream<HubItem>.AsyncIterator
    let pageSize: Int
    var page: [RunEvent] = []
    var pageIndex = 0
    var readingStored = true
    var done: Bool

    init(runID: String, last: Int64, store: any RunStore, live: AsyncStream<HubItem>.AsyncIterator,
         pageSize: Int, done: Bool) {
        self.runID = runID
        self.last = last
        self.store = store
        self.live = live
        self.pageSize = pageSize
        self.done = done
    }

    mutating func next() async throws -> RunWatchItem? {
        while !done {
            if pageIndex < page.count {
                let event = page[pageIndex]
                pageIndex += 1
                if pageIndex == page.count {
                    page = []
                    pageIndex = 0
                }
                guard event.sequence > last else { continue }
                last = event.sequence
                if event.isTerminal { done = true }
                return .event(event)
            }
            if readingStored {
                page = try await store.events(runID: runID, after: last, limit: pageSize)
                pageIndex = 0
                if page.count < pageSize { readingStored = false }
                continue
            }
            guard let item = await live.next() else {
                try Task.checkCancellation()
                return nil
            }
            guard case .event(let event) = item else { return .tick }
            if event.sequence <= last {
                // The run ended before the watcher's position: nothing more will come.
                if event.isTerminal { done = true }
                continue
            }
            if event.sequence > last + 1 {
                readingStored = true  // a gap: the missing events are stored
                continue
            }
            last = event.sequence
            if event.isTerminal { done = true }
            return .event(event)
        }
        return nil
    }
}
