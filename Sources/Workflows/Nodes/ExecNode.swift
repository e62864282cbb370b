import Engine
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `exec`: runs a program on the server's allow-list (`WorkflowRunnerConfiguration.allowedPrograms`)
/// with JSON on stdin (`input`, or the run's inputs and the outputs of the nodes it needs) and
/// reads JSON from stdout; `{...}` (an object as is, any other value as `{result}`).
///
/// Fenced: arguments are passed as an array (no shell); a rendered argument holding a NUL is
/// refused, and so is one starting with `-` (it would become an option) unless the definition
/// says `allow_dash_args: true` (arguments written literally in the definition may always start
/// with `-`). The environment is the server's `programEnvironment` (PATH and LANG by default)
/// plus the node's `env`, nothing else. The program runs under `programLimits` (CPU time,
/// address space, open files, processes, file size) in its own process group, which is killed
/// on stop, timeout, or when the program exits; stdout past `maxProgramOutputBytes` kills it.
struct ExecNode: NodeBehavior {
    static let kind = NodeKind.exec
    static let configFields: Set<String> = ["program", "args", "input", "env", "allow_dash_args"]

    /// An absolute path; it must be on the runner's allow-list.
    let program: String
    let arguments: [TextTemplate]
    /// What is written to stdin as JSON; nil: `{"inputs": ..., <needed node>: outputs, ...}`.
    let input: ValueTemplate?
    /// Variables added to the program's environment, by name.
    let environment: [String: TextTemplate]
    /// Rendered arguments may start with `-`.
    let allowDashArguments: Bool

    init(config: NodeConfig) throws(NodeConfigProblem) {
        guard case .string(let program)? = config["program"] else { throw config.missing("program", "an absolute path") }
        guard program.hasPrefix("/") else { throw config.invalid("config.program must be an absolute path") }
        self.program = program
        var arguments: [TextTemplate] = []
        if let value = config["args"] {
            guard case .array(let array) = value, array.allSatisfy({ $0.stringValue != nil }) else {
                throw config.invalid("config.args must be a list of strings")
            }
            for (position, argument) in array.enumerated() {
                arguments.append(try config.text(argument, path: "config.args[\(position)]"))
            }
        }
        self.arguments = arguments
        input = try config["input"].map { value throws(NodeConfigProblem) in try config.template(value, path: "config.input") }
        var environment: [String: TextTemplate] = [:]
        if let value = config["env"] {
            guard case .object(let object) = value, object.values.allSatisfy({ $0.stringValue != nil }) else {
                throw config.invalid("config.env must map variable names to strings")
            }
            for name in object.keys.sorted() {
                guard Self.isVariableName(name) else {
                    throw config.invalid("config.env: '\(name)' is not a variable name (a letter or '_', then letters, digits or '_')")
                }
                environment[name] = try config.text(object[name]!, path: "config.env.\(name)")
            }
        }
        self.environment = environment
        allowDashArguments = try config.flag("allow_dash_args", default: false)
    }

    var templates: [ValueTemplate] {
        arguments.map { .text($0) } + environment.values.map { .text($0) } + (input.map { [$0] } ?? [])
    }

    func prepare(_ scope: NodeScope) throws(WorkflowNodeError) -> PreparedNode {
        let standardInput: JSONValue
        if let input {
            standardInput = input.resolve(scope.context)
        } else {
            var object = scope.dependencies
            object["inputs"] = .object(scope.inputs)
            standardInput = .object(object)
        }
        var rendered: [String] = []
        for (position, template) in arguments.enumerated() {
            let argument = template.renderText(scope.context)
            if argument.utf8.contains(0) {
                throw WorkflowNodeError(code: .invalidValue, message: "args[\(position)] contains a NUL character")
            }
            if argument.hasPrefix("-") && !template.isLiteral && !allowDashArguments {
                throw WorkflowNodeError(
                    code: .invalidValue,
                    message: "args[\(position)] starts with '-' (it would be read as an option); the definition allows that with allow_dash_args: true")
            }
            rendered.append(argument)
        }
        var variables: [String: String] = [:]
        for (name, template) in environment {
            let value = template.renderText(scope.context)
            if value.utf8.contains(0) {
                throw WorkflowNodeError(code: .invalidValue, message: "env.\(name) contains a NUL character")
            }
            variables[name] = value
        }
        let eventInputs: JSONValue = [
            "program": .string(program), "args": .array(rendered.map(JSONValue.string)), "input": standardInput,
            "env": .array(variables.keys.sorted().map(JSONValue.string)),
        ]
        // Values of secret-looking variables (API_TOKEN, DB_PASSWORD, ...) stay out of the run's record.
        let secrets = variables.filter { Redaction.isSecretHeader($0.key.replacingOccurrences(of: "_", with: "-")) }.map(\.value)
        return PreparedNode(eventInputs: eventInputs, secrets: secrets) { [program, rendered, variables] environment in
            try await Self.perform(program: program, arguments: rendered, variables: variables, input: standardInput,
                                   configuration: environment.configuration)
        }
    }

