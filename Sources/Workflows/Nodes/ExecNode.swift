import Engine
import Foundation

/// `exec`: runs a program on the server's allow-list (`WorkflowRunnerConfiguration.allowedPrograms`)
/// with JSON on stdin (`input`, or the run's inputs and the outputs of the nodes it needs) and
/// reads JSON from stdout; `{...}` (an object as is, any other value as `{result}`).
struct ExecNode: NodeBehavior {
    static let kind = NodeKind.exec
    static let configFields: Set<String> = ["program", "args", "input"]

    /// An absolute path; it must be on the runner's allow-list.
    let program: String
    let arguments: [TextTemplate]
    /// What is written to stdin as JSON; nil: `{"inputs": ..., <needed node>: outputs, ...}`.
    let input: ValueTemplate?

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
    }

    var templates: [ValueTemplate] { arguments.map { .text($0) } + (input.map { [$0] } ?? []) }

    func prepare(_ scope: NodeScope) throws(WorkflowNodeError) -> PreparedNode {
        let standardInput: JSONValue
        if let input {
            standardInput = input.resolve(scope.context)
        } else {
            var object = scope.dependencies
            object["inputs"] = .object(scope.inputs)
            standardInput = .object(object)
        }
        let arguments = arguments.map { $0.renderText(scope.context) }
        let eventInputs: JSONValue = [
            "program": .string(program), "args": .array(arguments.map(JSONValue.string)), "input": standardInput,
        ]
        return PreparedNode(eventInputs: eventInputs) { [program] environment in
            try await Self.perform(program: program, arguments: arguments, input: standardInput,
                                   configuration: environment.configuration)
        }
    }

    private static func perform(program: String, arguments: [String], input: JSONValue,
                                configuration: WorkflowRunnerConfiguration) async throws -> JSONValue {
        guard configuration.allowedPrograms.contains(program) else {
            throw WorkflowNodeError(code: .programNotAllowed, message: "program \(program) is not on the allow-list of this server")
        }
        let output: ChildProcess.Output
        do {
            output = try await ChildProcess.run(
                program: program, arguments: arguments, environment: configuration.programEnvironment,
                input: Array((input.jsonText + "\n").utf8), stdoutLimit: configuration.maxProgramOutputBytes,
                stderrLimit: configuration.programStderrBytes)
        } catch let error as ChildProcess.SpawnError {
            throw WorkflowNodeError(code: .programFailed, message: error.description, cause: error)
        }
        if output.stdoutOverflow {
            throw WorkflowNodeError(code: .tooLarge, message: "\(program) wrote more than \(configuration.maxProgramOutputBytes) bytes")
        }
        guard output.termination == .exited(0) else {
            let stderr = String(decoding: output.stderr, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            throw WorkflowNodeError(code: .programFailed,
                                    message: "\(program) \(output.termination)" + (stderr.isEmpty ? "" : ": \(stderr)"))
        }
        let text = String(decoding: output.stdout, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        if text.isEmpty { return [:] }
        let value: JSONValue
        do {
            value = try JSONValue(parsing: text)
        } catch {
            throw WorkflowNodeError(code: .programFailed, message: "\(program) wrote something other than JSON: \(text.prefix(200))")
        }
        if case .object = value { return value }
        return ["result": value]
    }
}
