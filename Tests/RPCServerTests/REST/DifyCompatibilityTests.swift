import Engine
import Workflows
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Logging
import Testing
@testable import RPCServer

/// Workflows of the Dify compatibility tests, loaded into a real catalog and run by the real
/// `WorkflowRunner`.
enum DifyTestWorkflows {
    static let files: [String: String] = [
        "form.yaml": """
            name: form
            version: "1"
            description: Greets with every kind of input.
            inputs:
              name: { type: string, required: true, description: Who to greet }
              count: { type: integer, default: 1 }
              ratio: { type: number }
              loud: { type: boolean, default: false }
              extra: { type: object }
            outputs: [greeting]
            nodes:
              - id: say
                kind: template
                config: { template: "Hello, {{inputs.name}}!" }
              - id: done
                kind: end
                needs: say
                config: { outputs: { greeting: "{{say.text}}" } }
            """,
        "branch.yaml": """
            name: branch
            version: "1"
            inputs:
              n: { type: number, required: true }
            outputs: [verdict]
            nodes:
              - id: check
                kind: condition
                config: { left: "{{inputs.n}}", op: ">=", right: 10, then: big, else: small }
              - { id: big, kind: template, config: { template: big } }
              - { id: small, kind: template, config: { template: small } }
              - id: done
                kind: end
                needs: [check, big, small]
                config: { outputs: { verdict: "{{big.text}}{{small.text}}" } }
            """,
        "flaky.yaml": """
            name: flaky
            version: "1"
            outputs: []
            nodes:
              - { id: try, kind: exec, retries: 2, retry_backoff: 1ms, config: { program: /usr/bin/false } }
              - { id: done, kind: end, needs: try, config: { outputs: {} } }
            """,
    ]

    /// A served catalog of these workflows over a fresh SQLite store, with one `acme` key per
    /// workflow; `body` gets the base URL (`http://127.0.0.1:PORT`) and the keys by workflow.
    static func serve<T: Sendable>(_ body: (String, [String: String], Engine, Authenticator) async throws -> T) async throws -> T {
        let definitions = try files.map { name, text in try WorkflowCatalog.parse(text, file: name) }
        let catalog = try WorkflowCatalog(definitions: definitions)
        var runner = WorkflowRunnerConfiguration()
        runner.allowedPrograms = ["/usr/bin/false"]
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("flowd-dify-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try SQLiteRunStore(directory: directory)
        var logger = Logger(label: "flowd.test.dify")
        logger.logLevel = .critical
        let engine = Engine(store: store, executor: WorkflowRunner(catalog: catalog, configuration: runner),
                            workflows: catalog, logger: logger)
        try await engine.start()
        do {
            var keys: [String: String] = [:]
            for name in catalog.workflows.keys { keys[name] = try await store.createKey(tenant: "acme", workflow: name, now: Date()).key }
            let authenticator = Authenticator(keys: store)
            let rest = DifyWorkflowsAPI(engine: engine, authenticator: authenticator, catalog: catalog)
            let grpc = WorkflowsService(engine: engine, authenticator: authenticator)
            let result = try await withTestServer(services: [HealthService(), grpc], http: rest) { _, port in
                try await body("http://127.0.0.1:\(port)", keys, engine, authenticator)
            }
            await engine.shutdown(gracePeriod: .seconds(1))
            return result
        } catch {
            await engine.shutdown(gracePeriod: .seconds(1))
            throw error
        }
    }
}

/// One HTTP/1.1 exchange with Foundation's URLSession (libcurl), as a browser-less client.
struct HTTPExchange: Sendable {
    let status: Int
    /// Lowercased names.
    let headers: [String: String]
    let body: Data

    var json: [String: Any] { ((try? JSONSerialization.jsonObject(with: body)) as? [String: Any]) ?? [:] }

    /// The `data: {json}` events of a `text/event-stream` body.
    var events: [[String: Any]] {
        String(decoding: body, as: UTF8.self).components(separatedBy: "\n\n").compactMap { block in
            guard block.hasPrefix("data: ") else { return nil }
            return (try? JSONSerialization.jsonObject(with: Data(block.dropFirst(6).utf8))) as? [String: Any]
        }
    }

