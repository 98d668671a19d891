/* Global send counters in Redis: the sender's rate limit and the in-flight slots of a channel and of its tenant.
 *
 * Before each provider send a session actor acquires, in one round trip (one Lua script, run atomically by Redis):
 *   - a token from the channel's rate limit, a GCRA (generic cell rate algorithm): the state is one "theoretical
 *     arrival time" (TAT) per sender; a send is admitted when TAT - now <= (burst - 1) * T, where T is the emission
 *     interval (1 s / rate), and moves TAT to max(TAT, now) + T. So from idle `burst` sends pass back to back, then
 *     one per T. Time is Redis's own clock (TIME inside the script), so every shard and node agrees on it;
 *   - a lease in two semaphores, the channel's and the tenant's sorted sets of lease ids scored by expiry time.
 *     Expired leases are dropped before counting, so the slots of a crashed node come back when its leases expire.
 * Either everything is taken or nothing is: a rate-limited send takes no lease, a send that finds a semaphore full
 * takes no token. After the provider answered, sb_counters_release gives the slots back (one more round trip, which
 * needs no waiting for); sb_counters_extend keeps a long send's lease alive.
 *
 * Keys, all carrying the tenant's hash tag so one call's keys live in one Redis Cluster slot, and all expiring when
 * idle (the rate state when TAT has passed, a semaphore when its last lease has expired):
 *     sb:{t<tenant>}:rl:<channel>             hash {tat, iv, burst}: TAT in µs of Redis time, the T and burst used
 *     sb:{t<tenant>}:inflight:ch:<channel>    sorted set, lease id -> expiry (µs of Redis time)
 *     sb:{t<tenant>}:inflight:tenant          sorted set, lease id -> expiry, every channel of the tenant
 *
 * Pacing guarantee: with burst 1, no half-open window of length W ever admits more than ceil(W / T) sends, across
 * every shard and node (at most `rate` in any one-second window when T divides a second); with burst b, b - 1 more.
 *
 * Calls follow redis.h's callback rule: an error return means the callback is never called; 0 means it is called
 * exactly once, on the loop's thread, with err 0 and a result borrowed for the call, or with SB_EUNAVAIL (Redis
 * not connected, the connection lost, or Redis answering an error), SB_ECANCELED (the sb_redis_t was closed) or
 * SB_EPARSE (a reply of the wrong shape). The sb_redis_t is borrowed; no call keeps any other pointer it was given. */
#ifndef SB_COUNTERS_H
#define SB_COUNTERS_H

#include "adapters/redis.h"

#include <stdbool.h>
#include <stdint.h>

/* Provider defaults, sends per second per sender; a channel's settings may override them. */
#define SB_COUNTERS_RATE_TWILIO_LONG_CODE 1 /* a Twilio US long code (SMS) */
#define SB_COUNTERS_RATE_TWILIO_WHATSAPP 10 /* a Twilio WhatsApp sender */
#define SB_COUNTERS_RATE_META_WHATSAPP 80   /* a Meta WhatsApp Cloud API phone number */
#define SB_COUNTERS_DEFAULT_BURST 1         /* strictly paced: never above the rate in any one-second window */
#define SB_COUNTERS_DEFAULT_LEASE_MS 60000  /* a slot nobody released comes back after this */

#define SB_COUNTERS_MAX_INTERVAL_US 86400000000LL /* a day */
#define SB_COUNTERS_MAX_BURST 100000
#define SB_COUNTERS_MAX_LEASE_MS 86400000LL
#define SB_COUNTERS_NO_CHANNEL (-1) /* sb_counters_read: the tenant's figures only */
#define SB_COUNTERS_LEASE_ID_LEN 24 /* hex digits: 48 random bits per thread, then a 48-bit counter */

/* The emission interval T for a rate in sends per second, rounded to the µs (80/s -> 12500); 0 (no rate limit)
 * for a rate <= 0 or not a number. */
int64_t sb_counters_interval_us(double per_second);

typedef struct sb_counters_limits {
    int64_t interval_us; /* GCRA emission interval T = 1e6 / rate; 0: no rate limit (and no rate state is kept) */
    int64_t burst;       /* sends admitted back to back from idle, 1..SB_COUNTERS_MAX_BURST */
    int64_t channel_max; /* concurrent sends of the channel; 0: not limited (leases are still counted) */
    int64_t tenant_max;  /* concurrent sends of the tenant, all channels; 0: not limited (still counted) */
    int64_t lease_ms;    /* how long the slots stay taken unless released or extended, 1..SB_COUNTERS_MAX_LEASE_MS */
} sb_counters_limits_t;

