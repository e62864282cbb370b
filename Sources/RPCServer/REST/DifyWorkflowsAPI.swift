public import Engine
import Foundation
import NIOCore
import NIOHTTP1

/// Settings of the Dify-compatible REST shim.
public struct DifyWorkflowsAPIConfiguration: Sendable {
    /// A streaming response sends `event: ping` this often (Dify: every 10 s).
    public var pingInterval: Duration = .seconds(10)

    public init() {}
}

/// Dify's Service API for workflow apps (DESIGN.md, "REST shim"; notes/dify-contract.md) on
/// top of the same Engine operations as `flowd.v1.Workflows`:
/// `POST /v1/workflows/run` (blocking, streaming, async), `GET /v1/workflows/run/{id}`,
/// `POST /v1/workflows/tasks/{task_id}/stop`, `GET /v1/workflows/logs`, `GET /v1/parameters`,
/// `GET /v1/info`, and CORS preflights (`OPTIONS`) as Dify answers them.
///
/// With the server's workflow catalog, `inputs` are read the way Dify reads them (undeclared
/// keys dropped, number strings converted; `DifyApp`) before the Engine checks them.
///
/// `task_id` and `workflow_run_id` are both the run id. An idempotent replay answers in the
/// response mode the run was first submitted with (its stored trigger), with a body derived
/// from the stored run and its stored events, so it is the first answer again.
public struct DifyWorkflowsAPI: HTTPRequestHandling {
    private let engine: Engine
    private let authenticator: Authenticator
    private let catalog: (any WorkflowResolving)?
    private let configuration: DifyWorkflowsAPIConfiguration
    private let cors = DifyCORS()

    /// `engine` must have a workflow catalog (`Engine.init(workflows:)`): submissions go
    /// through its front door, as gRPC's do. `catalog` (the same workflows) declares the
    /// inputs for `/v1/parameters`, `/v1/info` and Dify's reading of `inputs`; without it,
    /// `inputs` go to the Engine as they are and the input form is empty.
    public init(engine: Engine, authenticator: Authenticator, catalog: (any WorkflowResolving)? = nil,
                configuration: DifyWorkflowsAPIConfiguration = DifyWorkflowsAPIConfiguration()) {
        self.engine = engine
        self.authenticator = authenticator
        self.catalog = catalog
        self.configuration = configuration
    }

    /// The request's route, when this API serves it (`/metrics` is the metrics handler's).
    private static func route(_ request: HTTPRequest) -> RESTPath? {
        request.route == .metrics ? nil : request.route
    }

    public func respond(to request: HTTPRequest) async -> HTTPResponse {
        var response = await answer(request)
        cors.apply(to: &response.headers, request: request)
        return response
    }

    /// Every route but a preflight checks the key first.
    public func checksHead(_ head: HTTPRequest) -> Bool {
        guard let route = Self.route(head) else { return false }
        return head.method != .OPTIONS && head.method == route.method
    }

    /// The 401 `respond(to:)` would give, decided from the head, so that a bad key's body is
    /// never read.
    public func refusal(forHead head: HTTPRequest) async -> HTTPResponse? {
        guard checksHead(head) else { return nil }
        do {
            _ = try await authenticate(head)
            return nil
        } catch let error as RESTError {
            var response = error.response
            cors.apply(to: &response.headers, request: head)
            return response
        } catch {
            return nil  // not a verdict on the key (e.g. the store failed): the handler answers
        }
    }

    public func verdictAtOnce(forHead head: HTTPRequest) -> HeadVerdict {
        guard checksHead(head) else { return .admit }
        switch authenticator.cachedVerdict(authorization: head.headers.first(name: "authorization")) {
        case .accepted:
            return .admit
        case .refused(let error):
            var response = Self.restError(error).response
            cors.apply(to: &response.headers, request: head)
            return .refuse(response)
        case .unknown:
            return .undecided
        }
    }

