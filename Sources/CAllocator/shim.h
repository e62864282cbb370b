// glibc's mallopt behind one function (its parameters are macros of <malloc.h>).
#ifndef FLOWD_CALLOCATOR_SHIM_H
#define FLOWD_CALLOCATOR_SHIM_H

#if defined(__GLIBC__) || defined(__linux__)
#include <malloc.h>

/// Sets glibc's trim threshold, top pad and mmap threshold (bytes); returns how many were accepted.
static inline int flowd_allocator_tune(int trim_threshold, int top_pad, int mmap_threshold) {
    return mallopt(M_TRIM_THRESHOLD, trim_threshold) + mallopt(M_TOP_PAD, top_pad)
        + mallopt(M_MMAP_THRESHOLD, mmap_threshold);
}

/// Returns free memory at the top of the heap and in free chunks to the system (malloc_trim).
static inline int flowd_allocator_trim(void) { return malloc_trim(0); }
#else
static inline int flowd_allocator_trim(void) { return 0; }
static inline int flowd_allocator_tune(int trim_threshold, int top_pad, int mmap_threshold) {
    (void)trim_threshold; (void)top_pad; (void)mmap_threshold;
    return 0;
}
#endif

#endif
