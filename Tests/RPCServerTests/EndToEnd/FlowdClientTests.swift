import Foundation
import NIOCore
import NIOPosix
import Testing

/// The `flowd` executable, built next to the test bundle by `swift build --build-tests`.
private let flowdBinary: URL = URL(fileURLWithPath: CommandLine.arguments[0])
    .deletingLastPathComponent().appendingPathComponent("flowd")

/// A real `flowd serve` on 127.0.0.1:0 with a fresh data directory, the example workflows and
/// `refused`, which fails at once (its exec node's program is not on the allow-list).
private final class ServerUnderTest: Sendable {
    let data: URL
    let workflows: URL
    let server: ChildProcess
    let port: Int

    /// `serveArguments` are added to `flowd serve`'s.
    init(serveArguments: [String] = []) async throws {
        let files = FileManager.default
        data = files.temporaryDirectory.appendingPathComponent("flowd-client-\(UUID().uuidString)")
        workflows = data.appendingPathExtension("workflows")
        try files.createDirectory(at: workflows, withIntermediateDirectories: true)
        let examples = repositoryRoot.appendingPathComponent("examples/workflows")
        for name in try files.contentsOfDirectory(atPath: examples.path) where name.hasSuffix(".yaml") {
            try files.copyItem(at: examples.appendingPathComponent(name), to: workflows.appendingPathComponent(name))
        }
        try """
            name: refused
            version: "1"
            nodes:
              - { id: work, kind: exec, config: { program: /bin/false } }
              - { id: done, kind: end, needs: work, config: { outputs: {} } }
            """.write(to: workflows.appendingPathComponent("refused.yaml"), atomically: true, encoding: .utf8)
        server = try ChildProcess([flowdBinary.path, "serve", "--host", "127.0.0.1", "--port", "0",
                                   "--data-dir", data.path, "--workflows", workflows.path] + serveArguments)
        #expect(await server.waitForLine(startingWith: "flowd: listening on "))
        port = try #require(server.snapshot().output.split(separator: "\n")
            .first { $0.hasPrefix("flowd: listening on ") }?.split(separator: ":").last.flatMap { Int($0) })
    }

    var target: String { "127.0.0.1:\(port)" }

    func key(tenant: String = "demo", workflow: String) async throws -> String {
        try await run([flowdBinary.path, "keys", "create", "--tenant", tenant, "--workflow", workflow,
                       "--data-dir", data.path]).output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func stop() async {
        server.terminate()
        _ = await server.finish(timeout: .seconds(30))
        try? FileManager.default.removeItem(at: data)
        try? FileManager.default.removeItem(at: workflows)
    }
}

/// Runs a command to completion: its exit status and its output (stdout and stderr).
private func run(_ arguments: [String]) async throws -> (status: Int32, output: String) {
    let child = try ChildProcess(arguments)
    return await child.finish(timeout: .seconds(120))
}

/// `flowd` as a client of `server` with `key`.
private func client(_ server: ServerUnderTest, _ key: String, _ arguments: [String]) async throws -> (status: Int32, output: String) {
    try await run([flowdBinary.path] + arguments + ["--server", server.target, "--key", key])
}

/// The JSON objects among the lines of `output` (stderr lines that are not JSON are skipped).
private func jsonLines(_ output: String) -> [[String: Any]] {
    output.split(separator: "\n").compactMap { line in
        try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
    }
}

/// The sequence numbers of the events among `lines`, in the order shown.
private func sequences(_ lines: [[String: Any]]) -> [Int] {
    lines.filter { $0["type"] as? String == "event" }.compactMap { ($0["sequence"] as? NSNumber)?.intValue }
}

