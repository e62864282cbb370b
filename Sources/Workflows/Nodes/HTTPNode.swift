import AsyncHTTPClient
import Engine
import Foundation
import NIOCore
import NIOHTTP1

/// `http`: calls a URL; `{status, headers, body}` (a JSON body structured). A status outside
/// 200-299 fails the node.
struct HTTPNode: NodeBehavior {
    static let kind = NodeKind.http
    static let configFields: Set<String> = ["method", "url", "headers", "body"]
    static let methods: Set<String> = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    private static let redactedHeaders: Set<String> = ["authorization", "proxy-authorization", "cookie", "x-api-key"]

    struct Header: Sendable {
        let name: String
        let value: String
    }

    let method: String
    let url: TextTemplate
    let headers: [String: TextTemplate]
    /// A string is sent as it renders; any other value as JSON.
    let body: ValueTemplate?

    init(config: NodeConfig) throws(NodeConfigProblem) {
        guard case .string? = config["url"] else { throw config.missing("url", "a string") }
        url = try config.text(config["url"]!, path: "config.url")
        var method = "GET"
        if let value = config["method"] {
            guard case .string(let name) = value, Self.methods.contains(name.uppercased()) else {
                throw config.invalid("config.method must be one of \(Self.methods.sorted().joined(separator: ", "))")
            }
            method = name.uppercased()
        }
        self.method = method
        var headers: [String: TextTemplate] = [:]
        if let value = config["headers"] {
            guard case .object(let object) = value, object.values.allSatisfy({ $0.stringValue != nil }) else {
                throw config.invalid("config.headers must map header names to strings")
            }
            for name in object.keys.sorted() {
                headers[name] = try config.text(object[name]!, path: "config.headers.\(name)")
            }
        }
        self.headers = headers
        body = try config["body"].map { value throws(NodeConfigProblem) in try config.template(value, path: "config.body") }
    }

    var templates: [ValueTemplate] { [.text(url)] + headers.values.map { .text($0) } + (body.map { [$0] } ?? []) }

    func prepare(_ scope: NodeScope) throws(WorkflowNodeError) -> PreparedNode {
        let headers = headers.keys.sorted().map { Header(name: $0, value: self.headers[$0]!.renderText(scope.context)) }
        let url = url.renderText(scope.context), body = body?.resolve(scope.context), method = method
        var shown: [String: JSONValue] = [:]
        for header in headers {
            shown[header.name] = .string(Self.redactedHeaders.contains(header.name.lowercased()) ? "[redacted]" : header.value)
        }
        let eventInputs: JSONValue = ["method": .string(method), "url": .string(url), "headers": .object(shown), "body": body ?? .null]
        return PreparedNode(eventInputs: eventInputs) { environment in
            try await Self.perform(method: method, url: url, headers: headers, body: body, environment: environment)
        }
    }

    private static func perform(method: String, url: String, headers: [Header], body: JSONValue?,
                                environment: NodeEnvironment) async throws -> JSONValue {
        let timeout = environment.timeout, configuration = environment.configuration
        guard let parsed = URL(string: url), let scheme = parsed.scheme?.lowercased(), ["http", "https"].contains(scheme),
              parsed.host != nil else {
            throw WorkflowNodeError(code: .invalidValue, message: "'\(url)' is not an http or https URL")
        }
        var request = HTTPClientRequest(url: url)
        request.method = HTTPMethod(rawValue: method)
        for header in headers { request.headers.add(name: header.name, value: header.value) }
        if let body {
            let (bytes, isJSON): (String, Bool) = switch body {
            case .string(let text): (text, false)
            default: (body.jsonText, true)
            }
            request.body = .bytes(ByteBuffer(string: bytes))
            if isJSON && !request.headers.contains(name: "content-type") {
                request.headers.add(name: "content-type", value: "application/json")
            }
        }
        let response: HTTPClientResponse
        do {
            response = try await environment.http.client.execute(request, timeout: .nanoseconds(Int64(timeout.seconds * 1e9)))
        } catch let error as HTTPClientError where error == .deadlineExceeded {
            throw WorkflowNodeError(code: .timeout, message: "\(method) \(url) timed out after \(WorkflowRunner.format(timeout))", cause: error)
        } catch let error as HTTPClientError where error == .cancelled {
            throw CancellationError()
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            throw WorkflowNodeError(code: .httpRequest, message: "\(method) \(url) failed: \(error)")
        }
        let buffer: ByteBuffer
        do {
            buffer = try await response.body.collect(upTo: configuration.maxResponseBytes)
        } catch is NIOTooManyBytesError {
            throw WorkflowNodeError(code: .tooLarge, message: "the response of \(method) \(url) is larger than \(configuration.maxResponseBytes) bytes")
        }
        let text = String(buffer: buffer)
        guard (200..<300).contains(response.status.code) else {
            let snippet = text.count > 200 ? text.prefix(200) + "…" : text[...]
            throw WorkflowNodeError(
                code: .httpStatus,
                message: "\(method) \(url) answered HTTP \(response.status.code) \(response.status.reasonPhrase)"
                    + (snippet.isEmpty ? "" : ": \(snippet)"),
                status: Int(response.status.code))
        }
        var responseHeaders: [String: JSONValue] = [:]
        for header in response.headers {
            let name = header.name.lowercased()
            responseHeaders[name] = .string(responseHeaders[name]?.stringValue.map { $0 + ", " + header.value } ?? header.value)
        }
        let contentType = response.headers.first(name: "content-type")?.lowercased() ?? ""
        var bodyValue = JSONValue.string(text)
        if contentType.contains("json"), !text.isEmpty {
            do {
                bodyValue = try JSONValue(parsing: text)
            } catch {
                throw WorkflowNodeError(code: .invalidValue, message: "the response of \(method) \(url) says JSON but is not valid JSON")
            }
        }
        return ["status": .integer(Int64(response.status.code)), "headers": .object(responseHeaders), "body": bodyValue]
    }
}
