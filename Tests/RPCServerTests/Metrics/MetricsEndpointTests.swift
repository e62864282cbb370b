import Engine
import Foundation
import NIOCore
import NIOHTTP1
import Testing
@testable import RPCServer

/// The value of one series (`name{labels}` exactly as emitted) in a text exposition.
private func sample(_ text: String, _ series: String) -> Double? {
    for line in text.split(separator: "\n") where line.hasPrefix(series + " ") {
        return Double(line.dropFirst(series.count + 1))
    }
    return nil
}

/// The `flowd` executable, built next to the test bundle by `swift build --build-tests`.
private let flowdBinary: URL = URL(fileURLWithPath: CommandLine.arguments[0])
    .deletingLastPathComponent().appendingPathComponent("flowd")

/// Answers every request with 200 and an empty body.
private struct OKHandler: HTTPRequestHandling {
    func respond(to request: HTTPRequest) async -> HTTPResponse {
        HTTPResponse(status: .ok, body: .full(ByteBuffer()))
    }
}

@Suite("GET /metrics (issue 14)", .serialized)
struct MetricsEndpointTests {
    @Test("after a known workload over gRPC, REST and h2c, prometheus-client's parser reads the exact counts from /metrics")
    func scrapeAfterWorkload() async throws {
        var engineConfiguration = EngineConfiguration()
        engineConfiguration.workerCount = 1
        engineConfiguration.reaperEnabled = false
        let registryOwner = ServerMetrics()
        try await APIFixture.with(configuration: engineConfiguration, metrics: registryOwner) { fixture in
            try await fixture.engine.setConcurrencyLimit(tenant: "limited", limit: 0)
            var metrics = registryOwner
            metrics.beforeScrape = { await fixture.engine.metrics.refreshRunGauges() }
            let maxPings = 100
            let workflows = WorkflowsService(engine: fixture.engine, authenticator: fixture.authenticator)
            let rest = DifyWorkflowsAPI(engine: fixture.engine, authenticator: fixture.authenticator)
            try await withTestServer(services: [HealthService(), workflows], http: rest, metrics: metrics,
                                     configure: { $0.maxPingsPerWindow = maxPings }) { _, port in
                let child = try ChildProcess(["python3", "tools/interop/metrics_check.py", "--target", "127.0.0.1:\(port)",
                                              "--key", fixture.acme.key, "--limit-key", fixture.limited.key,
                                              "--max-pings", "\(maxPings)"])
                let (status, output) = await child.finish(timeout: .seconds(180))
                print(output)
                #expect(status == 0, "metrics_check.py failed:\n\(output)")
                #expect(output.contains(" 0 failed"))

                // Group commit, exactly: the scrape agrees with the store's own counters. Idle
                // workers still claim now and then, so retry until no commit fell in between.
                var agreed = false
                for _ in 0..<50 where !agreed {
                    let before = fixture.store.commitStatistics
                    let text = String(decoding: await metrics.scrape(), as: UTF8.self)
                    let after = fixture.store.commitStatistics
                    agreed = before == after
                        && sample(text, #"flowd_store_group_commit_batch_size_count{store="sqlite"}"#) == Double(after.transactions)
                        && sample(text, #"flowd_store_group_commit_batch_size_sum{store="sqlite"}"#) == Double(after.writes)
                }
                #expect(agreed, "the scrape never matched the store's commit statistics")
            }
        }
    }

    @Test("REST route labels are the route templates; any other path is `other`")
    func routeLabels() {
        #expect(RESTRoute(RESTPath("/metrics")) == .metrics)
        #expect(RESTRoute(RESTPath("/v1/workflows/run")) == .run)
        #expect(RESTRoute(RESTPath("/v1/workflows/run/0192-abc")) == .getRun)
        #expect(RESTRoute(RESTPath("/v1/workflows/tasks/0192-abc/stop")) == .stop)
        #expect(RESTRoute(RESTPath("/v1/workflows/logs")) == .logs)
        #expect(RESTRoute(RESTPath("/v1/parameters")) == .parameters)
        #expect(RESTRoute(RESTPath("/v1/info")) == .info)
        for path in ["/", "/metrics/x", "/v1/workflows/run/", "/v1/workflows/tasks//stop", "/v1/workflows/run/a/b",
                     "/wp-login.php", "/v1/info/"] {
            #expect(RESTRoute(RESTPath(path)) == .other, "\(path)")
        }
        #expect(RESTRoute.methodLabel(.GET) == "GET")
        #expect(RESTRoute.methodLabel(.RAW(value: "BREW")) == "other")
    }

    @Test("/metrics answers GET only, and is the wrapped handler's path when the server has no ServerMetrics")
    func endpoint() async {
        let metrics = ServerMetrics()
        let transport = TransportMetrics(factory: metrics.factory)
        let served = MetricsHTTPHandler(inner: OKHandler(), metrics: transport, endpoint: metrics)
        let get = await served.respond(to: HTTPRequest(method: .GET, uri: "/metrics?x=1", headers: [:], body: ByteBuffer()))
        #expect(get.status == .ok)
        #expect(get.headers.first(name: "content-type") == "text/plain; version=0.0.4; charset=utf-8")
        let post = await served.respond(to: HTTPRequest(method: .POST, uri: "/metrics", headers: [:], body: ByteBuffer()))
        #expect(post.status == .methodNotAllowed)
        let passThrough = MetricsHTTPHandler(inner: NotFoundHandler(), metrics: transport, endpoint: nil)
        let unserved = await passThrough.respond(to: HTTPRequest(method: .GET, uri: "/metrics", headers: [:], body: ByteBuffer()))
        #expect(unserved.status == .notFound)
        let text = String(decoding: metrics.registry.emitToBuffer(), as: UTF8.self)
        #expect(sample(text, #"flowd_http_requests_total{route="/metrics",method="GET",code="200"}"#) == 1)
        #expect(sample(text, #"flowd_http_requests_total{route="/metrics",method="POST",code="405"}"#) == 1)
        #expect(sample(text, #"flowd_http_requests_total{route="/metrics",method="GET",code="404"}"#) == 1)
    }

    @Test("flowd serve: /metrics over HTTP/1.1 and h2c (curl) counts a blocking run; --metrics off is 404; a bad value is refused")
    func serve() async throws {
        let data = FileManager.default.temporaryDirectory.appendingPathComponent("flowd-metrics-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: data) }
        func start(_ extra: [String]) async throws -> (ChildProcess, String) {
            let server = try ChildProcess([flowdBinary.path, "serve", "--host", "127.0.0.1", "--port", "0", "--data-dir", data.path,
                                           "--workflows", "examples/workflows"] + extra)
            #expect(await server.waitForLine(startingWith: "flowd: listening on "))
            let port = try #require(server.snapshot().output.split(separator: "\n")
                .first { $0.hasPrefix("flowd: listening on ") }?.split(separator: ":").last.map(String.init))
            return (server, "http://127.0.0.1:\(port)")
        }
        func run(_ arguments: [String]) async throws -> String {
            try await ChildProcess(arguments).finish(timeout: .seconds(60)).output
        }
        let key = try await run([flowdBinary.path, "keys", "create", "--tenant", "demo", "--workflow", "hello",
                                 "--data-dir", data.path]).trimmingCharacters(in: .whitespacesAndNewlines)

        let (server, base) = try await start([])
        let blocking = try await run(["curl", "-s", "--max-time", "30", "-X", "POST", "\(base)/v1/workflows/run",
                                      "-H", "Authorization: Bearer \(key)", "-H", "Content-Type: application/json",
                                      "-d", #"{"inputs":{"name":"Ada"},"user":"u1","response_mode":"blocking"}"#])
        #expect(blocking.contains("Hello, Ada!"), "\(blocking)")
        for flag in ["--http1.1", "--http2-prior-knowledge"] {
            let text = try await run(["curl", "-s", flag, "--max-time", "30", "\(base)/metrics"])
            #expect(sample(text, #"flowd_submissions_total{outcome="created"}"#) == 1, "\(flag):\n\(text)")
            #expect(sample(text, #"flowd_runs_finished_total{state="succeeded"}"#) == 1)
            #expect(sample(text, #"flowd_http_requests_total{route="/v1/workflows/run",method="POST",code="200"}"#) == 1)
            #expect(sample(text, #"flowd_store_group_commit_batch_size_count{store="sqlite"}"#).map { $0 >= 1 } == true)
        }
        server.terminate()
        #expect(await server.finish(timeout: .seconds(30)).status == 0)

        let (quiet, quietBase) = try await start(["--metrics", "off"])
        let off = try await run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "30", "\(quietBase)/metrics"])
        #expect(off == "404")
        quiet.terminate()
        #expect(await quiet.finish(timeout: .seconds(30)).status == 0)

        let bad = try ChildProcess([flowdBinary.path, "serve", "--port", "0", "--data-dir", data.path, "--metrics", "maybe"])
        let (status, output) = await bad.finish(timeout: .seconds(30))
        #expect(status != 0 && output.contains("--metrics must be on or off"), "\(output)")
    }
}
