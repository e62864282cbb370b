import Foundation
import Testing

/// The `flowd` executable, built next to the test bundle by `swift build --build-tests`.
private let flowdBinary: URL = URL(fileURLWithPath: CommandLine.arguments[0])
    .deletingLastPathComponent().appendingPathComponent("flowd")

private func run(_ arguments: [String]) async throws -> (status: Int32, output: String) {
    let child = try ChildProcess(arguments)
    return await child.finish(timeout: .seconds(120))
}

/// A real `flowd serve` with the example workflows on a fresh data directory.
private struct Served {
    let server: ChildProcess
    let data: URL
    let target: String

    static func start(_ extra: [String] = [], environment: [String] = [], workflows: String = "examples/workflows") async throws -> Served {
        let data = FileManager.default.temporaryDirectory.appendingPathComponent("flowd-fencing-\(UUID().uuidString)")
        let server = try ChildProcess(["env"] + environment + [flowdBinary.path, "serve", "--host", "127.0.0.1", "--port", "0",
                                                               "--data-dir", data.path, "--workflows", workflows] + extra)
        #expect(await server.waitForLine(startingWith: "flowd: listening on "))
        let port = try #require(server.snapshot().output.split(separator: "\n")
            .first { $0.hasPrefix("flowd: listening on ") }?.split(separator: ":").last.map(String.init))
        return Served(server: server, data: data, target: "127.0.0.1:\(port)")
    }

    func key(tenant: String = "demo", _ workflow: String) async throws -> String {
        try await run([flowdBinary.path, "keys", "create", "--tenant", tenant, "--workflow", workflow, "--data-dir", data.path])
            .output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func client(_ key: String, _ arguments: [String]) async throws -> (status: Int32, output: String) {
        try await run([flowdBinary.path] + arguments + ["--server", target, "--key", key, "--json"])
    }

    func stop() async -> (status: Int32, output: String) {
        server.terminate()
        let result = await server.finish(timeout: .seconds(30))
        try? FileManager.default.removeItem(at: data)
        return result
    }
}

/// A loopback HTTP server in a Python child: `/` answers 302 to `/file` on the same server,
/// `/file` answers a JSON "secret". Prints `port N` once listening.
private func startBouncer() async throws -> (ChildProcess, Int) {
    let script = """
        import http.server, json, sys
        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a): pass
            def do_POST(self): self.do_GET()
            def do_GET(self):
                if self.path.startswith('/echo'):
                    seen = self.headers.get('authorization', '')
                    body = (json.dumps({'seen': seen}) if self.path == '/echo' else 'rejected ' + seen).encode()
                    self.send_response(200 if self.path == '/echo' else 401)
                    self.send_header('content-type', 'application/json' if self.path == '/echo' else 'text/plain')
                    self.send_header('content-length', str(len(body))); self.end_headers(); self.wfile.write(body)
                elif self.path.startswith('/file'):
                    body = json.dumps({'aws_secret': 'LEAKED'}).encode()
                    self.send_response(200); self.send_header('content-type', 'application/json')
                    self.send_header('content-length', str(len(body))); self.end_headers(); self.wfile.write(body)
                else:
                    self.send_response(302); self.send_header('location', 'http://127.0.0.1:%d/file' % port)
                    self.send_header('content-length', '0'); self.end_headers()
        s = http.server.HTTPServer(('127.0.0.1', 0), H)
        port = s.server_address[1]
        print('port', port, flush=True)
        s.serve_forever()
        """
    let child = try ChildProcess(["python3", "-u", "-c", script])
    #expect(await child.waitForLine(startingWith: "port "))
    let port = try #require(child.snapshot().output.split(separator: "\n").first { $0.hasPrefix("port ") }
        .flatMap { Int($0.dropFirst(5)) })
    return (child, port)
}

