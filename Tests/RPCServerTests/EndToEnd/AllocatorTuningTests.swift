import Foundation
import Testing

/// The `flowd` executable, built next to the test bundle by `swift build --build-tests`.
private let flowdBinary: URL = URL(fileURLWithPath: CommandLine.arguments[0])
    .deletingLastPathComponent().appendingPathComponent("flowd")

@Suite("flowd serve starts with glibc's per-thread allocation cache enlarged, unless the operator set it", .serialized)
struct AllocatorTuningTests {
    /// Starts `flowd serve` under `env` with `environment`, waits until it listens, and returns
    /// the `GLIBC_TUNABLES` it runs with (its "serving" log line says; glibc rewrites the
    /// variable's bytes in place, so /proc cannot show it) and whether the image running under
    /// the pid `env` started is the re-executed one: its initial environment (/proc/PID/environ)
    /// holds the marker set just before the exec.
    private static func tunables(environment: [String]) async throws -> (tunables: String?, reexecuted: Bool, name: String) {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("flowd-tcache-\(UUID().uuidString)")
        let workflows = directory.appendingPathComponent("workflows")
        try FileManager.default.createDirectory(at: workflows, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let server = try ChildProcess(["env", "-u", "FLOWD_ALLOCATOR_REEXEC"] + environment + [
            flowdBinary.path, "serve", "--host", "127.0.0.1", "--port", "0",
            "--data-dir", directory.appendingPathComponent("data").path, "--workflows", workflows.path])
        defer { server.kill() }
        #expect(await server.waitForLine(startingWith: "flowd: listening on "), "\(server.snapshot().output)")
        let environ = try Data(contentsOf: URL(fileURLWithPath: "/proc/\(server.pid)/environ"))
        let reexecuted = environ.split(separator: 0).contains { String(decoding: $0, as: UTF8.self) == "FLOWD_ALLOCATOR_REEXEC=flowd" }
        let name = try String(contentsOfFile: "/proc/\(server.pid)/comm", encoding: .utf8).trimmingCharacters(in: .newlines)
        server.terminate()
        _ = await server.finish(timeout: .seconds(30))
        let serving = server.snapshot().output.split(separator: "\n").first { $0.contains("serving") }.map(String.init) ?? ""
        let tunables = serving.range(of: "glibc_tunables=").map { range in
            String(serving[range.upperBound...].prefix { $0 != " " })
        }
        return (tunables, reexecuted, name)
    }

    @Test("without GLIBC_TUNABLES the server re-executes itself (same pid, same name) with glibc.malloc.tcache_count=256, and serves")
    func added() async throws {
        let started = try await Self.tunables(environment: ["-u", "GLIBC_TUNABLES"])
        #expect(started.tunables == "glibc.malloc.tcache_count=256")
        #expect(started.reexecuted, "the process listening under env's pid is the re-executed image")
        #expect(started.name == "flowd", "ps, top and pkill see flowd, not the exe of /proc/self/exe")
    }

    @Test("other tunables of the operator are kept, the cache size appended; an operator's cache size is left as it is")
    func operatorsFirst() async throws {
        #expect(try await Self.tunables(environment: ["GLIBC_TUNABLES=glibc.pthread.rseq=0"]).tunables
            == "glibc.pthread.rseq=0:glibc.malloc.tcache_count=256")
        let operators = try await Self.tunables(environment: ["GLIBC_TUNABLES=glibc.malloc.tcache_count=7"])
        #expect(operators.tunables == "glibc.malloc.tcache_count=7")
        #expect(!operators.reexecuted, "no exec when the operator chose a cache size")
    }
}
