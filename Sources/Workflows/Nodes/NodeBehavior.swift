import Engine
import Foundation

/// The name of a node kind, as definitions write it (`kind: http`). The kinds a server knows
/// are the ones in `NodeKinds.registry`.
public struct NodeKind: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public var description: String { rawValue }

    /// Renders text (Mustache) from inputs and earlier outputs: `{text}`.
    public static let template = NodeKind(rawValue: "template")
    /// Calls a URL: `{status, headers, body}`; JSON bodies are structured.
    public static let http = NodeKind(rawValue: "http")
    /// Runs an allowed local program, JSON on stdin, JSON from stdout.
    public static let exec = NodeKind(rawValue: "exec")
    /// Waits.
    public static let sleep = NodeKind(rawValue: "sleep")
    /// Compares two values and skips the branch not taken: `{result, branch}`.
    public static let condition = NodeKind(rawValue: "condition")
    /// Maps values to the workflow's outputs.
    public static let end = NodeKind(rawValue: "end")
}

/// One kind of node, in one file: it reads and checks its `config` (once, at load), renders
/// its templates for an attempt, says what the attempt's events show, and does the work.
/// A value of the type is one node's compiled configuration. A new kind is a new conforming
/// type added to `NodeKinds.registry`.
protocol NodeBehavior: Sendable {
    /// The `kind` name.
    static var kind: NodeKind { get }
    /// The `config` fields it accepts; others are refused at load.
    static var configFields: Set<String> { get }
    /// Compiles a node's `config` (only known fields reach it); throws the first problem.
    init(config: NodeConfig) throws(NodeConfigProblem)
    /// Every template of the config: the parser checks the names they use against the graph.
    var templates: [ValueTemplate] { get }
    /// A condition's branches (the runner skips the one not taken); nil for other kinds.
    var branches: NodeBranches? { get }
    /// The workflow outputs an `end` node maps; nil for other kinds.
    var mappedOutputs: [String]? { get }
    /// The node for one attempt, its templates rendered against what the run knows so far.
    func prepare(_ scope: NodeScope) throws(WorkflowNodeError) -> PreparedNode
}

extension NodeBehavior {
    var branches: NodeBranches? { nil }
    var mappedOutputs: [String]? { nil }
}

/// The nodes a condition runs when it holds (`then`) and when it does not (`else`).
struct NodeBranches: Sendable {
    let thenNodes: [String]
    let elseNodes: [String]
}

/// Every node kind this build knows, by name.
enum NodeKinds {
    /// In the order error messages list them.
    static let all: [any NodeBehavior.Type] = [
        TemplateNode.self, HTTPNode.self, ExecNode.self, SleepNode.self, ConditionNode.self, EndNode.self,
    ]
    static let registry: [NodeKind: any NodeBehavior.Type] = {
        var registry: [NodeKind: any NodeBehavior.Type] = [:]
        for type in all { registry[type.kind] = type }
        return registry
    }()

    /// The known names (for error messages).
    static let names: [String] = {
        var names: [String] = []
        for type in all { names.append(type.kind.rawValue) }
        return names
    }()
}

/// A node's `config` as read from the definition, with the helpers kinds compile it with.
struct NodeConfig {
    let fields: [String: JSONValue]

    subscript(_ name: String) -> JSONValue? { fields[name] }

    /// `config.<field> is required (<what>)`.
    func missing(_ field: String, _ what: String) -> NodeConfigProblem {
        NodeConfigProblem(.invalid, "config.\(field) is required (\(what))")
    }

    func invalid(_ message: String) -> NodeConfigProblem { NodeConfigProblem(.invalid, message) }

    /// A string compiled as a text template.
    func text(_ value: JSONValue, path: String) throws(NodeConfigProblem) -> TextTemplate {
        do {
            return try TextTemplate(value.stringValue ?? "")
        } catch {
            throw NodeConfigProblem(.badTemplate, "the template in \(path) does not parse: \(error)", cause: error)
        }
    }

    /// Any value, its strings compiled as templates.
    func template(_ value: JSONValue, path: String) throws(NodeConfigProblem) -> ValueTemplate {
        do {
            return try ValueTemplate.compile(value, path: path)
        } catch {
            throw NodeConfigProblem(.badTemplate, "the template in \(error.path) does not parse: \(error.error)", cause: error.error)
        }
    }

    /// A node id or a list of node ids (`then`, `else`); nil when absent.
    func nodeIDs(_ field: String) throws(NodeConfigProblem) -> [String] {
        switch fields[field] {
        case nil: return []
        case .string(let id): return [id]
        case .array(let array) where array.allSatisfy({ $0.stringValue != nil }): return array.compactMap(\.stringValue)
        default: throw invalid("config.\(field) must be a node id or a list of node ids")
        }
    }

    /// A list of strings; nil when absent.
    func strings(_ field: String) throws(NodeConfigProblem) -> [String]? {
        switch fields[field] {
        case nil: return nil
        case .array(let array) where array.allSatisfy({ $0.stringValue != nil }): return array.compactMap(\.stringValue)
        default: throw invalid("config.\(field) must be a list of strings")
        }
    }

    /// true or false; `fallback` when absent.
    func flag(_ field: String, default fallback: Bool) throws(NodeConfigProblem) -> Bool {
        switch fields[field] {
        case nil: return fallback
        case .bool(let value): return value
        default: throw invalid("config.\(field) must be true or false")
        }
    }
}

/// Why a node's `config` is refused at load.
struct NodeConfigProblem: Error, Sendable {
    let code: WorkflowDefinitionError.Code
    let message: String
    let cause: (any Error & Sendable)?

    init(_ code: WorkflowDefinitionError.Code, _ message: String, cause: (any Error & Sendable)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }
}

/// What a node's templates see for one attempt: the run's inputs and the outputs of the nodes
/// done before it (`dependencies`: those of the nodes it depends on).
struct NodeScope {
    let context: TemplateContext
    let dependencies: [String: JSONValue]
    let inputs: [String: JSONValue]
}

/// A node ready to run: what its events show, and the work.
struct PreparedNode: Sendable {
    /// What the node's events show as its inputs (secrets redacted).
    let eventInputs: JSONValue
    /// Secret values the attempt handles (see `SecretValues`): kept out of every event,
    /// output and error of the run.
    var secrets: [String] = []
    /// Does the work; the node's outputs. Honours cancellation.
    let perform: @Sendable (NodeEnvironment) async throws -> JSONValue
    /// The work of a node that never suspends (its result is at hand once prepared): the
    /// runner calls it in place, without the timer and the child tasks of a timeout, which
    /// could not interrupt it anyway.
    let instant: (@Sendable () throws -> JSONValue)?

    init(eventInputs: JSONValue, secrets: [String] = [],
         perform: @escaping @Sendable (NodeEnvironment) async throws -> JSONValue) {
        self.eventInputs = eventInputs
        self.secrets = secrets
        self.perform = perform
        self.instant = nil
    }

    /// A node whose work is `instant` (see there).
    init(eventInputs: JSONValue, instant: @escaping @Sendable () throws -> JSONValue) {
        self.eventInputs = eventInputs
        self.perform = { _ in try instant() }
        self.instant = instant
    }
}

/// What a node may use while it performs.
struct NodeEnvironment: Sendable {
    let configuration: WorkflowRunnerConfiguration
    let clock: any EngineClock
    /// The node's timeout (the runner enforces it too).
    let timeout: Duration
    let http: HTTPEgress
}
