internal import CFlowdProtos
internal import CProtobufC

// Conversions between the Swift message types and the protoc-c structs of CFlowdProtos.
// `init(c:)` reads an unpacked struct (strings already checked by the wire check);
// `c(in:)` builds a struct for packing whose memory belongs to the arena.

private func str(_ pointer: UnsafePointer<CChar>?) -> String {
    ProtobufCCodec.string(pointer)
}

private func int32<E: RawRepresentable>(_ value: E) -> Int32 where E.RawValue: BinaryInteger {
    Int32(truncatingIfNeeded: value.rawValue)
}

/// Decodes `bytes` as the generated type whose `*__init` is `initializer` and converts it.
private func unpack<M, T>(
    _ bytes: [UInt8], _ initializer: (UnsafeMutablePointer<M>?) -> Void, _ limits: DecodingLimits,
    _ convert: (M) throws(CodecError) -> T
) throws(CodecError) -> T {
    try ProtobufCCodec.decode(bytes, as: M.self, initializer: initializer, limits: limits) {
        (message) throws(CodecError) -> T in
        try convert(message.pointee)
    }
}

// MARK: - google.protobuf

extension Timestamp: ProtoMessage {
    init(c m: Google__Protobuf__Timestamp) {
        self.init(seconds: m.seconds, nanos: m.nanos)
    }

    func c(in arena: ProtobufCArena) -> UnsafeMutablePointer<Google__Protobuf__Timestamp> {
        let m = arena.message(google__protobuf__timestamp__init)
        m.pointee.seconds = seconds
        m.pointee.nanos = nanos
        return m
    }

    public init(serializedBytes bytes: [UInt8], limits: DecodingLimits) throws(CodecError) {
        self = try unpack(bytes, google__protobuf__timestamp__init, limits, Self.init(c:))
    }

    public func serializedBytes() -> [UInt8] { ProtobufCCodec.encode(c(in:)) }
}

private func timestamp(_ pointer: UnsafeMutablePointer<Google__Protobuf__Timestamp>?) -> Timestamp? {
    pointer.map { Timestamp(c: $0.pointee) }
}

// MARK: - grpc.health.v1

extension HealthV1.CheckRequest: ProtoMessage {
    public init(serializedBytes bytes: [UInt8], limits: DecodingLimits) throws(CodecError) {
        self = try unpack(bytes, grpc__health__v1__health_check_request__init, limits) { m in
            Self(service: str(m.service))
        }
    }

    public func serializedBytes() -> [UInt8] {
        ProtobufCCodec.encode { arena in
            let m = arena.message(grpc__health__v1__health_check_request__init)
            m.pointee.service = arena.string(service)
            return m
        }
    }
}

extension HealthV1.CheckResponse: ProtoMessage {
    public init(serializedBytes bytes: [UInt8], limits: DecodingLimits) throws(CodecError) {
        self = try unpack(bytes, grpc__health__v1__health_check_response__init, limits) { m in
            Self(status: HealthV1.ServingStatus(rawValue: int32(m.status)))
        }
    }

    public func serializedBytes() -> [UInt8] {
        ProtobufCCodec.encode { arena in
            let m = arena.message(grpc__health__v1__health_check_response__init)
            m.pointee.status = Grpc__Health__V1__HealthCheckResponse__ServingStatus(
                rawValue: .init(truncatingIfNeeded: status.rawValue))
            return m
        }
    }
}

// MARK: - google.rpc

extension RPCStatus: ProtoMessage {
    public init(serializedBytes bytes: [UInt8], limits: DecodingLimits) throws(CodecError) {
        self = try unpack(bytes, google__rpc__status__init, limits) { (m) throws(CodecError) in
            // A detail is a message inside an Any inside the Status: two levels down.
            var inner = limits
            inner.maxDepth -= 2
            var details: [ErrorDetail] = []
            for (index, any) in ProtobufCCodec.messages(m.details, count: m.n_details).enumerated() {
                do throws(CodecError) {
                    details.append(try ErrorDetail(c: any.pointee, limits: inner))
                } catch {
                    var error = error
                    error.message = "google.rpc.Status.details[\(index)]: " + error.message
                    throw error
                }
            }
            return Self(code: StatusCode(rawValue: Int(m.code)), message: str(m.message), details: details)
        }
    }

