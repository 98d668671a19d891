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
static inline uint64_t sb_metric_get(_Atomic uint64_t *c) { return atomic_load_explicit(c, memory_order_relaxed); }
static inline int64_t sb_gauge_get(_Atomic int64_t *g) { return atomic_load_explicit(g, memory_order_relaxed); }

/* The provider error bucket of an answer that was not a success: its HTTP status (0: none came) and our error
 * code ("timeout", ...). 401 and 403 have buckets of their own: a revoked or expired credential. */
unsigned sb_metrics_provider_err(int http_status, const char *error_code);

/* Appends the Prometheus text exposition (format 0.0.4) of every figure of the first `shards` shards. */
void sb_metrics_render(sb_buf_t *out, unsigned shards);

#endif
