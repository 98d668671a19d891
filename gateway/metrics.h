/* Front-door counters, per shard, readable from any thread.
 *
 * A leaf header usable from every layer. Each shard writes only its own row (single writer), so an increment is a
 * relaxed load and store with no locked instruction; readers (the /metrics page, the console) load relaxed and may
 * see a figure a few microseconds old, never a torn one. Actor-runtime figures live in the shard
 * (sb_shard_get_stats); sb_metrics_render() prints both. */
#ifndef SB_METRICS_H
#define SB_METRICS_H

#include "proto/str.h"

#include <stdatomic.h>
#include <stdint.h>

#define SB_METRICS_CH_TYPES 8 /* sb_channel_type_t values, SB_CH_NONE included */
#define SB_SEND_RESULTS 4     /* sent, retry, failed, unknown (actors/ports.h's sb_send_result_t minus one) */
#define SB_PROVIDER_ERRS 9    /* "400" "401" "403" "404" "429" "4xx" "5xx" "timeout" "transport" */
#define SB_HIST_BUCKETS 15    /* 14 upper bounds, 100 us .. 2.5 s, and +Inf */

/* A latency histogram with fixed bounds (sb_hist_bucket), written by one thread. buckets[i] counts the observations
 * that fell in bucket i alone (not cumulative: one store an observation); the rendering sums them up into
 * Prometheus's cumulative `le` buckets and derives _count from them, so _count always equals the +Inf bucket. */
typedef struct sb_hist {
    _Atomic uint64_t buckets[SB_HIST_BUCKETS];
    _Atomic uint64_t sum_ns;
} sb_hist_t;

typedef struct sb_metrics {
    _Atomic uint64_t http_requests;       /* requests answered (any status) */
    _Atomic uint64_t http_status[6];      /* by class: [1]=1xx .. [5]=5xx */
    _Atomic int64_t http_connections;     /* open HTTP/WebSocket connections */
    _Atomic uint64_t connections_refused; /* HTTP and console connections refused for lack of descriptors */
    _Atomic int64_t console_sessions;     /* open admin console sessions */
    _Atomic uint64_t console_commands;
    _Atomic int64_t inbox_clients;        /* live inbox WebSocket clients */
    _Atomic uint64_t inbox_events;        /* events written to live inbox clients */
    _Atomic uint64_t inbox_too_slow;      /* live inbox clients closed with 4408 */
    _Atomic uint64_t receipts_stored;     /* webhook receipts committed (repeats of stored ones not counted) */
    _Atomic uint64_t receipts_applied;    /* receipts marked processed by their session's write */
    _Atomic uint64_t calls_admitted;      /* calls given a slot (incoming and placed) */
    _Atomic uint64_t calls_rejected;      /* calls refused at capacity */
    _Atomic int64_t calls_live;           /* calls holding a slot, counted on the shard of their actor */
    _Atomic int64_t media_streams;        /* Media Streams being relayed */
    _Atomic uint64_t media_frames;        /* Media Streams frames relayed, both ways */
    _Atomic uint64_t media_dropped;       /* audio frames dropped toward a voice app that fell behind */
    _Atomic uint64_t rate_limited;        /* tenant API requests and inbox sends refused by a rate limit (429) */
    _Atomic uint64_t channel_lookups;     /* channels read from PostgreSQL by the front doors' cache (misses) */
    /* Labels are bounded: a channel type (proto/event.h's sb_channel_type_t), a provider, a status class or one of
     * a fixed set of provider error buckets; never a tenant, a channel or an address. */
    _Atomic uint64_t sends[SB_METRICS_CH_TYPES][SB_SEND_RESULTS];   /* provider answers: sent, retry, failed, unknown */
    _Atomic uint64_t provider_errors[SB_METRICS_CH_TYPES][SB_PROVIDER_ERRS]; /* by sb_metrics_provider_err() */
    _Atomic int64_t breaker_open[2];      /* [0] Twilio's API, [1] Meta's: 1 while the shard's breaker is not closed */
    _Atomic uint64_t webhooks[2][6];      /* provider webhook requests by provider ([0] Twilio, [1] Meta) and class */
    _Atomic uint64_t webhook_events[SB_METRICS_CH_TYPES][2]; /* new receipts by channel type: messages, statuses */
    _Atomic int64_t redis_up, postgres_up; /* the shard's connections (postgres: both of its own), set per tick */
    _Atomic int64_t lane_depth[3];        /* outbound messages in the sessions' lanes (waiting or under way), by
                                           * priority: [0] interactive, [1] normal, [2] bulk (actors/session.h) */
    sb_hist_t redis_seconds;              /* command written to Redis -> its reply read (adapters/redis.c) */
    sb_hist_t postgres_seconds;           /* a segment's Sync sent -> its Sync result (adapters/pg.c) */
    /* Node-wide figures of the database, refreshed by shard 0 every few seconds (shards/domain.c); row 0 only. */
    _Atomic int64_t outbox_waiting;       /* rows of outbox: outbound messages not finished */
    _Atomic int64_t outbox_oldest_ms;     /* age of the oldest of them (0: none) */
    _Atomic int64_t webhook_dead_letters; /* rows of webhook_dead_letters */
    _Alignas(64) char pad_;               /* keep shards' rows on separate cache lines */
} sb_metrics_t;