    private func answer(_ request: HTTPRequest) async -> HTTPResponse {
        guard let route = Self.route(request) else { return RESTError.notFound.response }
        if request.method == .OPTIONS {
            // Flask's automatic OPTIONS answer (no authentication); DifyCORS adds the rest.
            let allowed = (route.method == .GET ? ["GET", "HEAD"] : [route.method.rawValue]) + ["OPTIONS"]
            return HTTPResponse(status: .ok, headers: ["Allow": allowed.sorted().joined(separator: ", ")],
                                body: .full(ByteBuffer()))
        }
        guard request.method == route.method else { return RESTError.methodNotAllowed(allowed: [route.method]).response }
        do {
            let key = try await authenticate(request)
            switch route {
            case .run: return try await run(request, key: key)
            case .getRun(let id): return try await getRun(String(id), key: key)
            case .stop(let id): return try await stop(String(id), request: request, key: key)
            case .logs: return try await logs(request, key: key)
            case .parameters: return Self.json(DifyApp.parameters(catalog?.describe(workflow: key.workflow)))
            case .info:
                return Self.json(DifyApp.info(workflow: key.workflow, definition: catalog?.describe(workflow: key.workflow)))
            case .metrics:
                return RESTError.notFound.response  // not routed here (see `route`)
            }
        } catch {
            return RESTError.map(error).response
        }
    }

    // MARK: Authentication and request bodies

    /// Dify's three 401 messages; the key itself is checked by the shared `Authenticator`.
    private func authenticate(_ request: HTTPRequest) async throws -> APIKeyRecord {
        do {
            return try await authenticator.authenticate(authorization: request.headers.first(name: "authorization"))
        } catch let error as AuthenticationError {
            throw Self.restError(error)
        }
    }

    /// Dify's three 401 messages.
    private static func restError(_ error: AuthenticationError) -> RESTError {
        switch error.code {
        case .missingCredentials: RESTError.unauthorized("Authorization header must be provided and start with 'Bearer'")
        case .wrongScheme: RESTError.unauthorized("Authorization scheme must be 'Bearer'")
        default: RESTError.unauthorized("Access token is invalid")
        }
    }

    /// The JSON object body with a non-empty `user` (Dify reads it before anything else).
    private func jsonBody(_ request: HTTPRequest) throws -> (object: [String: JSONValue], user: String) {
        try RESTRequestBody.object(contentType: request.headers.first(name: "content-type"),
                                   body: request.body.readableBytesView).mapError(Self.restError).get()
    }

    /// Dify's answer for a refused body.
    private static func restError(_ failure: RESTRequestBody.Failure) -> RESTError {
        switch failure {
        case .unsupportedMediaType: .unsupportedMediaType
        case .notJSON: .badRequest("Failed to decode JSON object: the request body is not valid JSON.")
        case .notObject: .badRequest("Failed to decode JSON object: the request body is not a JSON object.")
        case .missingUser: .invalidParam("Arg user must be provided.")
        case .invalidField(let field, let problem): validationError(field, problem)
        }
    }

    private static func validationError(_ field: String, _ problem: String) -> RESTError {
        .invalidParam("1 validation error for WorkflowRunPayload\n\(field)\n  \(problem)")
    }

    // MARK: POST /v1/workflows/run

    private func run(_ request: HTTPRequest, key: APIKeyRecord) async throws -> HTTPResponse {
        let payload = try RESTRequestBody.run(contentType: request.headers.first(name: "content-type"),
                                              body: request.body.readableBytesView).mapError(Self.restError).get()
        var inputs = payload.inputs
        let trigger: Trigger = switch payload.responseMode {
        case .blocking: .apiBlocking
        case .streaming: .apiStreaming
        case .async: .apiAsync
        }
        if let definition = catalog?.describe(workflow: key.workflow) {
            inputs = try DifyApp.inputs(inputs, declared: definition.inputs)
        }
        let idempotencyKey = request.headers.first(name: "idempotency-key")
        // An invalid or repeated `traceparent` is ignored (W3C), never an error.
        let traceContext = RunTraceContext(traceParents: request.headers["traceparent"],
                                           traceStates: request.headers["tracestate"])
        let submitted = try await engine.submit(SubmitRequest(
            key: key, inputsJSON: JSONValue.object(inputs).jsonText, user: payload.user, trigger: trigger, transport: .rest,
            idempotencyKey: idempotencyKey, traceContext: traceContext))
        var run = submitted.run
        var headers: HTTPHeaders = [:]
        if !submitted.created { headers.add(name: "Idempotent-Replayed", value: "true") }
        switch run.trigger {
        case .apiAsync:
            headers.add(name: "Location", value: "/v1/workflows/run/\(run.id)")
            // PR #35301's async branch is the one that names the charset.
            headers.add(name: "content-type", value: "application/json; charset=utf-8")
            return Self.json(Self.asyncBody(run), status: submitted.created ? .accepted : .ok, headers: headers)
        case .apiBlocking:
            if !run.state.isTerminal { run = try await engine.waitForCompletion(id: run.id, tenant: key.tenant) }
            return Self.json(Self.blockingBody(run), headers: headers)
        case .apiStreaming:
            let events = try await engine.watch(id: run.id, tenant: key.tenant, after: 0)
            headers.add(name: "content-type", value: "text/event-stream; charset=utf-8")
            headers.add(name: "cache-control", value: "no-cache")
            let interval = configuration.pingInterval
            let (runID, metrics) = (run.id, engine.metrics)
            return HTTPResponse(status: .ok, headers: headers, body: .stream { writer in
                metrics.watchStream(.rest, opened: true)
                defer { metrics.watchStream(.rest, opened: false) }
                try await Self.stream(events, runID: runID, pingInterval: interval, to: writer)
            })
        }
    }

