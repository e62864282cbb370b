/// The `flowd.v1` wire contract (proto/flowd/v1/workflows.proto). Enums are open: unknown
/// numeric values are kept. A zero value means "not set", as in proto3.
public enum FlowdV1 {
    // MARK: Enums

    /// `flowd.v1.ResponseMode`. `unspecified` is treated as `blocking`, as in Dify.
    public struct ResponseMode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public var rawValue: Int32
        public init(rawValue: Int32) { self.rawValue = rawValue }

        public static let unspecified = ResponseMode(rawValue: 0)
        public static let async = ResponseMode(rawValue: 1)
        public static let blocking = ResponseMode(rawValue: 2)

        public var description: String {
            protoEnumName(rawValue, ["RESPONSE_MODE_UNSPECIFIED", "RESPONSE_MODE_ASYNC", "RESPONSE_MODE_BLOCKING"])
        }
    }

    /// `flowd.v1.RunStatus`.
    public struct RunStatus: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public var rawValue: Int32
        public init(rawValue: Int32) { self.rawValue = rawValue }

        public static let unspecified = RunStatus(rawValue: 0)
        public static let scheduled = RunStatus(rawValue: 1)
        public static let running = RunStatus(rawValue: 2)
        public static let succeeded = RunStatus(rawValue: 3)
        public static let failed = RunStatus(rawValue: 4)
        public static let stopped = RunStatus(rawValue: 5)
        public static let partialSucceeded = RunStatus(rawValue: 6)

        public var description: String {
            protoEnumName(rawValue, [
                "RUN_STATUS_UNSPECIFIED", "RUN_STATUS_SCHEDULED", "RUN_STATUS_RUNNING", "RUN_STATUS_SUCCEEDED",
                "RUN_STATUS_FAILED", "RUN_STATUS_STOPPED", "RUN_STATUS_PARTIAL_SUCCEEDED",
            ])
        }
    }

    /// `flowd.v1.Trigger`: how a run was submitted.
    public struct Trigger: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public var rawValue: Int32
        public init(rawValue: Int32) { self.rawValue = rawValue }

        public static let unspecified = Trigger(rawValue: 0)
        public static let apiAsync = Trigger(rawValue: 1)
        public static let apiBlocking = Trigger(rawValue: 2)
        public static let apiStreaming = Trigger(rawValue: 3)

        public var description: String {
            protoEnumName(rawValue, [
                "TRIGGER_UNSPECIFIED", "TRIGGER_API_ASYNC", "TRIGGER_API_BLOCKING", "TRIGGER_API_STREAMING",
            ])
        }
    }

    /// `flowd.v1.Transport`.
    public struct Transport: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public var rawValue: Int32
        public init(rawValue: Int32) { self.rawValue = rawValue }

        public static let unspecified = Transport(rawValue: 0)
        public static let grpc = Transport(rawValue: 1)
        public static let rest = Transport(rawValue: 2)

        public var description: String {
            protoEnumName(rawValue, ["TRANSPORT_UNSPECIFIED", "TRANSPORT_GRPC", "TRANSPORT_REST"])
        }
    }

    /// `flowd.v1.NodeStatus`.
    public struct NodeStatus: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public var rawValue: Int32
        public init(rawValue: Int32) { self.rawValue = rawValue }

        public static let unspecified = NodeStatus(rawValue: 0)
        public static let running = NodeStatus(rawValue: 1)
        public static let succeeded = NodeStatus(rawValue: 2)
        public static let failed = NodeStatus(rawValue: 3)
        public static let skipped = NodeStatus(rawValue: 4)
        public static let stopped = NodeStatus(rawValue: 5)

        public var description: String {
            protoEnumName(rawValue, [
                "NODE_STATUS_UNSPECIFIED", "NODE_STATUS_RUNNING", "NODE_STATUS_SUCCEEDED", "NODE_STATUS_FAILED",
                "NODE_STATUS_SKIPPED", "NODE_STATUS_STOPPED",
            ])
        }
    }

    // MARK: Runs

    /// `flowd.v1.RunWorkflowRequest`.
    public struct RunWorkflowRequest: Hashable, Sendable {
        /// May be empty when the API key is bound to one workflow.
        public var workflow: String
        /// A JSON object with the workflow's declared inputs.
        public var inputsJson: String
        public var responseMode: ResponseMode
        /// The end user on whose behalf the run is made.
        public var user: String
        public var idempotencyKey: String

        public init(workflow: String = "", inputsJson: String = "", responseMode: ResponseMode = .unspecified,
                    user: String = "", idempotencyKey: String = "") {
            self.workflow = workflow
            self.inputsJson = inputsJson
            self.responseMode = responseMode
            self.user = user
            self.idempotencyKey = idempotencyKey
        }
    }

    /// `flowd.v1.RunWorkflowResponse`. `run` is always sent (an absent one decodes as `Run()`).
    public struct RunWorkflowResponse: Hashable, Sendable {
        public var run: Run
        /// False when an idempotency key replayed an earlier submission.
        public var created: Bool

        public init(run: Run = Run(), created: Bool = false) {
            self.run = run
            self.created = created
        }
    }

    /// `flowd.v1.Run`. Times are nil when unset.
    public struct Run: Hashable, Sendable {
        public var id: String
        public var workflow: String
        public var workflowVersion: String
        public var status: RunStatus
        public var inputsJson: String
        /// A JSON object; empty until the run has outputs.
        public var outputsJson: String
        public var error: String
        public var triggeredFrom: Trigger
        public var transport: Transport
        public var user: String
        public var createdAt: Timestamp?
        public var startedAt: Timestamp?
        public var finishedAt: Timestamp?
        public var elapsedMs: Int64
        public var totalSteps: Int32
        public var attempt: Int32
        /// The sequence number of the run's last stored event.
        public var lastSequence: Int64
        public var totalTokens: Int64

        public init(id: String = "", workflow: String = "", workflowVersion: String = "",
                    status: RunStatus = .unspecified, inputsJson: String = "", outputsJson: String = "",
                    error: String = "", triggeredFrom: Trigger = .unspecified, transport: Transport = .unspecified,
                    user: String = "", createdAt: Timestamp? = nil, startedAt: Timestamp? = nil,
                    finishedAt: Timestamp? = nil, elapsedMs: Int64 = 0, totalSteps: Int32 = 0, attempt: Int32 = 0,
                    lastSequence: Int64 = 0, totalTokens: Int64 = 0) {
            self.id = id
            self.workflow = workflow
            self.workflowVersion = workflowVersion
            self.status = status
            self.inputsJson = inputsJson
            self.outputsJson = outputsJson
            self.error = error
            self.triggeredFrom = triggeredFrom
            self.transport = transport
            self.user = user
            self.createdAt = createdAt
            self.startedAt = startedAt
            self.finishedAt = finishedAt
            self.elapsedMs = elapsedMs
            self.totalSteps = totalSteps
            self.attempt = attempt
            self.lastSequence = lastSequence
            self.totalTokens = totalTokens
        }
    }

    // MARK: Events

    /// `flowd.v1.RunEvent`: one entry of a run's event log. A heartbeat is not stored and
    /// repeats the last stored sequence.
    public struct RunEvent: Hashable, Sendable {
        /// The `event` oneof.
        public enum Event: Hashable, Sendable {
            case runStarted(RunStarted)
            case nodeStarted(NodeStarted)
            case nodeFinished(NodeFinished)
            case textChunk(TextChunk)
            /// The terminal event.
            case runFinished(RunFinished)
            case heartbeat
        }

        public var runId: String
        public var sequence: Int64
        public var time: Timestamp?
        public var event: Event?

        public init(runId: String = "", sequence: Int64 = 0, time: Timestamp? = nil, event: Event? = nil) {
            self.runId = runId
            self.sequence = sequence
            self.time = time
            self.event = event
        }
    }

    /// `flowd.v1.RunStarted`. `run` is always sent.
    public struct RunStarted: Hashable, Sendable {
        public var run: Run

        public init(run: Run = Run()) {
            self.run = run
        }
    }

    /// `flowd.v1.NodeStarted`.
    public struct NodeStarted: Hashable, Sendable {
        public var nodeId: String
        public var nodeKind: String
        public var title: String
        public var index: Int32
        public var inputsJson: String
        public var inputsTruncated: Bool

        public init(nodeId: String = "", nodeKind: String = "", title: String = "", index: Int32 = 0,
                    inputsJson: String = "", inputsTruncated: Bool = false) {
            self.nodeId = nodeId
            self.nodeKind = nodeKind
            self.title = title
            self.index = index
            self.inputsJson = inputsJson
            self.inputsTruncated = inputsTruncated
        }
    }

    /// `flowd.v1.NodeFinished`.
    public struct NodeFinished: Hashable, Sendable {
        public var nodeId: String
        public var nodeKind: String
        public var title: String
        public var index: Int32
        public var status: NodeStatus
        public var inputsJson: String
        public var outputsJson: String
        public var error: String
        public var elapsedMs: Int64
        public var inputsTruncated: Bool
        public var outputsTruncated: Bool
        public var attempt: Int32

        public init(nodeId: String = "", nodeKind: String = "", title: String = "", index: Int32 = 0,
                    status: NodeStatus = .unspecified, inputsJson: String = "", outputsJson: String = "",
                    error: String = "", elapsedMs: Int64 = 0, inputsTruncated: Bool = false,
                    outputsTruncated: Bool = false, attempt: Int32 = 0) {
            self.nodeId = nodeId
            self.nodeKind = nodeKind
            self.title = title
            self.index = index
            self.status = status
            self.inputsJson = inputsJson
            self.outputsJson = outputsJson
            self.error = error
            self.elapsedMs = elapsedMs
            self.inputsTruncated = inputsTruncated
            self.outputsTruncated = outputsTruncated
            self.attempt = attempt
        }
    }

    /// `flowd.v1.TextChunk`.
    public struct TextChunk: Hashable, Sendable {
        public var nodeId: String
        public var text: String

        public init(nodeId: String = "", text: String = "") {
            self.nodeId = nodeId
            self.text = text
        }
    }

    /// `flowd.v1.RunFinished`: the terminal event, with the final run (always sent).
    public struct RunFinished: Hashable, Sendable {
        public var run: Run

        public init(run: Run = Run()) {
            self.run = run
        }
    }

    // MARK: Requests

    /// `flowd.v1.GetRunRequest`.
    public struct GetRunRequest: Hashable, Sendable {
        public var runId: String

        public init(runId: String = "") {
            self.runId = runId
        }
    }

    /// `flowd.v1.WatchRunRequest`.
    public struct WatchRunRequest: Hashable, Sendable {
        public var runId: String
        /// Only events with a greater sequence are sent; 0 means from the start.
        public var afterSequence: Int64

        public init(runId: String = "", afterSequence: Int64 = 0) {
            self.runId = runId
            self.afterSequence = afterSequence
        }
    }

    /// `flowd.v1.StopRunRequest`.
    public struct StopRunRequest: Hashable, Sendable {
        public var runId: String
        public var user: String

        public init(runId: String = "", user: String = "") {
            self.runId = runId
            self.user = user
        }
    }

    /// `flowd.v1.ListRunsRequest`.
    public struct ListRunsRequest: Hashable, Sendable {
        /// 1-100; 0 means the default.
        public var pageSize: Int32
        /// From a previous `ListRunsResponse`; empty for the first page.
        public var pageToken: String
        /// Empty means every status.
        public var statuses: [RunStatus]
        public var workflow: String
        public var user: String

        public init(pageSize: Int32 = 0, pageToken: String = "", statuses: [RunStatus] = [],
                    workflow: String = "", user: String = "") {
            self.pageSize = pageSize
            self.pageToken = pageToken
            self.statuses = statuses
            self.workflow = workflow
            self.user = user
        }
    }

    /// `flowd.v1.ListRunsResponse`.
    public struct ListRunsResponse: Hashable, Sendable {
        public var runs: [Run]
        /// Empty on the last page.
        public var nextPageToken: String

        public init(runs: [Run] = [], nextPageToken: String = "") {
            self.runs = runs
            self.nextPageToken = nextPageToken
        }
    }
}
