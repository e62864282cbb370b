import CFlowdTestingProtos
import CProtobufC
import Codec
import RPCServer

/// `flowd.testing.v1.ControlRequest`: tells the Control service what to do.
struct ControlRequest: ProtoMessage, Equatable {
    var responseCount: Int32 = 0
    var responseSize: Int32 = 0
    var echoPayload = false
    var payload: [UInt8] = []
    var failCode: Int32 = 0
    var failMessage = ""
    var failWithDetails = false
    var sleepMs: Int64 = 0
    var intervalMs: Int64 = 0
    var echoMetadata = false
    var probeKey = ""

    init() {}

    init(serializedBytes bytes: [UInt8], limits: DecodingLimits) throws(CodecError) {
        self = try ProtobufCCodec.decode(
            bytes, as: Flowd__Testing__V1__ControlRequest.self,
            initializer: flowd__testing__v1__control_request__init, limits: limits
        ) { message in
            let m = message.pointee
            var request = ControlRequest()
            request.responseCount = m.response_count
            request.responseSize = m.response_size
            request.echoPayload = m.echo_payload != 0
            request.payload = ProtobufCCodec.bytes(m.payload)
            request.failCode = m.fail_code
            request.failMessage = ProtobufCCodec.string(m.fail_message)
            request.failWithDetails = m.fail_with_details != 0
            request.sleepMs = m.sleep_ms
            request.intervalMs = m.interval_ms
            request.echoMetadata = m.echo_metadata != 0
            request.probeKey = ProtobufCCodec.string(m.probe_key)
            return request
        }
    }

    func serializedBytes() -> [UInt8] {
        ProtobufCCodec.encode { arena in
            let m = arena.message(flowd__testing__v1__control_request__init)
            m.pointee.response_count = responseCount
            m.pointee.response_size = responseSize
            m.pointee.echo_payload = echoPayload ? 1 : 0
            m.pointee.payload = arena.bytes(payload)
            m.pointee.fail_code = failCode
            m.pointee.fail_message = arena.string(failMessage)
            m.pointee.fail_with_details = failWithDetails ? 1 : 0
            m.pointee.sleep_ms = sleepMs
            m.pointee.interval_ms = intervalMs
            m.pointee.echo_metadata = echoMetadata ? 1 : 0
            m.pointee.probe_key = arena.string(probeKey)
            return m
        }
    }
}

/// `flowd.testing.v1.ControlResponse`.
struct ControlResponse: ProtoMessage, Equatable {
    var index: Int32 = 0
    var payload: [UInt8] = []
    var requestMetadata: [String: String] = [:]

    init(index: Int32 = 0, payload: [UInt8] = [], requestMetadata: [String: String] = [:]) {
        self.index = index
        self.payload = payload
        self.requestMetadata = requestMetadata
    }

    init(serializedBytes bytes: [UInt8], limits: DecodingLimits) throws(CodecError) {
        self = try ProtobufCCodec.decode(
            bytes, as: Flowd__Testing__V1__ControlResponse.self,
            initializer: flowd__testing__v1__control_response__init, limits: limits
        ) { message in
            let m = message.pointee
            var entries: [String: String] = [:]
            for entry in ProtobufCCodec.messages(m.request_metadata, count: m.n_request_metadata) {
                entries[ProtobufCCodec.string(entry.pointee.key)] = ProtobufCCodec.string(entry.pointee.value)
            }
            return ControlResponse(index: m.index, payload: ProtobufCCodec.bytes(m.payload), requestMetadata: entries)
        }
    }

    func serializedBytes() -> [UInt8] {
        ProtobufCCodec.encode { arena in
            let m = arena.message(flowd__testing__v1__control_response__init)
            m.pointee.index = index
            m.pointee.payload = arena.bytes(payload)
            let entries = requestMetadata.sorted { $0.key < $1.key }.map { key, value in
                let entry = arena.message(flowd__testing__v1__control_response__request_metadata_entry__init)
                entry.pointee.key = arena.string(key)
                entry.pointee.value = arena.string(value)
                return entry
            }
            m.pointee.n_request_metadata = entries.count
            m.pointee.request_metadata = arena.pointers(entries)
            return m
        }
    }
}

