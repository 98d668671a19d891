/* Redis adapter: one asynchronous hiredis connection per shard, on the shard's libuv loop.
 *
 * The connection is kept up by itself: when Redis goes away (refused, reset, closed) it reconnects with exponential
 * backoff from 100 ms to 5 s, forever, until sb_redis_close(). Commands issued while disconnected fail at once with
 * SB_EUNAVAIL instead of queueing, so callers (readiness, later the counters) see the truth quickly.
 *
 * This issue needs only PING (readiness); the command API grows with the counters. */
#ifndef SB_REDIS_H
#define SB_REDIS_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

typedef struct sb_redis sb_redis_t;

/* Starts connecting to host:port (then SELECT db). host is copied. Never fails: connection errors are retried. */
sb_redis_t *sb_redis_create(uv_loop_t *loop, const char *host, int port, int db);
/* Closes the connection and frees the adapter once its handles have closed (on later loop iterations). Pending
 * callbacks are called with SB_ECANCELED. */
void sb_redis_close(sb_redis_t *r);
bool sb_redis_connected(const sb_redis_t *r);

/* err is 0 when Redis answered PONG in time; otherwise an SB_E* code and a short static description. */
typedef void (*sb_redis_ping_cb)(void *arg, int err, const char *detail);
/* Sends PING. Returns 0 and then calls cb exactly once (answer, error, or timeout_ms elapsed); or returns a
 * negative code (not connected: SB_EUNAVAIL) and never calls cb. */
int sb_redis_ping(sb_redis_t *r, uint64_t timeout_ms, sb_redis_ping_cb cb, void *arg);

#endif