@Suite("Fences on the real binary: egress policy of http nodes, keys scoped to their workflow", .serialized)
struct FencingTests {
    @Test("SSRF through call-service: loopback (and its redirect), metadata, [::1], 2130706433 and 0x7f.1 are refused; the allow-list lets the loopback server answer, and its 302 is not followed")
    func ssrf() async throws {
        let (bouncer, port) = try await startBouncer()
        defer { bouncer.kill() }
        let served = try await Served.start()
        let key = try await served.key("call-service")
        var answers: [String] = []
        for url in ["http://127.0.0.1:\(port)/", "http://169.254.169.254/latest/meta-data/", "http://[::1]:\(port)/",
                    "http://2130706433:\(port)/", "http://0x7f.1:\(port)/"] {
            let result = try await served.client(key, ["run", "call-service", "--inputs", #"{"url": "\#(url)"}"#])
            #expect(result.status == 2, "\(url): \(result.output)")  // the run failed
            #expect(result.output.contains("refused: host"), "\(url): \(result.output)")
            #expect(!result.output.contains("LEAKED"))
            let error = try #require(result.output.split(separator: "\n").compactMap { line in
                (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
            }.first { $0["type"] as? String == "run" }?["error"] as? String)
            answers.append(error)
        }
        print("SSRF answers without an allow-list:\n" + answers.joined(separator: "\n"))
        let log = await served.stop()
        #expect(!log.output.contains("LEAKED"))

        // The operator allows loopback: the server is reached, its redirect is not followed.
        let allowed = try await Served.start(["--egress-allow", "127.0.0.1"])
        let allowedKey = try await allowed.key("call-service")
        let result = try await allowed.client(allowedKey, ["run", "call-service", "--inputs", #"{"url": "http://127.0.0.1:\#(port)/?token=abc"}"#])
        #expect(result.status == 2, "\(result.output)")
        #expect(result.output.contains("answered HTTP 302 Found (a redirect; this node does not follow redirects"), "\(result.output)")
        let error = try #require(result.output.split(separator: "\n").compactMap { line in
            (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
        }.first { $0["type"] as? String == "run" }?["error"] as? String)
        #expect(!result.output.contains("LEAKED") && !error.contains("token=abc"), "\(result.output)")
        print("With --egress-allow 127.0.0.1: " + error)
        _ = await allowed.stop()

        // The environment variable says the same.
        let viaEnvironment = try await Served.start(environment: ["FLOWD_EGRESS_ALLOW=127.0.0.0/8,::1"])
        let environmentKey = try await viaEnvironment.key("call-service")
        let numeric = try await viaEnvironment.client(environmentKey, ["run", "call-service", "--inputs", #"{"url": "http://2130706433:\#(port)/"}"#])
        #expect(numeric.output.contains("answered HTTP 302 Found"), "\(numeric.output)")
        _ = await viaEnvironment.stop()

        let bad = try await run([flowdBinary.path, "serve", "--port", "0", "--workflows", "examples/workflows",
                                 "--egress-allow", "10.0.0.0/99"])
        #expect(bad.status != 0 && bad.output.contains("'10.0.0.0/99' is not a CIDR"), "\(bad.output)")
    }

    @Test("a credential in a definition, echoed by the upstream in its body and its error, is absent from every event, output, error and log line")
    func secretNeverShown() async throws {
        let (bouncer, port) = try await startBouncer()
        defer { bouncer.kill() }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("flowd-secret-wf-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let secret = "sk-live-7f3a9c1e5b"
        try """
            name: partner
            inputs: { path: { type: string, default: /echo } }
            nodes:
              - id: call
                kind: http
                config:
                  url: "http://127.0.0.1:\(port){{inputs.path}}"
                  headers: { authorization: "Bearer \(secret)" }
              - id: copy
                kind: template
                needs: call
                config: { template: "upstream saw {{call.body.seen}}" }
              - id: done
                kind: end
                needs: [call, copy]
                config: { outputs: { body: "{{call.body}}", text: "{{copy.text}}" } }
            """.write(to: directory.appendingPathComponent("partner.yaml"), atomically: true, encoding: .utf8)
        let served = try await Served.start(["--egress-allow", "127.0.0.1", "--log-level", "debug"], workflows: directory.path)
        let key = try await served.key("partner")
        let ok = try await served.client(key, ["run", "partner"])
        #expect(ok.status == 0 && ok.output.contains("upstream saw [redacted]"), "\(ok.output)")
        let failed = try await served.client(key, ["run", "partner", "--inputs", #"{"path": "/echo-fail"}"#])
        #expect(failed.status == 2 && failed.output.contains("answered HTTP 401 Unauthorized: rejected Bearer [redacted]"), "\(failed.output)")
        var seen = ok.output + failed.output
        for output in [ok.output, failed.output] {
            let runID = try #require(output.split(separator: "\n").compactMap { line in
                (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
            }.first { $0["type"] as? String == "run" }?["id"] as? String)
            seen += try await served.client(key, ["watch", runID]).output  // every stored event
            seen += try await served.client(key, ["get", runID]).output
            let base = "http://\(served.target)"
            seen += try await run(["curl", "-s", "-H", "Authorization: Bearer \(key)", "\(base)/v1/workflows/run/\(runID)"]).output
        }
        seen += try await run(["curl", "-s", "-H", "Authorization: Bearer \(key)", "http://\(served.target)/v1/workflows/logs"]).output
        let log = await served.stop()
        #expect(seen.contains("[redacted]") && seen.contains("node_finished") && seen.contains("\"outputs\""), "\(seen)")
        #expect(!seen.contains(secret), "the secret reached a caller: \(seen)")
        #expect(!log.output.contains(secret), "the secret reached the server's log")
        #expect(log.output.contains("debug"), "the log was at debug level: \(log.output.prefix(300))")
    }

    @Test("ListRuns of 100 runs with 1 MB inputs: every page stays under the 1 MiB bound, a token continues, each run once")
    func listRunsBoundedByBytes() async throws {
        // Pages are the subject, not the tenant's concurrency guard (50 by default): runs execute
        // below the wire (--execution-priority), so on a busy machine 100 quick submissions can
        // be ahead of their execution by more than 50 (a CI run answered RESOURCE_EXHAUSTED).
        let served = try await Served.start(["--max-concurrent", "1000"])
        let key = try await served.key("call-service")
        // The runs fail at once (the egress policy refuses the URL): only their size matters.
        let large = try await run(["python3", "tools/interop/list_bound_check.py", "--target", served.target, "--key", key,
                                   "--workflow", "call-service", "--field", "message", "--extra", #"{"url": "http://127.0.0.1:9/"}"#,
                                   "--runs", "100", "--input-bytes", "1000000", "--bound", "1048576"])
        print(large.output.split(separator: "\n").suffix(3).joined(separator: "\n"))
        #expect(large.status == 0, "\(large.output)")
        #expect(large.output.contains("100 runs of 1000000 input bytes: 100 pages"), "\(large.output)")
        // Smaller runs share a page up to the bound (hello's output repeats its input).
        let helloKey = try await served.key("hello")
        let small = try await run(["python3", "tools/interop/list_bound_check.py", "--target", served.target, "--key", helloKey,
                                   "--workflow", "hello", "--field", "name", "--runs", "30", "--input-bytes", "100000",
                                   "--bound", "1048576"])
        print(small.output.split(separator: "\n").suffix(2).joined(separator: "\n"))
        #expect(small.status == 0, "\(small.output)")
        #expect(small.output.contains("30 runs of 100000 input bytes: 6 pages"), "\(small.output)")
        _ = await served.stop()
    }

    @Test("a key of workflow A gets the same NOT_FOUND for a run of workflow B as for a run that does not exist (gRPC and REST)")
    func keysScopedToTheirWorkflow() async throws {
        let served = try await Served.start()
        let hello = try await served.key("hello"), slow = try await served.key("slow")
        let submitted = try await served.client(slow, ["run", "slow", "--inputs", #"{"seconds": 30}"#, "--mode", "async"])
        let runObject = try #require(submitted.output.split(separator: "\n").compactMap { line in
            (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
        }.first { $0["type"] as? String == "run" })
        let runID = try #require(runObject["id"] as? String)
        let missing = UUID().uuidString.lowercased()

        for command in [["get"], ["watch"], ["stop"]] {
            let foreign = try await served.client(hello, command + [runID])
            let absent = try await served.client(hello, command + [missing])
            #expect(foreign.status == 5 && absent.status == 5, "\(command): \(foreign.output)")
            #expect(foreign.output.replacingOccurrences(of: runID, with: "ID") == absent.output.replacingOccurrences(of: missing, with: "ID"),
                    "\(command): \(foreign.output) vs \(absent.output)")
            if command == ["get"] { print("NOT_FOUND for workflow B's run with A's key: \(foreign.output)") }
        }
        let listed = try await served.client(hello, ["runs"])
        #expect(!listed.output.contains(runID), "\(listed.output)")
        let listedOther = try await served.client(hello, ["runs", "--workflow", "slow"])
        #expect(!listedOther.output.contains(runID), "\(listedOther.output)")
        // Still running: the stop with the wrong key did nothing.
        let own = try await served.client(slow, ["get", runID])
        #expect(own.output.contains(#""status":"running""#) || own.output.contains(#""status":"scheduled""#), "\(own.output)")

        // REST: the same 404 body for the foreign and the missing run; logs do not list it.
        let base = "http://\(served.target)"
        func curl(_ path: String) async throws -> String {
            try await run(["curl", "-s", "--max-time", "30", "-w", "\n%{http_code}", "-H", "Authorization: Bearer \(hello)", base + path]).output
        }
        let foreign = try await curl("/v1/workflows/run/\(runID)")
        let absent = try await curl("/v1/workflows/run/\(missing)")
        #expect(foreign.hasSuffix("404"), "\(foreign)")
        #expect(foreign.replacingOccurrences(of: runID, with: "ID") == absent.replacingOccurrences(of: missing, with: "ID"))
        let logs = try await curl("/v1/workflows/logs")
        #expect(!logs.contains(runID))
        _ = try await served.client(slow, ["stop", runID])

        // The data directory and the store's files are the server user's alone.
        let attributes = { (path: String) in (try? FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int) ?? -1 }
        #expect(attributes(served.data.path) == 0o700)
        let files = try FileManager.default.contentsOfDirectory(atPath: served.data.path).filter { $0.hasPrefix("flowd.sqlite") }
        #expect(files.contains("flowd.sqlite") && files.contains("flowd.sqlite-wal"), "\(files)")
        for file in files {
            #expect(attributes(served.data.appendingPathComponent(file).path) == 0o600, "\(file)")
        }
        _ = await served.stop()
    }
}
