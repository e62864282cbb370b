import Foundation

/// Runs a workflow. The Engine calls it on a worker once a run is claimed; node kinds and
/// definitions live behind it (the workflows issue). It must honour task cancellation: a stop
/// request, a lost lease or shutdown cancel the task.
public protocol WorkflowExecutor: Sendable {
    func execute(_ run: RunRecord, context: ExecutionContext) async throws -> ExecutionResult
}

/// How an execution ended.
public struct ExecutionResult: Sendable, Equatable {
    /// `succeeded`, `failed` or `partialSucceeded`.
    public var state: RunState
    public var outputsJSON: String?
    public var error: String?

    public init(state: RunState, outputsJSON: String? = nil, error: String? = nil) {
        precondition([.succeeded, .failed, .partialSucceeded].contains(state), "an execution ends succeeded, failed or partial-succeeded")
        self.state = state
        self.outputsJSON = outputsJSON
        self.error = error
    }

    public static func succeeded(outputsJSON: String) -> ExecutionResult {
        ExecutionResult(state: .succeeded, outputsJSON: outputsJSON)
    }

    public static func failed(_ error: String) -> ExecutionResult {
        ExecutionResult(state: .failed, error: error)
    }
}

/// Thrown by `ExecutionContext.emit` when the run is no longer this worker's (reaped,
/// stopped elsewhere, or the lease was lost): the execution must end without writing more.
public struct ExecutionLostError: Error, Sendable {
    public var runID: String
}

/// What an executor may do with its run: append events (stored in order, then delivered to
/// watchers). `emit` queues them and returns without waiting for the store; it throws
/// `ExecutionLostError` (or the store's error) once an earlier append found the run no longer
/// this worker's or failed, and the run then cannot end succeeded.
public struct ExecutionContext: Sendable {
    public let runID: String
    public let attempt: Int
    let emitEvents: @Sendable ([NewEvent], Int) async throws -> Void

    /// Queues `events` for storage in order (published once stored); `steps` is added to the
    /// run's step count.
    public func emit(_ events: [NewEvent], steps: Int = 0) async throws {
        try await emitEvents(events, steps)
    }

    public func emit(_ event: NewEvent, steps: Int = 0) async throws {
        try await emitEvents([event], steps)
    }
}
