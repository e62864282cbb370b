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
