import Engine
import Foundation
import Synchronization
import Tracing

/// Limits and settings of workflow execution.
public struct WorkflowRunnerConfiguration: Sendable {
    /// Programs `exec` nodes may run, as absolute paths. Empty: no `exec` node runs.
    public var allowedPrograms: Set<String> = []
    /// The base environment of an `exec` program; the node's `env` adds to it. Nothing of the
    /// server's own environment is passed on.
    public var programEnvironment: [String: String] = ["PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"]
    /// Resource limits of every `exec` program (setrlimit, applied before the program starts).
    public var programLimits = ProgramLimits()
    /// Nodes of one run executing at once.
    public var maxParallelNodes = 16
    /// A node's timeout when its definition sets none.
    public var defaultNodeTimeout: Duration = .seconds(600)
    /// Retry delays double up to this.
    public var maxRetryBackoff: Duration = .seconds(60)
    /// Node inputs and outputs longer than this (bytes of JSON) are truncated in events and flagged.
    public var eventValueLimit = 16 * 1024
    /// Which special-purpose addresses (loopback, private, link-local, metadata, ...) `http`
    /// nodes may reach: none by default. `flowd serve --egress-allow` (env `FLOWD_EGRESS_ALLOW`).
    public var egress = EgressPolicy()
    /// Largest HTTP response body read.
    public var maxResponseBytes = 8 * 1024 * 1024
    /// Largest stdout read from a program; more kills it and fails the node.
    public var maxProgramOutputBytes = 8 * 1024 * 1024
    /// Bytes of a program's stderr read (the error text quotes a short, masked excerpt).
    public var programStderrBytes = 4096

    public init() {}
}

/// Executes workflow runs for the Engine: finds the run's workflow in the catalog, checks its
/// inputs, and runs its nodes, each as soon as the nodes it depends on are done, in parallel
/// up to `maxParallelNodes`. Every node reports `node_started` and `node_finished` events
/// (`NodeEventPayload`). Cancellation (a stop) cancels the running nodes at once: HTTP calls
/// are abandoned, programs killed, sleeps cut short.
public struct WorkflowRunner: WorkflowExecutor {
    /// Receives events in order, and the number of steps (finished nodes) they complete.
    public typealias EventSink = @Sendable (_ events: [NewEvent], _ steps: Int) async throws -> Void

    public let catalog: WorkflowCatalog
    public let configuration: WorkflowRunnerConfiguration
    let resolver: any HostResolving
    let clock: any EngineClock

    /// `clock` paces `sleep` nodes, timeouts and retry delays; `resolver` finds the addresses
    /// of `http` nodes' hosts (checked against `configuration.egress`).
    public init(catalog: WorkflowCatalog, configuration: WorkflowRunnerConfiguration = WorkflowRunnerConfiguration(),
                resolver: any HostResolving = SystemResolver(), clock: any EngineClock = SystemClock()) {
        self.catalog = catalog
        self.configuration = configuration
        self.resolver = resolver
        self.clock = clock
    }

    public func execute(_ run: RunRecord, context: ExecutionContext) async throws -> ExecutionResult {
        guard let definition = catalog.workflow(named: run.workflow) else {
            return .failed("workflow '\(run.workflow)' is not loaded on this server")
        }
        guard run.workflowVersion.isEmpty || run.workflowVersion == definition.version else {
            return .failed("workflow '\(run.workflow)' version \(run.workflowVersion) is not loaded (this server has \(definition.version))")
        }
        let inputs: [String: JSONValue]
        do {
            inputs = try definition.validateInputs(json: run.inputsJSON)
        } catch {
            return .failed(error.message)
        }
        return try await withSpan("workflow \(run.workflow)", context: RunTracing.parentContext(of: run)) { span in
            span.recordAttributes {
                $0["flowd.run.id"] = run.id
                $0["flowd.workflow"] = run.workflow
                $0["flowd.workflow.version"] = definition.version
                $0["flowd.tenant"] = run.tenant
                $0["flowd.run.attempt"] = run.attempt
            }
            let result = try await self.run(definition, inputs: inputs) { events, steps in
                try await context.emit(events, steps: steps)
            }
            span.recordAttributes { $0["flowd.run.status"] = result.state.rawValue }
            if result.state == .failed { span.setStatus(SpanStatus(code: .error, message: result.error)) }
            return result
        }
    }

    /// Runs `definition` with checked `inputs` (see `WorkflowDefinition.validateInputs`),
    /// reporting events to `emit`. Throws `CancellationError` when cancelled, after the
    /// running nodes have stopped, and whatever `emit` throws.
    public func run(_ definition: WorkflowDefinition, inputs: [String: JSONValue], emit: @escaping EventSink) async throws -> ExecutionResult {
        let secrets = SecretValues()
        let result = try await run(definition, inputs: inputs, secrets: secrets) { events, steps in
            try await emit(events.map { NewEvent(kind: $0.kind, payloadJSON: secrets.scrub($0.payloadJSON)) }, steps)
        }
        return ExecutionResult(state: result.state, outputsJSON: result.outputsJSON.map(secrets.scrub),
                               error: result.error.map(secrets.scrub))
    }