    static func send(_ method: String, _ url: String, key: String? = nil, headers: [String: String] = [:],
                     json: [String: Any]? = nil) async throws -> HTTPExchange {
        var request = URLRequest(url: URL(string: url)!)
        request.httpMethod = method
        request.timeoutInterval = 60
        if let key { request.setValue("Bearer \(key)", forHTTPHeaderField: "Authorization") }
        for (name, value) in headers { request.setValue(value, forHTTPHeaderField: name) }
        if let json {
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
            request.httpBody = try JSONSerialization.data(withJSONObject: json)
        }
        let session = URLSession(configuration: .ephemeral)
        defer { session.finishTasksAndInvalidate() }
        return try await withCheckedThrowingContinuation { continuation in
            session.dataTask(with: request) { data, response, error in
                guard let response = response as? HTTPURLResponse else {
                    continuation.resume(throwing: error ?? URLError(.badServerResponse))
                    return
                }
                var headers: [String: String] = [:]
                for (name, value) in response.allHeaderFields {
                    headers[String(describing: name).lowercased()] = String(describing: value)
                }
                continuation.resume(returning: HTTPExchange(status: response.statusCode, headers: headers, body: data ?? Data()))
            }.resume()
        }
    }
}

@Suite("Dify compatibility of the REST shim (issue 14)", .serialized)
struct DifyCompatibilityTests {
    private static func runBody(_ inputs: [String: Any], mode: String = "blocking", user: String = "u1") -> [String: Any] {
        ["inputs": inputs, "response_mode": mode, "user": user]
    }

    @Test("undeclared inputs are dropped on REST and the run succeeds; gRPC's front door still refuses them")
    func unknownInputsDropped() async throws {
        try await DifyTestWorkflows.serve { base, keys, engine, authenticator in
            let reply = try await HTTPExchange.send("POST", "\(base)/v1/workflows/run", key: keys["form"],
                                                    json: Self.runBody(["name": "Ada", "theme": "dark", "locale": "fr"]))
            #expect(reply.status == 200)
            let data = try #require(reply.json["data"] as? [String: Any])
            #expect(data["status"] as? String == "succeeded")
            #expect(data["outputs"] as? [String: String] == ["greeting": "Hello, Ada!"])
            let run = try await engine.run(id: try #require(data["id"] as? String), tenant: "acme")
            #expect(run.inputsJSON == #"{"count":1,"loud":false,"name":"Ada"}"#)

            // The gRPC service submits through the same front door with the inputs as sent.
            let key = try await authenticator.authenticate(authorization: "Bearer \(keys["form"]!)")
            await #expect(throws: EngineError.self) {
                _ = try await engine.submit(SubmitRequest(key: key, inputsJSON: #"{"name":"Ada","theme":"dark"}"#, user: "u1",
                                                          trigger: .apiBlocking, transport: .grpc))
            }
        }
    }

    @Test("number inputs sent as strings are converted, blank is absent, anything else is Dify's 400")
    func numberStrings() async throws {
        try await DifyTestWorkflows.serve { base, keys, engine, authenticator in
            let reply = try await HTTPExchange.send("POST", "\(base)/v1/workflows/run", key: keys["form"],
                                                    json: Self.runBody(["name": "Ada", "count": "3", "ratio": "2.5"]))
            #expect(reply.status == 200)
            let id = try #require((reply.json["data"] as? [String: Any])?["id"] as? String)
            #expect(try await engine.run(id: id, tenant: "acme").inputsJSON == #"{"count":3,"loud":false,"name":"Ada","ratio":2.5}"#)

            let blank = try await HTTPExchange.send("POST", "\(base)/v1/workflows/run", key: keys["form"],
                                                    json: Self.runBody(["name": "Ada", "count": "", "ratio": " "]))
            #expect(blank.status == 200)
            let blankID = try #require((blank.json["data"] as? [String: Any])?["id"] as? String)
            #expect(try await engine.run(id: blankID, tenant: "acme").inputsJSON == #"{"count":1,"loud":false,"name":"Ada"}"#)

            for bad in ["abc", "1e3", "2.5.1"] {
                let refused = try await HTTPExchange.send("POST", "\(base)/v1/workflows/run", key: keys["form"],
                                                          json: Self.runBody(["name": "Ada", "ratio": bad]))
                #expect(refused.status == 400)
                #expect(refused.json["code"] as? String == "invalid_param")
                #expect(refused.json["message"] as? String == "ratio in input form must be a valid number")
                #expect(refused.json["status"] as? Int == 400 && refused.json.count == 3)
            }
        }
    }

