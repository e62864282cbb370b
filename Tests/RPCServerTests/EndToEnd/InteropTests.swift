import Foundation
import Testing
@testable import RPCServer

/// Stock gRPC clients against a real server on 127.0.0.1:0.
@Suite("Interop with stock clients", .serialized)
struct InteropTests {
    @Test("the grpcio interop suite passes against the Control and Health services")
    func grpcioSuite() async throws {
        let health = HealthService()
        try await withTestServer(services: [health, ControlService()]) { _, port in
            // FLOWD_INTEROP_ARGS (e.g. "--only deadline,cancel") narrows the suite while debugging.
            let extra = ProcessInfo.processInfo.environment["FLOWD_INTEROP_ARGS"].map { $0.split(separator: " ").map(String.init) } ?? []
            let child = try ChildProcess(["python3", "tools/interop/grpc_interop.py", "--target", "127.0.0.1:\(port)"] + extra)
            let (status, output) = await child.finish(timeout: .seconds(300))
            print(output)
            #expect(status == 0, "grpc_interop.py failed:\n\(output)")
            #expect(output.contains(" 0 failed"), "no clean summary line")
        }
    }
}

/// HTTP/2 frame-level behaviour, checked with the Python `h2` library.
@Suite("HTTP/2 frame-level behaviour", .serialized)
struct FrameLevelTests {
    @Test("Trailers-Only layout, 415, oversized headers, lying prefixes, resets and ping floods behave")
    func h2Checks() async throws {
        try await withTestServer(services: [HealthService(), ControlService()]) { _, port in
            let child = try ChildProcess(["python3", "tools/interop/h2_checks.py", "--target", "127.0.0.1:\(port)"])
            let (status, output) = await child.finish(timeout: .seconds(120))
            print(output)
            #expect(status == 0, "h2_checks.py failed:\n\(output)")
        }
    }

    @Test("graceful shutdown sends GOAWAY, lets the in-flight stream finish with OK, then closes")
    func gracefulShutdownDrains() async throws {
        // The stream takes 1 s on an idle machine; the shutdown timeout must not cut it short on
        // a busy one. The client never acknowledges the shutdown PING (h2 stops answering after
        // the first GOAWAY), so the connection closes at this timeout, within the client's 30 s.
        try await withTestServer(services: [HealthService(), ControlService()], configure: { configuration in
            configuration.gracefulShutdownTimeout = .seconds(15)
        }) { server, port in
            let child = try ChildProcess(["python3", "tools/interop/h2_checks.py", "--target", "127.0.0.1:\(port)", "--drain"])
            let ready = await child.waitForLine(startingWith: "READY")
            #expect(ready, "the drain client never got its first message")
            server.beginGracefulShutdown()
            let (status, output) = await child.finish(timeout: .seconds(60))
            print(output)
            #expect(status == 0, "drain client failed:\n\(output)")
            #expect(output.contains("PASS drain"))
        }
    }

    @Test("a silent connection hits the handshake timeout; an idle one gets GOAWAY and is closed")
    func handshakeAndIdleTimeouts() async throws {
        try await withTestServer(services: [HealthService()], configure: { configuration in
            configuration.handshakeTimeout = .milliseconds(300)
            configuration.idleTimeout = .milliseconds(300)
            configuration.gracefulShutdownTimeout = .seconds(2)
        }) { _, port in
            let child = try ChildProcess(["python3", "tools/interop/h2_checks.py", "--target", "127.0.0.1:\(port)", "--timeouts"])
            let (status, output) = await child.finish(timeout: .seconds(60))
            print(output)
            #expect(status == 0, "timeouts client failed:\n\(output)")
        }
    }
}
