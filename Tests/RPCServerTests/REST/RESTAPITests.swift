import Engine
import Foundation
import Logging
import NIOCore
import RPCServer
import Testing

@Suite("Dify REST shim end to end", .serialized)
struct RESTAPITests {
    @Test("the requests/httpx REST suite passes on the gRPC port against a real Engine and SQLite store")
    func restSuite() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("flowd-rest-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try SQLiteRunStore(directory: directory)
        var logger = Logger(label: "flowd.test.engine")
        logger.logLevel = .critical
        var engineConfiguration = EngineConfiguration()
        engineConfiguration.stopWait = .seconds(2)
        let engine = Engine(store: store, executor: ScriptedExecutor(), configuration: engineConfiguration, logger: logger)
        try await engine.start()
        let acme = try await store.createKey(tenant: "acme", workflow: "echo", now: Date())
        let globex = try await store.createKey(tenant: "globex", workflow: "echo", now: Date())
        let limited = try await store.createKey(tenant: "limited", workflow: "echo", now: Date())
        let revoked = try await store.createKey(tenant: "acme", workflow: "echo", now: Date())
        _ = try await store.revokeKey(id: revoked.record.id, now: Date())

        var api = DifyWorkflowsAPIConfiguration()
        api.pingInterval = .milliseconds(200)
        var http = HTTP1Configuration()
        http.maxRequestBodySize = 64 * 1024
        http.idleTimeout = .seconds(1)
        let rest = DifyWorkflowsAPI(engine: engine, keys: store, workflows: EchoResolver(), configuration: api)
        let grpc = WorkflowsService(engine: engine, keys: store, workflows: EchoResolver())
        try await withRESTTestServer(services: [HealthService(), grpc], http: rest, httpConfiguration: http) { port in
            // FLOWD_REST_ARGS (e.g. "--only stop,logs") narrows the suite while debugging.
            let extra = ProcessInfo.processInfo.environment["FLOWD_REST_ARGS"].map { $0.split(separator: " ").map(String.init) } ?? []
            let child = try ChildProcess([
                "python3", "tools/interop/rest_api.py", "--target", "127.0.0.1:\(port)",
                "--key", acme.key, "--other-tenant-key", globex.key, "--limit-key", limited.key,
                "--revoked-key", revoked.key, "--body-limit", "\(64 * 1024)", "--idle-timeout", "1",
            ] + extra)
            let (status, output) = await child.finish(timeout: .seconds(300))
            print(output)
            #expect(status == 0, "rest_api.py failed:\n\(output)")
            #expect(output.contains(" 0 failed"))
        }
        await engine.shutdown(gracePeriod: .seconds(1))
    }
}

/// `withTestServer` with an HTTP/1.1 handler on the same port.
func withRESTTestServer<T: Sendable>(
    services: [any RegistrableRPCService], http: any HTTPRequestHandling, httpConfiguration: HTTP1Configuration,
    _ body: (Int) async throws -> T
) async throws -> T {
    var configuration = ServerConfiguration()
    configuration.host = "127.0.0.1"
    configuration.port = 0
    configuration.eventLoopThreads = 2
    configuration.gracefulShutdownTimeout = .seconds(5)
    var logger = Logger(label: "flowd.test")
    logger.logLevel = .warning
    let server = GRPCServer(configuration: configuration, services: services, http: http,
                            httpConfiguration: httpConfiguration, logger: logger)
    let address = try await server.start()
    do {
        let result = try await body(address.port!)
        await server.shutDownGracefully()
        return result
    } catch {
        await server.shutDownGracefully()
        throw error
    }
}
