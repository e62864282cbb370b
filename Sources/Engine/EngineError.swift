import Crypto
import Foundation

/// An error the Engine reports to its callers; the transports map `code` to their status
/// codes (gRPC, HTTP) in one place each.
public struct EngineError: Error, Sendable, CustomStringConvertible {
    /// What went wrong. Extensible: new codes do not break callers.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let name: String
        private init(_ name: String) { self.name = name }
        public var description: String { name }

        /// The idempotency key is not 1-255 printable ASCII characters.
        public static let invalidIdempotencyKey = Code("invalidIdempotencyKey")
        /// The key was used before with a different request (`runID` names that run).
        public static let idempotencyKeyReused = Code("idempotencyKeyReused")
        /// The tenant is at its concurrency limit (`retryAfter` says when to try again).
        public static let tenantOverLimit = Code("tenantOverLimit")
        /// No such run for this tenant.
        public static let runNotFound = Code("runNotFound")
        /// The request is malformed (`field` names what).
        public static let invalidRequest = Code("invalidRequest")
        /// The caller's API key may not run this workflow (`field` is `workflow`).
        public static let workflowNotAllowed = Code("workflowNotAllowed")
        /// The Engine is shutting down and takes no new work.
        public static let unavailable = Code("unavailable")
    }

    public var code: Code
    public var message: String
    /// The run concerned, where there is one.
    public var runID: String?
    /// For `tenantOverLimit`: when a retry may succeed.
    public var retryAfter: Duration?
    /// For `tenantOverLimit`: the limit and the active run count.
    public var limit: Int?
    public var active: Int?
    /// For `invalidRequest`: the offending field.
    public var field: String?
    /// For `workflowNotAllowed`: the workflow asked for.
    public var workflow: String?
    public var cause: (any Error & Sendable)?

    public init(code: Code, message: String, runID: String? = nil, retryAfter: Duration? = nil, limit: Int? = nil,
                active: Int? = nil, field: String? = nil, workflow: String? = nil, cause: (any Error & Sendable)? = nil) {
        self.code = code
        self.message = message
        self.runID = runID
        self.retryAfter = retryAfter
        self.limit = limit
        self.active = active
        self.field = field
        self.workflow = workflow
        self.cause = cause
    }

    public var description: String { "\(code): \(message)" }
}

extension IdempotencyKey {
    /// Throws `invalidIdempotencyKey` unless `IdempotencyKey.isValid(key)`.
    public static func validate(_ key: String) throws(EngineError) {
        guard isValid(key) else {
            throw EngineError(code: .invalidIdempotencyKey,
                              message: "an idempotency key is 1 to \(maxLength) printable ASCII characters, without spaces at either end",
                              field: "idempotency_key")
        }
    }
}

/// The SHA-256 fingerprint of a submission's canonical form: the workflow, the user and the
/// inputs as canonical JSON (object keys sorted, no insignificant whitespace), so that two
/// encodings of the same request match. The response mode and transport are not part of it:
/// retrying an async submission in blocking mode replays the same run.
public enum RequestFingerprint {
    public static func compute(workflow: String, user: String, inputsJSON: String) throws(EngineError) -> String {
        compute(workflow: workflow, user: user, canonicalInputs: try canonicalJSON(inputsJSON))
    }

    /// The fingerprint of inputs that are canonical JSON already (the workflow resolver's
    /// output), without parsing them again.
    public static func compute(workflow: String, user: String, canonicalInputs: String) -> String {
        var hasher = SHA256()
        for var part in [workflow, user, canonicalInputs] {
            part.withUTF8 { bytes in
                var length = UInt64(bytes.count).bigEndian
                withUnsafeBytes(of: &length) { hasher.update(bufferPointer: $0) }
                hasher.update(bufferPointer: UnsafeRawBufferPointer(bytes))
            }
        }
        return Hex.encode(digest: hasher.finalize())
    }

    /// `json` re-encoded with sorted keys; `invalidRequest` when it is not a JSON object.
    public static func canonicalJSON(_ json: String) throws(EngineError) -> String {
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: Data(json.utf8), options: [.fragmentsAllowed])
        } catch {
            throw EngineError(code: .invalidRequest, message: "inputs are not valid JSON", field: "inputs")
        }
        guard object is [String: Any] else {
            throw EngineError(code: .invalidRequest, message: "inputs must be a JSON object", field: "inputs")
        }
        do {
            let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
            return String(decoding: data, as: UTF8.self)
        } catch {
            throw EngineError(code: .invalidRequest, message: "inputs cannot be encoded", field: "inputs")
        }
    }
}