    @Test("GET /v1/parameters describes the input form with every feature disabled; GET /v1/info names the app")
    func parametersAndInfo() async throws {
        try await DifyTestWorkflows.serve { base, keys, _, _ in
            let reply = try await HTTPExchange.send("GET", "\(base)/v1/parameters", key: keys["form"])
            #expect(reply.status == 200)
            #expect(reply.headers["content-type"] == "application/json")
            let form = try #require(reply.json["user_input_form"] as? [[String: [String: Any]]])
            // By name (definitions keep inputs by name).
            #expect(form.map { $0.keys.first! } == ["number", "json_object", "checkbox", "text-input", "number"])
            let name = try #require(form[3]["text-input"])
            #expect(name["variable"] as? String == "name" && name["label"] as? String == "name")
            #expect(name["required"] as? Bool == true && name["default"] is NSNull)
            let count = try #require(form[0]["number"])
            #expect(count["variable"] as? String == "count" && count["required"] as? Bool == false && count["default"] as? Int == 1)
            #expect((form[2]["checkbox"])?["default"] as? Bool == false)
            for feature in ["speech_to_text", "text_to_speech", "retriever_resource", "annotation_reply", "more_like_this",
                            "suggested_questions_after_answer", "sensitive_word_avoidance"] {
                #expect((reply.json[feature] as? [String: Any])?["enabled"] as? Bool == false, "\(feature)")
            }
            #expect(((reply.json["file_upload"] as? [String: Any])?["image"] as? [String: Any])?["enabled"] as? Bool == false)
            #expect(reply.json["system_parameters"] is [String: Any])

            let info = try await HTTPExchange.send("GET", "\(base)/v1/info", key: keys["form"])
            #expect(info.status == 200)
            #expect(info.json["name"] as? String == "form" && info.json["mode"] as? String == "workflow")
            #expect(info.json["description"] as? String == "Greets with every kind of input.")
            #expect((info.json["tags"] as? [Any])?.isEmpty == true && info.json["author_name"] as? String == "")

            let unauthorized = try await HTTPExchange.send("GET", "\(base)/v1/parameters")
            #expect(unauthorized.status == 401)
        }
    }

    @Test("streaming sends nothing for a branch not taken, and node_retry with retry_index and one node_started for retries")
    func skippedBranchesAndRetries() async throws {
        try await DifyTestWorkflows.serve { base, keys, _, _ in
            let branch = try await HTTPExchange.send("POST", "\(base)/v1/workflows/run", key: keys["branch"],
                                                     json: Self.runBody(["n": 3], mode: "streaming"))
            #expect(branch.status == 200)
            let events = branch.events
            #expect(events.first?["event"] as? String == "workflow_started")
            #expect(events.last?["event"] as? String == "workflow_finished")
            let finished = events.filter { $0["event"] as? String == "node_finished" }.compactMap { $0["data"] as? [String: Any] }
            #expect(finished.map { $0["node_id"] as? String } == ["check", "small", "done"])
            #expect(finished.allSatisfy { $0["status"] as? String == "succeeded" })
            let started = events.filter { $0["event"] as? String == "node_started" }.compactMap { ($0["data"] as? [String: Any])?["node_id"] as? String }
            #expect(!started.contains("big"))

            let flaky = try await HTTPExchange.send("POST", "\(base)/v1/workflows/run", key: keys["flaky"],
                                                    json: Self.runBody([:], mode: "streaming"))
            let names = flaky.events.map { $0["event"] as? String ?? "?" }
            #expect(names == ["workflow_started", "node_started", "node_retry", "node_retry", "node_finished", "workflow_finished"])
            let retries = flaky.events.filter { $0["event"] as? String == "node_retry" }.compactMap { $0["data"] as? [String: Any] }
            #expect(retries.map { $0["retry_index"] as? Int } == [1, 2])
            #expect(retries.allSatisfy { $0["status"] as? String == "retry" && $0["node_id"] as? String == "try" && $0["error"] is String })
            let last = flaky.events.first { $0["event"] as? String == "node_finished" }?["data"] as? [String: Any]
            #expect(last?["status"] as? String == "failed" && last?["retry_index"] == nil)
        }
    }