    /// A JSON response; `application/json` (what Flask says for Dify's JSON) unless `headers`
    /// name a content type.
    private static func json(_ body: DifyJSON, status: HTTPResponseStatus = .ok, headers: HTTPHeaders = [:]) -> HTTPResponse {
        var headers = headers
        if !headers.contains(name: "content-type") { headers.add(name: "content-type", value: "application/json") }
        return HTTPResponse(status: status, headers: headers, body: .full(ByteBuffer(bytes: body.bytes)))
    }

    /// Writes the run's events as `data: {json}` until `workflow_finished`, with `event: ping`
    /// every `pingInterval`; a failure is an `error` event and the end of the stream.
    private static func stream(_ events: RunEventSequence, runID: String, pingInterval: Duration,
                               to writer: HTTPBodyWriter) async throws {
        func fail(_ error: RESTError) async throws {
            let json: DifyJSON = .object([
                ("event", "error"), ("workflow_run_id", .string(runID)), ("code", .string(error.code)),
                ("status", .int(Int64(error.status.code))), ("message", .string(error.message)),
            ])
            try await writer.write("data: \(json.text)\n\n")
        }
        do {
            for try await item in eventsWithTicks(events, every: pingInterval) {
                switch item {
                case .tick:
                    try await writer.write("event: ping\n\n")
                case .event(let event):
                    guard let json = DifyEvents.streamEvent(event) else { continue }
                    try await writer.write("data: \(json.text)\n\n")
                    if event.isTerminal { return }
                case .end:
                    try Task.checkCancellation()
                    try await fail(.internalError(SendableDescription("the event stream ended early")))
                    return
                }
            }
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            // A failed read of the events is reported in the stream; a failed write (the
            // client is gone) fails this write too and ends the stream.
            try await fail(RESTError.map(error))
        }
    }

    static func asyncBody(_ run: RunRecord) -> DifyJSON {
        .object([
            ("task_id", .string(run.id)), ("workflow_run_id", .string(run.id)),
            ("data", .object([
                ("id", .string(run.id)), ("workflow_id", .string(run.workflow)), ("status", "scheduled"),
                ("created_at", DifyEvents.seconds(run.createdAt)),
            ])),
        ])
    }

    static func blockingBody(_ run: RunRecord) -> DifyJSON {
        .object([
            ("task_id", .string(run.id)), ("workflow_run_id", .string(run.id)),
            ("data", .object([
                ("id", .string(run.id)), ("workflow_id", .string(run.workflow)), ("status", .string(run.state.rawValue)),
                ("outputs", DifyJSON(parsing: run.outputsJSON)), ("error", .string(run.error)),
                ("elapsed_time", DifyEvents.elapsed(run)), ("total_tokens", .int(run.totalTokens)),
                ("total_steps", .int(Int64(run.totalSteps))), ("created_at", DifyEvents.seconds(run.createdAt)),
                ("finished_at", run.finishedAt.map(DifyEvents.seconds) ?? .null),
            ])),
        ])
    }

    // MARK: GET /v1/workflows/run/{id}

    private func getRun(_ id: String, key: APIKeyRecord) async throws -> HTTPResponse {
        let run = try await engine.run(id: id, key: key)
        return Self.json(.object([
            ("id", .string(run.id)), ("workflow_id", .string(run.workflow)), ("status", .string(run.state.rawValue)),
            ("inputs", .string(DifyJSON(parsing: run.inputsJSON).text)),
            // Current Dify: `workflow_run.outputs_dict or {}`.
            ("outputs", run.outputsJSON.map { DifyJSON(parsing: $0) }.flatMap { $0 == .null ? nil : $0 } ?? .object([])),
            ("error", .string(run.error)), ("total_steps", .int(Int64(run.totalSteps))), ("total_tokens", .int(run.totalTokens)),
            ("created_at", DifyEvents.seconds(run.createdAt)), ("finished_at", run.finishedAt.map(DifyEvents.seconds) ?? .null),
            ("elapsed_time", DifyEvents.elapsed(run)),
        ]))
    }

