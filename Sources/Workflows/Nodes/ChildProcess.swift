import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A program run for an `exec` node: bytes on stdin, stdout and stderr collected.
///
/// The child gets its own process group. Cancelling the calling task kills the whole group
/// with SIGKILL, and `run` returns only once the child has been reaped, so no process is left
/// behind; when the child exits by itself, what is left of its group is killed too.
final class ChildProcess: Sendable {
    enum Termination: Sendable, Equatable, CustomStringConvertible {
        case exited(Int32)
        case signaled(Int32)

        var description: String {
            switch self {
            case .exited(let code): "exited with status \(code)"
            case .signaled(let signal): "was killed by signal \(signal)"
            }
        }
    }

    struct Output: Sendable {
        let termination: Termination
        let stdout: [UInt8]
        let stderr: [UInt8]
        /// stdout passed the limit: the child was killed and the rest discarded.
        let stdoutOverflow: Bool
    }

    struct SpawnError: Error, Sendable, CustomStringConvertible {
        let program: String
        let errno: Int32
        var description: String { "cannot start \(program): \(String(cString: strerror(errno)))" }
    }

    private struct State {
        var pid: pid_t?
        var reaped = false
        var killed = false
    }

    private let state = Mutex(State())

    private init() {}

    /// Runs `program` to completion; throws `CancellationError` when the task was cancelled
    /// (after the child is gone).
    /// With `limits`, `limits.tool` starts first, sets them and executes `program` in its
    /// place (same process, same group).
    static func run(program: String, arguments: [String], environment: [String: String], input: [UInt8],
                    stdoutLimit: Int, stderrLimit: Int, limits: ProgramLimits? = nil) async throws -> Output {
        var executable = program
        var arguments = arguments
        if let limits {
            // The tool would report a missing program on stderr; say it as posix_spawn would.
            guard access(program, X_OK) == 0 else { throw SpawnError(program: program, errno: errno) }
            executable = limits.tool
            arguments = limits.toolArguments + [program] + arguments
        }
        let program = executable
        let child = ChildProcess()
        let output = try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Output, any Error>) in
                let pipes: Pipes
                do {
                    pipes = try child.spawn(program: program, arguments: arguments, environment: environment)
                } catch {
                    continuation.resume(throwing: error)
                    return
                }
                let thread = Thread {
                    continuation.resume(returning: child.pump(pipes, input: input, stdoutLimit: stdoutLimit, stderrLimit: stderrLimit))
                }
                thread.name = "flowd-exec"
                thread.start()
            }
        } onCancel: {
            child.kill()
        }
        if child.state.withLock({ $0.killed }) && !output.stdoutOverflow { throw CancellationError() }
        return output
    }

    private func kill() {
        state.withLock { state in
            state.killed = true
            if let pid = state.pid, !state.reaped { Glibc.kill(-pid, SIGKILL) }
        }
    }

    /// The parent's ends of the child's stdin, stdout and stderr.
    private struct Pipes: Sendable {
        let stdin: Int32
        let stdout: Int32
        let stderr: Int32
    }

    /// Held from pipe(2) to posix_spawn, so that no other exec node's child inherits these pipes
    /// before they are marked close-on-exec (Glibc's Swift module has no pipe2).
    private static let spawnLock = Mutex(())

    private func spawn(program: String, arguments: [String], environment: [String: String]) throws -> Pipes {
        try Self.spawnLock.withLock { _ in try spawnLocked(program: program, arguments: arguments, environment: environment) }
    }

    private func spawnLocked(program: String, arguments: [String], environment: [String: String]) throws -> Pipes {
        var ends: [[Int32]] = []
        var started = false
        defer { if !started { for pair in ends { close(pair[0]); close(pair[1]) } } }
        for _ in 0..<3 {
            var pair: [Int32] = [-1, -1]
            guard pipe(&pair) == 0 else { throw SpawnError(program: program, errno: errno) }
            ends.append(pair)
            for fd in pair { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, ends[0][0], 0)
        posix_spawn_file_actions_adddup2(&actions, ends[1][1], 1)
        posix_spawn_file_actions_adddup2(&actions, ends[2][1], 2)

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        posix_spawnattr_setpgroup(&attributes, 0)
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        // Ignored dispositions survive exec (servers ignore SIGPIPE): give the child the defaults.
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGCHLD, SIGUSR1, SIGUSR2] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)

        let argv = ([program] + arguments).map { strdup($0) } + [nil]
        let envp = environment.sorted { $0.key < $1.key }.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for pointer in argv + envp { free(pointer) } }

        try state.withLock { state in
            guard !state.killed else { throw CancellationError() }
            var pid = pid_t()
            let result = posix_spawn(&pid, program, &actions, &attributes, argv, envp)
            guard result == 0 else { throw SpawnError(program: program, errno: result) }
            state.pid = pid
        }
        started = true
        // The child has its copies; the parent keeps its own ends only.
        close(ends[0][0])
        close(ends[1][1])
        close(ends[2][1])
        let pipes = Pipes(stdin: ends[0][1], stdout: ends[1][0], stderr: ends[2][0])
        return pipes
    }

    /// Feeds stdin, drains stdout and stderr until both close, then reaps the child. Runs on
    /// its own thread: it blocks in poll(2) and waitid(2).
    private func pump(_ pipes: Pipes, input: [UInt8], stdoutLimit: Int, stderrLimit: Int) -> Output {
        // A child that exits without reading stdin must not kill the server with SIGPIPE.
        var blocked = sigset_t()
        sigemptyset(&blocked)
        sigaddset(&blocked, SIGPIPE)
        pthread_sigmask(SIG_BLOCK, &blocked, nil)

        for fd in [pipes.stdin, pipes.stdout, pipes.stderr] { _ = fcntl(fd, F_SETFL, O_NONBLOCK) }
        var stdinFD: Int32? = pipes.stdin
        var written = 0
        if input.isEmpty {
            close(pipes.stdin)
            stdinFD = nil
        }
        var stdoutOpen = true, stderrOpen = true
        var stdout: [UInt8] = [], stderr: [UInt8] = []
        var overflow = false
        var buffer = [UInt8](repeating: 0, count: 65536)

        while stdoutOpen || stderrOpen {
            var fds: [pollfd] = []
            if let stdinFD { fds.append(pollfd(fd: stdinFD, events: Int16(POLLOUT), revents: 0)) }
            if stdoutOpen { fds.append(pollfd(fd: pipes.stdout, events: Int16(POLLIN), revents: 0)) }
            if stderrOpen { fds.append(pollfd(fd: pipes.stderr, events: Int16(POLLIN), revents: 0)) }
            if poll(&fds, nfds_t(fds.count), -1) < 0 {
                if errno == EINTR { continue }
                break
            }
            for entry in fds where entry.revents != 0 {
                if entry.fd == stdinFD {
                    let count = input.withUnsafeBytes { bytes in
                        write(entry.fd, bytes.baseAddress! + written, input.count - written)
                    }
                    if count > 0 { written += count }
                    if written == input.count || (count < 0 && errno != EAGAIN && errno != EINTR) {
                        close(entry.fd)
                        stdinFD = nil
                    }
                    continue
                }
                let count = read(entry.fd, &buffer, buffer.count)
                if count < 0 && (errno == EAGAIN || errno == EINTR) { continue }
                if count <= 0 {
                    close(entry.fd)
                    if entry.fd == pipes.stdout { stdoutOpen = false } else { stderrOpen = false }
                    continue
                }
                if entry.fd == pipes.stdout {
                    if stdout.count + count > stdoutLimit {
                        if !overflow {
                            overflow = true
                            kill()
                        }
                    } else {
                        stdout += buffer[0..<count]
                    }
                } else if stderr.count < stderrLimit {
                    stderr += buffer[0..<min(count, stderrLimit - stderr.count)]
                }
            }
        }
        if let stdinFD { close(stdinFD) }

        let pid = state.withLock { $0.pid! }
        var info = siginfo_t()
        while waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT) < 0 && errno == EINTR {}
        let status: Int32 = state.withLock { state in
            // The child is a zombie until reaped, so its pid (and group id) cannot be reused yet.
            Glibc.kill(-pid, SIGKILL)
            state.reaped = true
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
            return status
        }
        let termination: Termination = status & 0x7f == 0 ? .exited((status >> 8) & 0xff) : .signaled(status & 0x7f)
        return Output(termination: termination, stdout: stdout, stderr: stderr, stdoutOverflow: overflow)
    }
}
