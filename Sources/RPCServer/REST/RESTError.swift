import Engine
import NIOCore
import NIOHTTP1

/// A REST failure in Dify's shape: `{"code", "message", "status"}` plus headers
/// (`WWW-Authenticate`, `Retry-After`, `Allow`).
struct RESTError: Error, Sendable {
    var status: HTTPResponseStatus
    var code: String
    var message: String
    var headers: HTTPHeaders = [:]
    var cause: (any Error & Sendable)?

    var body: DifyJSON {
        .object([("code", .string(code)), ("message", .string(message)), ("status", .int(Int64(status.code)))])
    }

    var response: HTTPResponse {
        var headers = self.headers
        headers.add(name: "content-type", value: "application/json")
        return HTTPResponse(status: status, headers: headers, body: .full(ByteBuffer(string: body.text)))
    }

    static func unauthorized(_ message: String) -> RESTError {
        RESTError(status: .unauthorized, code: "unauthorized", message: message,
                  headers: ["WWW-Authenticate": #"Bearer realm="api""#])
    }

    static func invalidParam(_ message: String) -> RESTError {
        RESTError(status: .badRequest, code: "invalid_param", message: message)
    }

    static func badRequest(_ message: String) -> RESTError {
        RESTError(status: .badRequest, code: "bad_request", message: message)
    }

    static let notFound = RESTError(
        status: .notFound, code: "not_found",
        message: "The requested URL was not found on the server. If you entered the URL manually please check your spelling and try again.")

    static let runNotFound = RESTError(status: .notFound, code: "not_found", message: "Workflow run not found.")

    static func methodNotAllowed(allowed: [HTTPMethod]) -> RESTError {
        RESTError(status: .methodNotAllowed, code: "method_not_allowed",
                  message: "The method is not allowed for the requested URL.",
                  headers: ["Allow": allowed.map(\.rawValue).joined(separator: ", ")])
    }

    static let unsupportedMediaType = RESTError(
        status: .unsupportedMediaType, code: "unsupported_media_type",
        message: "Did not attempt to load JSON data because the request Content-Type was not 'application/json'.")

    static func payloadTooLarge(limit: Int) -> RESTError {
        RESTError(status: .payloadTooLarge, code: "request_entity_too_large",
                  message: "The request body exceeds the limit of \(limit) bytes.")
    }

    /// The server holds as many buffered request bodies as it allows (503, retry later).
    static let serverBusy = RESTError(
        status: .serviceUnavailable, code: "server_busy",
        message: "The server holds too many request bytes right now; retry later.")

    static let requestTimeout = RESTError(
        status: .requestTimeout, code: "request_timeout",
        message: "The server closed the network connection because the client didn't finish the request within the specified time.")

    static func internalError(_ cause: any Error & Sendable) -> RESTError {
        RESTError(status: .internalServerError, code: "internal_server_error",
                  message: "The server encountered an internal error and was unable to complete your request.", cause: cause)
    }

    /// Engine and store failures as HTTP (DESIGN.md, the error table).
    static func map(_ error: any Error) -> RESTError {
        if let error = error as? RESTError { return error }
        if let error = error as? EngineError {
            switch error.code {
            case .invalidIdempotencyKey:
                return badRequest("Idempotency-Key must be 1 to \(IdempotencyKey.maxLength) printable ASCII characters")
            case .idempotencyKeyReused:
                return RESTError(status: .unprocessableEntity, code: "idempotency_key_reused",
                                 message: "The Idempotency-Key was already used with a different request (run \(error.runID ?? "")).")
            case .tenantOverLimit:
                let seconds = max(1, Int((error.retryAfter ?? .seconds(1)).components.seconds)
                    + ((error.retryAfter?.components.attoseconds ?? 0) > 0 ? 1 : 0))
                return RESTError(status: .tooManyRequests, code: "too_many_requests",
                                 message: "Too many active workflow runs (\(error.active ?? 0)/\(error.limit ?? 0)). Wait for existing runs to complete before submitting new ones.",
                                 headers: ["Retry-After": String(seconds)])
            case .runNotFound:
                return runNotFound
            case .invalidRequest:
                return invalidParam(error.message)
            case .unavailable:
                return RESTError(status: .serviceUnavailable, code: "service_unavailable", message: error.message,
                                 headers: ["Retry-After": "1"])
            default:
                return internalError(error)
            }
        }
        if let error = error as? StoreError, error.isRetryable {
            return RESTError(status: .serviceUnavailable, code: "service_unavailable",
                             message: "The store is busy or unreachable, retry shortly.", headers: ["Retry-After": "1"], cause: error)
        }
        return internalError(SendableDescription(String(describing: error)))
    }
}

/// An error kept only for its description.
struct SendableDescription: Error, Sendable, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
