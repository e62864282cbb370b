public import Codec
import Synchronization

/// `grpc.health.v1.Health` (doc/health-checking.md): `Check` answers the status of a registered
/// service (`""` is the whole server) or NOT_FOUND; `Watch` sends the current status and then
/// every change, and stays open for unknown services (SERVICE_UNKNOWN).
public final class HealthService: RegistrableRPCService {
    private struct State {
        var statuses: [String: HealthV1.ServingStatus] = ["": .serving]
        var watchers: [Int: (service: String, continuation: AsyncStream<HealthV1.ServingStatus>.Continuation)] = [:]
        var nextWatcherID = 0
    }

    private let state = Mutex(State())
    /// The status of the server as a whole (service ""), also kept outside the lock: the check
    /// load balancers send all the time reads it without taking a lock every event loop shares.
    /// Written under the lock, with `state.statuses[""]`.
    private let overall = Atomic<Int32>(HealthV1.ServingStatus.serving.rawValue)

    public static let check = MethodDescriptor(service: "grpc.health.v1.Health", method: "Check")
    public static let watch = MethodDescriptor(service: "grpc.health.v1.Health", method: "Watch")

    public init() {}

    /// Sets the status of `service` and tells its watchers.
    public func setStatus(_ status: HealthV1.ServingStatus, forService service: String) {
        state.withLock { state in
            state.statuses[service] = status
            if service.isEmpty { overall.store(status.rawValue, ordering: .relaxed) }
            for watcher in state.watchers.values where watcher.service == service {
                watcher.continuation.yield(status)
            }
        }
    }

    /// Marks every service NOT_SERVING and ends every Watch call with OK (graceful shutdown).
    public func markAllNotServing() {
        state.withLock { state in
            for service in state.statuses.keys { state.statuses[service] = .notServing }
            overall.store(HealthV1.ServingStatus.notServing.rawValue, ordering: .relaxed)
            for watcher in state.watchers.values {
                watcher.continuation.yield(.notServing)
                watcher.continuation.finish()
            }
            state.watchers.removeAll()
        }
    }

    public func status(ofService service: String) -> HealthV1.ServingStatus? {
        if service.isEmpty { return HealthV1.ServingStatus(rawValue: overall.load(ordering: .relaxed)) }
        return state.withLock { $0.statuses[service] }
    }

    public func registerMethods(with router: inout RPCRouter) {
        router.registerImmediateUnary(Self.check, request: HealthV1.CheckRequest.self, response: HealthV1.CheckResponse.self) {
            request, _ in
            guard let status = self.status(ofService: request.service) else {
                throw RPCError(code: .notFound, message: "unknown service \(request.service)")
            }
            return ServerResponse(message: HealthV1.CheckResponse(status: status))
        }
        router.registerServerStreaming(
            Self.watch, request: HealthV1.CheckRequest.self, response: HealthV1.CheckResponse.self
        ) { request, _ in
            let updates = self.subscribe(to: request.service)
            return StreamingServerResponse { writer in
                for await status in updates {
                    try await writer.write(HealthV1.CheckResponse(status: status))
                }
                return Metadata()
            }
        }
    }

    private func subscribe(to service: String) -> AsyncStream<HealthV1.ServingStatus> {
        let (stream, continuation) = AsyncStream.makeStream(
            of: HealthV1.ServingStatus.self, bufferingPolicy: .bufferingNewest(1))
        let id = state.withLock { state in
            let id = state.nextWatcherID
            state.nextWatcherID += 1
            state.watchers[id] = (service, continuation)
            continuation.yield(state.statuses[service] ?? .serviceUnknown)
            return id
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.state.withLock { $0.watchers.removeValue(forKey: id) }
        }
        return stream
    }
}
