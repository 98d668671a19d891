/* Shards: one thread, one libuv loop, and everything that thread owns.
 *
 * A shard runs its actor runtime on its loop (an idle handle while there is work, a timer for the earliest actor
 * timer), owns its Redis and PostgreSQL connections, and receives messages from other threads through one MPSC
 * queue woken by a uv_async_t (which coalesces: every wake-up drains the whole queue). Nothing a shard owns is
 * touched by another thread; threads talk by messages only (sb_shard_exec, actor sends).
 *
 * The front doors (HTTP, console) are the gateway's: it creates them on each shard thread from the start hook and
 * closes them from the drain/stop hooks, so this layer stays free of routes and protocols.
 *
 * Shutdown: sb_shards_drain() asks every shard to stop accepting (drain hook), waits until the hooks report no
 * connections left or the deadline passes, then runs the stop hook, closes its own handles and lets the loop end.
 * sb_shards_join() waits for every thread. */
#ifndef SB_SHARD_H
#define SB_SHARD_H

#include "actors/actor.h"

#include <stdbool.h>
#include <uv.h>

typedef struct sb_shard sb_shard_t;
typedef struct sb_redis sb_redis_t;
typedef struct sb_pg sb_pg_t;

#define SB_MAX_SHARDS 256

typedef struct sb_shard_hooks {
    void *arg;
    /* On the shard thread, before it serves anything. A negative return fails sb_shards_start(). */
    int (*start)(sb_shard_t *s, void *arg);
    /* On the shard thread when draining begins: stop accepting, let in-flight work finish. */
    void (*drain)(sb_shard_t *s, void *arg);
    /* Connections still open on this shard's front doors; draining ends when it reaches 0. */
    unsigned (*connections)(sb_shard_t *s, void *arg);
    /* On the shard thread at the end: close every handle the hooks opened. */
    void (*stop)(sb_shard_t *s, void *arg);
    /* On the shard thread after its loop ran out of handles; the loop runs once more afterwards, for what finishes
     * closing in two steps. */
    void (*finish)(sb_shard_t *s, void *arg);
} sb_shard_hooks_t;

typedef struct sb_shards_opts {
    unsigned count;              /* 1..SB_MAX_SHARDS */
    const char *redis_host;      /* NULL: no Redis connection */
    int redis_port, redis_db;
    const char *pg_conninfo;     /* NULL: no PostgreSQL connection */
    sb_shard_hooks_t hooks;
} sb_shards_opts_t;

/* Starts every shard thread and waits until each has run its start hook. Returns 0, or the first hook error (the
 * shards already started are stopped and joined). Call once, from the main thread. Strings in opts are copied. */
int sb_shards_start(const sb_shards_opts_t *opts);
/* From any thread: begins a graceful drain of every shard, ending at the latest timeout_ms from now. Idempotent. */
void sb_shards_drain(uint64_t timeout_ms);
/* From the main thread: waits for every shard thread to end and frees them. */
void sb_shards_join(void);

unsigned sb_shards_count(void);
/* Shard threads that have not ended yet (any thread). */
unsigned sb_shards_running(void);
sb_shard_t *sb_shard_get(unsigned idx);
/* The shard of the calling thread, or NULL on a thread that is not a shard. */
sb_shard_t *sb_shard_self(void);

unsigned sb_shard_index(const sb_shard_t *s);
uv_loop_t *sb_shard_loop(sb_shard_t *s);
sb_rt_t *sb_shard_rt(sb_shard_t *s);
sb_redis_t *sb_shard_redis(sb_shard_t *s);
sb_pg_t *sb_shard_pg(sb_shard_t *s);
/* The shard's second PostgreSQL connection, for webhook receipts only: inserts that lock no shared row, so the
 * acknowledgement of a webhook waits for its own commit, never behind the applies and sends on sb_shard_pg(). */
sb_pg_t *sb_shard_pg_ingest(sb_shard_t *s);
bool sb_shard_draining(const sb_shard_t *s);
/* A pointer the gateway keeps per shard (its front doors). */
void *sb_shard_user(sb_shard_t *s);
void sb_shard_set_user(sb_shard_t *s, void *user);

/* Runs fn(target shard, arg) on the target shard's thread, after the messages already queued there. From any
 * thread. Returns 0 (fn will be called exactly once), or SB_ENOENT / SB_ECLOSED (fn is never called). */
typedef void (*sb_shard_fn)(sb_shard_t *s, void *arg);
int sb_shard_exec(unsigned target, sb_shard_fn fn, void *arg);

/* Spawns an actor on the calling shard's runtime (sb_rt_spawn). */
int sb_shard_spawn(sb_shard_t *s, const sb_actor_kind_t *kind, const void *arg, sb_actor_id_t *id);

/* Figures another thread may read at any time (relaxed atomics, refreshed every 100 ms and on demand). */
typedef struct sb_shard_stats {
    uint64_t actors, mailbox_depth, processed, restarts, dead_letters, timers;
    uint64_t loop_lag_us;        /* how late the last 100 ms tick ran */
    uint64_t remote_in;          /* messages received from other shards */
} sb_shard_stats_t;
void sb_shard_get_stats(unsigned idx, sb_shard_stats_t *out);

#endif
