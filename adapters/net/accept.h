/* Accepting connections without running out of descriptors.
 *
 * Every connection is a descriptor, and the shard needs a few of its own beside them (PostgreSQL, Redis, outgoing
 * HTTP, a log reopened). Linux hands out the lowest free descriptor, so an accepted connection's number says how
 * close the process is to its limit: one at or above the limit less SB_ACCEPT_FD_RESERVE is closed at once and
 * counted, and the burst of such refusals is logged twice, when it starts and when connections are taken again. */
#ifndef SB_ACCEPT_H
#define SB_ACCEPT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#define SB_ACCEPT_FD_RESERVE 64

typedef struct sb_accept_guard {
    const char *what;             /* the listener, in log lines: "http", "console" */
    _Atomic uint64_t *refused;    /* the counter of refused connections (a metrics row's) */
    uint64_t fd_limit;            /* the soft limit when the guard was set up */
    uint64_t burst;               /* refused since the last connection taken */
} sb_accept_guard_t;

/* Reads the process's descriptor limit (call after it was raised). */
void sb_accept_guard_init(sb_accept_guard_t *g, const char *what, _Atomic uint64_t *refused);

/* Accepts the next connection of server into client (initialized by the caller, not yet accepted). Returns true
 * when the connection is the caller's to serve; false when it was not accepted or is refused for lack of
 * descriptors: the caller then closes client as it would any handle. */
bool sb_accept_guarded(sb_accept_guard_t *g, uv_stream_t *server, uv_stream_t *client);

#endif
