import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// A node with its templates rendered: what it will do, ready to run (and to show in events).
enum ResolvedNode: Sendable {
    struct Header: Sendable {
        let name: String
        let value: String
    }

    case template(source: String, text: String)
    case http(method: String, url: String, headers: [Header], body: JSONValue?)
    case exec(program: String, arguments: [String], input: JSONValue)
    case sleep(seconds: Double)
    case condition(left: JSONValue, op: ComparisonOperator, right: JSONValue)
    case end([String: JSONValue])

    private static let redactedHeaders: Set<String> = ["authorization", "proxy-authorization", "cookie", "x-api-key"]

    init(_ node: NodeDefinition, context: TemplateContext, dependencies: [String: JSONValue],
         inputs: [String: JSONValue]) throws(WorkflowNodeError) {
        switch node.spec {
        case .template(let template):
            self = .template(source: template.source, text: template.renderText(context))
        case .http(let spec):
            let headers = spec.headers.keys.sorted().map { Header(name: $0, value: spec.headers[$0]!.renderText(context)) }
            self = .http(method: spec.method, url: spec.url.renderText(context), headers: headers, body: spec.body?.resolve(context))
        case .exec(let spec):
            var standardInput: JSONValue
            if let input = spec.input {
                standardInput = input.resolve(context)
            } else {
                var object = dependencies
                object["inputs"] = .object(inputs)
                standardInput = .object(object)
            }
            self = .exec(program: spec.program, arguments: spec.arguments.map { $0.renderText(context) }, input: standardInput)
        case .sleep(let spec):
            let value = spec.seconds.resolve(context)
            guard let seconds = value.doubleValue ?? value.stringValue.flatMap({ Double($0.trimmingCharacters(in: .whitespaces)) }),
                  seconds.isFinite, seconds >= 0 else {
                throw WorkflowNodeError(code: .invalidValue, message: "seconds must be a number of seconds, not \(value.jsonText)")
            }
            self = .sleep(seconds: seconds * spec.fraction)
        case .condition(let spec):
            self = .condition(left: spec.left.resolve(context), op: spec.op, right: spec.right.resolve(context))
        case .end(let outputs):
            self = .end(outputs.mapValues { $0.resolve(context) })
        }
    }

    /// What the node's events show as its inputs (secret-looking headers redacted).
    var eventInputs: JSONValue {
        switch self {
        case .template(let source, _):
            return ["template": .string(source)]
        case .http(let method, let url, let headers, let body):
            var shown: [String: JSONValue] = [:]
            for header in headers {
                shown[header.name] = .string(Self.redactedHeaders.contains(header.name.lowercased()) ? "[redacted]" : header.value)
            }
            return ["method": .string(method), "url": .string(url), "headers": .object(shown), "body": body ?? .null]
        case .exec(let program, let arguments, let input):
            return ["program": .string(program), "args": .array(arguments.map(JSONValue.string)), "input": input]
        case .sleep(let seconds):
            return ["seconds": .number(seconds)]
        case .condition(let left, let op, let right):
            return ["left": left, "op": .string(op.rawValue), "right": right]
        case .end(let outputs):
            return .object(outputs)
        }
    }
}

extension WorkflowRunner {
    /// Does the node's work; its outputs.
    func perform(_ work: ResolvedNode, timeout: Duration) async throws -> JSONValue {
        switch work {
        case .template(_, let text):
            return ["text": .string(text)]
        case .http(let method, let url, let headers, let body):
            return try await performHTTP(method: method, url: url, headers: headers, body: body, timeout: timeout)
        case .exec(let program, let arguments, let input):
            return try await performExec(program: program, arguments: arguments, input: input)
        case .sleep(let seconds):
            try await clock.sleep(for: .milliseconds(Int64((seconds * 1000).rounded())))
            return ["seconds": .number(seconds)]
        case .condition(let left, let op, let right):
            let result = try Comparison.evaluate(left, op, right)
            return ["result": .bool(result), "branch": .string(result ? "then" : "else")]
        case .end(let outputs):
            return .object(outputs)
        }
    }