    public func serializedBytes() -> [UInt8] {
        ProtobufCCodec.encode { arena in
            let m = arena.message(google__rpc__status__init)
            m.pointee.code = Int32(truncatingIfNeeded: code.rawValue)
            m.pointee.message = arena.string(message)
            m.pointee.n_details = details.count
            m.pointee.details = arena.pointers(details.map { $0.c(in: arena) })
            return m
        }
    }
}

extension ErrorDetail {
    init(c any: Google__Protobuf__Any, limits: DecodingLimits) throws(CodecError) {
        let typeURL = str(any.type_url)
        let value = ProtobufCCodec.bytes(any.value)
        let typeName = typeURL.lastIndex(of: "/").map { typeURL[typeURL.index(after: $0)...] } ?? ""
        switch typeName {
        case "google.rpc.ErrorInfo": self = .errorInfo(try ErrorInfo(serializedBytes: value, limits: limits))
        case "google.rpc.RetryInfo": self = .retryInfo(try RetryInfo(serializedBytes: value, limits: limits))
        case "google.rpc.QuotaFailure": self = .quotaFailure(try QuotaFailure(serializedBytes: value, limits: limits))
        case "google.rpc.BadRequest": self = .badRequest(try BadRequest(serializedBytes: value, limits: limits))
        default: self = .other(typeURL: typeURL, value: value)
        }
    }

    func c(in arena: ProtobufCArena) -> UnsafeMutablePointer<Google__Protobuf__Any> {
        let value: [UInt8] =
            switch self {
            case .errorInfo(let detail): detail.serializedBytes()
            case .retryInfo(let detail): detail.serializedBytes()
            case .quotaFailure(let detail): detail.serializedBytes()
            case .badRequest(let detail): detail.serializedBytes()
            case .other(_, let value): value
            }
        let m = arena.message(google__protobuf__any__init)
        m.pointee.type_url = arena.string(typeURL)
        m.pointee.value = arena.bytes(value)
        return m
    }
}

extension ErrorInfo: ProtoMessage {
    public init(serializedBytes bytes: [UInt8], limits: DecodingLimits) throws(CodecError) {
        self = try unpack(bytes, google__rpc__error_info__init, limits) { m in
            var metadata: [String: String] = [:]
            for entry in ProtobufCCodec.messages(m.metadata, count: m.n_metadata) {
                metadata[str(entry.pointee.key)] = str(entry.pointee.value)
            }
            return Self(reason: str(m.reason), domain: str(m.domain), metadata: metadata)
        }
    }

    public func serializedBytes() -> [UInt8] {
        ProtobufCCodec.encode { arena in
            let m = arena.message(google__rpc__error_info__init)
            m.pointee.reason = arena.string(reason)
            m.pointee.domain = arena.string(domain)
            let entries = metadata.sorted { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }.map { key, value in
                let entry = arena.message(google__rpc__error_info__metadata_entry__init)
                entry.pointee.key = arena.string(key)
                entry.pointee.value = arena.string(value)
                return entry
            }
            m.pointee.n_metadata = entries.count
            m.pointee.metadata = arena.pointers(entries)
            return m
        }
    }
}

extension RetryInfo: ProtoMessage {
    private static let attosecondsPerSecond: Int64 = 1_000_000_000_000_000_000

    public init(serializedBytes bytes: [UInt8], limits: DecodingLimits) throws(CodecError) {
        self = try unpack(bytes, google__rpc__retry_info__init, limits) { m in
            let delay = m.retry_delay.map { Duration.seconds($0.pointee.seconds) + .nanoseconds($0.pointee.nanos) }
            return Self(retryDelay: delay ?? .zero)
        }
    }

    public func serializedBytes() -> [UInt8] {
        // google.protobuf.Duration wants `seconds` and `nanos` of the same sign.
        var (seconds, attoseconds) = retryDelay.components
        if seconds < 0 && attoseconds > 0 {
            seconds += 1
            attoseconds -= Self.attosecondsPerSecond
        } else if seconds > 0 && attoseconds < 0 {
            seconds -= 1
            attoseconds += Self.attosecondsPerSecond
        }
        return ProtobufCCodec.encode { arena in
            let duration = arena.message(google__protobuf__duration__init)
            duration.pointee.seconds = seconds
            duration.pointee.nanos = Int32(attoseconds / 1_000_000_000)
            let m = arena.message(google__rpc__retry_info__init)
            m.pointee.retry_delay = duration
            return m
        }
    }
}

