import Codec
public import Engine
import Foundation

/// Settings of the `flowd.v1.Workflows` service.
public struct WorkflowsServiceConfiguration: Sendable {
    /// An idle `WatchRun`/`StreamWorkflow` sends a heartbeat this often.
    public var heartbeatInterval: Duration = .seconds(10)
    /// `ListRuns` page size when the request says 0, and the largest allowed.
    public var defaultPageSize = 20
    public var maxPageSize = 100
    /// A `ListRuns` page ends before the run that would take it past this many bytes (inputs,
    /// outputs, error and the other fields of its runs); `next_page_token` continues. A page
    /// always holds at least one run, so a single larger run is a page of its own (bounded,
    /// like `GetRun`, by the message size limit). `flowd serve --list-page-bytes`.
    public var maxPageBytes = 1024 * 1024
    /// Runs read from the store at a time while a page is filled: at most this many runs
    /// beyond the page are held in memory.
    public var listReadChunk = 10

    public init() {}
}

/// `flowd.v1.Workflows` (DESIGN.md, "The wire contract") on top of the Engine.
///
/// Every call authenticates with `authorization: Bearer <api-key>`; the key gives the tenant
/// and the one workflow it may run. Another tenant's run is NOT_FOUND, exactly like a run that
/// does not exist.
public struct WorkflowsService: RegistrableRPCService {
    public static let serviceName = "flowd.v1.Workflows"

    private let engine: Engine
    private let authenticator: Authenticator
    private let configuration: WorkflowsServiceConfiguration

    /// `engine` must have a workflow catalog (`Engine.init(workflows:)`): submissions go
    /// through its front door.
    public init(engine: Engine, authenticator: Authenticator,
                configuration: WorkflowsServiceConfiguration = WorkflowsServiceConfiguration()) {
        self.engine = engine
        self.authenticator = authenticator
        self.configuration = configuration
    }

    private static func method(_ name: String) -> MethodDescriptor {
        MethodDescriptor(service: serviceName, method: name)
    }

    public func registerMethods(with router: inout RPCRouter) {
        router.requireBearerCredentials(service: Self.serviceName, otherwise: WorkflowsErrors.unauthenticated,
                                        verifyAtOnce: { [authenticator] authorization in
            switch authenticator.cachedVerdict(authorization: authorization) {
            case .accepted(let key): .authenticated(key)
            case .refused: .refuse(WorkflowsErrors.unauthenticated)
            case .unknown: .undecided
            }
        }) { [authenticator] authorization in
            do {
                _ = try await authenticator.authenticate(authorization: authorization)
                return nil
            } catch is AuthenticationError {
                return WorkflowsErrors.unauthenticated
            } catch {
                return nil  // not a verdict on the key: the handler answers
            }
        }
        router.registerUnary(Self.method("RunWorkflow"), request: FlowdV1.RunWorkflowRequest.self,
                             response: FlowdV1.RunWorkflowResponse.self) { request, context in
            try await mapped(context) { key in ServerResponse(message: try await runWorkflow(request, key: key, context: context)) }
        }
        router.registerServerStreaming(Self.method("StreamWorkflow"), request: FlowdV1.RunWorkflowRequest.self,
                                       response: FlowdV1.RunEvent.self) { request, context in
            try await mapped(context) { key in
                let submitted = try await submit(request, key: key, context: context, trigger: .apiStreaming)
                let events = try await engine.watch(id: submitted.run.id, tenant: key.tenant, after: 0)
                return StreamingServerResponse { writer in
                    engine.metrics.watchStream(.grpc, opened: true)
                    defer { engine.metrics.watchStream(.grpc, opened: false) }
                    do {
                        try await stream(events, runID: submitted.run.id, to: writer)
                    } catch {
                        throw WorkflowsErrors.map(error, tenant: key.tenant)
                    }
                    return Metadata()
                }
            }
        }
        // At once (on the event loop) when the connection verified the key from its cache and
        // the store reads locally; otherwise in a task.
        router.registerUnary(Self.method("GetRun"), request: FlowdV1.GetRunRequest.self, response: FlowdV1.Run.self,
                             atOnce: { request, context, batch in
            guard let key = context.authenticatedKey else { return nil }
            do {
                guard let run = try engine.runAtOnce(id: request.runId, key: key, batch: batch) else { return nil }
                return ServerResponse(message: WireConversions.run(run, now: Date()))
            } catch {
                throw WorkflowsErrors.map(error, tenant: key.tenant)
            }
        }, handler: { request, context in
            try await mapped(context) { key in
                ServerResponse(message: WireConversions.run(try await engine.run(id: request.runId, key: key), now: Date()))
            }
        })
        router.registerServerStreaming(Self.method("WatchRun"), request: FlowdV1.WatchRunRequest.self,
                                       response: FlowdV1.RunEvent.self) { request, context in
            try await mapped(context) { key in
                guard request.afterSequence >= 0 else {
                    throw WorkflowsErrors.invalidArgument(field: "after_sequence", "after_sequence must not be negative")
                }
                let events = try await engine.watch(id: request.runId, key: key, after: request.afterSequence)
                return StreamingServerResponse { writer in
                    engine.metrics.watchStream(.grpc, opened: true)
                    defer { engine.metrics.watchStream(.grpc, opened: false) }
                    do {
                        try await stream(events, runID: request.runId, startingAfter: request.afterSequence, to: writer)
                    } catch {
                        throw WorkflowsErrors.map(error, tenant: key.tenant)
                    }
                    return Metadata()
                }
            }
        }
        router.registerUnary(Self.method("StopRun"), request: FlowdV1.StopRunRequest.self, response: FlowdV1.Run.self) {
            request, context in
            try await mapped(context) { key in
                ServerResponse(message: WireConversions.run(try await engine.stop(id: request.runId, key: key), now: Date()))
            }
        }
        router.registerUnary(Self.method("ListRuns"), request: FlowdV1.ListRunsRequest.self,
                             response: FlowdV1.ListRunsResponse.self) { request, context in
            try await mapped(context) { key in ServerResponse(message: try await listRuns(request, key: key)) }
        }
    }

