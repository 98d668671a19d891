/* PostgreSQL adapter: one non-blocking libpq connection per shard, driven by the shard's libuv loop.
 *
 * The connection is made with PQconnectStart/PQconnectPoll and its socket watched with a uv_poll_t, so nothing
 * ever blocks the loop. When the server goes away the adapter notices (the socket turns readable and libpq reports
 * the connection bad), fails what was pending, and reconnects with exponential backoff from 100 ms to 5 s.
 *
 * Queries are queued and sent in order, one at a time, with PQsendQuery. This issue needs only a liveness probe
 * (readiness); the ingest path of the next issue moves this to pipeline mode. */
#ifndef SB_PG_H
#define SB_PG_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

typedef struct sb_pg sb_pg_t;

/* Starts connecting with the libpq connection string (copied). Never fails: errors are retried. */
sb_pg_t *sb_pg_create(uv_loop_t *loop, const char *conninfo);
/* Closes the connection; pending callbacks are called with SB_ECANCELED; freed once its handles have closed. */
void sb_pg_close(sb_pg_t *pg);
bool sb_pg_connected(const sb_pg_t *pg);

/* err is 0 when the server answered in time; otherwise an SB_E* code and a short description (valid during the
 * call only). */
typedef void (*sb_pg_ping_cb)(void *arg, int err, const char *detail);
/* Runs "SELECT 1". Returns 0 and then calls cb exactly once; or SB_EUNAVAIL when not connected (cb never called). */
int sb_pg_ping(sb_pg_t *pg, uint64_t timeout_ms, sb_pg_ping_cb cb, void *arg);

#endif