extension QuotaFailure: ProtoMessage {
    public init(serializedBytes bytes: [UInt8], limits: DecodingLimits) throws(CodecError) {
        self = try unpack(bytes, google__rpc__quota_failure__init, limits) { m in
            Self(violations: ProtobufCCodec.messages(m.violations, count: m.n_violations).map {
                Violation(subject: str($0.pointee.subject), description: str($0.pointee.description))
            })
        }
    }

    public func serializedBytes() -> [UInt8] {
        ProtobufCCodec.encode { arena in
            let m = arena.message(google__rpc__quota_failure__init)
            m.pointee.n_violations = violations.count
            m.pointee.violations = arena.pointers(violations.map { violation in
                let v = arena.message(google__rpc__quota_failure__violation__init)
                v.pointee.subject = arena.string(violation.subject)
                v.pointee.description = arena.string(violation.description)
                return v
            })
            return m
        }
    }
}

extension BadRequest: ProtoMessage {
    public init(serializedBytes bytes: [UInt8], limits: DecodingLimits) throws(CodecError) {
        self = try unpack(bytes, google__rpc__bad_request__init, limits) { m in
            Self(fieldViolations: ProtobufCCodec.messages(m.field_violations, count: m.n_field_violations).map {
                FieldViolation(field: str($0.pointee.field), description: str($0.pointee.description),
                               reason: str($0.pointee.reason))
            })
        }
    }

    public func serializedBytes() -> [UInt8] {
        ProtobufCCodec.encode { arena in
            let m = arena.message(google__rpc__bad_request__init)
            m.pointee.n_field_violations = fieldViolations.count
            m.pointee.field_violations = arena.pointers(fieldViolations.map { violation in
                let v = arena.message(google__rpc__bad_request__field_violation__init)
                v.pointee.field = arena.string(violation.field)
                v.pointee.description = arena.string(violation.description)
                v.pointee.reason = arena.string(violation.reason)
                return v
            })
            return m
        }
    }
}

// MARK: - flowd.v1

extension FlowdV1.RunWorkflowRequest: ProtoMessage {
    init(c m: Flowd__V1__RunWorkflowRequest) {
        self.init(workflow: str(m.workflow), inputsJson: str(m.inputs_json),
                  responseMode: .init(rawValue: int32(m.response_mode)), user: str(m.user),
                  idempotencyKey: str(m.idempotency_key))
    }

    func c(in arena: ProtobufCArena) -> UnsafeMutablePointer<Flowd__V1__RunWorkflowRequest> {
        let m = arena.message(flowd__v1__run_workflow_request__init)
        m.pointee.workflow = arena.string(workflow)
        m.pointee.inputs_json = arena.string(inputsJson)
        m.pointee.response_mode = Flowd__V1__ResponseMode(rawValue: .init(truncatingIfNeeded: responseMode.rawValue))
        m.pointee.user = arena.string(user)
        m.pointee.idempotency_key = arena.string(idempotencyKey)
        return m
    }

    public init(serializedBytes bytes: [UInt8], limits: DecodingLimits) throws(CodecError) {
        self = try unpack(bytes, flowd__v1__run_workflow_request__init, limits, Self.init(c:))
    }

    public func serializedBytes() -> [UInt8] { ProtobufCCodec.encode(c(in:)) }
}

extension FlowdV1.RunWorkflowResponse: ProtoMessage {
    init(c m: Flowd__V1__RunWorkflowResponse) {
        self.init(run: m.run.map { FlowdV1.Run(c: $0.pointee) } ?? FlowdV1.Run(), created: m.created != 0)
    }

    func c(in arena: ProtobufCArena) -> UnsafeMutablePointer<Flowd__V1__RunWorkflowResponse> {
        let m = arena.message(flowd__v1__run_workflow_response__init)
        m.pointee.run = run.c(in: arena)
        m.pointee.created = created ? 1 : 0
        return m
    }