    // MARK: Calls

    private func runWorkflow(_ request: FlowdV1.RunWorkflowRequest, key: APIKeyRecord,
                             context: ServerContext) async throws -> FlowdV1.RunWorkflowResponse {
        let async = request.responseMode == .async
        let submitted = try await submit(request, key: key, context: context, trigger: async ? .apiAsync : .apiBlocking)
        if async || submitted.run.state.isTerminal {
            return FlowdV1.RunWorkflowResponse(run: WireConversions.run(submitted.run, now: Date()), created: submitted.created)
        }
        // Blocking: bounded by the call's deadline, whose expiry cancels this wait (not the run).
        let final = try await engine.waitForCompletion(id: submitted.run.id, tenant: key.tenant)
        return FlowdV1.RunWorkflowResponse(run: WireConversions.run(final, now: Date()), created: submitted.created)
    }

    private func submit(_ request: FlowdV1.RunWorkflowRequest, key: APIKeyRecord, context: ServerContext,
                        trigger: Trigger) async throws -> SubmitResult {
        let metadata = context.metadata  // parsed from the request's header bytes at each read
        let headerKey = metadata[stringValues: "idempotency-key"].first
        if let headerKey, !request.idempotencyKey.isEmpty, headerKey != request.idempotencyKey {
            throw WorkflowsErrors.invalidArgument(
                field: "idempotency_key", "the idempotency-key metadata and the request field differ")
        }
        let idempotencyKey = request.idempotencyKey.isEmpty ? headerKey : request.idempotencyKey
        // An invalid or repeated `traceparent` is ignored (W3C), never an error.
        let traceContext = RunTraceContext(traceParents: metadata[stringValues: "traceparent"],
                                           traceStates: metadata[stringValues: "tracestate"])
        return try await engine.submit(SubmitRequest(
            key: key, workflow: request.workflow, inputsJSON: request.inputsJson, user: request.user, trigger: trigger,
            transport: .grpc, idempotencyKey: idempotencyKey, traceContext: traceContext))
    }

    private func listRuns(_ request: FlowdV1.ListRunsRequest, key: APIKeyRecord) async throws -> FlowdV1.ListRunsResponse {
        guard request.pageSize >= 0 else {
            throw WorkflowsErrors.invalidArgument(field: "page_size", "page_size must not be negative")
        }
        let pageSize = request.pageSize == 0 ? configuration.defaultPageSize : min(Int(request.pageSize), configuration.maxPageSize)
        var states = Set<RunState>()
        for status in request.statuses {
            guard let state = WireConversions.state(status) else {
                throw WorkflowsErrors.invalidArgument(field: "statuses", "unknown run status \(status.rawValue)")
            }
            states.insert(state)
        }
        let filter = RunFilter(states: states, workflow: request.workflow.isEmpty ? nil : request.workflow,
                               user: request.user.isEmpty ? nil : request.user)
        let cursor = try request.pageToken.isEmpty ? nil : PageToken.decode(request.pageToken, filter: filter)
        let (runs, next) = try await boundedPage(key: key, filter: filter, pageSize: pageSize, after: cursor)
        let now = Date()
        return FlowdV1.ListRunsResponse(runs: runs.map { WireConversions.run($0, now: now) },
                                        nextPageToken: next.map { PageToken.encode($0, filter: filter) } ?? "")
    }

    /// Up to `pageSize` runs after `cursor`, read `listReadChunk` at a time, ending before the
    /// run that would pass `maxPageBytes` (but holding one run at least); the cursor of the next
    /// page, nil at the end.
    private func boundedPage(key: APIKeyRecord, filter: RunFilter, pageSize: Int,
                             after cursor: RunCursor?) async throws -> ([RunRecord], RunCursor?) {
        var page: [RunRecord] = []
        var bytes = 0
        var position = cursor
        while page.count < pageSize {
            let (chunk, more) = try await engine.list(key: key, filter: filter,
                                                      pageSize: min(max(1, configuration.listReadChunk), pageSize - page.count),
                                                      after: position)
            for run in chunk {
                let size = Self.approximateSize(run)
                if !page.isEmpty && bytes + size > configuration.maxPageBytes {
                    return (page, page.last.map { RunCursor(createdAt: $0.createdAt, id: $0.id) })
                }
                page.append(run)
                bytes += size
            }
            guard let more else { return (page, nil) }
            position = more
        }
        return (page, position)
    }