    private func run(_ definition: WorkflowDefinition, inputs: [String: JSONValue], secrets: SecretValues,
                     emit: @escaping EventSink) async throws -> ExecutionResult {
        let abort = AbortReason()
        var status: [String: NodeStatus] = [:]
        var outputs: [String: JSONValue] = [:]
        var notTaken: Set<String> = []
        var endOutputs: [String: JSONValue] = [:]
        var continued: [String] = []
        var failure: String?
        var index = 0

        func isDone(_ id: String) -> Bool { [.succeeded, .failed, .skipped].contains(status[id]) }

        try await withThrowingTaskGroup(of: NodeOutcome.self) { group in
            var running = 0
            while true {
                // Start (or skip) every node whose dependencies are done, until nothing changes.
                var changed = true
                while changed && failure == nil && !Task.isCancelled {
                    changed = false
                    for node in definition.nodes where status[node.id] == nil && node.dependencies.allSatisfy(isDone) {
                        let skip = notTaken.contains(node.id)
                            || (!node.dependencies.isEmpty && node.dependencies.allSatisfy { status[$0] == .skipped })
                        if skip {
                            status[node.id] = .skipped
                            index += 1
                            let payload = NodeEventPayload(nodeID: node.id, nodeKind: node.kind.rawValue, title: node.title,
                                                           index: index, attempt: 0, status: .skipped)
                            try await emit([NewEvent(kind: .nodeFinished, payloadJSON: payload.jsonText)], 0)
                            changed = true
                            continue
                        }
                        guard running < max(1, configuration.maxParallelNodes) else { continue }
                        status[node.id] = .running
                        index += 1
                        running += 1
                        let attempt = NodeAttempt(node: node, index: index, inputs: inputs, outputs: outputs)
                        group.addTask { try await self.runNode(attempt, emit: emit, abort: abort, secrets: secrets) }
                    }
                }
                guard running > 0, let outcome = try await group.next() else { break }
                running -= 1
                let node = definition.node(id: outcome.id)!
                switch outcome.status {
                case .succeeded:
                    status[node.id] = .succeeded
                    outputs[node.id] = outcome.outputs
                    if let branches = node.behavior.branches {
                        let taken = outcome.outputs?.objectValue?["result"] == .bool(true)
                        notTaken.formUnion(taken ? branches.elseNodes : branches.thenNodes)
                    }
                    if node.kind == .end, case .object(let mapped)? = outcome.outputs {
                        endOutputs.merge(mapped) { _, new in new }
                    }
                case .failed where node.onError == .continue:
                    status[node.id] = .failed
                    outputs[node.id] = ["error": .string(outcome.error ?? "failed")]
                    continued.append(node.id)
                case .failed:
                    status[node.id] = .failed
                    if failure == nil {
                        let message = "node '\(node.id)' failed: \(outcome.error ?? "failed")"
                        failure = message
                        abort.set("cancelled because \(message)")
                        group.cancelAll()
                    }
                default:
                    status[node.id] = outcome.status
                }
            }
        }
        try Task.checkCancellation()
        if let failure { return .failed(failure) }
        let outputsJSON = JSONValue.object(endOutputs).jsonText
        guard continued.isEmpty else {
            return ExecutionResult(state: .partialSucceeded, outputsJSON: outputsJSON,
                                   error: "failed and continued: " + continued.map { "'\($0)'" }.joined(separator: ", "))
        }
        return .succeeded(outputsJSON: outputsJSON)
    }

    // MARK: One node

    /// What a node starts with: the run's inputs and the outputs of the nodes done before it.
    struct NodeAttempt: Sendable {
        let node: NodeDefinition
        let index: Int
        let inputs: [String: JSONValue]
        let outputs: [String: JSONValue]
    }

    struct NodeOutcome: Sendable {
        let id: String
        let status: NodeStatus
        let outputs: JSONValue?
        let error: String?
    }

    /// Why the remaining nodes are being cancelled, when it is not a stop.
    final class AbortReason: Sendable {
        private let reason = Mutex<String?>(nil)
        func set(_ text: String) { reason.withLock { $0 = $0 ?? text } }
        var text: String { reason.withLock { $0 } ?? "stopped" }
    }