/// `flowd.testing.v1.ProbeRequest`.
struct ProbeRequest: ProtoMessage, Equatable {
    var probeKey = ""
    var timeoutMs: Int64 = 0

    init(probeKey: String, timeoutMs: Int64) {
        self.probeKey = probeKey
        self.timeoutMs = timeoutMs
    }

    init(serializedBytes bytes: [UInt8], limits: DecodingLimits) throws(CodecError) {
        self = try ProtobufCCodec.decode(
            bytes, as: Flowd__Testing__V1__ProbeRequest.self,
            initializer: flowd__testing__v1__probe_request__init, limits: limits
        ) { message in
            ProbeRequest(probeKey: ProtobufCCodec.string(message.pointee.probe_key), timeoutMs: message.pointee.timeout_ms)
        }
    }

    func serializedBytes() -> [UInt8] {
        ProtobufCCodec.encode { arena in
            let m = arena.message(flowd__testing__v1__probe_request__init)
            m.pointee.probe_key = arena.string(probeKey)
            m.pointee.timeout_ms = timeoutMs
            return m
        }
    }
}

/// `flowd.testing.v1.ProbeResponse`.
struct ProbeResponse: ProtoMessage, Equatable {
    var cancelled = false

    init(cancelled: Bool) { self.cancelled = cancelled }

    init(serializedBytes bytes: [UInt8], limits: DecodingLimits) throws(CodecError) {
        self = try ProtobufCCodec.decode(
            bytes, as: Flowd__Testing__V1__ProbeResponse.self,
            initializer: flowd__testing__v1__probe_response__init, limits: limits
        ) { message in ProbeResponse(cancelled: message.pointee.cancelled != 0) }
    }

    func serializedBytes() -> [UInt8] {
        ProtobufCCodec.encode { arena in
            let m = arena.message(flowd__testing__v1__probe_response__init)
            m.pointee.cancelled = cancelled ? 1 : 0
            return m
        }
    }
}

/// Records which probed handlers saw their cancellation, and lets callers wait for it.
actor ProbeBoard {
    private var cancelled: Set<String> = []
    private var waiters: [String: [CheckedContinuation<Bool, Never>]] = [:]

    func markCancelled(_ key: String) {
        cancelled.insert(key)
        for waiter in waiters.removeValue(forKey: key) ?? [] { waiter.resume(returning: true) }
    }

    /// True once `key` was cancelled; false if that has not happened within `timeout`.
    func waitUntilCancelled(_ key: String, timeout: Duration) async -> Bool {
        if cancelled.contains(key) { return true }
        let timer = Task { [weak self] in
            try? await Task.sleep(for: timeout)
            await self?.expire(key)
        }
        defer { timer.cancel() }
        return await withCheckedContinuation { waiters[key, default: []].append($0) }
    }

    private func expire(_ key: String) {
        for waiter in waiters.removeValue(forKey: key) ?? [] { waiter.resume(returning: false) }
    }
}

/// `flowd.testing.v1.Control`: a test-only service whose request says what the handler does
/// (see proto/flowd/testing/v1/control.proto). Never registered by `flowd serve`.
struct ControlService: RegistrableRPCService {
    static let unary = MethodDescriptor(service: "flowd.testing.v1.Control", method: "Unary")
    static let serverStream = MethodDescriptor(service: "flowd.testing.v1.Control", method: "ServerStream")
    static let awaitCancellation = MethodDescriptor(service: "flowd.testing.v1.Control", method: "AwaitCancellation")

    let probes = ProbeBoard()