    @Test("CORS as Dify: a preflight gets 200 with the allowed methods and headers, every answer names the origin")
    func cors() async throws {
        try await DifyTestWorkflows.serve { base, keys, _, _ in
            let preflight = try await HTTPExchange.send("OPTIONS", "\(base)/v1/workflows/run", headers: [
                "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type, x-evil",
            ])
            #expect(preflight.status == 200)
            #expect(preflight.headers["access-control-allow-origin"] == "https://app.example")
            #expect(preflight.headers["vary"] == "Origin")
            #expect(preflight.headers["access-control-allow-methods"] == "DELETE, GET, OPTIONS, PATCH, POST, PUT")
            #expect(preflight.headers["access-control-allow-headers"] == "authorization, content-type")
            #expect(preflight.body.isEmpty)

            let other = try await HTTPExchange.send("OPTIONS", "\(base)/v1/workflows/logs", headers: [
                "Origin": "https://app.example", "Access-Control-Request-Method": "TRACE",
            ])
            #expect(other.status == 200 && other.headers["access-control-allow-methods"] == nil)

            let plain = try await HTTPExchange.send("GET", "\(base)/v1/info", key: keys["form"])
            #expect(plain.headers["access-control-allow-origin"] == "*")
            let refused = try await HTTPExchange.send("GET", "\(base)/v1/info", headers: ["Origin": "https://app.example"])
            #expect(refused.status == 401 && refused.headers["access-control-allow-origin"] == "https://app.example")
        }
    }

    @Test("logs filter by end-user session and by account, and take plain dates and dates without a zone")
    func logsFilters() async throws {
        try await DifyTestWorkflows.serve { base, keys, _, _ in
            for user in ["u1", "u1", "u2"] {
                let reply = try await HTTPExchange.send("POST", "\(base)/v1/workflows/run", key: keys["form"],
                                                        json: Self.runBody(["name": "Ada"], user: user))
                #expect(reply.status == 200)
            }
            func total(_ query: String) async throws -> Int? {
                let reply = try await HTTPExchange.send("GET", "\(base)/v1/workflows/logs?\(query)", key: keys["form"])
                #expect(reply.status == 200, "\(query): \(String(decoding: reply.body, as: UTF8.self))")
                return reply.json["total"] as? Int
            }
            #expect(try await total("") == 3)
            #expect(try await total("created_by_end_user_session_id=u1") == 2)
            let u2 = try await HTTPExchange.send("GET", "\(base)/v1/workflows/logs?created_by_end_user_session_id=u2", key: keys["form"])
            let entries = try #require(u2.json["data"] as? [[String: Any]])
            #expect(entries.map { ($0["created_by_end_user"] as? [String: Any])?["session_id"] as? String } == ["u2"])
            #expect(try await total("created_by_account=admin%40example.com") == 0)
            #expect(try await total("created_at__after=2000-01-01") == 3)
            #expect(try await total("created_at__after=2000-01-01T00:00:00") == 3)
            #expect(try await total("created_at__before=2000-01-01T00:00") == 0)
            #expect(try await total("created_at__after=2999-12-31%2023:59:59") == 0)
            #expect(try await total("keyword=U2") == 1)
            #expect(try await total("keyword=ada&status=succeeded") == 3)
            #expect(try await total("keyword=nobody") == 0)
            let second = try await HTTPExchange.send("GET", "\(base)/v1/workflows/logs?page=2&limit=2", key: keys["form"])
            #expect(second.json["total"] as? Int == 3 && second.json["has_more"] as? Bool == false)
            #expect((second.json["data"] as? [[String: Any]])?.count == 1)
            let first = try await HTTPExchange.send("GET", "\(base)/v1/workflows/logs?page=1&limit=2", key: keys["form"])
            #expect(first.json["has_more"] as? Bool == true && (first.json["data"] as? [[String: Any]])?.count == 2)
            let bad = try await HTTPExchange.send("GET", "\(base)/v1/workflows/logs?created_at__before=yesterday", key: keys["form"])
            #expect(bad.status == 400 && bad.json["code"] as? String == "invalid_param")
        }
    }

