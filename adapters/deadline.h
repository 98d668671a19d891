/* A deadline on an asynchronous operation: its caller is answered exactly once, by the operation or, if that takes
 * longer than allowed, with SB_ETIMEDOUT. What the Redis and PostgreSQL pings (readiness) share.
 *
 *   d = sb_deadline_start(loop, 500, cb, arg);      start the operation with d as its argument; if that fails,
 *   sb_deadline_cancel(d);                          (cb is never called)
 *   ... in the operation's callback:
 *   sb_deadline_answer(d, err, detail);             cb runs unless the deadline passed first
 *
 * The object lives until both the operation's answer came and its timer closed, so a late answer is safe. */
#ifndef SB_DEADLINE_H
#define SB_DEADLINE_H

#include <stdint.h>
#include <uv.h>

typedef struct sb_deadline sb_deadline_t;
typedef void (*sb_deadline_cb)(void *arg, int err, const char *detail);

sb_deadline_t *sb_deadline_start(uv_loop_t *loop, uint64_t timeout_ms, sb_deadline_cb cb, void *arg);
/* The operation answered: cb(arg, err, detail), unless the deadline passed first. Call exactly once. */
void sb_deadline_answer(sb_deadline_t *d, int err, const char *detail);
/* The operation could not even start: nothing is called; d is gone. */
void sb_deadline_cancel(sb_deadline_t *d);

#endif