    public init(serializedBytes bytes: [UInt8], limits: DecodingLimits) throws(CodecError) {
        self = try unpack(bytes, flowd__v1__run_workflow_response__init, limits, Self.init(c:))
    }

    public func serializedBytes() -> [UInt8] { ProtobufCCodec.encode(c(in:)) }
}

extension FlowdV1.Run: ProtoMessage {
    init(c m: Flowd__V1__Run) {
        self.init(
            id: str(m.id), workflow: str(m.workflow), workflowVersion: str(m.workflow_version),
            status: .init(rawValue: int32(m.status)), inputsJson: str(m.inputs_json),
            outputsJson: str(m.outputs_json), error: str(m.error),
            triggeredFrom: .init(rawValue: int32(m.triggered_from)), transport: .init(rawValue: int32(m.transport)),
            user: str(m.user), createdAt: timestamp(m.created_at), startedAt: timestamp(m.started_at),
            finishedAt: timestamp(m.finished_at), elapsedMs: m.elapsed_ms, totalSteps: m.total_steps,
            attempt: m.attempt, lastSequence: m.last_sequence, totalTokens: m.total_tokens)
    }

    func c(in arena: ProtobufCArena) -> UnsafeMutablePointer<Flowd__V1__Run> {
        let m = arena.message(flowd__v1__run__init)
        m.pointee.id = arena.string(id)
        m.pointee.workflow = arena.string(workflow)
        m.pointee.workflow_version = arena.string(workflowVersion)
        m.pointee.status = Flowd__V1__RunStatus(rawValue: .init(truncatingIfNeeded: status.rawValue))
        m.pointee.inputs_json = arena.string(inputsJson)
        m.pointee.outputs_json = arena.string(outputsJson)
        m.pointee.error = arena.string(error)
        m.pointee.triggered_from = Flowd__V1__Trigger(rawValue: .init(truncatingIfNeeded: triggeredFrom.rawValue))
        m.pointee.transport = Flowd__V1__Transport(rawValue: .init(truncatingIfNeeded: transport.rawValue))
        m.pointee.user = arena.string(user)
        m.pointee.created_at = createdAt?.c(in: arena)
        m.pointee.started_at = startedAt?.c(in: arena)
        m.pointee.finished_at = finishedAt?.c(in: arena)
        m.pointee.elapsed_ms = elapsedMs
        m.pointee.total_steps = totalSteps
        m.pointee.attempt = attempt
        m.pointee.last_sequence = lastSequence
        m.pointee.total_tokens = totalTokens
        return m
    }

    public init(serializedBytes bytes: [UInt8], limits: DecodingLimits) throws(CodecError) {
        self = try unpack(bytes, flowd__v1__run__init, limits, Self.init(c:))
    }

    public func serializedBytes() -> [UInt8] { ProtobufCCodec.encode(c(in:)) }
}

extension FlowdV1.RunEvent: ProtoMessage {
    init(c m: Flowd__V1__RunEvent) {
        let event: Event? =
            switch m.event_case {
            case FLOWD__V1__RUN_EVENT__EVENT_RUN_STARTED: .runStarted(.init(c: m.run_started.pointee))
            case FLOWD__V1__RUN_EVENT__EVENT_NODE_STARTED: .nodeStarted(.init(c: m.node_started.pointee))
            case FLOWD__V1__RUN_EVENT__EVENT_NODE_FINISHED: .nodeFinished(.init(c: m.node_finished.pointee))
            case FLOWD__V1__RUN_EVENT__EVENT_TEXT_CHUNK: .textChunk(.init(c: m.text_chunk.pointee))
            case FLOWD__V1__RUN_EVENT__EVENT_RUN_FINISHED: .runFinished(.init(c: m.run_finished.pointee))
            case FLOWD__V1__RUN_EVENT__EVENT_HEARTBEAT: .heartbeat
            default: nil
            }
        self.init(runId: str(m.run_id), sequence: m.sequence, time: timestamp(m.time), event: event)
    }

