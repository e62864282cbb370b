import Foundation
import Testing

/// The `flowd` executable, built next to the test bundle by `swift build --build-tests`.
private let flowdBinary: URL = URL(fileURLWithPath: CommandLine.arguments[0])
    .deletingLastPathComponent().appendingPathComponent("flowd")

private func run(_ arguments: [String]) async throws -> (status: Int32, output: String) {
    try await ChildProcess(arguments).finish(timeout: .seconds(120))
}

/// The nice value of each thread of a process, from /proc/PID/task/TID/stat (field 19).
private func threadNiceValues(_ pid: Int32) throws -> [Int] {
    let tasks = "/proc/\(pid)/task"
    return try FileManager.default.contentsOfDirectory(atPath: tasks).compactMap { tid in
        guard let stat = try? String(contentsOfFile: "\(tasks)/\(tid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return nil }  // the name may hold spaces
        // After "pid (comm)": field 3 is the state, so the nice value (19) is the 17th.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        return fields.count > 16 ? Int(fields[16]) : nil
    }
}

@Suite("Runs execute below the threads that answer calls (--execution-priority)", .serialized)
struct ExecutionPriorityTests {
    /// A workflow whose exec node runs `nice`, which prints the nice value it inherited.
    private static func workflows() throws -> URL {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("flowd-nice-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try """
            name: nice
            version: "1"
            outputs: [out]
            nodes:
              - { id: run, kind: exec, config: { program: /usr/bin/nice } }
              - { id: done, kind: end, needs: run, config: { outputs: { out: "{{run}}" } } }
            """.write(to: directory.appendingPathComponent("nice.yaml"), atomically: true, encoding: .utf8)
        return directory
    }

    private static func serveAndRun(_ extra: [String], environment: [String] = [])
        async throws -> (output: String, threadNice: [Int]) {
        let workflows = try workflows()
        let data = workflows.appendingPathComponent("data")
        defer { try? FileManager.default.removeItem(at: workflows) }
        let server = try ChildProcess(["env"] + environment + [
            flowdBinary.path, "serve", "--host", "127.0.0.1", "--port", "0", "--data-dir", data.path,
            "--workflows", workflows.path, "--exec-allow", "/usr/bin/nice"] + extra)
        defer { server.kill() }
        #expect(await server.waitForLine(startingWith: "flowd: listening on "))
        let port = try #require(server.snapshot().output.split(separator: "\n")
            .first { $0.hasPrefix("flowd: listening on ") }?.split(separator: ":").last.map(String.init))
        let key = try await run([flowdBinary.path, "keys", "create", "--tenant", "t", "--workflow", "nice", "--data-dir", data.path])
            .output.trimmingCharacters(in: .whitespacesAndNewlines)
        let result = try await run([flowdBinary.path, "run", "nice", "--server", "127.0.0.1:\(port)", "--key", key, "--json"])
        #expect(result.status == 0, "\(result.output)")
        let threads = try threadNiceValues(server.pid)
        server.terminate()
        _ = await server.finish(timeout: .seconds(30))
        return (result.output, threads)
    }

    @Test("--execution-priority utility: the exec node's program inherits nice 2 and threads run at 2; the threads answering calls stay at 0")
    func utility() async throws {
        let (output, threads) = try await Self.serveAndRun(["--execution-priority", "utility"])
        #expect(output.contains(#""outputs":{"out":{"result":2}}"#), "\(output)")
        #expect(threads.contains(2), "\(threads)")
        #expect(threads.filter { $0 == 0 }.count >= 2, "\(threads)")  // at least the event loops
        #expect(!threads.contains { $0 > 2 }, "\(threads)")
    }

    @Test("the default is background (nice 10); FLOWD_EXECUTION_PRIORITY=normal runs everything at the same priority")
    func defaultAndEnvironment() async throws {
        let (defaulted, threads) = try await Self.serveAndRun([])
        #expect(defaulted.contains(#""outputs":{"out":{"result":10}}"#), "\(defaulted)")
        #expect(threads.contains(10), "\(threads)")
        let (same, normalThreads) = try await Self.serveAndRun([], environment: ["FLOWD_EXECUTION_PRIORITY=normal"])
        #expect(same.contains(#""outputs":{"out":{"result":0}}"#), "\(same)")
        #expect(!normalThreads.contains { $0 > 0 }, "\(normalThreads)")
    }

    @Test("an unknown priority is refused before the server starts")
    func refused() async throws {
        for value in ["idle", "10", "Background"] {
            let result = try await run([flowdBinary.path, "serve", "--host", "127.0.0.1", "--port", "0",
                                        "--data-dir", FileManager.default.temporaryDirectory.appendingPathComponent("flowd-priority-refused-\(UUID().uuidString)").path,
                                        "--workflows", "examples/workflows", "--execution-priority", value])
            #expect(result.status != 0, "\(value): \(result.output)")
            #expect(result.output.contains("--execution-priority must be one of background, utility, normal"), "\(value): \(result.output)")
            #expect(!result.output.contains("listening"), "\(result.output)")
        }
    }
}
