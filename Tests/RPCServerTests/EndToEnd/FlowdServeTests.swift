import Foundation
import Testing

/// The `flowd` executable, built next to the test bundle by `swift build --build-tests`.
private let flowdBinary: URL = URL(fileURLWithPath: CommandLine.arguments[0])
    .deletingLastPathComponent().appendingPathComponent("flowd")

/// Runs a command to completion and returns its exit status and standard output.
private func run(_ arguments: [String]) async throws -> (status: Int32, output: String) {
    let child = try ChildProcess(arguments)
    let (status, output) = await child.finish(timeout: .seconds(120))
    return (status, output)
}

@Suite("The flowd executable end to end", .serialized)
struct FlowdServeTests {
    @Test("flowd serve with the example workflows: keys, blocking, async + watch + get, errors, graceful SIGTERM")
    func quickStart() async throws {
        #expect(FileManager.default.isExecutableFile(atPath: flowdBinary.path), "missing \(flowdBinary.path)")
        let data = FileManager.default.temporaryDirectory.appendingPathComponent("flowd-serve-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: data) }

        let server = try ChildProcess([flowdBinary.path, "serve", "--host", "127.0.0.1", "--port", "0",
                                       "--data-dir", data.path, "--workflows", "examples/workflows"])
        #expect(await server.waitForLine(startingWith: "flowd: listening on "))
        let (_, early) = server.snapshot()
        let port = try #require(early.split(separator: "\n").first { $0.hasPrefix("flowd: listening on ") }?
            .split(separator: ":").last.map(String.init))
        let target = "127.0.0.1:\(port)"

        let hello = try await run([flowdBinary.path, "keys", "create", "--tenant", "demo", "--workflow", "hello",
                                   "--data-dir", data.path])
        #expect(hello.status == 0)
        let helloKey = hello.output.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(helloKey.hasPrefix("flowd_") && !helloKey.contains("\n"), "the key is printed alone: \(hello.output)")
        let slowKey = try await run([flowdBinary.path, "keys", "create", "--tenant", "demo", "--workflow", "slow",
                                     "--data-dir", data.path]).output.trimmingCharacters(in: .whitespacesAndNewlines)

        let client = ["python3", "tools/interop/flowd_client.py", "--target", target]
        let blocking = try await run(client + ["--key", helloKey, "run", "--inputs", #"{"name":"Ada"}"#, "--mode", "blocking"])
        #expect(blocking.status == 0, "\(blocking.output)")
        #expect(blocking.output.contains("RUN_STATUS_SUCCEEDED"))
        #expect(blocking.output.contains(#"Hello, Ada!"#))

        let submitted = try await run(client + ["--key", slowKey, "run", "--inputs", #"{"seconds":1}"#, "--mode", "async"])
        #expect(submitted.output.contains("RUN_STATUS_SCHEDULED"), "\(submitted.output)")
        let json = try #require(submitted.output.range(of: "{").map { String(submitted.output[$0.lowerBound...]) })
        let object = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]
        let runID = try #require((object?["run"] as? [String: Any])?["id"] as? String)
        let watched = try await run(client + ["--key", slowKey, "watch", runID])
        let lines = watched.output.split(separator: "\n")
        #expect(lines.first?.contains("run_started") == true, "\(watched.output)")
        #expect(lines.last?.contains("run_finished") == true && lines.last?.contains("succeeded") == true)
        let polled = try await run(client + ["--key", slowKey, "get", runID])
        #expect(polled.output.contains("RUN_STATUS_SUCCEEDED"))

        // Another tenant's key sees NOT_FOUND; a bad key is UNAUTHENTICATED.
        let otherKey = try await run([flowdBinary.path, "keys", "create", "--tenant", "acme", "--workflow", "slow",
                                      "--data-dir", data.path]).output.trimmingCharacters(in: .whitespacesAndNewlines)
        let foreign = try await run(client + ["--key", otherKey, "get", runID])
        #expect(foreign.status == 1 && foreign.output.contains("NOT_FOUND"), "\(foreign.output)")
        let unauthenticated = try await run(client + ["--key", "flowd_nope", "get", runID])
        #expect(unauthenticated.status == 1 && unauthenticated.output.contains("UNAUTHENTICATED"))

        server.terminate()
        let (status, output) = await server.finish(timeout: .seconds(30))
        #expect(status == 0, "flowd serve exited with \(status):\n\(output)")
        #expect(output.contains("shutting down gracefully"))
        #expect(!output.contains(helloKey) && !output.contains("Ada"), "keys and inputs must not be logged")
    }

    @Test("flowd validate accepts the examples and rejects a bad definition with file, line, node and reason")
    func validate() async throws {
        let good = try await run([flowdBinary.path, "validate", "examples/workflows"])
        #expect(good.status == 0, "\(good.output)")
        for name in ["hello", "slow", "branch", "call-service"] { #expect(good.output.contains("ok  \(name)")) }

        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("flowd-validate-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        try """
            name: broken
            nodes:
              - id: one
                kind: tempalte
                config: { template: "x" }
              - { id: done, kind: end, needs: one, config: { outputs: {} } }
            """.write(to: directory.appendingPathComponent("broken.yaml"), atomically: true, encoding: .utf8)
        let bad = try await run([flowdBinary.path, "validate", directory.path])
        #expect(bad.status != 0)
        #expect(bad.output.contains("broken.yaml:3: node 'one': unknown node kind 'tempalte'"), "\(bad.output)")
    }

    @Test("the REST shim on the real binary over HTTP/1.1 and h2c (curl): blocking, async 202, SSE with pings, 401, 404",
          arguments: [("--http1.1", "1.1"), ("--http2-prior-knowledge", "2")])
    func restWithCurl(flag: String, version: String) async throws {
        let data = FileManager.default.temporaryDirectory.appendingPathComponent("flowd-rest-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: data) }
        let server = try ChildProcess([flowdBinary.path, "serve", "--host", "127.0.0.1", "--port", "0", "--data-dir", data.path,
                                       "--workflows", "examples/workflows", "--rest-ping-interval-seconds", "1"])
        #expect(await server.waitForLine(startingWith: "flowd: listening on "))
        let port = try #require(server.snapshot().output.split(separator: "\n")
            .first { $0.hasPrefix("flowd: listening on ") }?.split(separator: ":").last.map(String.init))
        let base = "http://127.0.0.1:\(port)"
        func key(_ workflow: String) async throws -> String {
            try await run([flowdBinary.path, "keys", "create", "--tenant", "demo", "--workflow", workflow, "--data-dir", data.path])
                .output.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        let hello = try await key("hello"), slow = try await key("slow")
        func curl(_ arguments: [String]) async throws -> String {
            try await run(["curl", "-s", flag, "--max-time", "30", "-w", "\n%{http_version} %{http_code}\n"] + arguments).output
        }
        func post(_ key: String, _ body: String, headers: Bool = false) async throws -> String {
            try await curl((headers ? ["-i"] : []) + ["-X", "POST", "\(base)/v1/workflows/run", "-H", "Authorization: Bearer \(key)",
                                                       "-H", "Content-Type: application/json", "-d", body])
        }

        let blocking = try await post(hello, #"{"inputs":{"name":"Ada"},"user":"u1","response_mode":"blocking"}"#)
        #expect(blocking.hasSuffix("\(version) 200"), "\(blocking)")
        #expect(blocking.contains(#""status": "succeeded", "outputs": {"greeting": "Hello, Ada!"}"#))

        let async = try await post(hello, #"{"inputs":{"name":"Bo"},"user":"u1","response_mode":"async"}"#, headers: true)
        #expect(async.hasSuffix("\(version) 202"), "\(async)")
        #expect(async.lowercased().contains("location: /v1/workflows/run/") && async.contains(#""status": "scheduled""#))

        let stream = try await post(slow, #"{"inputs":{"seconds":2},"user":"u1","response_mode":"streaming"}"#)
        let events = stream.split(separator: "\n").filter { $0.hasPrefix("data: ") }
        #expect(stream.hasSuffix("\(version) 200"), "\(stream)")
        #expect(events.first?.contains(#""event": "workflow_started""#) == true)
        #expect(events.last?.contains(#""event": "workflow_finished""#) == true)
        #expect(events.last?.contains(#""status": "succeeded""#) == true)
        #expect(stream.contains("\nevent: ping\n"), "no keep-alive ping in a 2 s stream with a 1 s interval")

        let unauthorized = try await curl(["-i", "\(base)/v1/workflows/logs"])
        #expect(unauthorized.hasSuffix("\(version) 401") && unauthorized.lowercased().contains(#"www-authenticate: bearer realm="api""#))
        let unknown = try await curl(["-H", "Authorization: Bearer \(hello)", "\(base)/v1/nope"])
        #expect(unknown.hasSuffix("\(version) 404") && unknown.contains(#""code": "not_found""#), "\(unknown)")

        server.terminate()
        let (status, _) = await server.finish(timeout: .seconds(30))
        #expect(status == 0)
    }
}
