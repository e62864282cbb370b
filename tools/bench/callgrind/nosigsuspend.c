/*
 * LD_PRELOAD shim for running flowd under valgrind 3.19 (tools/bench/callgrind-health.sh).
 *
 * Swift's async main ends the main thread through dispatch_main(), whose libdispatch parks it
 * in sigsuspend() on a mask in libdispatch's data; valgrind 3.19 crashes checking that
 * syscall ("VALGRIND INTERNAL ERROR ... signal 11" at rt_sigsuspend). The parked thread only
 * waits for the process to end, so pause() does the same job.
 */
#include <signal.h>
#include <unistd.h>

int sigsuspend(const sigset_t *mask) {
    (void)mask;
    for (;;) pause();
}