/* What sb_counters_release and sb_counters_extend need; copy it out of the grant. */
typedef struct sb_counters_lease {
    int64_t tenant, channel;
    char id[SB_COUNTERS_LEASE_ID_LEN + 1];
} sb_counters_lease_t;

typedef enum sb_counters_verdict {
    SB_COUNTERS_OK = 0,   /* token and both slots taken */
    SB_COUNTERS_RATE = 1, /* the rate limit says wait: nothing taken */
    SB_COUNTERS_BUSY = 2  /* a semaphore is full: nothing taken */
} sb_counters_verdict_t;

enum { SB_COUNTERS_FULL_CHANNEL = 1, SB_COUNTERS_FULL_TENANT = 2 };

typedef struct sb_counters_grant {
    sb_counters_verdict_t verdict;
    int64_t now_us;  /* Redis time when the script ran (µs since the epoch) */
    int64_t at_us;   /* OK: when the lease expires; RATE: when the next token is free; BUSY: when the lease that
                      * blocks expires (the latest of the two if both sets are full) */
    int64_t wait_us; /* RATE, BUSY: at_us - now_us, the time to wait before trying again; OK: 0 */
    int64_t tokens;  /* OK: sends still admitted back to back after this one (-1 without rate limit); else 0 */
    int full;        /* BUSY: SB_COUNTERS_FULL_* bits; else 0 */
    int64_t channel_inflight, tenant_inflight; /* live leases, this one included on OK; -1 on RATE (not looked at) */
    sb_counters_lease_t lease;                 /* OK: the lease taken; else its id is empty */
} sb_counters_grant_t;

/* g is NULL when err != 0. */
typedef void (*sb_counters_acquire_cb)(void *arg, int err, const sb_counters_grant_t *g);

/* Asks for a token of channel's rate limit and a slot of both semaphores (channel's and tenant's), in one EVALSHA.
 * lim is borrowed for the call. Returns 0 (cb called exactly once), SB_EINVAL for limits out of range, or
 * SB_EUNAVAIL when Redis is not connected. */
int sb_counters_acquire(sb_redis_t *r, int64_t tenant, int64_t channel, const sb_counters_limits_t *lim,
                        sb_counters_acquire_cb cb, void *arg);

/* err 0: done; SB_ENOENT: the lease was no longer held (it had expired), which for a release is harmless. */
typedef void (*sb_counters_done_cb)(void *arg, int err);

/* Removes the lease from both semaphores (one script, one round trip). cb may be NULL: fire and forget, an error
 * reply is logged and a lost connection ignored, since the lease expires anyway. lease is borrowed for the call.
 * Returns 0 or SB_EUNAVAIL (not connected: the lease will expire). */
int sb_counters_release(sb_redis_t *r, const sb_counters_lease_t *lease, sb_counters_done_cb cb, void *arg);

/* Makes a held lease run until Redis's now + lease_ms (in both sets). A lease that already expired is not revived:
 * cb gets SB_ENOENT and the lease is removed from wherever it was left. Returns 0, SB_EINVAL (lease_ms out of
 * range) or SB_EUNAVAIL. */
int sb_counters_extend(sb_redis_t *r, const sb_counters_lease_t *lease, int64_t lease_ms, sb_counters_done_cb cb,
                       void *arg);

/* The console's read-out (one read-only script, one round trip). */
typedef struct sb_counters_state {
    int64_t now_us;                /* Redis time */
    int64_t tenant_inflight;       /* live leases of the tenant, all channels */
    int64_t tenant_next_expiry_us; /* the earliest of them expires then; 0 when none */
    int64_t channel_inflight;      /* the channel's live leases; -1 when no channel was asked */
    int64_t channel_next_expiry_us;
    bool rate_state;     /* the channel has GCRA state; false: idle (or never limited), a whole burst is free */
    int64_t interval_us; /* T and burst as last used by an acquire; 0 without state */
    int64_t burst;
    int64_t tat_us;       /* the theoretical arrival time; 0 without state */
    int64_t tokens;       /* sends admitted back to back now; -1 without state (a whole burst, size unknown here) */
    int64_t next_free_us; /* when the next send is admitted: now_us when tokens != 0 */
} sb_counters_state_t;

