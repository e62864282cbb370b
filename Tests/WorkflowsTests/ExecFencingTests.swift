import Engine
import Foundation
import Testing
@testable import Workflows

@Suite("exec fencing: arguments, environment, resource limits, the process group")
struct ExecFencingTests {
    /// A one-node workflow running `program` with `config` (YAML flow mapping entries).
    private func run(_ program: String, _ config: String = "", inputs: String = "{}", declared: String = "{}",
                     configuration: WorkflowRunnerConfiguration, log: EventLog = EventLog(),
                     clock: any EngineClock = SystemClock()) async throws -> ExecutionResult {
        try await runWorkflow("""
            name: e
            inputs: \(declared)
            nodes:
              - { id: run, kind: exec, config: { program: \(program)\(config.isEmpty ? "" : ", " + config) } }
              - { id: done, kind: end, needs: run, config: { outputs: { out: "{{run}}" } } }
            """, inputs: inputs, configuration: configuration, log: log, clock: clock)
    }

    private func allowing(_ programs: String...) -> WorkflowRunnerConfiguration {
        var configuration = WorkflowRunnerConfiguration()
        configuration.allowedPrograms = Set(programs)
        return configuration
    }

    @Test("a rendered argument starting with '-' is refused unless allow_dash_args; a literal one passes; a NUL is refused")
    func arguments() async throws {
        let script = try Script(#"printf '{"args": "%s|%s"}\n' "$1" "$2""#)
        defer { script.remove() }
        let configuration = allowing(script.path)
        let declared = "{ a: string }"
        let dash = try await run(script.path, #"args: ["-n", "{{inputs.a}}"]"#, inputs: #"{"a": "--output=/etc/passwd"}"#,
                                 declared: declared, configuration: configuration)
        #expect(dash.error == "node 'run' failed: args[1] starts with '-' (it would be read as an option); the definition allows that with allow_dash_args: true")
        let allowed = try await run(script.path, #"args: ["-n", "{{inputs.a}}"], allow_dash_args: true"#,
                                    inputs: #"{"a": "--verbose"}"#, declared: declared, configuration: configuration)
        #expect(try outputs(allowed)["out"] == ["args": "-n|--verbose"])
        let plain = try await run(script.path, #"args: ["-n", "{{inputs.a}}"]"#, inputs: #"{"a": "a-b"}"#,
                                  declared: declared, configuration: configuration)
        #expect(try outputs(plain)["out"] == ["args": "-n|a-b"])
        let nul = try await run(script.path, #"args: ["{{inputs.a}}"]"#, inputs: #"{"a": "safe\u0000--rm"}"#,
                                declared: declared, configuration: configuration)
        #expect(nul.error == "node 'run' failed: args[0] contains a NUL character")
    }

    @Test("the program sees only the base environment and the variables the definition names, none of the server's")
    func environment() async throws {
        setenv("FLOWD_TEST_SERVER_SECRET", "server-only-value", 1)
        defer { unsetenv("FLOWD_TEST_SERVER_SECRET") }
        let script = try Script(#"printf '{"env": "%s"}\n' "$(env | sort | tr '\n' '|')""#)
        defer { script.remove() }
        var configuration = allowing(script.path)
        configuration.programEnvironment = ["PATH": "/usr/bin:/bin"]
        let result = try await run(script.path, #"env: { GREETING: "hi {{inputs.who}}", MODE: fast }"#,
                                   inputs: #"{"who": "ada"}"#, declared: "{ who: string }", configuration: configuration)
        let env = try #require(try outputs(result)["out"]?.objectValue?["env"]?.stringValue)
        #expect(!env.contains("FLOWD_TEST_SERVER_SECRET"))
        let names = Set(env.split(separator: "|").map { String($0.prefix { $0 != "=" }) })
        // sh itself adds PWD (and dash nothing else).
        #expect(names.subtracting(["PWD", "SHLVL", "_", "OLDPWD"]) == ["PATH", "GREETING", "MODE"], "\(env)")
        #expect(env.contains("GREETING=hi ada") && env.contains("MODE=fast"))
        let bad = try loadProblems(["e.yaml": """
            name: e
            nodes:
              - { id: run, kind: exec, config: { program: /bin/true, env: { "BAD-NAME": x } } }
              - { id: done, kind: end, needs: run, config: { outputs: {} } }
            """])
        #expect(bad.map(\.message) == ["config.env: 'BAD-NAME' is not a variable name (a letter or '_', then letters, digits or '_')"])
    }

    @Test("CPU time: a busy loop is killed at its limit")
    func cpuLimit() async throws {
        let script = try Script("while :; do :; done")
        defer { script.remove() }
        var configuration = allowing(script.path)
        configuration.programLimits.cpuSeconds = 1
        let result = try await run(script.path, configuration: configuration)
        #expect(result.error == "node 'run' failed: \(script.path) was killed by signal \(SIGXCPU) (its CPU time limit, 1 s)")
    }

    @Test("memory: an allocation past the address-space limit fails")
    func memoryLimit() async throws {
        var configuration = allowing("/usr/bin/python3")
        configuration.programLimits.memoryBytes = 256 * 1024 * 1024
        let result = try await run("/usr/bin/python3", #"args: ["-c", "x = bytearray(512 * 1024 * 1024)"]"#, configuration: configuration)
        #expect(result.error?.hasPrefix("node 'run' failed: /usr/bin/python3 exited with status 1") == true, "\(result.error ?? "")")
        #expect(result.error?.contains("MemoryError") == true)
    }

    @Test("open files: the program cannot open more than its limit")
    func openFilesLimit() async throws {
        var configuration = allowing("/usr/bin/python3")
        configuration.programLimits.openFiles = 16
        let result = try await run("/usr/bin/python3",
                                   #"args: ["-c", "import os, sys\ntry:\n fs = [os.open('/dev/null', 0) for _ in range(64)]\nexcept OSError as e:\n sys.exit(e.strerror)"]"#,
                                   configuration: configuration)
        #expect(result.error?.contains("Too many open files") == true, "\(result.error ?? "")")
    }

    @Test("file size: writing past the limit kills the program")
    func fileSizeLimit() async throws {
        let script = try Script("head -c 4000000 /dev/zero > \"$1\"")
        defer { script.remove() }
        var configuration = allowing(script.path)
        configuration.programLimits.fileSizeBytes = 1_000_000
        let result = try await run(script.path, #"args: ["\#(script.file("big"))"]"#, configuration: configuration)
        #expect(result.state == .failed)
        let size = (try? FileManager.default.attributesOfItem(atPath: script.file("big"))[.size] as? Int) ?? 0
        #expect(size <= 1_000_000, "the file grew to \(size) bytes")
    }

    @Test("processes: the limit is set on the program (the kernel enforces it for users other than root)")
    func processLimit() async throws {
        let script = try Script(#"printf '{"limits": "%s"}\n' "$(grep 'Max processes' /proc/self/limits | tr -s ' ')""#)
        defer { script.remove() }
        var configuration = allowing(script.path)
        configuration.programLimits.processes = 77
        let result = try await run(script.path, configuration: configuration)
        #expect(try outputs(result)["out"] == ["limits": "Max processes 77 77 processes "])
    }

    @Test("output size: stdout past the limit kills the program and fails the node")
    func outputLimit() async throws {
        let script = try Script("head -c 1000000 /dev/zero | tr '\\0' 'x'")
        defer { script.remove() }
        var configuration = allowing(script.path)
        configuration.maxProgramOutputBytes = 1000
        let result = try await run(script.path, configuration: configuration)
        #expect(result.error == "node 'run' failed: \(script.path) wrote more than 1000 bytes")
    }

    @Test("stderr is quoted short and masked in the error")
    func stderrExcerpt() async throws {
        let script = try Script("echo \"login failed: password=hunter2 $(head -c 5000 /dev/zero | tr '\\0' 'e')\" >&2\nexit 4")
        defer { script.remove() }
        let result = try await run(script.path, configuration: allowing(script.path))
        let error = try #require(result.error)
        #expect(error.hasPrefix("node 'run' failed: \(script.path) exited with status 4: login failed: password=[redacted] eee"))
        #expect(!error.contains("hunter2") && error.count < 400, "\(error)")
    }

    @Test("a timeout kills the program's whole process group: a background grandchild is gone too", .timeLimit(.minutes(1)))
    func processGroup() async throws {
        let script = try Script("sleep 3600 &\necho $! > \"$1\"\nwait")
        defer { script.remove() }
        let fifo = script.file("ready")
        #expect(mkfifo(fifo, 0o600) == 0)
        let configuration = allowing(script.path)
        let clock = ManualClock()
        defer { close(open(fifo, O_WRONLY | O_NONBLOCK)) }
        async let reader = readPID(fromFIFO: fifo)
        let run = Task {
            try await runWorkflow("""
                name: e
                nodes:
                  - { id: run, kind: exec, timeout: 1s, config: { program: \(script.path), args: ["\(fifo)"] } }
                  - { id: done, kind: end, needs: run, config: { outputs: {} } }
                """, configuration: configuration, clock: clock)
        }
        let grandchild = try #require(await reader)
        await clock.waitForSleepers(atLeast: 1)
        clock.advance(by: .seconds(1))
        let result = try await run.value
        #expect(result.error == "node 'run' failed: timed out after 1 s")
        // Killed with SIGKILL; once reaped by init it is gone. Poll without a wall-clock bound
        // of our own (the suite's time limit is the bound).
        while processExists(grandchild), !isZombie(grandchild) { try await Task.sleep(for: .milliseconds(10)) }
    }

    private func isZombie(_ pid: pid_t) -> Bool {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return false }
        return status.split(separator: ")").last?.trimmingCharacters(in: .whitespaces).hasPrefix("Z") == true
    }
}
