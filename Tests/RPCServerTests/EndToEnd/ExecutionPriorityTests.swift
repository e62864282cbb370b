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

@Suite("Runs execute below the threads that answer calls (--execution-nice)", .serialized)
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

    @Test("--execution-nice 7 --execution-threads 3: the exec node's program inherits 7, three threads run at 7, the rest at 0")
    func configuredNice() async throws {
        let (output, threads) = try await Self.serveAndRun(["--execution-nice", "7", "--execution-threads", "3"])
        #expect(output.contains(#""outputs":{"out":{"result":7}}"#), "\(output)")
        #expect(threads.filter { $0 == 7 }.count == 3, "\(threads)")
        #expect(threads.contains(0), "\(threads)")
        #expect(threads.allSatisfy { $0 == 7 || $0 <= 0 }, "\(threads)")
    }

    @Test("the default is 10; FLOWD_EXECUTION_NICE=0 runs everything at the same priority")
    func defaultAndEnvironment() async throws {
        let (defaulted, _) = try await Self.serveAndRun([])
        #expect(defaulted.contains(#""outputs":{"out":{"result":10}}"#), "\(defaulted)")
        let (same, threads) = try await Self.serveAndRun([], environment: ["FLOWD_EXECUTION_NICE=0"])
        #expect(same.contains(#""outputs":{"out":{"result":0}}"#), "\(same)")
        #expect(!threads.contains { $0 > 0 }, "\(threads)")
    }

    @Test("out-of-range values are refused before the server starts")
    func refused() async throws {
        for (flag, value) in [("--execution-nice", "20"), ("--execution-nice", "-1"), ("--execution-threads", "-2")] {
            let result = try await run([flowdBinary.path, "serve", "--host", "127.0.0.1", "--port", "0",
                                        "--data-dir", FileManager.default.temporaryDirectory.appendingPathComponent("flowd-nice-refused-\(UUID().uuidString)").path,
                                        "--workflows", "examples/workflows", flag, value])
            #expect(result.status != 0, "\(flag) \(value): \(result.output)")
            #expect(result.output.contains(flag), "\(flag) \(value): \(result.output)")
            #expect(!result.output.contains("listening"), "\(result.output)")
        }
    }
}