    func c(in arena: ProtobufCArena) -> UnsafeMutablePointer<Flowd__V1__RunEvent> {
        let m = arena.message(flowd__v1__run_event__init)
        m.pointee.run_id = arena.string(runId)
        m.pointee.sequence = sequence
        m.pointee.time = time?.c(in: arena)
        switch event {
        case .runStarted(let payload):
            m.pointee.event_case = FLOWD__V1__RUN_EVENT__EVENT_RUN_STARTED
            m.pointee.run_started = payload.c(in: arena)
        case .nodeStarted(let payload):
            m.pointee.event_case = FLOWD__V1__RUN_EVENT__EVENT_NODE_STARTED
            m.pointee.node_started = payload.c(in: arena)
        case .nodeFinished(let payload):
            m.pointee.event_case = FLOWD__V1__RUN_EVENT__EVENT_NODE_FINISHED
            m.pointee.node_finished = payload.c(in: arena)
        case .textChunk(let payload):
            m.pointee.event_case = FLOWD__V1__RUN_EVENT__EVENT_TEXT_CHUNK
            m.pointee.text_chunk = payload.c(in: arena)
        case .runFinished(let payload):
            m.pointee.event_case = FLOWD__V1__RUN_EVENT__EVENT_RUN_FINISHED
            m.pointee.run_finished = payload.c(in: arena)
        case .heartbeat:
            m.pointee.event_case = FLOWD__V1__RUN_EVENT__EVENT_HEARTBEAT
            m.pointee.heartbeat = arena.message(flowd__v1__heartbeat__init)
        case nil:
            m.pointee.event_case = FLOWD__V1__RUN_EVENT__EVENT__NOT_SET
        }
        return m
    }

    public init(serializedBytes bytes: [UInt8], limits: DecodingLimits) throws(CodecError) {
        self = try unpack(bytes, flowd__v1__run_event__init, limits, Self.init(c:))
    }

    public func serializedBytes() -> [UInt8] { ProtobufCCodec.encode(c(in:)) }
}

extension FlowdV1.RunStarted: ProtoMessage {
    init(c m: Flowd__V1__RunStarted) {
        self.init(run: m.run.map { FlowdV1.Run(c: $0.pointee) } ?? FlowdV1.Run())
    }

    func c(in arena: ProtobufCArena) -> UnsafeMutablePointer<Flowd__V1__RunStarted> {
        let m = arena.message(flowd__v1__run_started__init)
        m.pointee.run = run.c(in: arena)
        return m
    }

    public init(serializedBytes bytes: [UInt8], limits: DecodingLimits) throws(CodecError) {
        self = try unpack(bytes, flowd__v1__run_started__init, limits, Self.init(c:))
    }

    public func serializedBytes() -> [UInt8] { ProtobufCCodec.encode(c(in:)) }
}

extension FlowdV1.NodeStarted: ProtoMessage {
    init(c m: Flowd__V1__NodeStarted) {
        self.init(nodeId: str(m.node_id), nodeKind: str(m.node_kind), title: str(m.title), index: m.index,
                  inputsJson: str(m.inputs_json), inputsTruncated: m.inputs_truncated != 0)
    }

    func c(in arena: ProtobufCArena) -> UnsafeMutablePointer<Flowd__V1__NodeStarted> {
        let m = arena.message(flowd__v1__node_started__init)
        m.pointee.node_id = arena.string(nodeId)
        m.pointee.node_kind = arena.string(nodeKind)
        m.pointee.title = arena.string(title)
        m.pointee.index = index
        m.pointee.inputs_json = arena.string(inputsJson)
        m.pointee.inputs_truncated = inputsTruncated ? 1 : 0
        return m
    }

    public init(serializedBytes bytes: [UInt8], limits: DecodingLimits) throws(CodecError) {
        self = try unpack(bytes, flowd__v1__node_started__init, limits, Self.init(c:))
    }

    public func serializedBytes() -> [UInt8] { ProtobufCCodec.encode(c(in:)) }
}

extension FlowdV1.NodeFinished: ProtoMessage {
    init(c m: Flowd__V1__NodeFinished) {
        self.init(nodeId: str(m.node_id), nodeKind: str(m.node_kind), title: str(m.title), index: m.index,
                  status: .init(rawValue: int32(m.status)), inputsJson: str(m.inputs_json),
                  outputsJson: str(m.outputs_json), error: str(m.error), elapsedMs: m.elapsed_ms,
                  inputsTruncated: m.inputs_truncated != 0, outputsTruncated: m.outputs_truncated != 0,
                  attempt: m.attempt)
    }

