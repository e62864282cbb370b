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
        var engineConfiguration = EngineConfiguration()
        engineConfiguration.stopWait = .seconds(2)
        try await APIFixture.with(configuration: engineConfiguration) { fixture in
            var api = DifyWorkflowsAPIConfiguration()
            api.pingInterval = .milliseconds(200)
            var http = HTTP1Configuration()
            http.maxRequestBodySize = 64 * 1024
            http.idleTimeout = .seconds(1)
            let rest = DifyWorkflowsAPI(engine: fixture.engine, authenticator: fixture.authenticator, configuration: api)
            let grpc = WorkflowsService(engine: fixture.engine, authenticator: fixture.authenticator)
            try await withTestServer(services: [HealthService(), grpc], http: rest, httpConfiguration: http) { _, port in
                // FLOWD_REST_ARGS (e.g. "--only stop,logs") narrows the suite while debugging.
                let extra = ProcessInfo.processInfo.environment["FLOWD_REST_ARGS"].map { $0.split(separator: " ").map(String.init) } ?? []
                let child = try ChildProcess(["python3", "tools/interop/rest_api.py", "--target", "127.0.0.1:\(port)"]
                                             + fixture.keyArguments
                                             + ["--body-limit", "\(64 * 1024)", "--idle-timeout", "1"] + extra)
                let (status, output) = await child.finish(timeout: .seconds(300))
                print(output)
                #expect(status == 0, "rest_api.py failed:\n\(output)")
                #expect(output.contains(" 0 failed"))
            }
        }
    }
}