    func registerMethods(with router: inout RPCRouter) {
        router.registerUnary(Self.unary, request: ControlRequest.self, response: ControlResponse.self) {
            request, context in
            try await probing(request) {
                if request.sleepMs > 0 { try await Task.sleep(for: .milliseconds(request.sleepMs)) }
                if request.failCode != 0 { throw Self.failure(request) }
                let (initial, trailing) = Self.echoedMetadata(request, context)
                return ServerResponse(message: Self.response(request, context, index: 0),
                                      metadata: initial, trailingMetadata: trailing)
            }
        }
        router.registerServerStreaming(Self.serverStream, request: ControlRequest.self, response: ControlResponse.self) {
            request, context in
            let (initial, trailing) = Self.echoedMetadata(request, context)
            return StreamingServerResponse(metadata: initial) { writer in
                try await probing(request) {
                    if request.sleepMs > 0 { try await Task.sleep(for: .milliseconds(request.sleepMs)) }
                    for index in 0..<request.responseCount {
                        if request.intervalMs > 0 { try await Task.sleep(for: .milliseconds(request.intervalMs)) }
                        try await writer.write(Self.response(request, context, index: index))
                    }
                    if request.failCode != 0 { throw Self.failure(request) }
                    return trailing
                }
            }
        }
        router.registerUnary(Self.awaitCancellation, request: ProbeRequest.self, response: ProbeResponse.self) {
            request, _ in
            let cancelled = await probes.waitUntilCancelled(request.probeKey, timeout: .milliseconds(request.timeoutMs))
            return ServerResponse(message: ProbeResponse(cancelled: cancelled))
        }
    }

    /// Runs `body`; if the call is cancelled while it runs, records it under the probe key.
    private func probing<T: Sendable>(_ request: ControlRequest, _ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch {
            if !request.probeKey.isEmpty, Task.isCancelled || error is CancellationError {
                await probes.markCancelled(request.probeKey)
            }
            throw error
        }
    }

    private static func response(_ request: ControlRequest, _ context: ServerContext, index: Int32) -> ControlResponse {
        var echoed: [String: String] = [:]
        if request.echoMetadata {
            for element in context.metadata {
                if case .string(let value) = element.value { echoed[element.key] = value }
            }
        }
        let payload = request.echoPayload ? request.payload : [UInt8](repeating: 0, count: Int(request.responseSize))
        return ControlResponse(index: index, payload: payload, requestMetadata: echoed)
    }

    /// `x-echo-*` request metadata goes back in the initial metadata, `x-echo-trailing-*` in the trailers.
    private static func echoedMetadata(_ request: ControlRequest, _ context: ServerContext) -> (Metadata, Metadata) {
        var initial = Metadata()
        var trailing = Metadata()
        guard request.echoMetadata else { return (initial, trailing) }
        for element in context.metadata where element.key.hasPrefix("x-echo-") {
            let isTrailing = element.key.hasPrefix("x-echo-trailing-")
            switch element.value {
            case .string(let value):
                if isTrailing { trailing.addString(value, forKey: element.key) } else { initial.addString(value, forKey: element.key) }
            case .binary(let value):
                if isTrailing { trailing.addBinary(value, forKey: element.key) } else { initial.addBinary(value, forKey: element.key) }
            }
        }
        return (initial, trailing)
    }

    private static func failure(_ request: ControlRequest) -> RPCError {
        var details: [ErrorDetail] = []
        if request.failWithDetails {
            details = [
                .errorInfo(ErrorInfo(reason: "CONTROL_FAILURE", domain: "flowd.testing", metadata: ["probe": request.probeKey])),
                .retryInfo(RetryInfo(retryDelay: .milliseconds(1500))),
                .quotaFailure(QuotaFailure(violations: [.init(subject: "tenant:test", description: "limit of 1 reached")])),
                .badRequest(BadRequest(fieldViolations: [.init(field: "payload", description: "too large", reason: "TOO_LARGE")])),
            ]
        }
        return RPCError(code: StatusCode(rawValue: Int(request.failCode)), message: request.failMessage, details: details)
    }
}