    private func performHTTP(method: String, url: String, headers: [ResolvedNode.Header], body: JSONValue?,
                             timeout: Duration) async throws -> JSONValue {
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
            response = try await httpClient.execute(request, timeout: .nanoseconds(Int64(timeout.seconds * 1e9)))
        } catch let error as HTTPClientError where error == .deadlineExceeded {
            throw WorkflowNodeError(code: .timeout, message: "\(method) \(url) timed out after \(Self.format(timeout))", cause: error)
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

    private func performExec(program: String, arguments: [String], input: JSONValue) async throws -> JSONValue {
        guard configuration.allowedPrograms.contains(program) else {
            throw WorkflowNodeError(code: .programNotAllowed, message: "program \(program) is not on the allow-list of this server")
        }
        let output: ChildProcess.Output
        do {
            output = try await ChildProcess.run(
                program: program, arguments: arguments, environment: configuration.programEnvironment,
                input: Array((input.jsonText + "\n").utf8), stdoutLimit: configuration.maxProgramOutputBytes,
                stderrLimit: configuration.programStderrBytes)
        } catch let error as ChildProcess.SpawnError {
            throw WorkflowNodeError(code: .programFailed, message: error.description, cause: error)
        }
        if output.stdoutOverflow {
            throw WorkflowNodeError(code: .tooLarge, message: "\(program) wrote more than \(configuration.maxProgramOutputBytes) bytes")
        }
        guard output.termination == .exited(0) else {
            let stderr = String(decoding: output.stderr, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            throw WorkflowNodeError(code: .programFailed,
                                    message: "\(program) \(output.termination)" + (stderr.isEmpty ? "" : ": \(stderr)"))
        }
        let text = String(decoding: output.stdout, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        if text.isEmpty { return [:] }
        let value: JSONValue
        do {
            value = try JSONValue(parsing: text)
        } catch {
            throw WorkflowNodeError(code: .programFailed, message: "\(program) wrote something other than JSON: \(text.prefix(200))")
        }
        if case .object = value { return value }
        return ["result": value]
    }
}

/// The comparisons of `condition` nodes. Numbers compare as numbers, and a string that holds a
/// number compares with a number as that number (templates render numbers as text).
enum Comparison {
    static func evaluate(_ left: JSONValue, _ op: ComparisonOperator, _ right: JSONValue) throws(WorkflowNodeError) -> Bool {
        switch op {
        case .equal: return equal(left, right)
        case .notEqual: return !equal(left, right)
        case .contains: return try contains(left, right)
        case .less, .lessOrEqual, .greater, .greaterOrEqual:
            let order: ComparisonResult
            if let a = number(left), let b = number(right) {
                order = a < b ? .orderedAscending : a > b ? .orderedDescending : .orderedSame
            } else if case .string(let a) = left, case .string(let b) = right {
                order = a < b ? .orderedAscending : a > b ? .orderedDescending : .orderedSame
            } else {
                throw WorkflowNodeError(code: .invalidValue,
                                        message: "cannot order \(left.typeName) \(left.jsonText) and \(right.typeName) \(right.jsonText)")
            }
            switch op {
            case .less: return order == .orderedAscending
            case .lessOrEqual: return order != .orderedDescending
            case .greater: return order == .orderedDescending
            default: return order != .orderedAscending
            }
        }
    }

    private static func number(_ value: JSONValue) -> Double? {
        if let number = value.doubleValue { return number }
        if case .string(let text) = value, let number = Double(text.trimmingCharacters(in: .whitespaces)), number.isFinite {
            return number
        }
        return nil
    }

    private static func equal(_ left: JSONValue, _ right: JSONValue) -> Bool {
        if left == right { return true }
        switch (left, right) {
        case (.integer, _), (.number, _), (_, .integer), (_, .number):
            guard let a = number(left), let b = number(right) else { return false }
            return a == b
        case (.bool(let flag), .string(let text)), (.string(let text), .bool(let flag)):
            return text == (flag ? "true" : "false")
        case (.null, .string(let text)), (.string(let text), .null):
            return text.isEmpty
        case (.array(let a), .array(let b)):
            return a.count == b.count && zip(a, b).allSatisfy(equal)
        default:
            return false
        }
    }

    private static func contains(_ container: JSONValue, _ element: JSONValue) throws(WorkflowNodeError) -> Bool {
        switch container {
        case .string(let text): return text.contains(element.renderedText)
        case .array(let elements): return elements.contains { equal($0, element) }
        case .object(let object):
            guard case .string(let key) = element else { return false }
            return object[key] != nil
        default:
            throw WorkflowNodeError(code: .invalidValue, message: "contains needs a string, an array or an object, not \(container.typeName)")
        }
    }
}
