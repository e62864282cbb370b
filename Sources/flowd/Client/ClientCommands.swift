import ArgumentParser
import Codec
import Foundation
import RPCClient

/// The deadline of the calls that do not wait for a run, unless `--timeout` says otherwise.
private let defaultUnaryTimeoutSeconds = 30.0

/// `flowd run`: submits a run and, unless async, waits for its end.
struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run", abstract: "Submit a run of WORKFLOW to a running server.",
        discussion: "blocking waits for the run and prints it; async prints the scheduled run at once; stream shows its events (live progress in a terminal).\n\n" + ClientExit.helpText)

    enum Mode: String, ExpressibleByArgument, CaseIterable {
        case blocking, async, stream
    }

    @OptionGroup var client: ClientOptions

    @Argument(help: "The workflow (may be omitted when the key is bound to one).")
    var workflow: String = ""

    @Option(help: "Inputs as one JSON object.")
    var inputs: String?

    @Option(name: .customLong("input"), help: ArgumentHelp(
        "One input; VALUE is taken as JSON when it parses (42, true, [1]), else as text. Repeatable.",
        valueName: "name=value"))
    var inputPairs: [String] = []

    @Option(help: "blocking, async or stream.")
    var mode: Mode = .blocking

    @Option(help: "Makes retries safe: the same key and request return the first run again.")
    var idempotencyKey: String = ""

    @Option(help: "The end user on whose behalf the run is made.")
    var user: String = ""

    func validate() throws {
        if inputs != nil, !inputPairs.isEmpty { throw ValidationError("use either --inputs or --input, not both") }
        _ = try inputsJSON()
    }

    /// `--inputs` checked to be a JSON object, or the `--input` pairs as one.
    func inputsJSON() throws -> String {
        if let inputs {
            guard (try? JSONSerialization.jsonObject(with: Data(inputs.utf8))) is [String: Any] else {
                throw ValidationError("--inputs must be a JSON object, such as '{\"name\": \"Ada\"}'")
            }
            return inputs
        }
        var object: [String: Any] = [:]
        for pair in inputPairs {
            guard let equals = pair.firstIndex(of: "="), equals != pair.startIndex else {
                throw ValidationError("--input takes NAME=VALUE, not \(pair)")
            }
            let value = String(pair[pair.index(after: equals)...])
            object[String(pair[..<equals])] = (try? JSONSerialization.jsonObject(with: Data(value.utf8), options: [.fragmentsAllowed])) ?? value
        }
        return Output.jsonText(object)
    }

    func run() async throws {
        try await runClientCommand(client) {
            let request = FlowdV1.RunWorkflowRequest(
                workflow: workflow, inputsJson: try inputsJSON(),
                responseMode: mode == .async ? .async : .blocking, user: user, idempotencyKey: idempotencyKey)
            if mode == .stream {
                let follower = EventFollower(options: client, deadline: client.deadline(defaultSeconds: nil))
                return try await showEvents(follower, .submit(request), options: client, offerStop: true)
            }
            let response = try await unaryCall(
                client, WorkflowsMethod.runWorkflow, request,
                deadline: client.deadline(defaultSeconds: mode == .async ? defaultUnaryTimeoutSeconds : nil),
                as: FlowdV1.RunWorkflowResponse.self)
            if client.json {
                var object = Output.runObject(response.run)
                object["created"] = response.created
                Output.json(object)
            } else {
                Output.runLines(response.run, created: response.created).forEach(Output.line)
            }
            return mode == .async ? .succeeded : ClientExit(response.run.status)
        }
    }
}

/// `flowd get`.
struct GetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "get", abstract: "Print a run's current state.", discussion: ClientExit.helpText)

    @OptionGroup var client: ClientOptions
    @Argument(help: "The run id.") var runID: String

    func run() async throws {
        try await runClientCommand(client) {
            let run = try await unaryCall(client, WorkflowsMethod.getRun, FlowdV1.GetRunRequest(runId: runID),
                                          as: FlowdV1.Run.self)
            if client.json { Output.json(Output.runObject(run)) } else { Output.runLines(run).forEach(Output.line) }
            return .succeeded
        }
    }
}

