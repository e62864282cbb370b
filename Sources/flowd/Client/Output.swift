import Codec
import Foundation
import RPCClient

/// How the client commands print runs, events and errors: plain text for people (and pipes),
/// or one JSON object per line (`--json`) with stable field names (the proto's, snake_case;
/// enum values as short lowercase names such as `succeeded`; times in RFC 3339 UTC; the JSON
/// texts of inputs and outputs embedded as JSON).
enum Output {
    // MARK: Lines

    /// Writes a line to stdout at once (progress must not wait in a pipe buffer).
    static func line(_ text: String) {
        write(text + "\n", to: STDOUT_FILENO)
    }

    static func errorLine(_ text: String) {
        write(text + "\n", to: STDERR_FILENO)
    }

    /// Writes all of `text`. A reader that went away (`flowd watch ... | head`) ends the
    /// process quietly with 141, as SIGPIPE would (SwiftNIO ignores SIGPIPE).
    static func write(_ text: String, to descriptor: Int32) {
        var bytes = Array(text.utf8)[...]
        while !bytes.isEmpty {
            let written = bytes.withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress, $0.count) }
            if written < 0 {
                if errno == EINTR { continue }
                exit(141)
            }
            bytes = bytes.dropFirst(written)
        }
    }

    /// One JSON object on one line of stdout.
    static func json(_ object: [String: Any]) {
        line(jsonText(object))
    }

    static func jsonText(_ object: [String: Any]) -> String {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    // MARK: Errors

    /// One line on stderr: `flowd: CODE (REASON): message; retry in N s; field: why`.
    static func error(_ error: GRPCCallError, json: Bool) {
        if json {
            var object: [String: Any] = ["type": "error", "code": "\(error.code)", "message": error.message]
            if let info = error.errorInfo {
                object["reason"] = info.reason
                if !info.metadata.isEmpty { object["metadata"] = info.metadata }
            }
            if let retry = error.retryInfo { object["retry_after_ms"] = milliseconds(retry.retryDelay) }
            errorLine(jsonText(object))
        } else {
            errorLine("flowd: " + describe(error))
        }
    }

    static func describe(_ error: GRPCCallError) -> String {
        var text = "\(error.code)"
        if let reason = error.errorInfo?.reason, reason != "\(error.code)" { text += " (\(reason))" }
        let message = error.message.replacingOccurrences(of: "\n", with: " ")
        if !message.isEmpty { text += ": \(message)" }
        if let cause = error.cause { text += " (\(String(describing: cause).replacingOccurrences(of: "\n", with: " ")))" }
        for detail in error.details {
            switch detail {
            case .retryInfo(let retry): text += "; retry in \(seconds(retry.retryDelay))"
            case .badRequest(let request):
                for violation in request.fieldViolations where !text.contains(violation.description) {
                    text += "; \(violation.field): \(violation.description)"
                }
            case .quotaFailure(let failure):
                for violation in failure.violations where !violation.description.isEmpty && !text.contains(violation.description) {
                    text += "; \(violation.description)"
                }
            case .errorInfo(let info):
                if let run = info.metadata["run_id"] { text += "; run \(run)" }
            case .other: break
            }
        }
        return text
    }

    // MARK: Runs

    static func runObject(_ run: FlowdV1.Run) -> [String: Any] {
        var object: [String: Any] = [
            "type": "run", "id": run.id, "workflow": run.workflow, "workflow_version": run.workflowVersion,
            "status": name(run.status), "error": run.error, "triggered_from": name(run.triggeredFrom),
            "transport": name(run.transport), "user": run.user, "elapsed_ms": run.elapsedMs,
            "total_steps": Int(run.totalSteps), "attempt": Int(run.attempt), "last_sequence": run.lastSequence,
            "inputs": embedded(run.inputsJson), "outputs": embedded(run.outputsJson),
        ]
        object["created_at"] = run.createdAt.map(time) ?? NSNull()
        object["started_at"] = run.startedAt.map(time) ?? NSNull()
        object["finished_at"] = run.finishedAt.map(time) ?? NSNull()
        return object
    }

    /// A run in `key value` lines, for people.
    static func runLines(_ run: FlowdV1.Run, created: Bool? = nil) -> [String] {
        var lines = ["run       \(run.id)" + (created == false ? "  (idempotent replay: not created again)" : "")]
        lines.append("workflow  \(run.workflow)" + (run.workflowVersion.isEmpty ? "" : " (version \(run.workflowVersion))"))
        lines.append("status    \(name(run.status))")
        if let created = run.createdAt { lines.append("created   \(time(created))") }
        if run.finishedAt != nil || run.elapsedMs > 0 { lines.append("elapsed   \(milliseconds: run.elapsedMs)") }
        if !run.outputsJson.isEmpty { lines.append("outputs   \(run.outputsJson)") }
        if !run.error.isEmpty { lines.append("error     \(run.error)") }
        return lines
    }

    /// One line of `flowd runs`.
    static func runRow(_ run: FlowdV1.Run) -> String {
        [run.id, run.createdAt.map(time) ?? "-", name(run.status), run.workflow, "\(milliseconds: run.elapsedMs)"]
            .joined(separator: "\t")
    }

    // MARK: Events

    static func eventObject(_ event: FlowdV1.RunEvent) -> [String: Any] {
        var object: [String: Any] = ["type": "event", "run_id": event.runId, "sequence": event.sequence,
                                     "time": event.time.map(time) ?? NSNull(), "event": kind(event)]
        switch event.event {
        case .runStarted(let started): object["run"] = runObject(started.run)
        case .runFinished(let finished): object["run"] = runObject(finished.run)
        case .nodeStarted(let node):
            object.merge(["node_id": node.nodeId, "node_kind": node.nodeKind, "title": node.title,
                          "index": Int(node.index)]) { $1 }
        case .nodeFinished(let node):
            object.merge(["node_id": node.nodeId, "node_kind": node.nodeKind, "title": node.title,
                          "index": Int(node.index), "status": name(node.status), "elapsed_ms": node.elapsedMs,
                          "error": node.error, "outputs": embedded(node.outputsJson),
                          "attempt": Int(node.attempt)]) { $1 }
        case .textChunk(let chunk): object.merge(["node_id": chunk.nodeId, "text": chunk.text]) { $1 }
        case .heartbeat, nil: break
        }
        return object
    }

    /// `SEQUENCE  TIME  KIND  summary`, tab-separated.
    static func eventLine(_ event: FlowdV1.RunEvent) -> String {
        var summary = ""
        switch event.event {
        case .runStarted(let started): summary = "run \(started.run.id) \(name(started.run.status))"
        case .runFinished(let finished):
            let run = finished.run
            summary = "run \(run.id) \(name(run.status)) elapsed \(milliseconds: run.elapsedMs)"
            if !run.error.isEmpty { summary += " error=\(short(run.error))" }
            if !run.outputsJson.isEmpty { summary += " outputs=\(short(run.outputsJson))" }
        case .nodeStarted(let node): summary = "node \(node.nodeId) (\(node.nodeKind))"
        case .nodeFinished(let node):
            summary = "node \(node.nodeId) (\(node.nodeKind)) \(name(node.status)) \(milliseconds: node.elapsedMs)"
            if !node.error.isEmpty { summary += " error=\(short(node.error))" }
        case .textChunk(let chunk): summary = "node \(chunk.nodeId) \(short(chunk.text))"
        case .heartbeat, nil: break
        }
        return "\(event.sequence)\t\(event.time.map(time) ?? "-")\t\(kind(event))\t\(summary)"
    }

    static func kind(_ event: FlowdV1.RunEvent) -> String {
        switch event.event {
        case .runStarted: "run_started"
        case .nodeStarted: "node_started"
        case .nodeFinished: "node_finished"
        case .textChunk: "text_chunk"
        case .runFinished: "run_finished"
        case .heartbeat: "heartbeat"
        case nil: "unknown"
        }
    }

    // MARK: Values

    static func name(_ status: FlowdV1.RunStatus) -> String { shortName(status.description, "RUN_STATUS_") }
    static func name(_ status: FlowdV1.NodeStatus) -> String { shortName(status.description, "NODE_STATUS_") }
    static func name(_ trigger: FlowdV1.Trigger) -> String { shortName(trigger.description, "TRIGGER_") }
    static func name(_ transport: FlowdV1.Transport) -> String { shortName(transport.description, "TRANSPORT_") }

    /// `RUN_STATUS_PARTIAL_SUCCEEDED` -> `partial-succeeded`.
    private static func shortName(_ protoName: String, _ prefix: String) -> String {
        let trimmed = protoName.hasPrefix(prefix) ? String(protoName.dropFirst(prefix.count)) : protoName
        return trimmed.lowercased().replacingOccurrences(of: "_", with: "-")
    }

    /// A run status from its short name (`succeeded`, `partial-succeeded`, `partial_succeeded`).
    static func runStatus(named text: String) -> FlowdV1.RunStatus? {
        let wanted = text.lowercased().replacingOccurrences(of: "_", with: "-")
        return (1...6).map { FlowdV1.RunStatus(rawValue: $0) }.first { name($0) == wanted }
    }

    static func time(_ timestamp: Timestamp) -> String {
        let date = Date(timeIntervalSince1970: Double(timestamp.seconds) + Double(timestamp.nanos) / 1e9)
        return timeFormat.format(date)
    }

    private static let timeFormat = Date.ISO8601FormatStyle(includingFractionalSeconds: true, timeZone: .gmt)

    /// JSON text embedded as JSON (empty text: null; text that does not parse stays a string).
    static func embedded(_ text: String) -> Any {
        guard !text.isEmpty else { return NSNull() }
        return (try? JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed])) ?? text
    }

    static func short(_ text: String, limit: Int = 80) -> String {
        let flat = text.replacingOccurrences(of: "\n", with: "\\n")
        return flat.count <= limit ? flat : String(flat.prefix(limit - 3)) + "..."
    }

    static func milliseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }

    /// `1 s`, `1.5 s`, `250 ms`.
    static func seconds(_ duration: Duration) -> String {
        let ms = milliseconds(duration)
        if ms < 1000 { return "\(ms) ms" }
        return ms % 1000 == 0 ? "\(ms / 1000) s" : String(format: "%.1f s", Double(ms) / 1000)
    }
}

extension DefaultStringInterpolation {
    /// `12 ms`, `3.4 s`, `2m05s`.
    mutating func appendInterpolation(milliseconds ms: Int64) {
        if ms < 1000 {
            appendLiteral("\(ms) ms")
        } else if ms < 60_000 {
            appendLiteral(String(format: "%.1f s", Double(ms) / 1000))
        } else {
            appendLiteral(String(format: "%dm%02ds", ms / 60_000, (ms % 60_000) / 1000))
        }
    }
}
