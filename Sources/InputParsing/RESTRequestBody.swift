/// The JSON bodies of the Dify-compatible REST API, read from untrusted bytes.
public enum RESTRequestBody {
    /// Why a body was refused; the REST layer turns each into Dify's answer.
    public enum Failure: Error, Sendable, Equatable {
        /// `content-type` is not `application/json` (415).
        case unsupportedMediaType
        /// Not JSON at all (400).
        case notJSON
        /// JSON, but not an object (400).
        case notObject
        /// No non-empty `user` (string or integer).
        case missingUser
        /// A field of the run payload is missing or of the wrong kind (Dify's pydantic text).
        case invalidField(field: String, problem: String)
    }

    /// How `POST /v1/workflows/run` wants its answer.
    public enum ResponseMode: String, Sendable, Equatable { case blocking, streaming, async }

    /// A decoded `POST /v1/workflows/run` body.
    public struct RunPayload: Sendable, Equatable {
        public var inputs: [String: JSONValue]
        public var responseMode: ResponseMode
        public var user: String

        public init(inputs: [String: JSONValue], responseMode: ResponseMode, user: String) {
            self.inputs = inputs
            self.responseMode = responseMode
            self.user = user
        }
    }

    /// The JSON object body with a non-empty `user` (Dify reads it before anything else).
    public static func object(contentType: String?, body: some Collection<UInt8>)
        -> Result<(object: [String: JSONValue], user: String), Failure> {
        guard isJSON(contentType) else { return .failure(.unsupportedMediaType) }
        let value: JSONValue
        do {
            value = try JSONText.parse(body)
        } catch {
            return .failure(.notJSON)
        }
        guard case .object(let object) = value else { return .failure(.notObject) }
        let user: String
        switch object["user"] {
        case .string(let text)?: user = text
        case .integer(let number)?: user = String(number)
        default: user = ""
        }
        guard !user.isEmpty else { return .failure(.missingUser) }
        return .success((object, user))
    }

    /// Whether the media type (before any `;` parameters, spaces and tabs around it) is
    /// `application/json`, in any ASCII case; compared as bytes.
    static func isJSON(_ contentType: String?) -> Bool {
        guard let contentType else { return false }
        var type = ASCIIBytes.mediaType(contentType)
        while let first = type.first, first == UInt8(ascii: " ") || first == UInt8(ascii: "\t") { type = type.dropFirst() }
        while let last = type.last, last == UInt8(ascii: " ") || last == UInt8(ascii: "\t") { type = type.dropLast() }
        return ASCIIBytes.equalsIgnoringCase(type, json)
    }

    private static let json = Array("application/json".utf8)

    /// A `POST /v1/workflows/run` body: `inputs` an object, `response_mode` one of the three
    /// (absent or null: blocking), `files` a list when present.
    public static func run(contentType: String?, body: some Collection<UInt8>) -> Result<RunPayload, Failure> {
        let object: [String: JSONValue], user: String
        switch Self.object(contentType: contentType, body: body) {
        case .failure(let failure): return .failure(failure)
        case .success(let decoded): (object, user) = decoded
        }
        guard let inputsValue = object["inputs"], inputsValue != .null else {
            return .failure(.invalidField(field: "inputs", problem: "Field required [type=missing]"))
        }
        guard case .object(let inputs) = inputsValue else {
            return .failure(.invalidField(field: "inputs", problem: "Input should be a valid dictionary [type=dict_type]"))
        }
        let mode: ResponseMode
        switch object["response_mode"] {
        case nil, .null?, .string("blocking")?: mode = .blocking
        case .string("streaming")?: mode = .streaming
        case .string("async")?: mode = .async
        default:
            return .failure(.invalidField(
                field: "response_mode", problem: "Input should be 'blocking', 'streaming' or 'async' [type=literal_error]"))
        }
        if let files = object["files"], files != .null, files.arrayValue == nil {
            return .failure(.invalidField(field: "files", problem: "Input should be a valid list [type=list_type]"))
        }
        return .success(RunPayload(inputs: inputs, responseMode: mode, user: user))
    }
}

extension Substring {
    fileprivate func trimmingCharacters(in set: Set<Character>) -> Substring {
        var slice = self
        while let first = slice.first, set.contains(first) { slice.removeFirst() }
        while let last = slice.last, set.contains(last) { slice.removeLast() }
        return slice
    }
}
