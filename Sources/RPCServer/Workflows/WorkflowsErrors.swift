import Codec
import Engine

/// How flowd's failures look on gRPC (DESIGN.md, the error table; AIP-193 details): every
/// error carries `ErrorInfo` (domain `flowd`), plus `RetryInfo` when a retry can succeed,
/// `QuotaFailure` for the concurrency guard and `BadRequest` for invalid input.
enum WorkflowsErrors {
    static let domain = "flowd"

    /// The single answer for missing, malformed, unknown and revoked keys.
    static let unauthenticated = RPCError(
        code: .unauthenticated, message: "missing or invalid API key",
        details: [.errorInfo(ErrorInfo(reason: "API_KEY_INVALID", domain: domain))])

    static func invalidArgument(field: String, _ message: String, reason: String = "INVALID_ARGUMENT") -> RPCError {
        RPCError(code: .invalidArgument, message: message, details: [
            .errorInfo(ErrorInfo(reason: reason, domain: domain)),
            .badRequest(BadRequest(fieldViolations: [.init(field: field, description: message)])),
        ])
    }

    /// Maps an error from the Engine or the store (everything else is left to the router).
    static func map(_ error: any Error, tenant: String) -> any Error {
        if let error = error as? EngineError { return map(error, tenant: tenant) }
        if let error = error as? StoreError {
            if error.isRetryable {
                return RPCError(code: .unavailable, message: "the store is busy or unreachable, retry shortly", details: [
                    .errorInfo(ErrorInfo(reason: "STORE_UNAVAILABLE", domain: domain)),
                    .retryInfo(RetryInfo(retryDelay: .seconds(1))),
                ], cause: error)
            }
            return RPCError(code: .internalError, message: "internal store error",
                            details: [.errorInfo(ErrorInfo(reason: "STORE_ERROR", domain: domain))], cause: error)
        }
        return error
    }

    static func map(_ error: EngineError, tenant: String) -> RPCError {
        switch error.code {
        case .invalidIdempotencyKey:
            return invalidArgument(field: "idempotency_key", error.message, reason: "IDEMPOTENCY_KEY_INVALID")
        case .idempotencyKeyReused:
            return RPCError(code: .alreadyExists, message: error.message, details: [
                .errorInfo(ErrorInfo(reason: "IDEMPOTENCY_KEY_REUSED", domain: domain,
                                     metadata: ["run_id": error.runID ?? ""])),
            ])
        case .tenantOverLimit:
            let retry = error.retryAfter ?? .seconds(1)
            return RPCError(code: .resourceExhausted, message: error.message, details: [
                .errorInfo(ErrorInfo(reason: "TENANT_CONCURRENCY_LIMIT", domain: domain, metadata: [
                    "limit": error.limit.map(String.init) ?? "", "active": error.active.map(String.init) ?? "",
                ])),
                .retryInfo(RetryInfo(retryDelay: retry)),
                .quotaFailure(QuotaFailure(violations: [
                    .init(subject: "tenant:\(tenant)", description: "active runs (scheduled + running) per tenant"),
                ])),
            ])
        case .runNotFound:
            // Identical for a run that does not exist and another tenant's run.
            return RPCError(code: .notFound, message: "run not found", details: [
                .errorInfo(ErrorInfo(reason: "RUN_NOT_FOUND", domain: domain)),
            ])
        case .invalidRequest:
            return invalidArgument(field: error.field ?? "request", error.message)
        case .workflowNotAllowed:
            return RPCError(code: .permissionDenied, message: error.message, details: [
                .errorInfo(ErrorInfo(reason: "WORKFLOW_NOT_ALLOWED", domain: domain,
                                     metadata: ["workflow": error.workflow ?? ""])),
            ])
        case .unavailable:
            return RPCError(code: .unavailable, message: error.message, details: [
                .errorInfo(ErrorInfo(reason: "SHUTTING_DOWN", domain: domain)),
                .retryInfo(RetryInfo(retryDelay: .seconds(1))),
            ])
        default:
            return RPCError(code: .internalError, message: error.message,
                            details: [.errorInfo(ErrorInfo(reason: "INTERNAL", domain: domain))])
        }
    }
}