@Suite("flowd as a client of a real server", .serialized)
struct FlowdClientTests {
    @Test("run (blocking, async, stream), get, watch, stop and runs work against flowd serve, in plain text and --json")
    func subcommands() async throws {
        let server = try await ServerUnderTest()
        let hello = try await server.key(workflow: "hello")
        let slow = try await server.key(workflow: "slow")

        let blocking = try await client(server, hello, ["run", "hello", "--input", "name=Ada"])
        #expect(blocking.status == 0, "\(blocking.output)")
        #expect(blocking.output.contains("status    succeeded") && blocking.output.contains("Hello, Ada!"), "\(blocking.output)")

        let blockingJSON = try await client(server, hello, ["run", "hello", "--inputs", #"{"name":"Bo"}"#, "--json"])
        let object = try #require(jsonLines(blockingJSON.output).first, "\(blockingJSON.output)")
        #expect(blockingJSON.status == 0 && object["status"] as? String == "succeeded" && object["created"] as? Bool == true)
        #expect((object["outputs"] as? [String: Any])?["greeting"] as? String == "Hello, Bo!")
        #expect(object["type"] as? String == "run" && object["triggered_from"] as? String == "api-blocking")

        let submitted = try await client(server, slow, ["run", "slow", "--input", "seconds=1", "--mode", "async", "--json"])
        #expect(submitted.status == 0, "\(submitted.output)")
        let scheduled = try #require(jsonLines(submitted.output).first)
        #expect(scheduled["status"] as? String == "scheduled")
        let runID = try #require(scheduled["id"] as? String)

        let watched = try await client(server, slow, ["watch", runID, "--json"])
        #expect(watched.status == 0, "\(watched.output)")
        let events = jsonLines(watched.output)
        #expect(sequences(events) == Array(1...(sequences(events).count)), "gap or duplicate: \(watched.output)")
        #expect(events.first?["event"] as? String == "run_started")
        #expect(events.last?["event"] as? String == "run_finished")
        #expect((events.last?["run"] as? [String: Any])?["status"] as? String == "succeeded")
        #expect(events.contains { $0["event"] as? String == "node_finished" && $0["node_id"] as? String == "fourth_quarter" })

        let resumed = try await client(server, slow, ["watch", runID, "--after", "5", "--json"])
        #expect(sequences(jsonLines(resumed.output)).first == 6, "\(resumed.output)")

        let plainWatch = try await client(server, slow, ["watch", runID])
        let plainLines = plainWatch.output.split(separator: "\n")
        #expect(plainLines.first?.hasPrefix("1\t") == true && plainLines.first?.contains("run_started") == true, "\(plainWatch.output)")
        #expect(plainLines.last?.contains("run_finished") == true && plainLines.last?.contains("succeeded") == true)

        let fromEnvironment = try await run(["FLOWD_SERVER=\(server.target)", "FLOWD_API_KEY=\(slow)", flowdBinary.path,
                                             "get", runID, "--json"])
        #expect(fromEnvironment.status == 0 && jsonLines(fromEnvironment.output).first?["id"] as? String == runID,
                "FLOWD_SERVER and FLOWD_API_KEY: \(fromEnvironment.output)")

        let first = try await client(server, hello, ["run", "hello", "--input", "name=Ed", "--idempotency-key", "k-1", "--json"])
        let again = try await client(server, hello, ["run", "hello", "--input", "name=Ed", "--idempotency-key", "k-1", "--json"])
        let (firstRun, againRun) = (try #require(jsonLines(first.output).first), try #require(jsonLines(again.output).first))
        #expect(firstRun["created"] as? Bool == true && againRun["created"] as? Bool == false)
        #expect(againRun["id"] as? String == firstRun["id"] as? String, "a replay is the same run")
        let reused = try await client(server, hello, ["run", "hello", "--input", "name=Flo", "--idempotency-key", "k-1"])
        #expect(reused.status == 10 && reused.output.hasPrefix("flowd: ALREADY_EXISTS (IDEMPOTENCY_KEY_REUSED)"), "\(reused.output)")

        let got = try await client(server, slow, ["get", runID, "--json"])
        #expect(got.status == 0 && jsonLines(got.output).first?["status"] as? String == "succeeded", "\(got.output)")
        let gotPlain = try await client(server, slow, ["get", runID])
        #expect(gotPlain.output.contains("run       \(runID)") && gotPlain.output.contains("outputs   {"), "\(gotPlain.output)")

        let streamed = try await client(server, hello, ["run", "hello", "--input", "name=Cy", "--mode", "stream", "--json"])
        #expect(streamed.status == 0, "\(streamed.output)")
        let streamEvents = jsonLines(streamed.output)
        #expect(sequences(streamEvents) == Array(1...(sequences(streamEvents).count)))
        #expect(((streamEvents.last?["run"] as? [String: Any])?["outputs"] as? [String: Any])?["greeting"] as? String == "Hello, Cy!")
        let streamedPlain = try await client(server, hello, ["run", "hello", "--input", "name=Di", "--mode", "stream"])
        #expect(streamedPlain.status == 0 && streamedPlain.output.contains("run_finished"), "\(streamedPlain.output)")

        // A long run, stopped: stop prints the run; watching it then exits with the stopped status.
        let long = try await client(server, slow, ["run", "slow", "--input", "seconds=600", "--mode", "async", "--json"])
        let longID = try #require(jsonLines(long.output).first?["id"] as? String)
        let stopped = try await client(server, slow, ["stop", longID, "--json"])
        #expect(stopped.status == 0 && jsonLines(stopped.output).first?["id"] as? String == longID, "\(stopped.output)")
        let watchStopped = try await client(server, slow, ["watch", longID])
        #expect(watchStopped.status == 3, "a stopped run exits 3: \(watchStopped.output)")
        #expect(watchStopped.output.split(separator: "\n").last?.contains("stopped") == true)

        let runs = try await client(server, slow, ["runs", "--json"])
        let listed = jsonLines(runs.output).compactMap { $0["id"] as? String }
        #expect(runs.status == 0 && listed.contains(runID) && listed.contains(longID), "\(runs.output)")
        #expect(listed.first == longID, "newest first")
        let filtered = try await client(server, slow, ["runs", "--status", "succeeded", "--workflow", "slow", "--limit", "1", "--json"])
        #expect(jsonLines(filtered.output).map { $0["id"] as? String } == [runID], "\(filtered.output)")
        let table = try await client(server, slow, ["runs", "--status", "stopped,failed"])
        #expect(table.output.split(separator: "\n").count == 2 && table.output.contains("\(longID)\t"), "\(table.output)")

        await server.stop()
    }

    @Test("exit codes and one-line errors: failed, not found, unauthenticated, invalid argument, deadline, unavailable")
    func exitCodes() async throws {
        let server = try await ServerUnderTest()
        let hello = try await server.key(workflow: "hello")
        let slow = try await server.key(workflow: "slow")
        let refused = try await server.key(workflow: "refused")

        let failed = try await client(server, refused, ["run", "refused"])
        #expect(failed.status == 2, "\(failed.output)")
        #expect(failed.output.contains("status    failed") && failed.output.contains("error     "))

        let missing = try await client(server, hello, ["get", "r_doesnotexist"])
        #expect(missing.status == 5, "\(missing.output)")
        #expect(missing.output.hasPrefix("flowd: NOT_FOUND (RUN_NOT_FOUND)") && !missing.output.contains("\n"), "\(missing.output)")
        let missingJSON = try await client(server, hello, ["get", "r_doesnotexist", "--json"])
        let error = try #require(jsonLines(missingJSON.output).first, "\(missingJSON.output)")
        #expect(error["type"] as? String == "error" && error["code"] as? String == "NOT_FOUND" && error["reason"] as? String == "RUN_NOT_FOUND")

        let badKey = try await client(server, "flowd_nope", ["runs"])
        #expect(badKey.status == 6 && badKey.output.contains("flowd: UNAUTHENTICATED"), "\(badKey.output)")

        let invalid = try await client(server, hello, ["run", "hello", "--inputs", "{}"])
        #expect(invalid.status == 10 && invalid.output.hasPrefix("flowd: INVALID_ARGUMENT"), "\(invalid.output)")

        let usage = try await client(server, hello, ["run", "hello", "--inputs", "[1]"])
        #expect(usage.status == 64, "a usage error is ArgumentParser's 64: \(usage.output)")

        let long = try await client(server, slow, ["run", "slow", "--input", "seconds=600", "--mode", "async", "--json"])
        let longID = try #require(jsonLines(long.output).first?["id"] as? String)
        let late = try await client(server, slow, ["watch", longID, "--timeout", "0.5"])
        #expect(late.status == 8 && late.output.contains("DEADLINE_EXCEEDED"), "\(late.output)")
        let lateBlocking = try await client(server, slow, ["run", "slow", "--input", "seconds=600", "--timeout", "0.5"])
        #expect(lateBlocking.status == 8, "\(lateBlocking.output)")
        _ = try await client(server, slow, ["stop", longID])

        let target = server.target
        await server.stop()
        let down = try await run([flowdBinary.path, "get", "r_x", "--server", target, "--key", hello])
        #expect(down.status == 7 && down.output.hasPrefix("flowd: UNAVAILABLE"), "\(down.output)")
        #expect(!down.output.contains("Fatal error") && !down.output.contains("Stack"))
    }

    @Test("over the tenant's limit: RESOURCE_EXHAUSTED with the reason and the retry hint on one line, exit 9")
    func overLimit() async throws {
        let server = try await ServerUnderTest(serveArguments: ["--max-concurrent", "1"])
        let slow = try await server.key(workflow: "slow")
        let long = try await client(server, slow, ["run", "slow", "--input", "seconds=600", "--mode", "async", "--json"])
        let longID = try #require(jsonLines(long.output).first?["id"] as? String, "\(long.output)")
        let refused = try await client(server, slow, ["run", "slow", "--input", "seconds=1", "--mode", "async"])
        #expect(refused.status == 9, "\(refused.output)")
        #expect(refused.output.hasPrefix("flowd: RESOURCE_EXHAUSTED (TENANT_CONCURRENCY_LIMIT): ")
                && refused.output.contains("; retry in ") && !refused.output.contains("\n"), "\(refused.output)")
        let refusedJSON = try await client(server, slow, ["run", "slow", "--input", "seconds=1", "--mode", "async", "--json"])
        let error = try #require(jsonLines(refusedJSON.output).first, "\(refusedJSON.output)")
        #expect(error["reason"] as? String == "TENANT_CONCURRENCY_LIMIT" && (error["retry_after_ms"] as? NSNumber) != nil)
        _ = try await client(server, slow, ["stop", longID])
        await server.stop()
    }

    @Test("watch resumes with after_sequence when its connection is cut mid-run: announced, no gap, no duplicate")
    func watchSurvivesDroppedConnection() async throws {
        let server = try await ServerUnderTest()
        let slow = try await server.key(workflow: "slow")
        let proxy = try await DroppingProxy.start(upstreamPort: server.port)

        let submitted = try await client(server, slow, ["run", "slow", "--input", "seconds=4", "--mode", "async", "--json"])
        let runID = try #require(jsonLines(submitted.output).first?["id"] as? String, "\(submitted.output)")

        let watcher = try ChildProcess([flowdBinary.path, "watch", runID, "--server", "127.0.0.1:\(proxy.port)",
                                        "--key", slow])
        // Event 3 is first_quarter's node_finished: the run has three quarters to go.
        #expect(await watcher.waitForLine(startingWith: "3\t"))
        #expect(await proxy.dropConnections() > 0)
        let (status, output) = await watcher.finish(timeout: .seconds(120))
        #expect(status == 0, "\(output)")
        #expect(output.contains("flowd: connection lost (UNAVAILABLE") && output.contains("resuming after sequence "), "\(output)")
        let shown = output.split(separator: "\n").compactMap { line in
            line.split(separator: "\t").first.flatMap { Int($0) }
        }
        #expect(shown == Array(1...shown.count) && shown.count >= 11, "gap or duplicate: \(output)")
        #expect(output.split(separator: "\n").last?.contains("run_finished") == true)
        #expect(proxy.connectionsAccepted >= 2)

        await proxy.shutdown()
        await server.stop()
    }

    @Test("in a terminal (tmux), run --mode stream shows one line per node with spinner, state and time, then the outputs")
    func liveScreen() async throws {
        guard Tmux.isInstalled else {
            Issue.record("tmux is not installed (tools/install-deps.sh installs it)")
            return
        }
        let server = try await ServerUnderTest()
        let slow = try await server.key(workflow: "slow")
        let tmux = Tmux()
        #expect(tmux.startFlowd("run slow --input seconds=2 --mode stream --server \(server.target) --key \(slow)"))
        defer { tmux("kill-server") }

        // While it runs: a spinner line for a running node.
        let running = try await tmux.waitForScreen { screen in
            screen.split(separator: "\n").contains { $0.contains("running") && $0.contains("quarter") }
        }
        #expect(running.contains(" run ") && running.contains("running"), "\(running)")

        tmux("wait-for", "done")
        let screen = tmux.screen()
        print("live screen of flowd run slow --mode stream:\n\(screen)")
        let lines = screen.split(separator: "\n").map(String.init)
        #expect(lines.first?.hasPrefix("✔ run ") == true && lines.first?.contains("slow  succeeded") == true, "\(screen)")
        for node in ["first_quarter", "second_quarter", "third_quarter", "fourth_quarter"] {
            #expect(lines.contains { $0.hasPrefix("  ✔ \(node)") && $0.contains("sleep") && $0.contains("succeeded") }, "\(screen)")
        }
        #expect(lines.contains { $0.hasPrefix("  ✔ done") }, "\(screen)")
        #expect(lines.contains(#"outputs: {"done":true}"#), "\(screen)")
        #expect(lines.contains("exit=0"), "\(screen)")
        #expect(!lines.contains { $0.contains("running") }, "nothing left running at the end: \(screen)")
        await server.stop()
    }

    @Test("in a terminal (tmux), watch shows a cut connection on its live screen and resumes to the run's end")
    func liveWatchResumes() async throws {
        guard Tmux.isInstalled else {
            Issue.record("tmux is not installed (tools/install-deps.sh installs it)")
            return
        }
        let server = try await ServerUnderTest()
        let slow = try await server.key(workflow: "slow")
        let proxy = try await DroppingProxy.start(upstreamPort: server.port)
        let submitted = try await client(server, slow, ["run", "slow", "--input", "seconds=4", "--mode", "async", "--json"])
        let runID = try #require(jsonLines(submitted.output).first?["id"] as? String, "\(submitted.output)")
        let tmux = Tmux()
        #expect(tmux.startFlowd("watch \(runID) --server 127.0.0.1:\(proxy.port) --key \(slow)"))
        defer { tmux("kill-server") }
        let first = try await tmux.waitForScreen { $0.contains("first_quarter") && $0.contains("succeeded") }
        #expect(first.contains("first_quarter"), "\(first)")
        #expect(await proxy.dropConnections() > 0)
        tmux("wait-for", "done")
        let final = tmux.screen()
        print("live screen of flowd watch across a cut connection:\n\(final)")
        let lines = final.split(separator: "\n").map(String.init)
        #expect(lines.contains { $0.hasPrefix("  ↻ connection lost (UNAVAILABLE") && $0.contains("resuming after sequence ") }, "\(final)")
        #expect(lines.first?.hasPrefix("✔ run \(runID)") == true && lines.contains("exit=0"), "\(final)")
        #expect(lines.filter { $0.contains("_quarter") }.count == 4, "one line per node, none twice: \(final)")
        await proxy.shutdown()
        await server.stop()
    }

    @Test("in a terminal (tmux), Ctrl-C on run --mode stream asks; y stops the run and the screen ends stopped (exit 3)")
    func interruptAsksToStop() async throws {
        guard Tmux.isInstalled else {
            Issue.record("tmux is not installed (tools/install-deps.sh installs it)")
            return
        }
        let server = try await ServerUnderTest()
        let slow = try await server.key(workflow: "slow")
        let tmux = Tmux()
        #expect(tmux.startFlowd("run slow --input seconds=600 --mode stream --server \(server.target) --key \(slow)"))
        defer { tmux("kill-server") }
        let running = try await tmux.waitForScreen { $0.contains("first_quarter") && $0.contains("running") }
        #expect(running.contains("first_quarter"), "\(running)")
        tmux("send-keys", "-t", "live", "C-c")
        let asked = try await tmux.waitForScreen { $0.contains("Stop run ") }
        #expect(asked.contains("? [y/N]"), "\(asked)")
        tmux("send-keys", "-t", "live", "y", "Enter")
        tmux("wait-for", "done")
        let final = tmux.screen()
        #expect(final.contains("stopping run ") && final.contains("exit=3"), "\(final)")
        #expect(final.split(separator: "\n").contains { $0.hasPrefix("■ run ") && $0.contains("stopped") }, "\(final)")
        await server.stop()
    }
}

/// A tmux server on its own socket with a 100x20 session `live` running a shell command.
///
/// tmux is driven through `system()`: Foundation's `Process` was seen to miss the exit of the
/// tmux client that starts the server, which left `ChildProcess.finish` waiting.
private struct Tmux {
    let socket = "flowd-test-\(UUID().uuidString.prefix(8))"

