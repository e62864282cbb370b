import Codec
import Foundation

/// The live progress screen of one run, as data: events go in, lines come out. One line per
/// node (a spinner while it runs, its state and elapsed time), the run's overall state and
/// elapsed time, a line for each resumption after a lost connection, and the outputs at the end.
struct ProgressBoard {
    struct Node {
        var id: String
        var kind: String
        var status: FlowdV1.NodeStatus
        var startedAt: Date?
        var elapsedMs: Int64?
        var error = ""
    }

    var runID: String
    var workflow = ""
    var status = FlowdV1.RunStatus.unspecified
    var startedAt: Date?
    var finished: FlowdV1.Run?
    private(set) var nodes: [Node] = []
    var notices: [String] = []

    static let spinner = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"]

    init(runID: String) {
        self.runID = runID
    }

    mutating func apply(_ event: FlowdV1.RunEvent) {
        let time = event.time.map { Date(timeIntervalSince1970: Double($0.seconds) + Double($0.nanos) / 1e9) }
        if runID.isEmpty { runID = event.runId }
        switch event.event {
        case .runStarted(let started):
            workflow = started.run.workflow
            status = started.run.status == .unspecified ? .running : started.run.status
            startedAt = started.run.startedAt.map(Self.date) ?? time
        case .nodeStarted(let node):
            if status == .unspecified || status == .scheduled { status = .running }
            update(node.nodeId) { $0 = Node(id: node.nodeId, kind: node.nodeKind, status: .running, startedAt: time) }
        case .nodeFinished(let node):
            update(node.nodeId) { entry in
                entry.kind = node.nodeKind
                entry.status = node.status
                entry.elapsedMs = node.elapsedMs
                entry.error = node.error
            }
        case .runFinished(let run):
            finished = run.run
            status = run.run.status
            if workflow.isEmpty { workflow = run.run.workflow }
        case .textChunk, .heartbeat, nil:
            break
        }
    }

    private mutating func update(_ id: String, _ change: (inout Node) -> Void) {
        if let index = nodes.firstIndex(where: { $0.id == id }) {
            change(&nodes[index])
        } else {
            var node = Node(id: id, kind: "", status: .running)
            change(&node)
            nodes.append(node)
        }
    }

    /// The screen at `now`; `frame` turns the spinners.
    func render(now: Date, frame: Int) -> [String] {
        let spin = Self.spinner[frame % Self.spinner.count]
        let width = max(8, nodes.map(\.id.count).max() ?? 0)
        var lines: [String] = []
        let elapsed: String
        if let finished {
            elapsed = "\(milliseconds: finished.elapsedMs)"
        } else if let startedAt {
            elapsed = "\(milliseconds: Int64(max(0, now.timeIntervalSince(startedAt)) * 1000))"
        } else {
            elapsed = "-"
        }
        let head = finished == nil ? spin : Self.mark(runStatus: status)
        lines.append("\(head) run \(runID)  \(workflow)  \(Output.name(status))  \(elapsed)")
        for node in nodes {
            let mark = node.status == .running ? spin : Self.mark(nodeStatus: node.status)
            let time: String
            if let ms = node.elapsedMs {
                time = "\(milliseconds: ms)"
            } else if let startedAt = node.startedAt {
                time = "\(milliseconds: Int64(max(0, now.timeIntervalSince(startedAt)) * 1000))"
            } else {
                time = ""
            }
            var line = "  \(mark) \(node.id.padding(toLength: width, withPad: " ", startingAt: 0))  "
                + "\(node.kind.padding(toLength: 9, withPad: " ", startingAt: 0))  "
                + "\(Output.name(node.status).padding(toLength: 9, withPad: " ", startingAt: 0))  \(time)"
            if !node.error.isEmpty { line += "  \(Output.short(node.error, limit: 60))" }
            lines.append(line)
        }
        lines.append(contentsOf: notices.map { "  ↻ \($0)" })
        if let finished {
            if !finished.outputsJson.isEmpty { lines.append("outputs: \(finished.outputsJson)") }
            if !finished.error.isEmpty { lines.append("error: \(finished.error)") }
        }
        return lines
    }

    private static func mark(runStatus: FlowdV1.RunStatus) -> String {
        switch runStatus {
        case .succeeded: "✔"
        case .failed: "✘"
        case .stopped: "■"
        case .partialSucceeded: "◐"
        default: "·"
        }
    }

    private static func mark(nodeStatus: FlowdV1.NodeStatus) -> String {
        switch nodeStatus {
        case .succeeded: "✔"
        case .failed: "✘"
        case .stopped: "■"
        case .skipped: "-"
        default: "·"
        }
    }

    private static func date(_ timestamp: Timestamp) -> Date {
        Date(timeIntervalSince1970: Double(timestamp.seconds) + Double(timestamp.nanos) / 1e9)
    }
}

/// Redraws a block of lines in place on a terminal (ANSI cursor movement); lines wider than the
/// terminal are cut so that the block never wraps.
struct TerminalBlock {
    private var drawn = 0

    static var isTerminal: Bool { isatty(STDOUT_FILENO) == 1 }

    static var columns: Int {
        var size = winsize()
        guard ioctl(STDOUT_FILENO, UInt(TIOCGWINSZ), &size) == 0, size.ws_col > 0 else { return 80 }
        return Int(size.ws_col)
    }

    mutating func draw(_ lines: [String]) {
        let columns = Self.columns
        var out = drawn > 0 ? "\u{1B}[\(drawn)F" : "\r"
        for line in lines {
            let cut = line.count >= columns ? String(line.prefix(columns - 1)) : line
            out += "\u{1B}[2K" + cut + "\n"
        }
        out += "\u{1B}[J"
        Output.write(out, to: STDOUT_FILENO)
        drawn = lines.count
    }
}
