import Engine
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
    /// The compiled config: what the node does.
    let behavior: any NodeBehavior
}