    func c(in arena: ProtobufCArena) -> UnsafeMutablePointer<Flowd__V1__NodeFinished> {
        let m = arena.message(flowd__v1__node_finished__init)
        m.pointee.node_id = arena.string(nodeId)
        m.pointee.node_kind = arena.string(nodeKind)
        m.pointee.title = arena.string(title)
        m.pointee.index = index
        m.pointee.status = Flowd__V1__NodeStatus(rawValue: .init(truncatingIfNeeded: status.rawValue))
        m.pointee.inputs_json = arena.string(inputsJson)
        m.pointee.outputs_json = arena.string(outputsJson)
        m.pointee.error = arena.string(error)
        m.pointee.elapsed_ms = elapsedMs
        m.pointee.inputs_truncated = inputsTruncated ? 1 : 0
        m.pointee.outputs_truncated = outputsTruncated ? 1 : 0
        m.pointee.attempt = attempt
        return m
    }

    public init(serializedBytes bytes: [UInt8], limits: DecodingLimits) throws(CodecError) {
        self = try unpack(bytes, flowd__v1__node_finished__init, limits, Self.init(c:))
    }

    public func serializedBytes() -> [UInt8] { ProtobufCCodec.encode(c(in:)) }
}

extension FlowdV1.TextChunk: ProtoMessage {
    init(c m: Flowd__V1__TextChunk) {
        self.init(nodeId: str(m.node_id), text: str(m.text))
    }

    func c(in arena: ProtobufCArena) -> UnsafeMutablePointer<Flowd__V1__TextChunk> {
        let m = arena.message(flowd__v1__text_chunk__init)
        m.pointee.node_id = arena.string(nodeId)
        m.pointee.text = arena.string(text)
        return m
    }

    public init(serializedBytes bytes: [UInt8], limits: DecodingLimits) throws(CodecError) {
        self = try unpack(bytes, flowd__v1__text_chunk__init, limits, Self.init(c:))
    }

    public func serializedBytes() -> [UInt8] { ProtobufCCodec.encode(c(in:)) }
}

extension FlowdV1.RunFinished: ProtoMessage {
    init(c m: Flowd__V1__RunFinished) {
        self.init(run: m.run.map { FlowdV1.Run(c: $0.pointee) } ?? FlowdV1.Run())
    }

    func c(in arena: ProtobufCArena) -> UnsafeMutablePointer<Flowd__V1__RunFinished> {
        let m = arena.message(flowd__v1__run_finished__init)
        m.pointee.run = run.c(in: arena)
        return m
    }

    public init(serializedBytes bytes: [UInt8], limits: DecodingLimits) throws(CodecError) {
        self = try unpack(bytes, flowd__v1__run_finished__init, limits, Self.init(c:))
    }

    public func serializedBytes() -> [UInt8] { ProtobufCCodec.encode(c(in:)) }
}

extension FlowdV1.GetRunRequest: ProtoMessage {
    public init(serializedBytes bytes: [UInt8], limits: DecodingLimits) throws(CodecError) {
        self = try unpack(bytes, flowd__v1__get_run_request__init, limits) { m in Self(runId: str(m.run_id)) }
    }

    public func serializedBytes() -> [UInt8] {
        ProtobufCCodec.encode { arena in
            let m = arena.message(flowd__v1__get_run_request__init)
            m.pointee.run_id = arena.string(runId)
            return m
        }
    }
}

extension FlowdV1.WatchRunRequest: ProtoMessage {
    public init(serializedBytes bytes: [UInt8], limits: DecodingLimits) throws(CodecError) {
        self = try unpack(bytes, flowd__v1__watch_run_request__init, limits) { m in
            Self(runId: str(m.run_id), afterSequence: m.after_sequence)
        }
    }

    public func serializedBytes() -> [UInt8] {
        ProtobufCCodec.encode { arena in
            let m = arena.message(flowd__v1__watch_run_request__init)
            m.pointee.run_id = arena.string(runId)
            m.pointee.after_sequence = afterSequence
            return m
        }
    }
}

extension FlowdV1.StopRunRequest: ProtoMessage {
    public init(serializedBytes bytes: [UInt8], limits: DecodingLimits) throws(CodecError) {
        self = try unpack(bytes, flowd__v1__stop_run_request__init, limits) { m in
            Self(runId: str(m.run_id), user: str(m.user))
        }
    }

