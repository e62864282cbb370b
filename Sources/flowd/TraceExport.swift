import ArgumentParser
import Foundation
import Logging
import OTel
import ServiceLifecycle
import Tracing

/// `flowd serve --otlp-endpoint`: the runs' spans exported over OTLP/HTTP (protobuf) by
/// swift-otel. Without the flag nothing is bootstrapped: the process keeps the `NoOpTracer`,
/// and spans cost nothing but the trace context still reaches the services `http` nodes call.
enum TraceExport {
    /// The URL spans are posted to: `endpoint` as given when it has a path, else with the
    /// OTLP/HTTP traces path `/v1/traces` (as `OTEL_EXPORTER_OTLP_ENDPOINT` is read).
    static func tracesURL(_ endpoint: String) throws(ValidationError) -> String {
        guard let url = URL(string: endpoint), let scheme = url.scheme?.lowercased(), ["http", "https"].contains(scheme),
              let host = url.host, !host.isEmpty else {
            throw ValidationError("--otlp-endpoint must be an http or https URL, e.g. http://127.0.0.1:4318")
        }
        guard url.path.isEmpty || url.path == "/" else { return endpoint }
        return (endpoint.hasSuffix("/") ? endpoint : endpoint + "/") + "v1/traces"
    }

    /// Bootstraps the process's tracer with an OTLP/HTTP exporter to `endpoint`; the returned
    /// service exports the batched spans, and flushes them on graceful shutdown. Once per process.
    static func bootstrap(endpoint: String, logger: Logger) throws -> any Service {
        var configuration = OTel.Configuration.default
        configuration.serviceName = "flowd"
        configuration.diagnosticLogger = .custom(logger)
        configuration.diagnosticLogLevel = .warning
        configuration.logs.enabled = false
        configuration.metrics.enabled = false
        configuration.traces.exporter = .otlp
        configuration.traces.otlpExporter.protocol = .httpProtobuf
        configuration.traces.otlpExporter.endpoint = try tracesURL(endpoint)
        let backend = try OTel.makeTracingBackend(configuration: configuration)
        InstrumentationSystem.bootstrap(backend.factory)
        return backend.service
    }
}
