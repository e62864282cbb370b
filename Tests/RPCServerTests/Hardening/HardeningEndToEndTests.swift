import Codec
import NIOCore
import RPCClient
import Testing
@testable import RPCServer

/// Response-side caps against a real server on 127.0.0.1:0, called by flowd's own client.
@Suite("Hardening end to end: response size cap, grpc-message truncation")
struct HardeningEndToEndTests {
    private func withClient<T: Sendable>(
        configure: @escaping (inout ServerConfiguration) -> Void = { _ in },
        _ body: (GRPCClientConnection) async throws -> T
    ) async throws -> T {
        try await withTestServer(services: [HealthService(), ControlService()], configure: configure) { _, port in
            let client = try await GRPCClientConnection.connect(host: "127.0.0.1", port: port)
            do {
                let result = try await body(client)
                await client.close()
                return result
            } catch {
                await client.close()
                throw error
            }
        }
    }

    private func unaryError(_ client: GRPCClientConnection, _ request: ControlRequest) async -> GRPCCallError? {
        do {
            _ = try await client.unary(ControlService.unary.path, request, timeout: .seconds(30), as: ControlResponse.self)
            return nil
        } catch {
            return error
        }
    }

    @Test("a response message over maxSendMessageSize ends the call with RESOURCE_EXHAUSTED; smaller ones pass")
    func responseSizeCap() async throws {
        try await withClient(configure: { $0.maxSendMessageSize = 1000 }) { client in
            var small = ControlRequest()
            small.responseSize = 500
            #expect(await unaryError(client, small) == nil)
            var large = ControlRequest()
            large.responseSize = 2000
            let error = await unaryError(client, large)
            #expect(error?.code == .resourceExhausted)
            #expect(error?.message.contains("exceeds the limit of 1000 bytes") == true)

            var stream = ControlRequest()
            stream.responseCount = 3
            stream.responseSize = 2000
            var received = 0
            var streamError: GRPCCallError?
            do {
                for try await _ in client.serverStreaming(ControlService.serverStream.path, stream, timeout: .seconds(30),
                                                          as: ControlResponse.self) {
                    received += 1
                }
            } catch let error as GRPCCallError {
                streamError = error
            }
            #expect(received == 0)
            #expect(streamError?.code == .resourceExhausted)
        }
    }

    @Test("an error message of 70,000 characters is answered, cut to the configured size")
    func longStatusMessage() async throws {
        try await withClient { client in
            var request = ControlRequest()
            request.failCode = Int32(StatusCode.notFound.rawValue)
            request.failMessage = "unknown service " + String(repeating: "x", count: 70_000)
            let error = await unaryError(client, request)
            #expect(error?.code == .notFound)
            #expect((error?.message.utf8.count ?? .max) <= 1024)
            #expect(error?.message.hasPrefix("unknown service xxx") == true)
        }
    }
}
