import ArgumentParser
import Logging
import RPCServer
import ServiceLifecycle

/// `flowd serve`: runs the gRPC server until SIGTERM or SIGINT, then drains gracefully.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Serve gRPC on HOST:PORT.")

    @Option(help: "Address to listen on (env FLOWD_HOST).")
    var host: String = Environment.string("FLOWD_HOST") ?? "127.0.0.1"

    @Option(help: "Port to listen on; 0 picks a free port (env FLOWD_PORT).")
    var port: Int = Environment.int("FLOWD_PORT") ?? 50051

    @Option(help: "Event-loop threads (env FLOWD_THREADS; 0 means one per core).")
    var threads: Int = Environment.int("FLOWD_THREADS") ?? 0

    @Option(help: "Log level: trace, debug, info, notice, warning, error (env FLOWD_LOG_LEVEL).")
    var logLevel: String = Environment.string("FLOWD_LOG_LEVEL") ?? "info"

    func run() async throws {
        var logger = Logger(label: "flowd")
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info

        var configuration = ServerConfiguration()
        configuration.host = host
        configuration.port = port
        if threads > 0 { configuration.eventLoopThreads = threads }

        let health = HealthService()
        let server = GRPCServer(configuration: configuration, services: [health], logger: logger)
        let address = try await server.start()
        // Scripts wait for this line (and read the port from it when --port 0).
        print("flowd: listening on \(address.ipAddress ?? host):\(address.port ?? port)")
        fflush(nil)  // all streams: the line must reach a pipe at once

        let service = GRPCServerService(server: server, health: health)
        let group = ServiceGroup(
            configuration: .init(services: [service], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}

/// Runs a started server under swift-service-lifecycle: on graceful shutdown, health turns
/// NOT_SERVING and connections drain.
struct GRPCServerService: Service {
    let server: GRPCServer
    let health: HealthService

    func run() async throws {
        try await withGracefulShutdownHandler {
            try await server.run()
        } onGracefulShutdown: {
            health.markAllNotServing()
            server.beginGracefulShutdown()
        }
    }
}

/// Reads configuration from environment variables.
enum Environment {
    static func string(_ name: String) -> String? {
        guard let value = getenv(name) else { return nil }
        let text = String(cString: value)
        return text.isEmpty ? nil : text
    }

    static func int(_ name: String) -> Int? {
        string(name).flatMap { Int($0) }
    }
}

#if canImport(Glibc)
import Glibc
#endif