    static var isInstalled: Bool { system("command -v tmux >/dev/null 2>&1") == 0 }

    private static func quote(_ text: String) -> String {
        "'" + text.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }

    /// Runs `tmux -L socket arguments...` to its end (at most 120 s); its stdout, or nil when it failed.
    @discardableResult
    func callAsFunction(_ arguments: String...) -> String? {
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("\(socket)-\(UUID().uuidString).out")
        defer { try? FileManager.default.removeItem(at: output) }
        let line = (["timeout", "120", "tmux", "-L", socket] + arguments).map(Self.quote).joined(separator: " ")
            + " >\(Self.quote(output.path)) 2>/dev/null </dev/null"
        guard system(line) == 0 else { return nil }
        return (try? String(contentsOf: output, encoding: .utf8)) ?? ""
    }

    /// Runs `flowd ARGUMENTS` in a new session (100 x 20); its exit status follows on the screen
    /// (`exit=N`), and the pane stays until the test kills the server.
    func startFlowd(_ arguments: String) -> Bool {
        let command = "\(flowdBinary.path) \(arguments); echo exit=$?; tmux -L \(socket) wait-for -S done; read line"
        // bash, like a user's shell, outlives a Ctrl-C that its child handles (dash exits on it).
        return self("new-session", "-d", "-s", "live", "-x", "100", "-y", "20", "bash", "-c", command) != nil
    }