    private static func perform(program: String, arguments: [String], variables: [String: String], input: JSONValue,
                                configuration: WorkflowRunnerConfiguration) async throws -> JSONValue {
        guard configuration.allowedPrograms.contains(program) else {
            throw WorkflowNodeError(code: .programNotAllowed, message: "program \(program) is not on the allow-list of this server")
        }
        let environment = configuration.programEnvironment.merging(variables) { _, node in node }
        let output: ChildProcess.Output
        do {
            output = try await ChildProcess.run(
                program: program, arguments: arguments, environment: environment,
                input: Array((input.jsonText + "\n").utf8), stdoutLimit: configuration.maxProgramOutputBytes,
                stderrLimit: configuration.programStderrBytes, limits: configuration.programLimits)
        } catch let error as ChildProcess.SpawnError {
            throw WorkflowNodeError(code: .programFailed, message: error.description, cause: error)
        }
        if output.stdoutOverflow {
            throw WorkflowNodeError(code: .tooLarge, message: "\(program) wrote more than \(configuration.maxProgramOutputBytes) bytes")
        }
        guard output.termination == .exited(0) else {
            let stderr = Redaction.excerpt(String(decoding: output.stderr, as: UTF8.self))
            var what = "\(program) \(output.termination)"
            let limits = configuration.programLimits
            if output.termination == .signaled(SIGXCPU) { what += " (its CPU time limit, \(limits.cpuSeconds) s)" }
            if output.termination == .signaled(SIGXFSZ) { what += " (its file size limit, \(limits.fileSizeBytes) bytes)" }
            throw WorkflowNodeError(code: .programFailed, message: what + (stderr.isEmpty ? "" : ": \(stderr)"))
        }
        let text = String(decoding: output.stdout, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        if text.isEmpty { return [:] }
        let value: JSONValue
        do {
            value = try JSONValue(parsing: text)
        } catch {
            throw WorkflowNodeError(code: .programFailed,
                                    message: "\(program) wrote something other than JSON: \(Redaction.excerpt(text))")
        }
        if case .object = value { return value }
        return ["result": value]
    }

    private static func isVariableName(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, first == "_" || (first.isASCII && CharacterSet.letters.contains(first)) else {
            return false
        }
        return name.unicodeScalars.allSatisfy { $0.isASCII && (CharacterSet.alphanumerics.contains($0) || $0 == "_") }
    }
}

/// The resource limits of an `exec` program (setrlimit(2), soft = hard but for CPU), set by `tool`
/// (util-linux prlimit(1)) between fork and exec, so the program never runs without them.
/// Every field is also a `WorkflowRunnerConfiguration.programLimits` default an operator may
/// change.
public struct ProgramLimits: Sendable, Equatable {
    /// RLIMIT_CPU: CPU seconds; past them the kernel sends SIGXCPU.
    public var cpuSeconds = 60
    /// RLIMIT_AS: bytes of address space (allocations past it fail).
    public var memoryBytes = 1024 * 1024 * 1024
    /// RLIMIT_NOFILE: open file descriptors.
    public var openFiles = 256
    /// RLIMIT_NPROC: processes (and threads) of the user the server runs as; the kernel does
    /// not apply it to root.
    public var processes = 256
    /// RLIMIT_FSIZE: the largest file the program may write (SIGXFSZ past it).
    public var fileSizeBytes = 64 * 1024 * 1024
    /// The program that applies the limits and then executes the node's program.
    public var tool = "/usr/bin/prlimit"

    public init() {}

    /// The tool's arguments before the program's own.
    var toolArguments: [String] {
        // CPU: soft N, hard N + 1: SIGXCPU (which says why) at N, SIGKILL a second later.
        ["--cpu=\(cpuSeconds):\(cpuSeconds + 1)", "--as=\(memoryBytes)", "--nofile=\(openFiles)", "--nproc=\(processes)",
         "--fsize=\(fileSizeBytes)", "--"]
    }
}
