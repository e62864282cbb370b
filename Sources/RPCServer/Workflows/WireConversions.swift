import Codec
import Engine
import Foundation

/// Engine values to `flowd.v1` wire messages, in one place.
enum WireConversions {
    static func run(_ run: RunRecord, now: Date) -> FlowdV1.Run {
        var wire = FlowdV1.Run()
        wire.id = run.id
        wire.workflow = run.workflow
        wire.workflowVersion = run.workflowVersion
        wire.status = status(run.state)
        wire.inputsJson = run.inputsJSON
        wire.outputsJson = run.outputsJSON ?? ""
        wire.error = run.error ?? ""
        wire.triggeredFrom = trigger(run.trigger)
        wire.transport = run.transport == .grpc ? .grpc : .rest
        wire.user = run.user
        wire.createdAt = timestamp(run.createdAt)
        wire.startedAt = run.startedAt.map(timestamp)
        wire.finishedAt = run.finishedAt.map(timestamp)
        wire.elapsedMs = run.elapsedMilliseconds(now: now)
        wire.totalSteps = Int32(clamping: run.totalSteps)
        wire.attempt = Int32(clamping: run.attempt)
        wire.lastSequence = run.lastSequence
        wire.totalTokens = run.totalTokens
        return wire
    }

    static func status(_ state: RunState) -> FlowdV1.RunStatus {
        switch state {
        case .scheduled: .scheduled
        case .running: .running
        case .succeeded: .succeeded
        case .failed: .failed
        case .stopped: .stopped
        case .partialSucceeded: .partialSucceeded
        }
    }

    static func state(_ status: FlowdV1.RunStatus) -> RunState? {
        switch status {
        case .scheduled: .scheduled
        case .running: .running
        case .succeeded: .succeeded
        case .failed: .failed
        case .stopped: .stopped
        case .partialSucceeded: .partialSucceeded
        default: nil
        }
    }

    static func trigger(_ trigger: Trigger) -> FlowdV1.Trigger {
        switch trigger {
        case .apiAsync: .apiAsync
        case .apiBlocking: .apiBlocking
        case .apiStreaming: .apiStreaming
        }
    }

    static func timestamp(_ date: Date) -> Codec.Timestamp {
        Codec.Timestamp(millisecondsSince1970: Int64((date.timeIntervalSince1970 * 1000).rounded()))
    }

    /// A stored event as a wire event. Run events carry the run (their payload is the run
    /// record); node events carry what the executor recorded.
    static func event(_ event: RunEvent, now: Date) -> FlowdV1.RunEvent {
        var wire = FlowdV1.RunEvent(runId: event.runID, sequence: event.sequence, time: timestamp(event.time))
        switch event.kind {
        case .runStarted, .runFinished:
            let record = try? RunRecord.jsonDecoder.decode(RunRecord.self, from: Data(event.payloadJSON.utf8))
            let run = record.map { self.run($0, now: now) } ?? FlowdV1.Run(id: event.runID)
            wire.event = event.kind == .runStarted ? .runStarted(FlowdV1.RunStarted(run: run)) : .runFinished(FlowdV1.RunFinished(run: run))
        case .nodeStarted:
            let fields = NodeFields(event.payloadJSON)
            wire.event = .nodeStarted(FlowdV1.NodeStarted(
                nodeId: fields.string("node_id"), nodeKind: fields.string("node_kind"), title: fields.string("title"),
                index: fields.int32("index"), inputsJson: fields.json("inputs"), inputsTruncated: fields.bool("inputs_truncated")))
        case .nodeFinished:
            let fields = NodeFields(event.payloadJSON)
            var finished = FlowdV1.NodeFinished(
                nodeId: fields.string("node_id"), nodeKind: fields.string("node_kind"), title: fields.string("title"),
                index: fields.int32("index"), status: nodeStatus(fields.string("status")), inputsJson: fields.json("inputs"),
                outputsJson: fields.json("outputs"), error: fields.string("error"))
            finished.elapsedMs = fields.int64("elapsed_ms")
            finished.inputsTruncated = fields.bool("inputs_truncated")
            finished.outputsTruncated = fields.bool("outputs_truncated")
            finished.attempt = fields.int32("attempt")
            wire.event = .nodeFinished(finished)
        case .textChunk:
            let fields = NodeFields(event.payloadJSON)
            wire.event = .textChunk(FlowdV1.TextChunk(nodeId: fields.string("node_id"), text: fields.string("text")))
        }
        return wire
    }

    static func heartbeat(runID: String, lastSequence: Int64, now: Date) -> FlowdV1.RunEvent {
        FlowdV1.RunEvent(runId: runID, sequence: lastSequence, time: timestamp(now), event: .heartbeat)
    }

    private static func nodeStatus(_ text: String) -> FlowdV1.NodeStatus {
        switch text {
        case "running": .running
        case "succeeded": .succeeded
        case "failed": .failed
        case "skipped": .skipped
        case "stopped": .stopped
        default: .unspecified
        }
    }

    /// Loose reading of a node event's JSON payload: absent or mistyped fields read as empty.
    private struct NodeFields {
        let object: [String: Any]

        init(_ json: String) {
            object = (try? JSONSerialization.jsonObject(with: Data(json.utf8))) as? [String: Any] ?? [:]
        }

        func string(_ key: String) -> String { object[key] as? String ?? "" }
        func bool(_ key: String) -> Bool { object[key] as? Bool ?? false }
        func int64(_ key: String) -> Int64 { (object[key] as? NSNumber)?.int64Value ?? 0 }
        func int32(_ key: String) -> Int32 { Int32(clamping: int64(key)) }

        /// A JSON value re-encoded as text ("" when absent).
        func json(_ key: String) -> String {
            guard let value = object[key], !(value is NSNull),
                  let data = try? JSONSerialization.data(
                    withJSONObject: value, options: [.sortedKeys, .withoutEscapingSlashes, .fragmentsAllowed])
            else { return "" }
            return String(decoding: data, as: UTF8.self)
        }
    }
}