/// `flowd stop`.
struct StopCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stop", abstract: "Stop a scheduled or running run (idempotent); prints the run.",
        discussion: ClientExit.helpText)

    @OptionGroup var client: ClientOptions
    @Argument(help: "The run id.") var runID: String
    @Option(help: "The end user on whose behalf the stop is made.") var user: String = ""

    func run() async throws {
        try await runClientCommand(client) {
            let run = try await unaryCall(client, WorkflowsMethod.stopRun, FlowdV1.StopRunRequest(runId: runID, user: user),
                                          as: FlowdV1.Run.self)
            if client.json { Output.json(Output.runObject(run)) } else { Output.runLines(run).forEach(Output.line) }
            return .succeeded
        }
    }
}

/// `flowd watch`.
struct WatchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "watch",
        abstract: "Follow a run's events until its end (live progress in a terminal); a lost connection is resumed where it stopped.",
        discussion: ClientExit.helpText)

    @OptionGroup var client: ClientOptions
    @Argument(help: "The run id.") var runID: String
    @Option(help: "Only events with a greater sequence number (0: from the start).") var after: Int64 = 0
    @Option(help: "Reconnections in a row before giving up.") var reconnectAttempts = EventFollower.Reconnection().maxAttempts

    func validate() throws {
        if after < 0 { throw ValidationError("--after must not be negative") }
        if reconnectAttempts < 0 { throw ValidationError("--reconnect-attempts must not be negative") }
    }

    func run() async throws {
        try await runClientCommand(client) {
            var follower = EventFollower(options: client, deadline: client.deadline(defaultSeconds: nil))
            follower.reconnection.maxAttempts = reconnectAttempts
            return try await showEvents(follower, .watch(runID: runID, afterSequence: after), options: client,
                                        offerStop: false)
        }
    }
}

/// `flowd runs`.
struct RunsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "runs", abstract: "List your runs, newest first.", discussion: ClientExit.helpText)

    @OptionGroup var client: ClientOptions

    @Option(help: ArgumentHelp("Only runs in these states (scheduled, running, succeeded, failed, stopped, partial-succeeded); repeatable or comma-separated.",
                               valueName: "status"))
    var status: [String] = []

    @Option(help: "Only runs of this workflow.") var workflow: String = ""
    @Option(help: "At most this many runs.") var limit = 20

    func validate() throws {
        _ = try statuses()
        if limit < 1 { throw ValidationError("--limit must be at least 1") }
    }

    func statuses() throws -> [FlowdV1.RunStatus] {
        try status.flatMap { $0.split(separator: ",") }.map { name in
            guard let status = Output.runStatus(named: name.trimmingCharacters(in: .whitespaces)) else {
                throw ValidationError("unknown status \(name)")
            }
            return status
        }
    }

    func run() async throws {
        try await runClientCommand(client) {
            let deadline = client.deadline(defaultSeconds: defaultUnaryTimeoutSeconds)
            var token = "", shown = 0
            repeat {
                let page = try await unaryCall(
                    client, WorkflowsMethod.listRuns,
                    FlowdV1.ListRunsRequest(pageSize: Int32(min(100, limit - shown)), pageToken: token,
                                            statuses: try statuses(), workflow: workflow),
                    deadline: deadline, as: FlowdV1.ListRunsResponse.self)
                if token.isEmpty, !client.json {
                    Output.line(["id", "created", "status", "workflow", "elapsed"].joined(separator: "\t"))
                }
                for run in page.runs.prefix(limit - shown) {
                    if client.json { Output.json(Output.runObject(run)) } else { Output.line(Output.runRow(run)) }
                    shown += 1
                }
                token = page.nextPageToken
            } while !token.isEmpty && shown < limit
            return .succeeded
        }
    }
}

/// One unary call on a fresh connection; by default with the default deadline.
private func unaryCall<Request: ProtoMessage, Response: ProtoMessage>(
    _ options: ClientOptions, _ path: String, _ request: Request,
    deadline: ContinuousClock.Instant?? = nil, as: Response.Type
) async throws(GRPCCallError) -> Response {
    let connection = try await options.connect()
    let deadline = deadline ?? options.deadline(defaultSeconds: defaultUnaryTimeoutSeconds)
    do {
        let response = try await connection.unary(path, request, metadata: options.metadata,
                                                  timeout: remaining(until: deadline), as: Response.self)
        await connection.close()
        return response
    } catch {
        await connection.close()
        throw error
    }
}
