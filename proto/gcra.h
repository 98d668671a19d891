/* Rate limits as GCRA (the generic cell rate algorithm) over a bounded table of buckets: what the front doors use
 * to limit API keys and client addresses (gateway/ratelimit).
 *
 * A limit is a rate (requests per second) and a burst (how many may come at once after a quiet spell). Each bucket
 * keeps one number, its theoretical arrival time (TAT): a request at `now` conforms when TAT - now <= (burst - 1) *
 * T, where T = 1/rate; it then moves TAT to max(TAT, now) + T. A refused request changes nothing and is told how long
 * until one would conform (the Retry-After). The same figures as the send counters' Redis script
 * (adapters/counters), in memory. A bucket asked under another limit than last time (a tenant changed it) keeps the
 * same fraction of its window used, so the new limit holds from the next request.
 *
 * Bounded memory: a table holds at most `max` buckets, kept in least-recently-used order; a new key when the table is
 * full evicts the least recently used bucket (a bucket whose TAT has passed holds nothing a fresh one would not, so
 * evicting it forgets nothing; only a flood of more than `max` distinct keys within a burst window can make a
 * limited key forget its debt). Pure state: the caller passes the time (ms, any monotonic clock). Not thread-safe:
 * one table belongs to one shard. */
#ifndef SB_GCRA_H
#define SB_GCRA_H

#include "proto/htable.h"
#include "proto/list.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A limit: rate per second (> 0) and burst (>= 1). A rate of 0 means no limit. */
typedef struct sb_gcra_limit {
    double rate;
    uint32_t burst;
} sb_gcra_limit_t;

/* A bucket's key: four words the caller fills (what is limited, and whose: a tenant and a key id, or a tenant and
 * an address's 16 bytes). */
typedef struct sb_gcra_key {
    uint64_t w[4];
} sb_gcra_key_t;

typedef struct sb_gcra {
    sb_htable_t map;
    sb_list_t lru; /* most recently used first */
    size_t n, max;
} sb_gcra_t;

/* Caller's storage: an empty table of at most max (>= 1) buckets. */
void sb_gcra_init(sb_gcra_t *g, size_t max);
/* Frees every bucket. */
void sb_gcra_cleanup(sb_gcra_t *g);

/* Takes one request of key at now_ms under lim. Returns 0 when it conforms (and counts it), or the milliseconds
 * (>= 1) until one would (nothing counted). */
uint64_t sb_gcra_take(sb_gcra_t *g, const sb_gcra_key_t *key, sb_gcra_limit_t lim, uint64_t now_ms);
/* The same test without counting: 0 when a request of key would conform now, or the ms until one would. */
uint64_t sb_gcra_peek(const sb_gcra_t *g, const sb_gcra_key_t *key, sb_gcra_limit_t lim, uint64_t now_ms);

/* Buckets held. */
size_t sb_gcra_size(const sb_gcra_t *g);

#endif
