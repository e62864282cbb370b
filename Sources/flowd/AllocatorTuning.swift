import CAllocator

/// glibc's allocator settings for a long-running server.
///
/// With glibc's defaults, a thread that frees a burst of memory returns the top of its arena
/// to the kernel (trim at 128 KiB) and takes it back with page faults on the next burst, and
/// blocks above a moving threshold are `mmap`ed and `munmap`ed one by one. Under submission
/// load that churn cost about a fifth of the server's CPU per run. Keeping up to
/// `trimThreshold` free at an arena's top, growing arenas `topPad` at a time and serving
/// blocks below `mmapThreshold` from the arenas removes it, at the price of keeping memory
/// the process has once used (bounded by its peak, not growing).
///
/// Skipped when `GLIBC_TUNABLES` names malloc settings: an operator's explicit choice wins.
enum AllocatorTuning {
    static let trimThreshold: Int32 = 256 << 20
    static let topPad: Int32 = 64 << 20
    static let mmapThreshold: Int32 = 4 << 20

    /// Applies the settings; returns whether they were applied.
    @discardableResult
    static func apply(environment: [String: String]) -> Bool {
        if let tunables = environment["GLIBC_TUNABLES"], tunables.contains("glibc.malloc.") { return false }
        return flowd_allocator_tune(trimThreshold, topPad, mmapThreshold) == 3
    }

    /// Gives free heap memory back to the system, after a burst of buffered requests (the
    /// trim threshold above would otherwise keep up to 256 MiB per arena resident).
    static func trim() {
        _ = flowd_allocator_trim()
    }
}
