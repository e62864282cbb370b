// grpc-swift-2 peer for make bench-peers: the stock GRPCServer on the stock NIO Posix HTTP/2
// transport (plaintext, default configuration), one service: grpc.health.v1.Health, whose Check
// answers SERVING. Listens on 127.0.0.1 only; prints "listening on 127.0.0.1:PORT" once bound.
//
//   GRPCSwiftHealth [PORT]      (0, the default: any free port)
import GRPCCore
import GRPCNIOTransportHTTP2
import GRPCProtobuf

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

struct HealthService: Grpc_Health_V1_Health.SimpleServiceProtocol {
  func check(
    request: Grpc_Health_V1_HealthCheckRequest,
    context: ServerContext
  ) async throws -> Grpc_Health_V1_HealthCheckResponse {
    var response = Grpc_Health_V1_HealthCheckResponse()
    response.status = .serving
    return response
  }

  func watch(
    request: Grpc_Health_V1_HealthCheckRequest,
    response: RPCWriter<Grpc_Health_V1_HealthCheckResponse>,
    context: ServerContext
  ) async throws {
    var serving = Grpc_Health_V1_HealthCheckResponse()
    serving.status = .serving
    try await response.write(serving)
    // The status never changes: hold the stream open until the client goes away.
    while !Task.isCancelled {
      try await Task.sleep(for: .seconds(3600))
    }
  }
}

let port = CommandLine.arguments.count > 1 ? Int(CommandLine.arguments[1]) ?? 0 : 0
let server = GRPCServer(
  transport: .http2NIOPosix(
    address: .ipv4(host: "127.0.0.1", port: port),
    transportSecurity: .plaintext
  ),
  services: [HealthService()]
)

try await withThrowingDiscardingTaskGroup { group in
  group.addTask { try await server.serve() }
  if let address = try await server.listeningAddress, let ipv4 = address.ipv4 {
    print("listening on \(ipv4.host):\(ipv4.port)")
  } else {
    print("listening on (unknown address)")
  }
  fflush(nil)  // every stream: stdout is a file under the bench driver, fully buffered

}
