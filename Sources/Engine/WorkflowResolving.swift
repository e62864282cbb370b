/// Finds a workflow by name and checks a submission's inputs against its declaration.
/// Implemented by the workflow catalog; `Engine.submit(_: SubmitRequest)` calls it.
public protocol WorkflowResolving: Sendable {
    /// The workflow's current version and the inputs completed with defaults, as canonical
    /// JSON text (object keys sorted, no insignificant whitespace: the idempotency fingerprint
    /// hashes it as is). Throws `EngineError` `.invalidRequest` naming the field (`workflow`, or the input).
    func resolve(workflow: String, inputsJSON: String) throws -> ResolvedWorkflow

    /// What a caller may know of a workflow (Dify's `/v1/parameters` and `/v1/info`); nil for
    /// an unknown name.
    func describe(workflow: String) -> WorkflowDescription?
}

extension WorkflowResolving {
    public func describe(workflow: String) -> WorkflowDescription? { nil }
}

/// A workflow's name, description and declared inputs: its signature, without its nodes.
public struct WorkflowDescription: Sendable, Equatable {
    public var name: String
    public var version: String
    public var description: String?
    public var inputs: [InputDeclaration]

    public init(name: String, version: String, description: String? = nil, inputs: [InputDeclaration] = []) {
        self.name = name
        self.version = version
        self.description = description
        self.inputs = inputs
    }
}

/// A workflow ready to be submitted.
public struct ResolvedWorkflow: Sendable, Equatable {
    public var name: String
    public var version: String
    public var inputsJSON: String

    public init(name: String, version: String, inputsJSON: String) {
        self.name = name
        self.version = version
        self.inputsJSON = inputsJSON
    }
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
