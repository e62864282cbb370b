import ArgumentParser
import Engine
import Workflows
import Foundation
import Logging
import Metrics
import RPCServer
import ServiceLifecycle
import UnixSignals

/// `flowd serve`: the gRPC server with the Engine, until SIGTERM or SIGINT, then a graceful
/// drain. Every flag also has an environment variable; Dify's names where Dify has one.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Serve flowd's gRPC API and the Dify-compatible REST API on HOST:PORT.")

    @Option(help: "Address to listen on (env FLOWD_HOST).")
    var host: String = Environment.string("FLOWD_HOST") ?? "127.0.0.1"

    @Option(help: "Port to listen on; 0 picks a free port (env FLOWD_PORT).")
    var port: Int = Environment.int("FLOWD_PORT") ?? 50051

    @OptionGroup var data: DataDirectoryOption

    @Option(help: "Directory of workflow definitions (env FLOWD_WORKFLOWS_DIR).")
    var workflows: String = Environment.string("FLOWD_WORKFLOWS_DIR") ?? "workflows"

    @Option(help: "Event-loop threads (env FLOWD_THREADS; 0 means one per core).")
    var threads: Int = Environment.int("FLOWD_THREADS") ?? 0

    @Option(help: "Runs executed at once (env FLOWD_WORKERS, default 4). 0, with a PostgreSQL --store: this process accepts, serves and watches runs, and the processes with workers execute them.")
    var workers: Int?

    @Option(help: "Runs one tenant may execute at once (env FLOWD_WORKERS_PER_TENANT; default: all workers but a quarter, at least 1).")
    var workersPerTenant: Int?

    @Option(help: "CPU priority of the threads that execute runs, below the threads that answer calls: background (nice 10), utility (nice 2) or normal (env FLOWD_EXECUTION_PRIORITY, default background).")
    var executionPriority: String = Environment.string("FLOWD_EXECUTION_PRIORITY") ?? ExecutionExecutor.Priority.default.rawValue

    @Option(help: "Active runs per tenant (env ASYNC_WORKFLOW_MAX_CONCURRENT, default 50).")
    var maxConcurrent: Int?

    @Option(help: "Reaper: fail runs scheduled longer than this (env ZOMBIE_WORKFLOW_SCHEDULED_TIMEOUT_MINUTES, default 5).")
    var scheduledTimeoutMinutes: Int?

    @Option(help: "Reaper: fail runs without progress for longer (env ZOMBIE_WORKFLOW_RUNNING_TIMEOUT_MINUTES, default 30).")
    var runningTimeoutMinutes: Int?

    @Option(help: "Idempotency keys are honoured this long (env FLOWD_IDEMPOTENCY_TTL_HOURS, default 24).")
    var idempotencyTtlHours: Int?

    @Option(name: .customLong("exec-allow"),
            help: "A program exec nodes may run (repeatable; env FLOWD_EXEC_ALLOW, colon-separated).")
    var execAllow: [String] = Environment.string("FLOWD_EXEC_ALLOW")?.split(separator: ":").map(String.init) ?? []

    @Option(help: "exec programs: CPU seconds each (env FLOWD_EXEC_CPU_SECONDS, default 60).")
    var execCpuSeconds: Int = Environment.int("FLOWD_EXEC_CPU_SECONDS") ?? ProgramLimits().cpuSeconds

    @Option(help: "exec programs: bytes of address space (env FLOWD_EXEC_MEMORY_BYTES, default 1 GiB).")
    var execMemoryBytes: Int = Environment.int("FLOWD_EXEC_MEMORY_BYTES") ?? ProgramLimits().memoryBytes

    @Option(help: "exec programs: open files (env FLOWD_EXEC_OPEN_FILES, default 256).")
    var execOpenFiles: Int = Environment.int("FLOWD_EXEC_OPEN_FILES") ?? ProgramLimits().openFiles

    @Option(help: "exec programs: processes of the server's user, not enforced for root (env FLOWD_EXEC_PROCESSES, default 256).")
    var execProcesses: Int = Environment.int("FLOWD_EXEC_PROCESSES") ?? ProgramLimits().processes

    @Option(help: "exec programs: largest file written, bytes (env FLOWD_EXEC_FILE_SIZE_BYTES, default 64 MiB).")
    var execFileSizeBytes: Int = Environment.int("FLOWD_EXEC_FILE_SIZE_BYTES") ?? ProgramLimits().fileSizeBytes

    @Option(help: "Delete terminal runs and their events finished more than this many days ago, in batches, hourly; 0 keeps everything (env FLOWD_RETENTION_DAYS, default 30).")
    var retentionDays: Int = Environment.int("FLOWD_RETENTION_DAYS") ?? RetentionConfiguration().days

    @Option(help: "ListRuns: bytes of runs per page at most; a next_page_token continues (env FLOWD_LIST_PAGE_BYTES, default 1 MiB).")
    var listPageBytes: Int = Environment.int("FLOWD_LIST_PAGE_BYTES") ?? WorkflowsServiceConfiguration().maxPageBytes

    @Option(name: .customLong("egress-allow"), help: ArgumentHelp(
        "A network (CIDR), address or host name http nodes may reach although it is loopback, private, link-local, metadata, CGNAT or multicast (repeatable; env FLOWD_EGRESS_ALLOW, comma-separated).",
        valueName: "CIDR_OR_HOST"))
    var egressAllow: [String] = Environment.string("FLOWD_EGRESS_ALLOW").map(EgressPolicy.entries(environment:)) ?? []

    @Option(help: "REST streaming: seconds between `event: ping` lines (env FLOWD_REST_PING_INTERVAL_SECONDS, default 10).")
    var restPingIntervalSeconds: Int = Environment.int("FLOWD_REST_PING_INTERVAL_SECONDS") ?? 10

    @Option(help: ArgumentHelp(
        "GET /metrics (Prometheus text format) on the same port: on or off (env FLOWD_METRICS, default on).",
        discussion: "Served without an API key, as Prometheus scrapers expect: its labels name methods, routes, codes and states, never tenants, keys, runs or inputs. Turn it off, or firewall the port, where the volumes themselves must stay private."))
    var metrics: String = Environment.string("FLOWD_METRICS") ?? "on"

    @Option(help: ArgumentHelp(
        "Export the runs' spans over OTLP/HTTP (protobuf) to this collector, e.g. http://127.0.0.1:4318; /v1/traces is added to a URL without a path (env FLOWD_OTLP_ENDPOINT; default: none, nothing is exported).",
        valueName: "URL"))
    var otlpEndpoint: String?

    @Option(help: "PEM certificate chain: serve TLS on the same port, ALPN h2 and http/1.1 (env FLOWD_TLS_CERT; with --tls-key; SIGHUP reloads both).")
    var tlsCert: String?

    @Option(help: "PEM private key of --tls-cert (env FLOWD_TLS_KEY).")
    var tlsKey: String?

    @Flag(help: "Serve cleartext on a non-loopback --host without TLS: API keys then cross the network in clear (env FLOWD_ALLOW_PLAINTEXT=1).")
    var allowPlaintext: Bool = Environment.string("FLOWD_ALLOW_PLAINTEXT") == "1"

    @OptionGroup(title: "Connection limits and timeouts")
    var limits: ServeLimitOptions

    @Option(help: "Log level: trace, debug, info, notice, warning, error (env FLOWD_LOG_LEVEL).")
    var logLevel: String = Environment.string("FLOWD_LOG_LEVEL") ?? "info"

    func run() async throws {
        AllocatorTuning.reexecWithCacheSize(environment: ProcessInfo.processInfo.environment)
        AllocatorTuning.apply(environment: ProcessInfo.processInfo.environment)
        var logger = Logger(label: "flowd")
        guard let level = Logger.Level(rawValue: logLevel) else { throw ValidationError("unknown log level \(logLevel)") }
        logger.logLevel = level
        guard ["on", "off"].contains(metrics) else { throw ValidationError("--metrics must be on or off") }

        var engineConfiguration = EngineConfiguration()
        do {
            try engineConfiguration.apply(environment: ProcessInfo.processInfo.environment)
        } catch {
            throw ValidationError("\(error)")
        }
        if let workers, workers < 0 { throw ValidationError("--workers must be 0 or more") }
        guard let priority = ExecutionExecutor.Priority(rawValue: executionPriority) else {
            throw ValidationError("--execution-priority must be one of \(ExecutionExecutor.Priority.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        for (value, name) in [(workersPerTenant, "--workers-per-tenant"),
                              (maxConcurrent, "--max-concurrent"),
                              (scheduledTimeoutMinutes, "--scheduled-timeout-minutes"),
                              (runningTimeoutMinutes, "--running-timeout-minutes"),
                              (idempotencyTtlHours, "--idempotency-ttl-hours")] {
            if let value, value <= 0 { throw ValidationError("\(name) must be positive") }
        }
        if let workers { engineConfiguration.workerCount = workers }
        if engineConfiguration.workerCount == 0 && data.store == nil {
            // Alone on its SQLite file, such a process would accept runs that nothing executes.
            throw ValidationError("--workers 0 needs a PostgreSQL --store shared with processes that execute the runs")
        }
        if let workersPerTenant { engineConfiguration.workersPerTenant = workersPerTenant }
        if let maxConcurrent { engineConfiguration.admission.defaultConcurrencyLimit = maxConcurrent }
        if let scheduledTimeoutMinutes { engineConfiguration.reaper.scheduledTimeout = .seconds(60 * scheduledTimeoutMinutes) }
        if let runningTimeoutMinutes { engineConfiguration.reaper.runningTimeout = .seconds(60 * runningTimeoutMinutes) }
        if let idempotencyTtlHours { engineConfiguration.admission.idempotencyTTL = .seconds(3600 * idempotencyTtlHours) }

        let catalog: WorkflowCatalog
        do {
            catalog = try WorkflowCatalog.load(directory: URL(fileURLWithPath: workflows))
        } catch {
            throw ValidationError("workflows in \(workflows) are not valid:\n\(error)")
        }
        var runnerConfiguration = WorkflowRunnerConfiguration()
        runnerConfiguration.allowedPrograms = Set(execAllow)
        for (value, name) in [(execCpuSeconds, "--exec-cpu-seconds"), (execMemoryBytes, "--exec-memory-bytes"),
                              (execOpenFiles, "--exec-open-files"), (execProcesses, "--exec-processes"),
                              (execFileSizeBytes, "--exec-file-size-bytes")] where value <= 0 {
            throw ValidationError("\(name) must be positive")
        }
        runnerConfiguration.programLimits.cpuSeconds = execCpuSeconds
        runnerConfiguration.programLimits.memoryBytes = execMemoryBytes
        runnerConfiguration.programLimits.openFiles = execOpenFiles
        runnerConfiguration.programLimits.processes = execProcesses
        runnerConfiguration.programLimits.fileSizeBytes = execFileSizeBytes
        do {
            runnerConfiguration.egress = try EgressPolicy(allow: egressAllow)
        } catch {
            throw ValidationError("--egress-allow: \(error)")
        }

        // Before the Engine starts: its runs' spans go to the tracer installed then.
        let traceExport = try (otlpEndpoint ?? Environment.string("FLOWD_OTLP_ENDPOINT")).map { try TraceExport.bootstrap(endpoint: $0, logger: logger) }

        // Bootstrapped once, before the store opens (it records with `MetricsSystem.factory`),
        // so that libraries' metrics land in the same registry; the Engine and the server get
        // the factory explicitly.
        var serverMetrics: ServerMetrics?
        if metrics == "on" {
            let created = ServerMetrics()
            MetricsSystem.bootstrap(created.factory)
            serverMetrics = created
        }
        let store = try await data.openStore(logger: logger, executionQoS: priority.qos)
        let engine = Engine(store: store, executor: WorkflowRunner(catalog: catalog, configuration: runnerConfiguration),
                            workflows: catalog, configuration: engineConfiguration, logger: logger,
                            metrics: serverMetrics?.factory ?? NOOPMetricsHandler.instance,
                            executionExecutor: ExecutionExecutor.make(priority))
        serverMetrics?.beforeScrape = { await engine.metrics.refreshRunGauges() }
        let authenticator = Authenticator(keys: store)
        try await engine.start()

        var serverConfiguration = ServerConfiguration()
        serverConfiguration.host = host
        serverConfiguration.port = port
        if threads > 0 { serverConfiguration.eventLoopThreads = threads }
        try limits.apply(to: &serverConfiguration)
        switch (tlsCert ?? Environment.string("FLOWD_TLS_CERT"), tlsKey ?? Environment.string("FLOWD_TLS_KEY")) {
        case (let cert?, let key?):
            serverConfiguration.tls = ServerTLSFiles(certificateChainPath: cert, privateKeyPath: key)
        case (nil, nil):
            guard allowPlaintext || Self.isLoopback(host) else {
                throw ValidationError("--host \(host) is not a loopback address: serve it with --tls-cert and --tls-key, or pass --allow-plaintext to send API keys over the network in clear")
            }
        default:
            throw ValidationError("--tls-cert and --tls-key go together")
        }
        guard restPingIntervalSeconds > 0 else { throw ValidationError("--rest-ping-interval-seconds must be positive") }
        var restConfiguration = DifyWorkflowsAPIConfiguration()
        restConfiguration.pingInterval = .seconds(restPingIntervalSeconds)
        guard listPageBytes > 0 else { throw ValidationError("--list-page-bytes must be positive") }
        var serviceConfiguration = WorkflowsServiceConfiguration()
        serviceConfiguration.maxPageBytes = listPageBytes
        let health = HealthService()
        let server = GRPCServer(
            configuration: serverConfiguration,
            services: [health, WorkflowsService(engine: engine, authenticator: authenticator, configuration: serviceConfiguration),
                       ReflectionService()],
            http: DifyWorkflowsAPI(engine: engine, authenticator: authenticator, catalog: catalog,
                                   configuration: restConfiguration),
            metrics: serverMetrics, logger: logger, afterRequestBurst: { AllocatorTuning.trim() })
        let address = try await server.start()
        logger.info("serving", metadata: [
            "workflows": "\(catalog.workflows.keys.sorted().joined(separator: ","))", "store": "\(data.storeDescription)",
            "workers": "\(engineConfiguration.workerCount)",
            "glibc_tunables": "\(ProcessInfo.processInfo.environment["GLIBC_TUNABLES"] ?? "")",
        ])
        guard retentionDays >= 0 else { throw ValidationError("--retention-days must be 0 (keep everything) or more") }
        var retention = RetentionConfiguration()
        retention.days = retentionDays
        let purger = (store as? any RunRetentionStore).map { RetentionPurger(store: $0, configuration: retention, logger: logger) }
        let service = FlowdService(server: server, health: health, engine: engine, logger: logger, retention: purger,
                                   listening: "flowd: listening on \(address.ipAddress ?? host):\(address.port ?? port)")
        // Shut down in reverse order: the trace exporter last, flushing the spans of the last runs.
        let group = ServiceGroup(
            configuration: .init(services: (traceExport.map { [$0] } ?? []) + [service],
                                 gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}

/// Runs a started server under swift-service-lifecycle. On graceful shutdown: health turns
/// NOT_SERVING, connections drain (GOAWAY), then the Engine stops claiming and lets executing
/// runs finish within its grace period.
struct FlowdService: Service {
    let server: GRPCServer
    let health: HealthService
    let engine: Engine
    let logger: Logger
    /// Purges runs past the retention period while the server runs.
    let retention: RetentionPurger?
    /// Printed once the service runs: the service group has trapped SIGTERM and SIGINT by
    /// then, so a script that stops the server as soon as it sees this line stops it gracefully.
    let listening: String

    func run() async throws {
        // SIGHUP reloads the TLS certificate and key (a failure keeps the current ones). Trapped
        // before the listening line: an early SIGHUP would otherwise end the process.
        let signals = await UnixSignalsSequence(trapping: .sighup)
        let server = self.server, logger = self.logger
        let reloader = Task {
            for await _ in signals {
                do {
                    try server.reloadTLS()
                } catch {
                    logger.error("TLS reload failed; the current certificate stays", metadata: ["error": "\(error)"])
                }
            }
        }
        defer { reloader.cancel() }
        // Scripts wait for this line (and read the port from it when --port 0).
        print(listening)
        fflush(nil)  // all streams: the line must reach a pipe at once
        let purge = Task { await retention?.run() }
        defer { purge.cancel() }
        try await withGracefulShutdownHandler {
            try await server.run()
        } onGracefulShutdown: {
            health.markAllNotServing()
            server.beginGracefulShutdown()
        }
        await engine.shutdown()
    }
}

extension Serve {
    /// 127.0.0.0/8, ::1 and localhost.
    static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || host == "::1" || host == "[::1]" || host.hasPrefix("127.")
    }
}

/// Reads configuration from environment variables.
enum Environment {
    static func string(_ name: String) -> String? {
        guard let value = ProcessInfo.processInfo.environment[name], !value.isEmpty else { return nil }
        return value
    }

    static func int(_ name: String) -> Int? {
        string(name).flatMap { Int($0) }
    }

    static func double(_ name: String) -> Double? {
        string(name).flatMap { Double($0) }
    }
}

/// `flowd serve`'s limits on connections and streams (ServerConfiguration; README "Limits").
/// Times are in seconds (fractions allowed), sizes in MiB.
struct ServeLimitOptions: ParsableArguments {
    @Option(help: "Connections open at once (env FLOWD_MAX_CONNECTIONS, default 1024).")
    var maxConnections: Int = Environment.int("FLOWD_MAX_CONNECTIONS") ?? ServerConfiguration().maxConnections

    @Option(help: "Connections open at once from one IP address (env FLOWD_MAX_CONNECTIONS_PER_ADDRESS, default 64).")
    var maxConnectionsPerAddress: Int = Environment.int("FLOWD_MAX_CONNECTIONS_PER_ADDRESS")
        ?? ServerConfiguration().maxConnectionsPerAddress

    @Option(help: "Request bytes one connection may buffer, MiB (env FLOWD_CONNECTION_BUFFER_MIB, default 16).")
    var connectionBufferMib: Int = Environment.int("FLOWD_CONNECTION_BUFFER_MIB") ?? 16

    @Option(help: "Request bytes all connections together may buffer, MiB (env FLOWD_SERVER_BUFFER_MIB, default 256).")
    var serverBufferMib: Int = Environment.int("FLOWD_SERVER_BUFFER_MIB") ?? 256

    @Option(help: "Largest response message, MiB (env FLOWD_MAX_SEND_MESSAGE_MIB, default 16).")
    var maxSendMessageMib: Int = Environment.int("FLOWD_MAX_SEND_MESSAGE_MIB") ?? 16

    @Option(help: "Seconds before a connection without its HTTP/2 preface and SETTINGS is closed (env FLOWD_HANDSHAKE_TIMEOUT, default 10).")
    var handshakeTimeout: Double = Environment.double("FLOWD_HANDSHAKE_TIMEOUT") ?? 10

    @Option(help: "Seconds a connection without calls stays open (env FLOWD_IDLE_TIMEOUT, default 300).")
    var idleTimeout: Double = Environment.double("FLOWD_IDLE_TIMEOUT") ?? 300

    @Option(help: "Seconds a stream whose request is open may move no byte before it is reset (env FLOWD_STREAM_IDLE_TIMEOUT, default 60).")
    var streamIdleTimeout: Double = Environment.double("FLOWD_STREAM_IDLE_TIMEOUT") ?? 60

    @Option(help: "Seconds response bytes may wait for the client's flow-control window, or the socket stay unwritable, before the stream is reset or the connection closed (env FLOWD_WRITE_STALL_TIMEOUT, default 30).")
    var writeStallTimeout: Double = Environment.double("FLOWD_WRITE_STALL_TIMEOUT") ?? 30

    @Option(help: "Seconds after which a connection is drained with GOAWAY, plus or minus 10 % (env FLOWD_MAX_CONNECTION_AGE, default 7200).")
    var maxConnectionAge: Double = Environment.double("FLOWD_MAX_CONNECTION_AGE") ?? 7200

    @Option(help: "Seconds in-flight calls get to finish when a connection drains (env FLOWD_GRACE, default 30).")
    var grace: Double = Environment.double("FLOWD_GRACE") ?? 30

    @Option(help: "Longest grpc-timeout honoured, seconds; longer ones are lowered to it (env FLOWD_MAX_GRPC_TIMEOUT, default 86400).")
    var maxGrpcTimeout: Double = Environment.double("FLOWD_MAX_GRPC_TIMEOUT") ?? 86400

    func apply(to configuration: inout ServerConfiguration) throws {
        for (value, name) in [(maxConnections, "--max-connections"), (maxConnectionsPerAddress, "--max-connections-per-address"),
                              (connectionBufferMib, "--connection-buffer-mib"), (serverBufferMib, "--server-buffer-mib"),
                              (maxSendMessageMib, "--max-send-message-mib")] where value <= 0 {
            throw ValidationError("\(name) must be positive")
        }
        for (value, name) in [(handshakeTimeout, "--handshake-timeout"), (idleTimeout, "--idle-timeout"),
                              (streamIdleTimeout, "--stream-idle-timeout"), (writeStallTimeout, "--write-stall-timeout"),
                              (maxConnectionAge, "--max-connection-age"), (grace, "--grace"),
                              (maxGrpcTimeout, "--max-grpc-timeout")] where !(value > 0) || value > 1e9 {
            throw ValidationError("\(name) must be a positive number of seconds")
        }
        configuration.maxConnections = maxConnections
        configuration.maxConnectionsPerAddress = maxConnectionsPerAddress
        configuration.maxBufferedRequestBytesPerConnection = connectionBufferMib << 20
        configuration.maxBufferedRequestBytes = serverBufferMib << 20
        configuration.maxSendMessageSize = maxSendMessageMib << 20
        configuration.handshakeTimeout = ServerConfiguration.duration(seconds: handshakeTimeout)
        configuration.idleTimeout = ServerConfiguration.duration(seconds: idleTimeout)
        configuration.streamIdleTimeout = ServerConfiguration.duration(seconds: streamIdleTimeout)
        configuration.writeStallTimeout = ServerConfiguration.duration(seconds: writeStallTimeout)
        configuration.maxConnectionAge = ServerConfiguration.duration(seconds: maxConnectionAge)
        configuration.gracefulShutdownTimeout = ServerConfiguration.duration(seconds: grace)
        configuration.maxGRPCTimeout = ServerConfiguration.duration(seconds: maxGrpcTimeout)
    }
}
