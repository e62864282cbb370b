import ArgumentParser
import Codec
import Foundation
import RPCClient

/// Exit statuses of the client commands. Commands that wait for a run's end (`run` in blocking
/// or stream mode, `watch`) exit with the run's outcome; the others exit 0 when the call worked.
enum ClientExit: Int32, CaseIterable {
    case succeeded = 0
    /// Any error without a code of its own (INTERNAL, UNKNOWN, a bad answer from the server).
    case otherError = 1
    case runFailed = 2
    case runStopped = 3
    case runPartiallySucceeded = 4
    case notFound = 5
    /// UNAUTHENTICATED or PERMISSION_DENIED: no key, a bad key, or a key for another workflow.
    case unauthenticated = 6
    /// The server cannot be reached, or the connection was lost and could not be resumed.
    case unavailable = 7
    case deadlineExceeded = 8
    /// RESOURCE_EXHAUSTED: over the tenant's limit of active runs (retry later).
    case resourceExhausted = 9
    /// INVALID_ARGUMENT, ALREADY_EXISTS, FAILED_PRECONDITION: the request itself was refused.
    case rejected = 10
    /// Interrupted (Ctrl-C).
    case interrupted = 130

    init(_ code: StatusCode) {
        switch code {
        case .notFound: self = .notFound
        case .unauthenticated, .permissionDenied: self = .unauthenticated
        case .unavailable: self = .unavailable
        case .deadlineExceeded: self = .deadlineExceeded
        case .resourceExhausted: self = .resourceExhausted
        case .invalidArgument, .alreadyExists, .failedPrecondition, .outOfRange: self = .rejected
        case .cancelled: self = .interrupted
        default: self = .otherError
        }
    }

    init(_ status: FlowdV1.RunStatus) {
        switch status {
        case .failed: self = .runFailed
        case .stopped: self = .runStopped
        case .partialSucceeded: self = .runPartiallySucceeded
        default: self = .succeeded
        }
    }

    /// The table printed in `--help`.
    static let helpText = """
        Exit status: 0 succeeded, 1 other error, 2 run failed, 3 run stopped, 4 run partially \
        succeeded, 5 not found, 6 unauthenticated, 7 server unavailable, 8 deadline exceeded, \
        9 over the tenant's limit, 10 request refused (invalid argument, idempotency key reused), \
        64 usage error, 130 interrupted. `run` (blocking, stream) and `watch` exit with the run's outcome; the \
        other commands exit 0 when the call worked.
        """
}

/// Options shared by the client commands.
struct ClientOptions: ParsableArguments {
    @Option(help: "The server, HOST:PORT (env FLOWD_SERVER).")
    var server: String = Environment.string("FLOWD_SERVER") ?? "127.0.0.1:50051"

    /// No default value: ArgumentParser would print a key from the environment in `--help`.
    @Option(help: "API key (env FLOWD_API_KEY).")
    var key: String?

    @Flag(help: "Machine-readable output: one JSON object per line.")
    var json = false

    @Option(help: ArgumentHelp(
        "Deadline in seconds for the whole command (default: 30 for get, stop, runs and async run; none for commands that wait for a run).",
        valueName: "seconds"))
    var timeout: Double?

    func validate() throws {
        _ = try endpoint()
        if let timeout, !(timeout > 0) { throw ValidationError("--timeout must be a positive number of seconds") }
    }

    /// `--server` split into host and port; `[v6]:port` is accepted.
    func endpoint() throws -> (host: String, port: Int) {
        var text = Substring(server)
        var host: Substring
        if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
            host = text[text.index(after: text.startIndex)..<close]
            text = text[text.index(after: close)...]
            guard text.hasPrefix(":") else { throw ValidationError("--server must be HOST:PORT, not \(server)") }
            text = text.dropFirst()
        } else {
            guard let colon = text.lastIndex(of: ":") else { throw ValidationError("--server must be HOST:PORT, not \(server)") }
            host = text[..<colon]
            text = text[text.index(after: colon)...]
        }
        guard !host.isEmpty, let port = Int(text), (1...65535).contains(port) else {
            throw ValidationError("--server must be HOST:PORT, not \(server)")
        }
        return (String(host), port)
    }

    /// The request metadata: the API key.
    var metadata: [(name: String, value: String)] {
        let key = key ?? Environment.string("FLOWD_API_KEY") ?? ""
        return key.isEmpty ? [] : [("authorization", "Bearer \(key)")]
    }

    /// The deadline of a command: `--timeout`, else `defaultSeconds` (nil: none).
    func deadline(defaultSeconds: Double?) -> ContinuousClock.Instant? {
        (timeout ?? defaultSeconds).map { ContinuousClock.now + .milliseconds(Int64($0 * 1000)) }
    }

    func connect() async throws(GRPCCallError) -> GRPCClientConnection {
        let (host, port) = try! endpoint()  // checked in validate()
        return try await GRPCClientConnection.connect(host: host, port: port)
    }
}

/// The time left until `deadline`, at least 1 ms (an expired deadline then fails the call with
/// DEADLINE_EXCEEDED on the server or the client, whichever sees it first).
func remaining(until deadline: ContinuousClock.Instant?) -> Duration? {
    deadline.map { max(.milliseconds(1), $0 - .now) }
}

/// The Workflows service's method paths.
enum WorkflowsMethod {
    static let runWorkflow = "/flowd.v1.Workflows/RunWorkflow"
    static let streamWorkflow = "/flowd.v1.Workflows/StreamWorkflow"
    static let getRun = "/flowd.v1.Workflows/GetRun"
    static let watchRun = "/flowd.v1.Workflows/WatchRun"
    static let stopRun = "/flowd.v1.Workflows/StopRun"
    static let listRuns = "/flowd.v1.Workflows/ListRuns"
}

/// Runs a client command body: a failed call becomes one line on stderr (the gRPC code, the
/// ErrorInfo reason, the message and any retry hint or field violations) and its exit status.
func runClientCommand(_ options: ClientOptions, _ body: () async throws -> ClientExit) async throws {
    let exit: ClientExit
    do {
        exit = try await body()
    } catch let error as GRPCCallError {
        Output.error(error, json: options.json)
        exit = ClientExit(error.code)
    }
    if exit != .succeeded { throw ExitCode(exit.rawValue) }
}