    public func serializedBytes() -> [UInt8] {
        ProtobufCCodec.encode { arena in
            let m = arena.message(flowd__v1__stop_run_request__init)
            m.pointee.run_id = arena.string(runId)
            m.pointee.user = arena.string(user)
            return m
        }
    }
}

extension FlowdV1.ListRunsRequest: ProtoMessage {
    public init(serializedBytes bytes: [UInt8], limits: DecodingLimits) throws(CodecError) {
        self = try unpack(bytes, flowd__v1__list_runs_request__init, limits) { m in
            Self(pageSize: m.page_size, pageToken: str(m.page_token),
                 statuses: ProtobufCCodec.elements(m.statuses, count: m.n_statuses).map {
                     FlowdV1.RunStatus(rawValue: int32($0))
                 },
                 workflow: str(m.workflow), user: str(m.user))
        }
    }

    public func serializedBytes() -> [UInt8] {
        ProtobufCCodec.encode { arena in
            let m = arena.message(flowd__v1__list_runs_request__init)
            m.pointee.page_size = pageSize
            m.pointee.page_token = arena.string(pageToken)
            m.pointee.n_statuses = statuses.count
            m.pointee.statuses = arena.array(statuses.map {
                Flowd__V1__RunStatus(rawValue: .init(truncatingIfNeeded: $0.rawValue))
            })
            m.pointee.workflow = arena.string(workflow)
            m.pointee.user = arena.string(user)
            return m
        }
    }
}

extension FlowdV1.ListRunsResponse: ProtoMessage {
    public init(serializedBytes bytes: [UInt8], limits: DecodingLimits) throws(CodecError) {
        self = try unpack(bytes, flowd__v1__list_runs_response__init, limits) { m in
            Self(runs: ProtobufCCodec.messages(m.runs, count: m.n_runs).map { FlowdV1.Run(c: $0.pointee) },
                 nextPageToken: str(m.next_page_token))
        }
    }

    public func serializedBytes() -> [UInt8] {
        ProtobufCCodec.encode { arena in
            let m = arena.message(flowd__v1__list_runs_response__init)
            m.pointee.n_runs = runs.count
            m.pointee.runs = arena.pointers(runs.map { $0.c(in: arena) })
            m.pointee.next_page_token = arena.string(nextPageToken)
            return m
        }
    }
}

// MARK: - grpc.reflection.v1

extension ReflectionV1.Request: ProtoMessage {
    init(c m: Grpc__Reflection__V1__ServerReflectionRequest) {
        let kind: Kind? =
            switch m.message_request_case {
            case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME:
                .fileByFilename(str(m.file_by_filename))
            case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL:
                .fileContainingSymbol(str(m.file_containing_symbol))
            case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION:
                .fileContainingExtension(containingType: str(m.file_containing_extension?.pointee.containing_type),
                                         number: m.file_containing_extension?.pointee.extension_number ?? 0)
            case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE:
                .allExtensionNumbersOfType(str(m.all_extension_numbers_of_type))
            case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES:
                .listServices(str(m.list_services))
            default: nil
            }
        self.init(host: str(m.host), kind: kind)
    }

    func c(in arena: ProtobufCArena) -> UnsafeMutablePointer<Grpc__Reflection__V1__ServerReflectionRequest> {
        let m = arena.message(grpc__reflection__v1__server_reflection_request__init)
        m.pointee.host = arena.string(host)
        switch kind {
        case .fileByFilename(let name):
            m.pointee.message_request_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME
            m.pointee.file_by_filename = arena.string(name)
        case .fileContainingSymbol(let symbol):
            m.pointee.message_request_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL
            m.pointee.file_containing_symbol = arena.string(symbol)
        case .fileContainingExtension(let containingType, let number):
            m.pointee.message_request_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION
            let e = arena.message(grpc__reflection__v1__extension_request__init)
            e.pointee.containing_type = arena.string(containingType)
            e.pointee.extension_number = number
            m.pointee.file_containing_extension = e
        case .allExtensionNumbersOfType(let type):
            m.pointee.message_request_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE
            m.pointee.all_extension_numbers_of_type = arena.string(type)
        case .listServices(let text):
            m.pointee.message_request_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES
            m.pointee.list_services = arena.string(text)
        case nil:
            m.pointee.message_request_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST__NOT_SET
        }
        return m
    }