    @Test("ISO 8601 dates are read as Dify's isoparse reads them; no zone means UTC")
    func dateParsing() {
        func utc(_ text: String) -> TimeInterval? { DifyApp.parseDate(text)?.timeIntervalSince1970 }
        let midnight: TimeInterval = 1_709_596_800  // 2024-03-05T00:00:00Z
        #expect(utc("2024-03-05") == midnight)
        #expect(utc("20240305") == midnight)
        #expect(utc("2024-03-05T10:20:30") == midnight + 37_230)
        #expect(utc("2024-03-05 10:20") == midnight + 37_200)
        #expect(utc("2024-03-05T10") == midnight + 36_000)
        #expect(utc("20240305T102030") == midnight + 37_230)
        #expect(utc("2024-03-05T10:20:30Z") == midnight + 37_230)
        #expect(utc("2024-03-05T10:20:30+02:00") == midnight + 37_230 - 7_200)
        #expect(utc("2024-03-05T10:20:30-0130") == midnight + 37_230 + 5_400)
        #expect(utc("2024-03-05T10:20:30.5Z") == midnight + 37_230.5)
        for bad in ["", "yesterday", "2024-3-5", "2024-13-01", "2024-02-30", "2024-03-05T25:00", "2024-03-05T10:61",
                    "2024-03-05T10:20:30+2", "2024-03-05T10:20:30 junk"] {
            #expect(DifyApp.parseDate(bad) == nil, "\(bad)")
        }
    }

    @Test("GET run answers outputs {} for a run without outputs; blocking says application/json, async adds the charset")
    func outputsAndContentTypes() async throws {
        try await DifyTestWorkflows.serve { base, keys, _, _ in
            let blocking = try await HTTPExchange.send("POST", "\(base)/v1/workflows/run", key: keys["flaky"], json: Self.runBody([:]))
            #expect(blocking.status == 200)
            #expect(blocking.headers["content-type"] == "application/json")
            let data = try #require(blocking.json["data"] as? [String: Any])
            #expect(data["status"] as? String == "failed")

            let run = try await HTTPExchange.send("GET", "\(base)/v1/workflows/run/\(data["id"] as! String)", key: keys["flaky"])
            #expect(run.status == 200)
            #expect(run.headers["content-type"] == "application/json")
            #expect(run.json["outputs"] as? [String: Any] != nil && (run.json["outputs"] as? [String: Any])?.isEmpty == true)

            let asyncReply = try await HTTPExchange.send("POST", "\(base)/v1/workflows/run", key: keys["form"],
                                                    json: Self.runBody(["name": "Ada"], mode: "async"))
            #expect(asyncReply.status == 202)
            #expect(asyncReply.headers["content-type"] == "application/json; charset=utf-8")
        }
    }

    @Test("the unmodified dify-client-python SDK and requests: parameters, blocking, streaming to the end, error paths")
    func difyClientSuite() async throws {
        try await DifyTestWorkflows.serve { base, keys, _, _ in
            let keysJSON = String(decoding: try JSONSerialization.data(withJSONObject: keys, options: .sortedKeys), as: UTF8.self)
            let child = try ChildProcess(["python3", "tools/interop/dify_sdk_check.py",
                                          "--target", String(base.dropFirst("http://".count)), "--keys", keysJSON])
            let (status, output) = await child.finish(timeout: .seconds(180))
            print(output)
            #expect(status == 0, "dify_sdk_check.py failed:\n\(output)")
            #expect(output.contains(" 0 failed"))
        }
    }

    @Test("text_chunk's from_variable_selector is a list of strings or null, never [null]")
    func textChunkSelector() throws {
        func selector(_ payload: String) -> DifyJSON? {
            let event = RunEvent(runID: "r1", sequence: 2, time: Date(timeIntervalSince1970: 0), kind: .textChunk, payloadJSON: payload)
            return DifyEvents.streamEvent(event)?["data"]?["from_variable_selector"]
        }
        #expect(selector(#"{"node_id":"say","text":"Hel"}"#) == .array(["say", "text"]))
        #expect(selector(#"{"text":"lo"}"#) == .null)
        #expect(selector(#"{"node_id":null,"text":"lo"}"#) == .null)
        #expect(selector(#"{"node_id":"","text":"lo"}"#) == .null)
    }
}
