import Engine
import Foundation

/// Run events as Dify's stream events (notes/dify-contract.md 2.3-2.5): every event is
/// `{"event", "workflow_run_id", "task_id", "data"}`; times are unix seconds.
enum DifyEvents {
    static func seconds(_ date: Date) -> DifyJSON { .int(Int64(date.timeIntervalSince1970.rounded(.down))) }

    static func elapsed(_ run: RunRecord) -> DifyJSON { .double(Double(run.elapsedMilliseconds(now: Date())) / 1000) }

    /// The stream event for a stored event; nil for one that cannot be read.
    static func streamEvent(_ event: RunEvent) -> DifyJSON? {
        let name: String
        let data: DifyJSON
        switch event.kind {
        case .runStarted:
            guard let run = record(event) else { return nil }
            name = "workflow_started"
            data = .object([
                ("id", .string(run.id)), ("workflow_id", .string(run.workflow)),
                ("inputs", DifyJSON(parsing: run.inputsJSON)), ("created_at", seconds(run.createdAt)),
            ])
        case .runFinished:
            guard let run = record(event) else { return nil }
            name = "workflow_finished"
            data = .object([
                ("id", .string(run.id)), ("workflow_id", .string(run.workflow)), ("status", .string(run.state.rawValue)),
                ("outputs", DifyJSON(parsing: run.outputsJSON)), ("error", .string(run.error)),
                ("elapsed_time", elapsed(run)), ("total_tokens", .int(run.totalTokens)),
                ("total_steps", .int(Int64(run.totalSteps))),
                ("created_by", .object([("id", .string(run.user)), ("user", .string(run.user))])),
                ("created_at", seconds(run.createdAt)), ("finished_at", run.finishedAt.map(seconds) ?? .null),
                ("exceptions_count", 0), ("files", .array([])),
            ])
        case .nodeStarted, .nodeFinished:
            let node = DifyJSON(parsing: event.payloadJSON)
            let nodeID = node["node_id"] ?? .null
            let index = node["index"] ?? .null
            var fields: [(String, DifyJSON)] = [
                ("id", .string("\(event.runID)-\(nodeID.plain)-\(index.plain)")), ("node_id", nodeID),
                ("node_type", node["node_kind"] ?? .null), ("title", node["title"] ?? nodeID), ("index", index),
                ("predecessor_node_id", .null), ("inputs", node["inputs"] ?? .null),
            ]
            if event.kind == .nodeStarted {
                name = "node_started"
                fields += [("created_at", seconds(event.time)), ("extras", .object([])),
                           ("iteration_id", .null), ("loop_id", .null)]
            } else {
                name = "node_finished"
                let elapsedMS: Double = switch node["elapsed_ms"] {
                case .int(let ms)?: Double(ms)
                case .double(let ms)?: ms
                default: 0
                }
                fields += [
                    ("process_data", .null), ("outputs", node["outputs"] ?? .null), ("status", node["status"] ?? .null),
                    ("error", node["error"] ?? .null), ("elapsed_time", .double(elapsedMS / 1000)),
                    ("execution_metadata", .null),
                    ("created_at", seconds(event.time.addingTimeInterval(-elapsedMS / 1000))),
                    ("finished_at", seconds(event.time)), ("files", .array([])), ("iteration_id", .null), ("loop_id", .null),
                ]
            }
            data = .object(fields)
        case .textChunk:
            let chunk = DifyJSON(parsing: event.payloadJSON)
            name = "text_chunk"
            data = .object([("text", chunk["text"] ?? ""), ("from_variable_selector", .array([chunk["node_id"] ?? .null]))])
        }
        return .object([
            ("event", .string(name)), ("workflow_run_id", .string(event.runID)), ("task_id", .string(event.runID)),
            ("data", data),
        ])
    }

    private static func record(_ event: RunEvent) -> RunRecord? {
        try? RunRecord.jsonDecoder.decode(RunRecord.self, from: Data(event.payloadJSON.utf8))
    }
}

extension DifyJSON {
    /// The value as text without quotes (for building ids).
    var plain: String {
        if case .string(let s) = self { return s }
        return text
    }
}