    public init(serializedBytes bytes: [UInt8], limits: DecodingLimits) throws(CodecError) {
        self = try unpack(bytes, grpc__reflection__v1__server_reflection_request__init, limits, Self.init(c:))
    }

    public func serializedBytes() -> [UInt8] { ProtobufCCodec.encode(c(in:)) }
}

extension ReflectionV1.Response: ProtoMessage {
    public init(serializedBytes bytes: [UInt8], limits: DecodingLimits) throws(CodecError) {
        self = try unpack(bytes, grpc__reflection__v1__server_reflection_response__init, limits) { m in
            let body: Body =
                switch m.message_response_case {
                case GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE:
                    .fileDescriptors(m.file_descriptor_response.map { r in
                        ProtobufCCodec.elements(r.pointee.file_descriptor_proto, count: r.pointee.n_file_descriptor_proto)
                            .map(ProtobufCCodec.bytes)
                    } ?? [])
                case GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ALL_EXTENSION_NUMBERS_RESPONSE:
                    .extensionNumbers(
                        baseType: str(m.all_extension_numbers_response?.pointee.base_type_name),
                        numbers: m.all_extension_numbers_response.map { r in
                            Array(ProtobufCCodec.elements(r.pointee.extension_number, count: r.pointee.n_extension_number))
                        } ?? [])
                case GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE:
                    .services(m.list_services_response.map { r in
                        ProtobufCCodec.messages(r.pointee.service, count: r.pointee.n_service).map { str($0.pointee.name) }
                    } ?? [])
                default:
                    .error(code: m.error_response?.pointee.error_code ?? 0, message: str(m.error_response?.pointee.error_message))
                }
            return Self(validHost: str(m.valid_host),
                        originalRequest: m.original_request.map { ReflectionV1.Request(c: $0.pointee) } ?? .init(kind: nil),
                        body: body)
        }
    }

    public func serializedBytes() -> [UInt8] {
        ProtobufCCodec.encode { arena in
            let m = arena.message(grpc__reflection__v1__server_reflection_response__init)
            m.pointee.valid_host = arena.string(validHost)
            m.pointee.original_request = originalRequest.c(in: arena)
            switch body {
            case .fileDescriptors(let files):
                m.pointee.message_response_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE
                let r = arena.message(grpc__reflection__v1__file_descriptor_response__init)
                r.pointee.n_file_descriptor_proto = files.count
                r.pointee.file_descriptor_proto = arena.array(files.map(arena.bytes))
                m.pointee.file_descriptor_response = r
            case .extensionNumbers(let baseType, let numbers):
                m.pointee.message_response_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ALL_EXTENSION_NUMBERS_RESPONSE
                let r = arena.message(grpc__reflection__v1__extension_number_response__init)
                r.pointee.base_type_name = arena.string(baseType)
                r.pointee.n_extension_number = numbers.count
                r.pointee.extension_number = arena.array(numbers)
                m.pointee.all_extension_numbers_response = r
            case .services(let names):
                m.pointee.message_response_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE
                let r = arena.message(grpc__reflection__v1__list_service_response__init)
                r.pointee.n_service = names.count
                r.pointee.service = arena.pointers(names.map { name in
                    let s = arena.message(grpc__reflection__v1__service_response__init)
                    s.pointee.name = arena.string(name)
                    return s
                })
                m.pointee.list_services_response = r
            case .error(let code, let message):
                m.pointee.message_response_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE
                let r = arena.message(grpc__reflection__v1__error_response__init)
                r.pointee.error_code = code
                r.pointee.error_message = arena.string(message)
                m.pointee.error_response = r
            }
            return m
        }
    }
}

/// The serialized `google.protobuf.FileDescriptorSet` of the protos the server serves,
/// generated from proto/ by tools/gen-protos.sh (server reflection reads it).
public enum FlowdDescriptorSet {
    public static let bytes: [UInt8] = Array(UnsafeBufferPointer(start: flowd_descriptor_set(), count: flowd_descriptor_set_size()))
}
