import AsyncHTTPClient
import Engine
import Foundation
import NIOCore
import NIOHTTP1

/// `http`: calls a URL; `{status, headers, body}` (a JSON body structured). A status outside
/// 200-299 fails the node. The host must pass the server's egress policy (`HTTPEgress`).
/// Redirects are not followed unless `follow_redirects: true` (then at most `max_redirects`,
/// default 5, each hop checked again; credentials are not carried to another origin).
/// Every request carries the run's W3C `traceparent` (and `tracestate`), see `RunTracing`.
struct HTTPNode: NodeBehavior {
    static let kind = NodeKind.http
    static let configFields: Set<String> = ["method", "url", "headers", "body", "follow_redirects", "max_redirects", "secret_headers"]
    static let methods: Set<String> = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    /// The most `max_redirects` may say.
    static let redirectLimit = 20

    struct Header: Sendable {
        let name: String
        let value: String
    }

    let method: String
    let url: TextTemplate
    let headers: [String: TextTemplate]
    /// A string is sent as it renders; any other value as JSON.
    let body: ValueTemplate?
    let followRedirects: Bool
    let maxRedirects: Int
    /// Headers whose values are secret besides the credential names `Redaction` knows
    /// (lower case): shown as `[redacted]`, and scrubbed from the run's events, outputs and error.
    let secretHeaders: Set<String>

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
        followRedirects = try config.flag("follow_redirects", default: false)
        var maxRedirects = 5
        if let value = config["max_redirects"] {
            guard case .integer(let count) = value, (1...Int64(Self.redirectLimit)).contains(count) else {
                throw config.invalid("config.max_redirects must be an integer from 1 to \(Self.redirectLimit)")
            }
            guard followRedirects else { throw config.invalid("config.max_redirects needs follow_redirects: true") }
            maxRedirects = Int(count)
        }
        self.maxRedirects = maxRedirects
        secretHeaders = Set((try config.strings("secret_headers") ?? []).map { $0.lowercased() })
        for name in secretHeaders where !headers.keys.contains(where: { $0.lowercased() == name }) {
            throw config.invalid("config.secret_headers names '\(name)', which is not in config.headers")
        }
    }

    private func isSecret(_ header: String) -> Bool {
        Redaction.isSecretHeader(header) || secretHeaders.contains(header.lowercased())
    }

    var templates: [ValueTemplate] { [.text(url)] + headers.values.map { .text($0) } + (body.map { [$0] } ?? []) }

    func prepare(_ scope: NodeScope) throws(WorkflowNodeError) -> PreparedNode {
        let headers = headers.keys.sorted().map { Header(name: $0, value: self.headers[$0]!.renderText(scope.context)) }
        let url = url.renderText(scope.context), body = body?.resolve(scope.context)
        var shown: [String: JSONValue] = [:]
        for header in headers {
            shown[header.name] = .string(isSecret(header.name) ? Redaction.mask : header.value)
        }
        let eventInputs: JSONValue = [
            "method": .string(method), "url": .string(Redaction.url(url)), "headers": .object(shown), "body": body ?? .null,
        ]
        let request = Request(method: method, url: url, headers: headers, body: body)
        let redirects = followRedirects ? maxRedirects : 0
        let secrets = headers.filter { isSecret($0.name) }.map(\.value)
        return PreparedNode(eventInputs: eventInputs, secrets: secrets) { environment in
            try await Self.perform(request, redirects: redirects, environment: environment)
        }
    }

    struct Request: Sendable {
        var method: String
        var url: String
        var headers: [Header]
        var body: JSONValue?
    }

    private static func perform(_ first: Request, redirects: Int, environment: NodeEnvironment) async throws -> JSONValue {
        var request = first
        var hops = 0
        while true {
            let shown = "\(request.method) \(Redaction.url(request.url))"
            guard let parsed = URL(string: request.url), let scheme = parsed.scheme?.lowercased(), ["http", "https"].contains(scheme),
                  let host = parsed.host, !host.isEmpty else {
                throw WorkflowNodeError(code: .invalidValue, message: "'\(Redaction.url(request.url))' is not an http or https URL")
            }
            let address = try await environment.http.checkedAddress(for: parsed, shown: shown)
            let (status, reason, responseHeaders, text) = try await environment.http.withClient(host: host, address: address) { client in
                try await exchange(request, client: client, shown: shown, environment: environment)
            }
            if (300..<400).contains(status), status != 304, let location = responseHeaders.first(name: "location") {
                guard redirects > 0 else {
                    throw WorkflowNodeError(
                        code: .httpStatus,
                        message: "\(shown) answered HTTP \(status) \(reason) (a redirect; this node does not follow redirects: "
                            + "set follow_redirects: true)", status: status)
                }
                guard hops < redirects else {
                    throw WorkflowNodeError(code: .httpRequest, message: "\(shown): more than \(redirects) redirects")
                }
                guard let next = URL(string: location, relativeTo: parsed)?.absoluteURL else {
                    throw WorkflowNodeError(code: .invalidValue, message: "\(shown) redirected to a location that is not a URL")
                }
                hops += 1
                if status == 303 || ((status == 301 || status == 302) && request.method == "POST") {
                    request.method = request.method == "HEAD" ? "HEAD" : "GET"
                    request.body = nil
                }
                if !sameOrigin(parsed, next) {
                    // Credentials were meant for the first origin only.
                    request.headers.removeAll { Redaction.isSecretHeader($0.name) }
                }
                request.url = next.absoluteString
                continue
            }
            guard (200..<300).contains(status) else {
                let excerpt = Redaction.excerpt(text)
                throw WorkflowNodeError(
                    code: .httpStatus,
                    message: "\(shown) answered HTTP \(status) \(reason)" + (excerpt.isEmpty ? "" : ": \(excerpt)"),
                    status: status)
            }
            var headersValue: [String: JSONValue] = [:]
            for header in responseHeaders {
                let name = header.name.lowercased()
                let value = Redaction.isSecretHeader(name) ? Redaction.mask : header.value
                headersValue[name] = .string(headersValue[name]?.stringValue.map { $0 + ", " + value } ?? value)
            }
            let contentType = responseHeaders.first(name: "content-type")?.lowercased() ?? ""
            var bodyValue = JSONValue.string(text)
            if contentType.contains("json"), !text.isEmpty {
                do {
                    bodyValue = try JSONValue(parsing: text)
                } catch {
                    throw WorkflowNodeError(code: .invalidValue, message: "the response of \(shown) says JSON but is not valid JSON")
                }
            }
            return ["status": .integer(Int64(status)), "headers": .object(headersValue), "body": bodyValue]
        }
    }

    /// One request and its whole response, on `client`.
    private static func exchange(_ request: Request, client: HTTPClient, shown: String,
                                 environment: NodeEnvironment) async throws -> (Int, String, HTTPHeaders, String) {
        let timeout = environment.timeout, configuration = environment.configuration
        var outgoing = HTTPClientRequest(url: request.url)
        outgoing.method = HTTPMethod(rawValue: request.method)
        for header in request.headers { outgoing.headers.add(name: header.name, value: header.value) }
        // The run's trace continues into the service called (a definition's own values give way).
        let trace = RunTracing.outgoingHeaders()
        if !trace.isEmpty {
            outgoing.headers.remove(name: "traceparent")
            outgoing.headers.remove(name: "tracestate")
            for header in trace { outgoing.headers.add(name: header.name, value: header.value) }
        }
        if let body = request.body {
            let (bytes, isJSON): (String, Bool) = switch body {
            case .string(let text): (text, false)
            default: (body.jsonText, true)
            }
            outgoing.body = .bytes(ByteBuffer(string: bytes))
            if isJSON && !outgoing.headers.contains(name: "content-type") {
                outgoing.headers.add(name: "content-type", value: "application/json")
            }
        }
        let response: HTTPClientResponse
        do {
            response = try await client.execute(outgoing, timeout: .nanoseconds(Int64(timeout.seconds * 1e9)))
        } catch let error as HTTPClientError where error == .deadlineExceeded {
            throw WorkflowNodeError(code: .timeout, message: "\(shown) timed out after \(WorkflowRunner.format(timeout))", cause: error)
        } catch let error as HTTPClientError where error == .cancelled {
            throw CancellationError()
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            throw WorkflowNodeError(code: .httpRequest, message: "\(shown) failed: \(Redaction.excerpt("\(error)"))")
        }
        let buffer: ByteBuffer
        do {
            buffer = try await response.body.collect(upTo: configuration.maxResponseBytes)
        } catch is NIOTooManyBytesError {
            throw WorkflowNodeError(code: .tooLarge, message: "the response of \(shown) is larger than \(configuration.maxResponseBytes) bytes")
        }
        return (Int(response.status.code), response.status.reasonPhrase, response.headers, String(buffer: buffer))
    }

    private static func sameOrigin(_ a: URL, _ b: URL) -> Bool {
        a.scheme?.lowercased() == b.scheme?.lowercased() && a.host?.lowercased() == b.host?.lowercased() && a.port == b.port
    }
}