/* st is NULL when err != 0. */
typedef void (*sb_counters_read_cb)(void *arg, int err, const sb_counters_state_t *st);

/* Reads the tenant's in-flight figures and, unless channel is SB_COUNTERS_NO_CHANNEL, the channel's in-flight
 * figures and rate state. Expired leases are not counted (and not removed: this is read-only). Returns 0 or
 * SB_EUNAVAIL. */
int sb_counters_read(sb_redis_t *r, int64_t tenant, int64_t channel, sb_counters_read_cb cb, void *arg);

/* ---- calls ----------------------------------------------------------------------------------------------------
 *
 * A live call holds one lease in each of three sorted sets (lease id: the call's key, a CallSid or our own "SB..."
 * name), scored by expiry like a send's: the whole fleet's, its tenant's and its channel's. The call actor renews
 * the lease every few seconds (sb_counters_call_extend) and releases it when the call ends; a crashed node's calls
 * stop being renewed and free their slots within the lease time. Admission checks the three caps and takes the three
 * slots in one script, so no interleaving of nodes can go over any cap. Placing a call also reserves its dial time
 * on the channel's pace (calls per second of the Twilio account) in the same script.
 *
 * The call keys share one hash tag, {calls}, so the script's keys live in one Redis Cluster slot: admissions are
 * few next to sends (a call lasts minutes), and one slot's shard easily takes them.
 *     sb:{calls}:fleet            sorted set, call key -> lease expiry (µs of Redis time)
 *     sb:{calls}:t:<tenant>       the same, the tenant's calls
 *     sb:{calls}:ch:<channel>     the same, the channel's calls
 *     sb:{calls}:pace:<channel>   hash {tat}: when the channel's next dial may go */

#define SB_COUNTERS_CALL_KEY_MAX 64

enum { SB_CALLCAP_FLEET = 1, SB_CALLCAP_TENANT = 2, SB_CALLCAP_CHANNEL = 4 };

typedef struct sb_counters_call_caps {
    int64_t fleet_max, tenant_max, channel_max; /* 0: that cap is not limited (the call still counts) */
    int64_t lease_ms;                           /* the lease's life unless renewed */
    int64_t interval_us;                        /* between two dials of the channel; 0: an incoming call, not paced */
} sb_counters_call_caps_t;

typedef struct sb_counters_call_grant {
    bool admitted;
    int full;                   /* not admitted: SB_CALLCAP_* bits of the caps that were full */
    int64_t now_us, expires_us; /* Redis time; admitted: the lease's expiry */
    int64_t dial_at_us;         /* admitted: when the dial is due (now_us when not paced) */
    int64_t fleet, tenant, channel; /* live calls after the script (this one included when admitted) */
} sb_counters_call_grant_t;

typedef void (*sb_counters_admit_cb)(void *arg, int err, const sb_counters_call_grant_t *g);

/* Admits call_key: its three slots, or nothing. A key that already holds a live lease is admitted again (its lease
 * renewed, nothing counted twice): a retried webhook. Returns 0, SB_EINVAL or SB_EUNAVAIL. */
int sb_counters_call_admit(sb_redis_t *r, int64_t tenant, int64_t channel, const char *call_key,
                           const sb_counters_call_caps_t *caps, sb_counters_admit_cb cb, void *arg);
/* As sb_counters_extend and sb_counters_release, for a call's three leases. */
int sb_counters_call_extend(sb_redis_t *r, int64_t tenant, int64_t channel, const char *call_key, int64_t lease_ms,
                            sb_counters_done_cb cb, void *arg);
int sb_counters_call_release(sb_redis_t *r, int64_t tenant, int64_t channel, const char *call_key,
                             sb_counters_done_cb cb, void *arg);
/* Live calls of the fleet and (tenant >= 0) of a tenant (-1 when not asked); both 0 when err != 0. */
typedef void (*sb_counters_calls_read_cb)(void *arg, int err, int64_t fleet, int64_t tenant);
int sb_counters_calls_read(sb_redis_t *r, int64_t tenant, sb_counters_calls_read_cb cb, void *arg);

/* The GCRA arithmetic of the scripts, for the read-out and for tests: how many sends are admitted back to back at
 * now given TAT, T and burst, and (in *next_free_us, if not NULL) when the next one is. */
int64_t sb_counters_gcra_tokens(int64_t tat_us, int64_t now_us, int64_t interval_us, int64_t burst,
                                int64_t *next_free_us);

#endif
