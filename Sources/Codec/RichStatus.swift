/// `google.rpc.Status`: the rich error model carried in the `grpc-status-details-bin` trailer.
public struct RPCStatus: Hashable, Sendable {
    public var code: StatusCode
    /// A developer-facing message in English.
    public var message: String
    public var details: [ErrorDetail]

    public init(code: StatusCode, message: String = "", details: [ErrorDetail] = []) {
        self.code = code
        self.message = message
        self.details = details
    }
}

/// One entry of `google.rpc.Status.details`: a `google.protobuf.Any`, decoded when it holds one
/// of the error details flowd uses (AIP-193).
public enum ErrorDetail: Hashable, Sendable {
    case errorInfo(ErrorInfo)
    case retryInfo(RetryInfo)
    case quotaFailure(QuotaFailure)
    case badRequest(BadRequest)
    /// Any other message, kept as it came.
    case other(typeURL: String, value: [UInt8])

    /// The prefix of the type URLs written by `typeURL`.
    public static let typeURLPrefix = "type.googleapis.com/"

    /// The `google.protobuf.Any.type_url` of the detail.
    public var typeURL: String {
        switch self {
        case .errorInfo: Self.typeURLPrefix + "google.rpc.ErrorInfo"
        case .retryInfo: Self.typeURLPrefix + "google.rpc.RetryInfo"
        case .quotaFailure: Self.typeURLPrefix + "google.rpc.QuotaFailure"
        case .badRequest: Self.typeURLPrefix + "google.rpc.BadRequest"
        case .other(let typeURL, _): typeURL
        }
    }
}

/// `google.rpc.ErrorInfo`: why an error happened, as a machine-readable reason.
public struct ErrorInfo: Hashable, Sendable {
    /// UPPER_SNAKE_CASE, unique within `domain`, e.g. `TENANT_CONCURRENCY_LIMIT`.
    public var reason: String
    /// The logical grouping of `reason`, e.g. `flowd`.
    public var domain: String
    /// Encoded sorted by key; on decoding, the last of duplicate keys wins.
    public var metadata: [String: String]

    public init(reason: String, domain: String = "flowd", metadata: [String: String] = [:]) {
        self.reason = reason
        self.domain = domain
        self.metadata = metadata
    }
}

/// `google.rpc.RetryInfo`: when the client may retry.
public struct RetryInfo: Hashable, Sendable {
    /// Sent as a `google.protobuf.Duration`, to the nanosecond.
    public var retryDelay: Duration

    public init(retryDelay: Duration) {
        self.retryDelay = retryDelay
    }
}

/// `google.rpc.QuotaFailure`: which quota checks failed.
public struct QuotaFailure: Hashable, Sendable {
    /// `google.rpc.QuotaFailure.Violation` (the fields flowd uses).
    public struct Violation: Hashable, Sendable {
        /// The subject on which the check failed, e.g. `tenant:acme`.
        public var subject: String
        public var description: String

        public init(subject: String, description: String) {
            self.subject = subject
            self.description = description
        }
    }

    public var violations: [Violation]

    public init(violations: [Violation] = []) {
        self.violations = violations
    }
}

/// `google.rpc.BadRequest`: which request fields are invalid and why.
public struct BadRequest: Hashable, Sendable {
    /// `google.rpc.BadRequest.FieldViolation` (without `localized_message`).
    public struct FieldViolation: Hashable, Sendable {
        /// A path to the field, e.g. `inputs_json` or `inputs.query`.
        public var field: String
        public var description: String
        /// UPPER_SNAKE_CASE reason, e.g. `REQUIRED`.
        public var reason: String

        public init(field: String, description: String, reason: String = "") {
            self.field = field
            self.description = description
            self.reason = reason
        }
    }

    public var fieldViolations: [FieldViolation]

    public init(fieldViolations: [FieldViolation] = []) {
        self.fieldViolations = fieldViolations
    }
}
