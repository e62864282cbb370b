/// Finds a workflow by name and checks a submission's inputs against its declaration.
/// Implemented by the workflow catalog; transports call it before `Engine.submit`.
public protocol WorkflowResolving: Sendable {
    /// The workflow's current version and the inputs completed with defaults (a JSON object as
    /// text). Throws `EngineError` `.invalidRequest` naming the field (`workflow`, or the input).
    func resolve(workflow: String, inputsJSON: String) throws -> ResolvedWorkflow
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