    func screen() -> String { self("capture-pane", "-p", "-t", "live") ?? "" }

    /// Polls the pane (at most 600 times, 50 ms apart) until `condition` holds; the last screen.
    func waitForScreen(_ condition: (String) -> Bool) async throws -> String {
        var text = ""
        for _ in 0..<600 {
            text = screen()
            if condition(text) { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        return text
    }
}

/// A loopback TCP proxy that can cut every connection through it (the server keeps running).
private final class DroppingProxy: @unchecked Sendable {
    private let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    private let lock = NSLock()
    private var channels: [any Channel] = []
    private var accepted = 0
    private var listener: (any Channel)?
    private(set) var port = 0

    var connectionsAccepted: Int { lock.withLock { accepted } }

    static func start(upstreamPort: Int) async throws -> DroppingProxy {
        let proxy = DroppingProxy()
        let listener = try await ServerBootstrap(group: proxy.group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { [proxy] inbound in
                ClientBootstrap(group: inbound.eventLoop)
                    .channelInitializer { outbound in
                        outbound.eventLoop.makeCompletedFuture {
                            try outbound.pipeline.syncOperations.addHandler(GlueHandler(partner: inbound))
                        }
                    }
                    .connect(host: "127.0.0.1", port: upstreamPort)
                    .flatMapThrowing { outbound in
                        proxy.track(inbound, outbound)
                        try inbound.pipeline.syncOperations.addHandler(GlueHandler(partner: outbound))
                    }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        proxy.listener = listener
        proxy.port = listener.localAddress?.port ?? 0
        return proxy
    }

    private func track(_ channels: any Channel...) {
        lock.withLock {
            self.channels.append(contentsOf: channels)
            accepted += 1
        }
    }

    /// Closes every open connection; returns how many connection pairs were cut.
    func dropConnections() async -> Int {
        let open = lock.withLock { () -> [any Channel] in
            defer { channels = [] }
            return channels
        }
        for channel in open { try? await channel.close() }
        return open.count / 2
    }

    func shutdown() async {
        _ = await dropConnections()
        try? await listener?.close()
        try? await group.shutdownGracefully()
    }
}

/// Copies what one side reads to the other; closes the other side when one side closes.
private final class GlueHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    private let partner: any Channel

    init(partner: any Channel) {
        self.partner = partner
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        partner.writeAndFlush(unwrapInboundIn(data), promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        partner.close(promise: nil)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
