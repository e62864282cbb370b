import Engine
import RPCServer
import Testing

/// A well-formed but refused API key is answered from the headers, on gRPC and on REST over
/// h2c, while the server holds the body's flow-control credit back (checked frame by frame by
/// the `h2` library), and on HTTP/1.1 before the body has ended.
@Suite("Authentication before the body", .serialized)
struct AuthBeforeBodyTests {
    @Test("a refused key gets UNAUTHENTICATED / 401 without the server crediting its 4 MiB body beyond the initial window, or reading it on HTTP/1.1")
    func refusedKeyBodyUnread() async throws {
        try await APIFixture.with { fixture in
            let rest = DifyWorkflowsAPI(engine: fixture.engine, authenticator: fixture.authenticator)
            let grpc = WorkflowsService(engine: fixture.engine, authenticator: fixture.authenticator)
            try await withTestServer(services: [HealthService(), grpc], http: rest) { _, port in
                let child = try ChildProcess(["python3", "tools/interop/h2_checks.py", "--target", "127.0.0.1:\(port)",
                                              "--refused-key", fixture.revoked.key])
                let (status, output) = await child.finish(timeout: .seconds(120))
                print(output)
                #expect(status == 0, "h2_checks.py --refused-key failed:\n\(output)")
                #expect(output.contains("4 passed, 0 failed"))
            }
        }
    }
}