#define SB_METRICS_MAX_SHARDS 256

/* The row of shard idx (idx < SB_METRICS_MAX_SHARDS). */
sb_metrics_t *sb_metrics_shard(unsigned idx);

static inline void sb_metric_add(_Atomic uint64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n, memory_order_relaxed);
}
static inline void sb_gauge_add(_Atomic int64_t *g, int64_t n)
{
    atomic_store_explicit(g, atomic_load_explicit(g, memory_order_relaxed) + n, memory_order_relaxed);
}
static inline void sb_gauge_set(_Atomic int64_t *g, int64_t v)
{
    atomic_store_explicit(g, v, memory_order_relaxed);
}
static inline uint64_t sb_metric_get(_Atomic uint64_t *c) { return atomic_load_explicit(c, memory_order_relaxed); }
static inline int64_t sb_gauge_get(_Atomic int64_t *g) { return atomic_load_explicit(g, memory_order_relaxed); }

/* The bucket of a latency of ns nanoseconds: the first i whose upper bound (100 us, 250 us, 500 us, 1 ms, 2.5 ms,
 * 5 ms, 10 ms, 25 ms, 50 ms, 100 ms, 250 ms, 500 ms, 1 s, 2.5 s) is >= ns, or SB_HIST_BUCKETS - 1 (+Inf) when none
 * is. Bounds are inclusive, as Prometheus's `le`. Pure; at most 14 compares. */
static inline unsigned sb_hist_bucket(uint64_t ns)
{
    static const uint64_t bound[SB_HIST_BUCKETS - 1] = {
        100000,   250000,    500000,    1000000,   2500000,   5000000,    10000000,
        25000000, 50000000,  100000000, 250000000, 500000000, 1000000000, 2500000000};
    unsigned i = 0;
    while (i < SB_HIST_BUCKETS - 1 && ns > bound[i])
        i++;
    return i;
}

/* Records one latency of ns nanoseconds in h (h's one writer only). h may be NULL: nothing is recorded. */
static inline void sb_hist_observe(sb_hist_t *h, uint64_t ns)
{
    if (!h)
        return;
    sb_metric_add(&h->buckets[sb_hist_bucket(ns)], 1);
    sb_metric_add(&h->sum_ns, ns);
}

/* The provider error bucket of an answer that was not a success: its HTTP status (0: none came) and our error
 * code ("timeout", ...). 401 and 403 have buckets of their own: a revoked or expired credential. */
unsigned sb_metrics_provider_err(int http_status, const char *error_code);

/* Appends the Prometheus text exposition (format 0.0.4) of every figure of the first `shards` shards. */
void sb_metrics_render(sb_buf_t *out, unsigned shards);

#endif
