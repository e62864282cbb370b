import Engine
import Foundation

/// A definition rejected at load, with the file, the node at fault (when there is one) and the
/// reason: `hello.yaml:12: node 'greet': unknown node kind 'tempalte'`.
public struct WorkflowDefinitionError: Error, Sendable, CustomStringConvertible {
    /// What is wrong. Extensible.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let name: String
        private init(_ name: String) { self.name = name }
        public var description: String { name }

        /// The file is not valid YAML or JSON, or cannot be read.
        public static let syntax = Code("syntax")
        /// A field is missing, unknown or of the wrong type.
        public static let invalid = Code("invalid")
        public static let unknownNodeKind = Code("unknownNodeKind")
        public static let duplicateNodeID = Code("duplicateNodeID")
        /// `needs`, a branch or a template names a node that does not exist (or that the node
        /// does not depend on).
        public static let danglingReference = Code("danglingReference")
        public static let cycle = Code("cycle")
        /// A template uses an input the workflow does not declare.
        public static let undeclaredInput = Code("undeclaredInput")
        /// A template does not parse.
        public static let badTemplate = Code("badTemplate")
        /// Two files define a workflow of the same name.
        public static let duplicateWorkflow = Code("duplicateWorkflow")
    }

    public var code: Code
    public var file: String
    /// 1-based line of the node (or of the syntax error), when known.
    public var line: Int?
    public var node: String?
    /// The reason, without file and node.
    public var message: String
    public var cause: (any Error & Sendable)?

    public init(code: Code, file: String, line: Int? = nil, node: String? = nil, message: String,
                cause: (any Error & Sendable)? = nil) {
        self.code = code
        self.file = file
        self.line = line
        self.node = node
        self.message = message
        self.cause = cause
    }

    public var description: String {
        var text = file
        if let line { text += ":\(line)" }
        text += ": "
        if let node { text += "node '\(node)': " }
        return text + message
    }
}

/// Every problem found while loading a workflows directory.
public struct WorkflowCatalogError: Error, Sendable, CustomStringConvertible {
    public var problems: [WorkflowDefinitionError]

    public init(problems: [WorkflowDefinitionError]) { self.problems = problems }

    public var description: String { problems.map(\.description).joined(separator: "\n") }
}

/// Why a node failed. The message is what the run's events and error show.
public struct WorkflowNodeError: Error, Sendable, CustomStringConvertible {
    /// What went wrong. Extensible.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let name: String
        private init(_ name: String) { self.name = name }
        public var description: String { name }

        /// The node ran longer than its timeout.
        public static let timeout = Code("timeout")
        /// A value (rendered from templates) is not what the node needs.
        public static let invalidValue = Code("invalidValue")
        /// The HTTP call answered a status outside 200-299 (`status` holds it).
        public static let httpStatus = Code("httpStatus")
        /// The HTTP call failed before a response (connection, TLS, deadline).
        public static let httpRequest = Code("httpRequest")
        /// The egress policy refused the host of an `http` node (or of a redirect).
        public static let egressRefused = Code("egressRefused")
        /// The program is not on the allow-list.
        public static let programNotAllowed = Code("programNotAllowed")
        /// The program could not start, exited non-zero, or wrote something other than JSON.
        public static let programFailed = Code("programFailed")
        /// An output was larger than the configured limit.
        public static let tooLarge = Code("tooLarge")
        /// Anything else.
        public static let other = Code("other")
    }

    public var code: Code
    public var message: String
    /// For `httpStatus`.
    public var status: Int?
    public var cause: (any Error & Sendable)?

    public init(code: Code, message: String, status: Int? = nil, cause: (any Error & Sendable)? = nil) {
        self.code = code
        self.message = message
        self.status = status
        self.cause = cause
    }

    /// Whether another attempt may succeed: not for a refused program, host or bad value, nor for
    /// a 4xx answer other than 408 and 429.
    public var isRetryable: Bool {
        switch code {
        case .programNotAllowed, .invalidValue, .tooLarge, .egressRefused: false
        case .httpStatus: status.map { $0 >= 500 || $0 == 408 || $0 == 429 } ?? true
        default: true
        }
    }

    public var description: String { message }
}
