import Codec
import Foundation
import RPCClient

/// Follows a run's events to its terminal event. A lost connection (UNAVAILABLE, or a stream
/// that ends before the run does) is resumed with `WatchRun(after_sequence = last seen)`, so
/// nothing is missed and nothing is shown twice; every resumption is announced through
/// `notice` first.
struct EventFollower: Sendable {
    /// What a resumption looks like, for the screen.
    struct Resumption: Sendable {
        var reason: String
        var afterSequence: Int64
        var attempt: Int
        var maxAttempts: Int
    }

    /// Reconnection limits. Defaults: 10 attempts in a row without an event in between,
    /// waiting 200 ms, doubled after each failure, at most 5 s.
    struct Reconnection: Sendable {
        var maxAttempts = 10
        var firstDelay: Duration = .milliseconds(200)
        var maxDelay: Duration = .seconds(5)
    }

    var options: ClientOptions
    var reconnection = Reconnection()
    var deadline: ContinuousClock.Instant?

    /// How the first connection gets events: a new run (`StreamWorkflow`) or an existing one.
    enum Start: Sendable {
        case submit(FlowdV1.RunWorkflowRequest)
        case watch(runID: String, afterSequence: Int64)
    }

    /// Returns the run as its `run_finished` event carried it.
    func follow(_ start: Start,
                event: @Sendable (FlowdV1.RunEvent) -> Void,
                notice: @Sendable (Resumption) -> Void) async throws(GRPCCallError) -> FlowdV1.Run {
        var runID: String?
        var lastSequence: Int64 = 0
        var submit: FlowdV1.RunWorkflowRequest?
        switch start {
        case .submit(let request): submit = request
        case .watch(let id, let after): runID = id; lastSequence = after
        }
        var failures = 0
        var everConnected = false
        var current: GRPCClientConnection?
        while true {
            let lost: GRPCCallError
            do {
                let connection = try await options.connect()
                current = connection
                everConnected = true
                let events: AsyncThrowingMapSequence<AsyncThrowingStream<[UInt8], any Error>, FlowdV1.RunEvent>
                if let request = submit {
                    submit = nil
                    events = connection.serverStreaming(WorkflowsMethod.streamWorkflow, request,
                                                        metadata: options.metadata, timeout: remaining(until: deadline))
                } else {
                    events = connection.serverStreaming(
                        WorkflowsMethod.watchRun, FlowdV1.WatchRunRequest(runId: runID ?? "", afterSequence: lastSequence),
                        metadata: options.metadata, timeout: remaining(until: deadline))
                }
                for try await received in events {
                    failures = 0
                    if runID == nil, !received.runId.isEmpty { runID = received.runId }
                    if case .heartbeat = received.event { continue }
                    guard received.sequence > lastSequence else { continue }
                    lastSequence = received.sequence
                    event(received)
                    if case .runFinished(let finished) = received.event {
                        await connection.close()
                        return finished.run
                    }
                }
                lost = GRPCCallError(code: .unavailable, message: "the event stream ended before the run did")
            } catch let error as GRPCCallError {
                guard error.code == .unavailable, everConnected, runID != nil else {
                    await current?.close()
                    throw error
                }
                lost = error
            } catch {
                await current?.close()
                throw GRPCCallError(code: .unknown, message: "\(error)")
            }
            await current?.close()
            current = nil
            failures += 1
            guard failures <= reconnection.maxAttempts else { throw lost }
            if let deadline, deadline <= .now {
                throw GRPCCallError(code: .deadlineExceeded, message: "the deadline passed while reconnecting")
            }
            notice(Resumption(reason: Output.describe(lost), afterSequence: lastSequence, attempt: failures,
                              maxAttempts: reconnection.maxAttempts))
            var delay = reconnection.firstDelay
            for _ in 1..<failures { delay = min(delay * 2, reconnection.maxDelay) }
            try? await Task.sleep(for: delay)
        }
    }
}
