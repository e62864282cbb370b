import Foundation

/// A workflow: a named, versioned DAG of nodes loaded from a definition file
/// (DESIGN.md, "Workflows"). Built by `WorkflowCatalog`, which validates it.
public struct WorkflowDefinition: Sendable {
    public let name: String
    /// The declared `version`, or `sha256:` and the first 12 hex digits of the file's hash
    /// when none is declared. Recorded on every run (`RunRecord.workflowVersion`).
    public let version: String
    /// SHA-256 of the definition file, hex.
    public let contentHash: String
    /// The file it was loaded from (its name inside the workflows directory).
    public let file: String
    public let description: String?
    public let inputs: [InputDeclaration]
    /// In file order.
    public let nodes: [NodeDefinition]
    /// The declared output names; the `end` nodes map exactly these (when declared).
    public let outputs: [String]
    /// The default error strategy of its nodes.
    public let onError: ErrorStrategy

    public func node(id: String) -> NodeDefinition? { nodes.first { $0.id == id } }
}

/// The type of a declared input.
public enum InputType: String, Sendable, CaseIterable {
    case string, number, integer, boolean, object, array

    /// Whether `value` has this type (an integer is a number; `2.0` is an integer).
    public func accepts(_ value: JSONValue) -> Bool {
        switch (self, value) {
        case (.string, .string), (.boolean, .bool), (.object, .object), (.array, .array): true
        case (.number, .integer), (.number, .number), (.integer, .integer): true
        case (.integer, .number(let number)): number.rounded() == number && abs(number) < 9e15
        default: false
        }
    }
}

/// An input a workflow declares.
public struct InputDeclaration: Sendable, Equatable {
    public var name: String
    public var type: InputType
    public var required: Bool
    /// Applied when the submission leaves the input out (or sends null).
    public var defaultValue: JSONValue?
    public var description: String?

    public init(name: String, type: InputType, required: Bool = false, defaultValue: JSONValue? = nil,
                description: String? = nil) {
        self.name = name
        self.type = type
        self.required = required
        self.defaultValue = defaultValue
        self.description = description
    }
}

/// What a node does.
public enum NodeKind: String, Sendable, CaseIterable {
    /// Renders text (Mustache) from inputs and earlier outputs: `{text}`.
    case template
    /// Calls a URL: `{status, headers, body}`; JSON bodies are structured.
    case http
    /// Runs an allowed local program, JSON on stdin, JSON from stdout.
    case exec
    /// Waits.
    case sleep
    /// Compares two values and skips the branch not taken: `{result, branch}`.
    case condition
    /// Maps values to the workflow's outputs.
    case end
}

/// What a node's failure does to the run.
public enum ErrorStrategy: String, Sendable, CaseIterable {
    /// The run fails; running nodes are cancelled.
    case fail
    /// The node is recorded as failed, its dependents see `{error}` as its outputs, and the run
    /// ends `partial-succeeded`.
    case `continue`
}

/// Retries of a failed node: up to `maxRetries` more attempts, waiting `backoff`, doubled
/// after each attempt (capped by `WorkflowRunnerConfiguration.maxRetryBackoff`).
public struct RetryPolicy: Sendable, Equatable {
    public var maxRetries: Int
    public var backoff: Duration

    public init(maxRetries: Int = 0, backoff: Duration = .seconds(1)) {
        self.maxRetries = maxRetries
        self.backoff = backoff
    }
}

/// One node of a workflow.
public struct NodeDefinition: Sendable {
    public let id: String
    public let kind: NodeKind
    public let title: String
    /// The nodes named by `needs`.
    public let needs: [String]
    /// `needs`, plus the condition that lists this node in a branch: the node starts when all
    /// of these are done.
    public let dependencies: [String]
    /// The node's `config`, as written.
    public let config: JSONValue
    /// nil: `WorkflowRunnerConfiguration.defaultNodeTimeout`.
    public let timeout: Duration?
    public let retry: RetryPolicy
    public let onError: ErrorStrategy
    let spec: NodeSpec
}

/// A node's configuration, compiled.
enum NodeSpec: Sendable {
    case template(TextTemplate)
    case http(HTTPSpec)
    case exec(ExecSpec)
    case sleep(SleepSpec)
    case condition(ConditionSpec)
    case end([String: ValueTemplate])

    var templates: [ValueTemplate] {
        switch self {
        case .template(let text): [.text(text)]
        case .http(let spec): [.text(spec.url)] + spec.headers.values.map { .text($0) } + (spec.body.map { [$0] } ?? [])
        case .exec(let spec): spec.arguments.map { .text($0) } + (spec.input.map { [$0] } ?? [])
        case .sleep(let spec): [spec.seconds]
        case .condition(let spec): [spec.left, spec.right]
        case .end(let outputs): Array(outputs.values)
        }
    }
}

struct HTTPSpec: Sendable {
    static let methods: Set<String> = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    let method: String
    let url: TextTemplate
    let headers: [String: TextTemplate]
    /// A string is sent as it renders; any other value as JSON.
    let body: ValueTemplate?
}

struct ExecSpec: Sendable {
    /// An absolute path; it must be on the runner's allow-list.
    let program: String
    let arguments: [TextTemplate]
    /// What is written to stdin as JSON; nil: `{"inputs": ..., <needed node>: outputs, ...}`.
    let input: ValueTemplate?
}

struct SleepSpec: Sendable {
    /// Seconds (a number, or a template that resolves to one).
    let seconds: ValueTemplate
    /// Multiplies `seconds`: four sleeps of `fraction: 0.25` add up to `seconds`.
    let fraction: Double
}

struct ConditionSpec: Sendable {
    let left: ValueTemplate
    let op: ComparisonOperator
    let right: ValueTemplate
    /// Nodes run when the comparison holds (and skipped when it does not).
    let thenNodes: [String]
    /// Nodes run when it does not hold.
    let elseNodes: [String]
}

/// The comparisons a `condition` node makes.
public enum ComparisonOperator: String, Sendable, CaseIterable {
    case equal = "=="
    case notEqual = "!="
    case less = "<"
    case lessOrEqual = "<="
    case greater = ">"
    case greaterOrEqual = ">="
    case contains
}
