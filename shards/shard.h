/* Shards: one thread, one libuv loop, and everything that thread owns.
 *
 * A shard runs its actor runtime on its loop (an idle handle while there is work, a timer for the earliest actor
 * timer), owns its Redis and PostgreSQL connections, and receives messages from other threads through one MPSC
 * queue woken by a uv_async_t (which coalesces: every wake-up drains the whole queue). Nothing a shard owns is
 * touched by another thread; threads talk by messages only (sb_shard_exec, actor sends).
 *
 * What runs on a shard is a table of modules, each with its own state in the shard's context object: the domain
 * first (shards/domain: the store, the provider client, the ports the actors use), then the gateway's front doors
 * (HTTP, the live inbox, the console). The table is the caller's; this file knows its entries only as entries. Modules start in table order
 * and stop in reverse, so a front door is gone before the domain it hands work to.
 *
 * Shutdown: sb_shards_drain() asks every module of every shard to stop taking work (drain), waits until none reports
 * work still under way (busy) or the deadline passes, then stops the modules in reverse order, closes the shard's
 * own handles and connections and lets the loop end; finish runs once the loop has no handles left. sb_shards_join()
 * waits for every thread. */
#ifndef SB_SHARD_H
#define SB_SHARD_H

#include "actors/actor.h"

#include <stdbool.h>
#include <uv.h>

typedef struct sb_shard sb_shard_t;
typedef struct sb_redis sb_redis_t;
typedef struct sb_pg sb_pg_t;

#define SB_MAX_SHARDS 256

/* A module of the shard table. Every hook runs on the shard's thread; state is the module's slot in the shard's
 * context (start sets it). Any hook but start may be NULL. */
typedef struct sb_shard_module {
    const char *name;
    /* Before the shard serves anything, in table order. A negative return fails sb_shards_start(). */
    int (*start)(sb_shard_t *s, void **state);
    /* Draining begins: stop taking new work, let what is under way finish. */
    void (*drain)(sb_shard_t *s, void *state);
    /* Work still under way (open connections, sends in flight): draining ends when every module reports 0. */
    unsigned (*busy)(sb_shard_t *s, void *state);
    /* At the end, in reverse table order: close every handle the module opened. */
    void (*stop)(sb_shard_t *s, void *state);
    /* After the loop ran out of handles, in reverse order: free what the closing handles still needed. */
    void (*finish)(sb_shard_t *s, void *state);
} sb_shard_module_t;

#define SB_SHARD_MAX_MODULES 16

typedef struct sb_shards_opts {
    unsigned count;              /* 1..SB_MAX_SHARDS */
    const char *redis_host;      /* NULL: no Redis connection */
    int redis_port, redis_db;
    const char *pg_conninfo;     /* NULL: no PostgreSQL connection */
    const sb_shard_module_t *const *modules; /* every shard runs these, in this order (borrowed: must outlive the
                                              * shards) */
    unsigned nmodules;
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
 * acknowledgement of a webhook waits for its own commit, never behind the actors' writes on sb_shard_pg(). */
sb_pg_t *sb_shard_pg_ingest(sb_shard_t *s);
/* Shard 0's third PostgreSQL connection (NULL elsewhere): the sweeper's scans of the receipts, which take
 * milliseconds, so that no other statement waits behind them. */
sb_pg_t *sb_shard_pg_sweeper(sb_shard_t *s);
bool sb_shard_draining(const sb_shard_t *s);
/* The state module m keeps on shard s (NULL when m is not in the table, or not started). */
void *sb_shard_state(sb_shard_t *s, const sb_shard_module_t *m);

/* Runs fn(target shard, arg) on the target shard's thread, after the messages already queued there. From any
 * thread. Returns 0 (fn will be called exactly once), or SB_ENOENT / SB_ECLOSED (fn is never called). */
typedef void (*sb_shard_fn)(sb_shard_t *s, void *arg);
int sb_shard_exec(unsigned target, sb_shard_fn fn, void *arg);

/* Spawns an actor on the calling shard's runtime (sb_rt_spawn). */
int sb_shard_spawn(sb_shard_t *s, const sb_actor_kind_t *kind, const void *arg, sb_actor_id_t *id);

/* Figures another thread may read at any time (relaxed atomics, refreshed every 100 ms and on demand). */
typedef struct sb_shard_stats {
    uint64_t actors, mailbox_depth, processed, restarts, dead_letters, timers, activations, passivations;
    uint64_t loop_lag_us;        /* how late the last 100 ms tick ran */
    uint64_t remote_in;          /* messages received from other shards */
} sb_shard_stats_t;
void sb_shard_get_stats(unsigned idx, sb_shard_stats_t *out);

#endif