    // MARK: POST /v1/workflows/tasks/{task_id}/stop

    /// Always `{"result": "success"}` once authenticated and well-formed, as in Dify: an unknown
    /// or foreign task is not revealed.
    private func stop(_ id: String, request: HTTPRequest, key: APIKeyRecord) async throws -> HTTPResponse {
        _ = try jsonBody(request)
        do {
            _ = try await engine.stop(id: id, key: key)
        } catch let error as EngineError where error.code == .runNotFound {
        }
        return Self.json(.object([("result", "success")]))
    }

    // MARK: GET /v1/workflows/logs

    private func logs(_ request: HTTPRequest, key: APIKeyRecord) async throws -> HTTPResponse {
        func integer(_ name: String, default value: Int, range: ClosedRange<Int>) throws -> Int {
            guard let text = request.queryValue(name) else { return value }
            guard let number = Int(text), range.contains(number) else {
                throw RESTError.invalidParam("\(name) must be an integer between \(range.lowerBound) and \(range.upperBound)")
            }
            return number
        }
        func date(_ name: String) throws -> Date? {
            guard let text = request.queryValue(name), !text.isEmpty else { return nil }
            guard let date = DifyApp.parseDate(text) else { throw RESTError.invalidParam("\(name) must be an ISO 8601 date-time") }
            return date
        }
        let page = try integer("page", default: 1, range: 1...99999)
        let limit = try integer("limit", default: 20, range: 1...100)
        var states = Set<RunState>()
        if let status = request.queryValue("status"), !status.isEmpty {
            guard let state = RunState(rawValue: status), [.succeeded, .failed, .stopped].contains(state) else {
                throw RESTError.invalidParam("status must be one of succeeded, failed, stopped")
            }
            states.insert(state)
        }
        let before = try date("created_at__before")
        let after = try date("created_at__after")
        let keyword = request.queryValue("keyword").flatMap { $0.isEmpty ? nil : $0 }
        // An end user's session id is the run's `user`; no run is created by a console
        // account, so a `created_by_account` filter matches nothing (as in Dify for an app
        // used only through its API).
        let sessionID = request.queryValue("created_by_end_user_session_id").flatMap { $0.isEmpty ? nil : $0 }
        if let account = request.queryValue("created_by_account"), !account.isEmpty {
            return Self.json(.object([
                ("page", .int(Int64(page))), ("limit", .int(Int64(limit))), ("total", 0), ("has_more", false),
                ("data", .array([])),
            ]))
        }

        let filter = RunFilter(states: states, workflow: key.workflow, user: sessionID, createdBefore: before,
                               createdAfter: after, keyword: keyword)
        let found = try await engine.runLog(key: key, filter: filter, offset: (page - 1) * limit, limit: limit)
        return Self.json(.object([
            ("page", .int(Int64(page))), ("limit", .int(Int64(limit))), ("total", .int(Int64(found.total))),
            ("has_more", .bool(found.total > page * limit)), ("data", .array(found.runs.map(Self.logEntry))),
        ]))
    }

    private static func logEntry(_ run: RunRecord) -> DifyJSON {
        .object([
            ("id", .string(run.id)),
            ("workflow_run", .object([
                ("id", .string(run.id)), ("version", .string(run.workflowVersion)), ("status", .string(run.state.rawValue)),
                ("triggered_from", .string(run.trigger.rawValue)), ("error", .string(run.error)),
                ("elapsed_time", DifyEvents.elapsed(run)), ("total_tokens", .int(run.totalTokens)),
                ("total_steps", .int(Int64(run.totalSteps))), ("created_at", DifyEvents.seconds(run.createdAt)),
                ("finished_at", run.finishedAt.map(DifyEvents.seconds) ?? .null), ("exceptions_count", 0),
            ])),
            ("details", .null),
            ("created_from", "service-api"),
            ("created_by_role", "end_user"),
            ("created_by_account", .null),
            ("created_by_end_user", .object([
                ("id", .string(run.user)), ("type", "service-api"), ("is_anonymous", false), ("session_id", .string(run.user)),
            ])),
            ("created_at", DifyEvents.seconds(run.createdAt)),
        ])
    }
}