    private func runNode(_ attempt: NodeAttempt, emit: @escaping EventSink, abort: AbortReason,
                         secrets: SecretValues) async throws -> NodeOutcome {
        let node = attempt.node
        let limit = configuration.eventValueLimit
        func payload(_ number: Int, _ status: NodeStatus, inputs: JSONValue? = nil, outputs: JSONValue? = nil,
                     error: String? = nil, elapsed: Duration? = nil, willRetry: Bool = false) -> String {
            let (boundedInputs, inputsTruncated) = NodeEventPayload.bounded(inputs, limit: limit)
            let (boundedOutputs, outputsTruncated) = NodeEventPayload.bounded(outputs, limit: limit)
            return NodeEventPayload(
                nodeID: node.id, nodeKind: node.kind.rawValue, title: node.title, index: attempt.index, attempt: number,
                status: status, inputs: boundedInputs, outputs: boundedOutputs, error: error,
                elapsedMS: elapsed.map { Int64(($0.seconds * 1000).rounded()) }, inputsTruncated: inputsTruncated,
                outputsTruncated: outputsTruncated, willRetry: willRetry
            ).jsonText
        }
        /// Records a stop even though this task is cancelled (the store refuses cancelled writers).
        func recordStop(_ number: Int, inputs: JSONValue?, elapsed: Duration?) async -> NodeOutcome {
            let event = NewEvent(kind: .nodeFinished, payloadJSON: payload(number, .stopped, inputs: inputs, error: abort.text, elapsed: elapsed))
            _ = await Task { try await emit([event], 1) }.result
            return NodeOutcome(id: node.id, status: .stopped, outputs: nil, error: abort.text)
        }

        let context = TemplateContext(inputs: attempt.inputs, outputs: attempt.outputs)
        let scope = NodeScope(context: context, dependencies: attempt.outputs.filter { node.dependencies.contains($0.key) },
                              inputs: attempt.inputs)
        let prepared: Result<PreparedNode, WorkflowNodeError> = Result { () throws(WorkflowNodeError) in
            try node.behavior.prepare(scope)
        }
        let eventInputs = try? prepared.get().eventInputs
        if let handled = try? prepared.get().secrets { secrets.add(handled) }
        let timeout = node.timeout ?? configuration.defaultNodeTimeout
        let environment = NodeEnvironment(configuration: configuration, clock: clock, timeout: timeout,
                                          http: HTTPEgress(policy: configuration.egress, resolver: resolver))
        var backoff = node.retry.backoff

        for number in 1...(node.retry.maxRetries + 1) {
            if Task.isCancelled { return await recordStop(number, inputs: eventInputs, elapsed: nil) }
            try await emit([NewEvent(kind: .nodeStarted, payloadJSON: payload(number, .running, inputs: eventInputs))], 0)
            let start = ContinuousClock.now
            let outcome = await withSpan("node \(node.id)") { span -> Result<JSONValue, any Error> in
                span.recordAttributes {
                    $0["flowd.node.id"] = node.id
                    $0["flowd.node.kind"] = node.kind.rawValue
                    $0["flowd.node.attempt"] = number
                }
                let outcome: Result<JSONValue, any Error>
                do {
                    let work = try prepared.get()
                    if let instant = work.instant {
                        outcome = .success(try instant())
                    } else {
                        outcome = .success(try await withTimeout(timeout) { try await work.perform(environment) })
                    }
                } catch {
                    outcome = .failure(error)
                }
                switch outcome {
                case .success:
                    span.recordAttributes { $0["flowd.node.status"] = NodeStatus.succeeded.rawValue }
                case .failure:
                    // No message: the error's text is scrubbed of secrets only where events are written.
                    let status: NodeStatus = Task.isCancelled ? .stopped : .failed
                    span.recordAttributes { $0["flowd.node.status"] = status.rawValue }
                    span.setStatus(SpanStatus(code: .error))
                }
                return outcome
            }
            let failure: WorkflowNodeError
            switch outcome {
            case .success(let result):
                let event = NewEvent(kind: .nodeFinished, payloadJSON: payload(
                    number, .succeeded, inputs: eventInputs, outputs: result, elapsed: ContinuousClock.now - start))
                try await emit([event], 1)
                return NodeOutcome(id: node.id, status: .succeeded, outputs: result, error: nil)
            case .failure where Task.isCancelled:
                return await recordStop(number, inputs: eventInputs, elapsed: ContinuousClock.now - start)
            case .failure(let error as WorkflowNodeError):
                failure = error
            case .failure(let error):
                failure = WorkflowNodeError(code: .other, message: "\(error)")
            }
            let retry = number <= node.retry.maxRetries && failure.isRetryable
            try await emit([NewEvent(kind: .nodeFinished, payloadJSON: payload(
                number, .failed, inputs: eventInputs, error: failure.message, elapsed: ContinuousClock.now - start,
                willRetry: retry))], retry ? 0 : 1)
            guard retry else { return NodeOutcome(id: node.id, status: .failed, outputs: nil, error: failure.message) }
            do {
                try await clock.sleep(for: backoff)
            } catch {
                return await recordStop(number, inputs: eventInputs, elapsed: nil)
            }
            backoff = min(backoff * 2, configuration.maxRetryBackoff)
        }
        preconditionFailure("the last attempt returns")
    }

    /// Runs `body`, cancelling it and throwing a `timeout` error after `timeout`.
    private func withTimeout<T: Sendable>(_ timeout: Duration, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { try await body() }
            group.addTask { [clock] in
                try await clock.sleep(for: timeout)
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let value = first else {
                try Task.checkCancellation()
                throw WorkflowNodeError(code: .timeout, message: "timed out after \(Self.format(timeout))")
            }
            return value
        }
    }

    static func format(_ duration: Duration) -> String {
        let seconds = duration.seconds
        return seconds < 1 ? "\(Int((seconds * 1000).rounded())) ms" : String(format: "%g s", seconds)
    }
}
