import Engine
import Foundation
import Testing
@testable import Workflows

@Suite("Redaction in http nodes' events, outputs and error texts")
struct RedactionTests {
    @Test("URLs lose user info, query and fragment; other text is cut at the query")
    func urls() {
        #expect(Redaction.url("https://user:pw@api.example:8443/v1/x?token=abc&b=2#frag") == "https://api.example:8443/v1/x?…")
        #expect(Redaction.url("http://h/p") == "http://h/p")
        #expect(Redaction.url("not a url?secret=1") == "not a url?…")
    }

    @Test("excerpts are one line of at most 120 characters with credentials masked")
    func excerpts() {
        #expect(Redaction.excerpt("denied: Bearer abc.def-ghi for you") == "denied: Bearer [redacted] for you")
        #expect(Redaction.excerpt(#"{"error": "bad", "access_token": "xyz123", "password":"hunter2"}"#)
            == #"{"error": "bad", "access_token": "[redacted]", "password":"[redacted]"}"#)
        #expect(Redaction.excerpt("a\nb") == "a b")
        #expect(Redaction.excerpt(String(repeating: "x", count: 500)).count == 121)
    }

    @Test("credential headers are [redacted] in events and response headers; a failing answer is quoted short and masked")
    func httpNode() async throws {
        let server = try await LoopbackHTTPServer.start { request in
            if request.uri.hasPrefix("/fail") {
                return .text("upstream said: session=s3cr3t-session " + String(repeating: "y", count: 400), status: 500)
            }
            var reply = LoopbackHTTPServer.Reply.json(#"{"ok": true}"#)
            reply.headers = [("set-cookie", "sid=s3cr3t-cookie"), ("x-request-id", "r1")]
            return reply
        }
        defer { Task { await server.shutdown() } }
        let workflow = """
            name: secrets
            inputs: { url: string }
            nodes:
              - id: call
                kind: http
                config:
                  url: "{{inputs.url}}"
                  headers: { authorization: "Bearer s3cr3t-token", x-session-id: "s3cr3t-sid", accept: application/json }
              - id: done
                kind: end
                needs: call
                config: { outputs: { headers: "{{call.headers}}" } }
            """
        let log = EventLog()
        let result = try await runWorkflow(workflow, inputs: #"{"url": "\#(server.baseURL)/ok?api_key=s3cr3t-query"}"#,
                                           configuration: .loopbackAllowed, log: log)
        #expect(result.state == .succeeded, "\(result.error ?? "")")
        #expect(server.requests.first?.headers["authorization"] == "Bearer s3cr3t-token")
        let everything = log.events.map(\.payloadJSON).joined() + (result.outputsJSON ?? "")
        #expect(!everything.contains("s3cr3t"), "\(everything)")
        let headers = try #require(try outputs(result)["headers"]?.objectValue)
        #expect(headers["set-cookie"] == "[redacted]" && headers["x-request-id"] == "r1")

        let failing = EventLog()
        let failed = try await runWorkflow(workflow, inputs: #"{"url": "\#(server.baseURL)/fail?api_key=s3cr3t-query"}"#,
                                           configuration: .loopbackAllowed, log: failing)
        let error = try #require(failed.error)
        #expect(error.hasPrefix("node 'call' failed: GET \(server.baseURL)/fail?… answered HTTP 500 Internal Server Error: upstream said: session=[redacted] yyy"))
        #expect(error.count < 300 && !error.contains("s3cr3t"), "\(error)")
        #expect(!failing.events.map(\.payloadJSON).joined().contains("s3cr3t"))
    }
}

@Suite("Secret values are scrubbed from a run's events, outputs and error, wherever they travel")
struct SecretScrubTests {
    @Test("an upstream that echoes the credential header, and a template that copies it to the outputs, show [redacted]")
    func echoedCredential() async throws {
        let server = try await LoopbackHTTPServer.start { request in
            if request.uri.hasPrefix("/fail") { return .text("bad key \(request.headers["x-partner"] ?? "")", status: 403) }
            return .json(#"{"you_sent": "\#(request.headers["authorization"] ?? "")", "partner": "\#(request.headers["x-partner"] ?? "")"}"#)
        }
        defer { Task { await server.shutdown() } }
        let workflow = """
            name: echo
            inputs: { url: string }
            nodes:
              - id: call
                kind: http
                config:
                  url: "{{inputs.url}}"
                  headers: { authorization: "Bearer sk-live-0123456789", x-partner: "partner-secret-42" }
                  secret_headers: [x-partner]
              - id: copy
                kind: template
                needs: call
                config: { template: "token was {{call.body.you_sent}}" }
              - id: done
                kind: end
                needs: [call, copy]
                config: { outputs: { body: "{{call.body}}", text: "{{copy.text}}" } }
            """
        let log = EventLog()
        let result = try await runWorkflow(workflow, inputs: #"{"url": "\#(server.baseURL)/ok"}"#, configuration: .loopbackAllowed, log: log)
        #expect(result.state == .succeeded, "\(result.error ?? "")")
        #expect(server.requests.first?.headers["x-partner"] == "partner-secret-42")
        let record = log.events.map(\.payloadJSON).joined() + (result.outputsJSON ?? "")
        #expect(!record.contains("sk-live-0123456789") && !record.contains("partner-secret-42"), "\(record)")
        #expect(try outputs(result)["text"] == "token was [redacted]")

        let failing = EventLog()
        let failed = try await runWorkflow(workflow, inputs: #"{"url": "\#(server.baseURL)/fail"}"#, configuration: .loopbackAllowed, log: failing)
        #expect(failed.error == "node 'call' failed: GET \(server.baseURL)/fail answered HTTP 403 Forbidden: bad key [redacted]")
        #expect(!failing.events.map(\.payloadJSON).joined().contains("partner-secret-42"))
    }

    @Test("a secret-named environment value that a program prints is scrubbed from its outputs and events")
    func execSecret() async throws {
        let script = try Script(#"printf '{"leak": "%s"}\n' "$API_TOKEN""#)
        defer { script.remove() }
        var configuration = WorkflowRunnerConfiguration()
        configuration.allowedPrograms = [script.path]
        let log = EventLog()
        let result = try await runWorkflow("""
            name: e
            nodes:
              - { id: run, kind: exec, config: { program: \(script.path), env: { API_TOKEN: "tok-abcdef-123" } } }
              - { id: done, kind: end, needs: run, config: { outputs: { out: "{{run.leak}}" } } }
            """, configuration: configuration, log: log)
        #expect(try outputs(result)["out"] == "[redacted]")
        #expect(!log.events.map(\.payloadJSON).joined().contains("tok-abcdef-123"))
    }

    @Test("secret_headers must name a header of the node")
    func unknownSecretHeader() throws {
        let problems = try loadProblems(["s.yaml": """
            name: s
            nodes:
              - { id: call, kind: http, config: { url: "http://x/", secret_headers: [x-nope] } }
              - { id: done, kind: end, needs: call, config: { outputs: {} } }
            """])
        #expect(problems.map(\.message) == ["config.secret_headers names 'x-nope', which is not in config.headers"])
    }
}
