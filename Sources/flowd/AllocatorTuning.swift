import CAllocator

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
/// Skipped when `GLIBC_TUNABLES` names malloc settings: an operator's explicit choice wins.
enum AllocatorTuning {
    static let trimThreshold: Int32 = 8 << 20
    static let topPad: Int32 = 2 << 20
    static let mmapThreshold: Int32 = 4 << 20

    /// Applies the settings; returns whether they were applied.
    @discardableResult
    static func apply(environment: [String: String]) -> Bool {
        if let tunables = environment["GLIBC_TUNABLES"], tunables.contains("glibc.malloc.") { return false }
        return flowd_allocator_tune(trimThreshold, topPad, mmapThreshold) == 3
    }

    /// Gives free heap memory back to the system after a burst of buffered requests: the free
    /// blocks inside every arena, and the main arena's top.
    static func trim() {
        _ = flowd_allocator_trim()
    }
}
