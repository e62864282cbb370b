import CAllocator
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// glibc's allocator settings for a long-running server.
///
/// With glibc's defaults, a thread that frees a burst of memory returns the top of its arena
/// to the kernel (trim at 128 KiB) and takes it back with page faults on the next burst, and
/// blocks above a moving threshold are `mmap`ed and `munmap`ed one by one. Under submission
/// load that churn cost about a fifth of the server's CPU per run. Keeping up to
/// `trimThreshold` free at an arena's top, growing arenas `topPad` at a time and serving
/// blocks below `mmapThreshold` from the arenas removes it.
///
/// The threshold stays well below a thread arena's heap (64 MiB): a thread arena gives its top
/// back only when it frees a block there while more than `trimThreshold` is free above it, and
/// `malloc_trim` does not touch thread arenas' tops. With 256 MiB / 64 MiB (an earlier choice)
/// every event loop's arena kept what one attack had made it touch: 100 streams of 4 MiB on one
/// connection left 16 to 33 MiB resident after the connection closed, growing with each
/// repeat (18, 49, 49, 51, 68 MiB of anonymous memory over five rounds); with 8 MiB / 2 MiB,
/// 4 to 11 MiB, not growing, and no loss of submission throughput measured (bench-engine,
/// alternating runs).
///
/// Skipped when `GLIBC_TUNABLES` names one of these three settings: an operator's explicit
/// choice wins.
///
/// The per-thread cache (`tcacheCount`): glibc keeps 7 freed blocks of each size per thread by
/// default; an event loop answering 32 streams of a connection at once frees and allocates
/// dozens of blocks of one size per read, and half of a call's allocations fell through to
/// the arena (`_int_malloc`, `_int_free`, consolidation: 10,000 instructions of a
/// `Health/Check` call's 69,000). That size has no `mallopt`; glibc reads it from
/// `GLIBC_TUNABLES` when a process starts, so `flowd serve` re-executes itself once with it
/// (`reexecWithCacheSize`).
enum AllocatorTuning {
    static let trimThreshold: Int32 = 8 << 20
    static let topPad: Int32 = 2 << 20
    static let mmapThreshold: Int32 = 4 << 20
    /// Freed blocks kept per size and thread (glibc's `tcache_count`; its default is 7).
    /// callgrind: `Health/Check` 68,675 -> 63,669 instructions per call, `GetRun` 120,504 ->
    /// 113,232 (64 gave 65,998; 512 gave 63,348 for twice the memory a full cache may hold).
    static let tcacheCount = 256
    static let tcacheTunable = "glibc.malloc.tcache_count"

    /// Applies the settings; returns whether they were applied.
    @discardableResult
    static func apply(environment: [String: String]) -> Bool {
        if let tunables = environment["GLIBC_TUNABLES"],
           ["trim_threshold", "top_pad", "mmap_threshold"].contains(where: { tunables.contains("glibc.malloc.\($0)") }) {
            return false
        }
        return flowd_allocator_tune(trimThreshold, topPad, mmapThreshold) == 3
    }

    /// `GLIBC_TUNABLES` with the cache size added (after the operator's own tunables), or nil
    /// when it names a cache size already (the operator's, or ours after the re-exec).
    static func tunables(adding existing: String?) -> String? {
        guard let existing, !existing.isEmpty else { return "\(tcacheTunable)=\(tcacheCount)" }
        if existing.contains(tcacheTunable) { return nil }
        return "\(existing):\(tcacheTunable)=\(tcacheCount)"
    }

    /// Replaces this process (same pid, arguments and other environment) with itself started
    /// with `tunables(adding:)` in `GLIBC_TUNABLES`. Returns when that is not needed or the
    /// exec failed (the server then runs with glibc's cache size).
    ///
    /// The exec goes through `/proc/self/exe` (the very image running, even if its file was
    /// replaced since), which would rename the process "exe" in `ps`, `top` and `pkill`: the
    /// marker carries the name it was started under and the new image takes it back.
    static func reexecWithCacheSize(environment: [String: String]) {
        // Once only, whatever glibc made of the variable (`reexecMarker` survives the exec).
        if let name = environment[reexecMarker] {
            restoreProcessName(name)
            return
        }
        guard let tunables = tunables(adding: environment["GLIBC_TUNABLES"]) else { return }
        let name = (try? String(contentsOfFile: "/proc/self/comm", encoding: .utf8))?
            .trimmingCharacters(in: .newlines) ?? ""
        setenv("GLIBC_TUNABLES", tunables, 1)
        setenv(reexecMarker, name.isEmpty ? "flowd" : name, 1)
        execv("/proc/self/exe", CommandLine.unsafeArgv)
        // Still here: the exec failed. Carry on as started.
        if let existing = environment["GLIBC_TUNABLES"] {
            setenv("GLIBC_TUNABLES", existing, 1)
        } else {
            unsetenv("GLIBC_TUNABLES")
        }
        unsetenv(reexecMarker)
    }

    /// Set in the environment of the re-executed process, to the process's name before the exec.
    static let reexecMarker = "FLOWD_ALLOCATOR_REEXEC"

    /// Names the process (its main thread: `/proc/self/comm` is the thread group leader's).
    private static func restoreProcessName(_ name: String) {
        guard !name.isEmpty, let file = fopen("/proc/self/comm", "w") else { return }
        fputs(name, file)
        fclose(file)
    }

    /// Gives free heap memory back to the system after a burst of buffered requests: the free
    /// blocks inside every arena, and the main arena's top.
    static func trim() {
        _ = flowd_allocator_trim()
    }
}
