// SQLite's process-wide settings behind plain functions (sqlite3_config is variadic, which
// Swift cannot call).
#ifndef FLOWD_CSQLITETUNING_SHIM_H
#define FLOWD_CSQLITETUNING_SHIM_H

#include <sqlite3.h>

/// Turns SQLite's memory statistics off (on = 0) or on: with them on, every allocation of
/// every connection takes one process-wide mutex. Only valid before SQLite is initialized
/// (the first connection opened); returns SQLITE_OK, or SQLITE_MISUSE when it is too late.
static inline int flowd_sqlite_config_memstatus(int on) {
    return sqlite3_config(SQLITE_CONFIG_MEMSTATUS, on);
}

#endif