    /// The bytes a run takes in a `ListRunsResponse`, near enough (its texts plus a fixed
    /// allowance for the numbers, times and tags).
    static func approximateSize(_ run: RunRecord) -> Int {
        run.inputsJSON.utf8.count + (run.outputsJSON?.utf8.count ?? 0) + (run.error?.utf8.count ?? 0) + run.id.utf8.count
            + run.workflow.utf8.count + run.workflowVersion.utf8.count + run.user.utf8.count + 128
    }

    /// Forwards a run's events to a stream, with a heartbeat whenever nothing was sent for
    /// `heartbeatInterval`; returns after the terminal event. One loop does every write, so a
    /// heartbeat always repeats the sequence of the last event sent before it.
    private func stream(_ events: RunEventSequence, runID: String, startingAfter: Int64 = 0,
                        to writer: RPCWriter<FlowdV1.RunEvent>) async throws {
        let interval = configuration.heartbeatInterval
        var lastSequence = startingAfter
        var lastWrite = ContinuousClock.now
        for try await item in eventsWithTicks(events, every: interval / 4) {
            switch item {
            case .event(let event):
                let terminal = event.isTerminal
                lastSequence = event.sequence
                try await writer.write(serialized: Self.serialized(event))
                lastWrite = .now
                if terminal { return }
            case .tick:
                try Task.checkCancellation()
                guard ContinuousClock.now - lastWrite >= interval else { continue }
                try await writer.write(serialized: Self.serializedHeartbeat(runID: runID, lastSequence: lastSequence))
                lastWrite = .now
            case .end:
                try Task.checkCancellation()
                return
            }
        }
    }

    /// A run event as the wire message's bytes. Synchronous and not inlined, so that the wire
    /// message (a `Run` with all its fields, for `run_started`/`run_finished`) lives on the
    /// thread's stack for the moment it is built, not in the watcher's async frame for as long
    /// as the watch lasts.
    @inline(never)
    static func serialized(_ event: RunEvent) -> [UInt8] {
        WireConversions.event(event, now: Date()).serializedBytes()
    }

    @inline(never)
    static func serializedHeartbeat(runID: String, lastSequence: Int64) -> [UInt8] {
        WireConversions.heartbeat(runID: runID, lastSequence: lastSequence, now: Date()).serializedBytes()
    }

    // MARK: Authentication and errors

    /// Authenticates the call, runs `body`, and maps Engine and store errors to gRPC ones.
    private func mapped<T: Sendable>(_ context: ServerContext, _ body: (APIKeyRecord) async throws -> T) async throws -> T {
        let key = try await authenticate(context)
        do {
            return try await body(key)
        } catch {
            throw WorkflowsErrors.map(error, tenant: key.tenant)
        }
    }

    /// Every failure (no header, another scheme, a bad, unknown or revoked key) is the same answer.
    private func authenticate(_ context: ServerContext) async throws -> APIKeyRecord {
        if let key = context.authenticatedKey { return key }  // verified from this call's headers
        do {
            return try await authenticator.authenticate(authorization: context.metadata[stringValues: "authorization"].first)
        } catch is AuthenticationError {
            throw WorkflowsErrors.unauthenticated
        } catch {
            throw WorkflowsErrors.map(error, tenant: "")
        }
    }
}

/// `ListRuns` page tokens: the cursor of the last run of a page and a digest of the filter
/// it belongs to, base64url-encoded JSON. Opaque to clients; a token used with another
/// filter, or tampered with, is INVALID_ARGUMENT.
enum PageToken {
    private struct Body: Codable {
        var c: Int64   // createdAt, ms
        var i: String  // run id
        var f: String  // filter digest
    }

    static func encode(_ cursor: RunCursor, filter: RunFilter) -> String {
        let body = Body(c: Int64((cursor.createdAt.timeIntervalSince1970 * 1000).rounded()), i: cursor.id, f: digest(filter))
        let data = (try? JSONEncoder().encode(body)) ?? Data()
        return data.base64EncodedString().replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    static func decode(_ token: String, filter: RunFilter) throws -> RunCursor {
        var base64 = token.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.count % 4 != 0 { base64 += "=" }
        guard let data = Data(base64Encoded: base64), let body = try? JSONDecoder().decode(Body.self, from: data),
              body.f == digest(filter)
        else {
            throw WorkflowsErrors.invalidArgument(field: "page_token", "page_token is not valid for this request")
        }
        return RunCursor(createdAt: Date(timeIntervalSince1970: Double(body.c) / 1000), id: body.i)
    }

    private static func digest(_ filter: RunFilter) -> String {
        let states = filter.states.map(\.rawValue).sorted().joined(separator: ",")
        return "\(states)|\(filter.workflow ?? "")|\(filter.user ?? "")"
    }
}
