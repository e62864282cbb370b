/// Finds a workflow by name and checks a submission's inputs against its declaration.
/// Implemented by the workflow catalog; `Engine.submit(_: SubmitRequest)` calls it.
public protocol WorkflowResolving: Sendable {
    /// The workflow's current version and the inputs completed with defaults, as canonical
    /// JSON text (object keys sorted, no insignificant whitespace: the idempotency fingerprint
    /// hashes it as is). Throws `EngineError` `.invalidRequest` naming the field (`workflow`, or the input).
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
