import Engine
import Foundation

/// Run events as Dify's stream events (notes/dify-contract.md 2.3-2.5): every event is
/// `{"event", "workflow_run_id", "task_id", "data"}`; times are unix seconds.
enum DifyEvents {
    static func seconds(_ date: Date) -> DifyJSON { .int(Int64(date.timeIntervalSince1970.rounded(.down))) }

    static func elapsed(_ run: RunRecord) -> DifyJSON { .double(Double(run.elapsedMilliseconds(now: Date())) / 1000) }

    /// The stream event for a stored event; nil for one that cannot be read and for what
    /// Dify does not send: a branch not taken (`node_finished` with status `skipped`) and the
    /// `node_started` of a retry. A failed attempt that is retried is `node_retry` (status
    /// `retry`, `retry_index` 1 for the first retry), so a retried node shows one `node_started`.
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
            let attempt: Int64 = if case .int(let number)? = node["attempt"] { number } else { 1 }
            if event.kind == .nodeStarted && attempt > 1 { return nil }
            if event.kind == .nodeFinished && node["status"] == "skipped" { return nil }
            let retried = event.kind == .nodeFinished && node["will_retry"] == true
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
                name = retried ? "node_retry" : "node_finished"
                let elapsedMS: Double = switch node["elapsed_ms"] {
                case .int(let ms)?: Double(ms)
                case .double(let ms)?: ms
                default: 0
                }
                fields += [
                    ("process_data", .null), ("outputs", node["outputs"] ?? .null),
                    ("status", retried ? "retry" : node["status"] ?? .null),
                    ("error", node["error"] ?? .null), ("elapsed_time", .double(elapsedMS / 1000)),
                    ("execution_metadata", .null),
                    ("created_at", seconds(event.time.addingTimeInterval(-elapsedMS / 1000))),
                    ("finished_at", seconds(event.time)), ("files", .array([])), ("iteration_id", .null), ("loop_id", .null),
                ]
                if retried { fields.append(("retry_index", .int(attempt))) }
            }
            data = .object(fields)
        case .textChunk:
            let chunk = DifyJSON(parsing: event.payloadJSON)
            name = "text_chunk"
            // Dify's selector is [node id, variable]; a list of strings or null, never [null]
            // (the official SDK's model rejects that and aborts the stream).
            let selector: DifyJSON = if case .string(let id)? = chunk["node_id"], !id.isEmpty {
                .array([.string(id), "text"])
            } else {
                .null
            }
            data = .object([("text", chunk["text"] ?? ""), ("from_variable_selector", selector)])
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
