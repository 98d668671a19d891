/* Global send counters: the Lua scripts and their calls; see counters.h for the contract and the keys.
 *
 * Redis runs a script atomically, so a check and its take cannot be split by another node's call: that is what
 * keeps the limits exact across the fleet. Times in the scripts are µs of Redis's clock; Lua numbers are doubles,
 * exact for integers below 2^53 (µs since 1970 stay below that for another ~250 years), and every number a script
 * writes into Redis goes through num() so it is written as a plain integer, never in exponent notation. Key TTLs
 * are whole ms: each is rounded up and given one ms more, so a key never vanishes before the state it holds is
 * stale (a rate key a hair early would admit a send a hair early).
 *
 * Lease ids are made here, not in Redis: 48 random bits drawn once per thread and a per-thread counter, in hex. Two
 * leases of one tenant could only share an id if two threads drew the same 48 bits; even then the damage is one
 * slot freed early. */
#include "adapters/counters.h"

#include "adapters/crypto.h"
#include "gateway/log.h"
#include "proto/err.h"
#include "proto/mem.h"

#include <hiredis/hiredis.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- the scripts ---------------------------------------------------------------------------------------------- */

/* KEYS: rate state, channel leases, tenant leases. ARGV: T µs (0: no rate limit), burst, channel max (0: none),
 * tenant max (0: none), lease ms, lease id.
 * Reply {verdict, now, at, tokens|full, channel in-flight, tenant in-flight}:
 *   {0, now, lease expiry, tokens left (-1: no rate limit), ch, tn}   taken
 *   {1, now, when a token is free, 0, -1, -1}                          rate limited, nothing taken
 *   {2, now, when the blocking lease expires, full bits, ch, tn}      a semaphore full, nothing taken */
static const char acquire_lua[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local function num(x) return string.format('%.0f', x) end\n"
    "local iv, burst = tonumber(ARGV[1]), tonumber(ARGV[2])\n"
    "local tat, tokens = now, -1\n"
    "if iv > 0 then\n"
    "  local tau = (burst - 1) * iv\n"
    "  local s = tonumber(redis.call('HGET', KEYS[1], 'tat'))\n"
    "  if s and s > now then tat = s end\n"
    "  if tat - now > tau then return {1, now, tat - tau, 0, -1, -1} end\n"
    "  tokens = math.floor((tau - (tat - now)) / iv)\n"
    "end\n"
    /* drops expired leases, counts the live ones; when the set is full, also says when a slot frees: the expiry of
     * the (n - max + 1)th earliest lease (n can exceed max if the limit was lowered) */
    "local function count(key, max)\n"
    "  redis.call('ZREMRANGEBYSCORE', key, '-inf', num(now))\n"
    "  local n = redis.call('ZCARD', key)\n"
    "  if max > 0 and n >= max then\n"
    "    local e = redis.call('ZRANGE', key, n - max, n - max, 'WITHSCORES')\n"
    "    return n, tonumber(e[2])\n"
    "  end\n"
    "  return n, false\n"
    "end\n"
    "local chn, chfree = count(KEYS[2], tonumber(ARGV[3]))\n"
    "local tn, tfree = count(KEYS[3], tonumber(ARGV[4]))\n"
    "if chfree or tfree then\n"
    "  local at, full = 0, 0\n"
    "  if chfree then at, full = chfree, 1 end\n"
    "  if tfree then\n"
    "    if tfree > at then at = tfree end\n"
    "    full = full + 2\n"
    "  end\n"
    "  return {2, now, at, full, chn, tn}\n"
    "end\n"
    "if iv > 0 then\n"
    "  local ntat = tat + iv\n"
    "  redis.call('HSET', KEYS[1], 'tat', num(ntat), 'iv', ARGV[1], 'burst', ARGV[2])\n"
    "  redis.call('PEXPIRE', KEYS[1], math.ceil((ntat - now) / 1000) + 1)\n"
    "end\n"
    "local exp, ttl = now + tonumber(ARGV[5]) * 1000, tonumber(ARGV[5]) + 1\n"
    "for i = 2, 3 do\n"
    "  redis.call('ZADD', KEYS[i], num(exp), ARGV[6])\n"
    "  if redis.call('PTTL', KEYS[i]) < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end\n"
    "end\n"
    "return {0, now, exp, tokens, chn + 1, tn + 1}\n";

/* KEYS: the sets holding the lease (a send's channel and tenant; a call's fleet, tenant and channel). ARGV: lease
 * id. Reply: how many of the sets held it. */
static const char release_lua[] =
    "local n = 0\n"
    "for i = 1, #KEYS do n = n + redis.call('ZREM', KEYS[i], ARGV[1]) end\n"
    "return n\n";

/* KEYS: the sets holding the lease. ARGV: lease ms, lease id. Reply: 1 extended in all, 0 lost (then removed from
 * all, so the sets keep agreeing). A lease whose expiry has passed is lost even if no acquire has swept it yet: its
 * slot may already have been counted free. */
static const char extend_lua[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "for i = 1, #KEYS do\n"
    "  local s = redis.call('ZSCORE', KEYS[i], ARGV[2])\n"
    "  if not s or tonumber(s) <= now then\n"
    "    for j = 1, #KEYS do redis.call('ZREM', KEYS[j], ARGV[2]) end\n"
    "    return 0\n"
    "  end\n"
    "end\n"
    "local exp, ttl = string.format('%.0f', now + tonumber(ARGV[1]) * 1000), tonumber(ARGV[1]) + 1\n"
    "for i = 1, #KEYS do\n"
    "  redis.call('ZADD', KEYS[i], 'XX', exp, ARGV[2])\n"
    "  if redis.call('PTTL', KEYS[i]) < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end\n"
    "end\n"
    "return 1\n";

/* KEYS: tenant leases [, rate state, channel leases]. Read-only.
 * Reply {now, tenant live, tenant earliest expiry (0: none) [, channel live, channel earliest, tat, iv, burst]},
 * the last three -1 without rate state. */
static const char read_lua[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local after = '(' .. string.format('%.0f', now)\n"
    "local function live(key)\n"
    "  local first = redis.call('ZRANGEBYSCORE', key, after, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)\n"
    "  return redis.call('ZCOUNT', key, after, '+inf'), tonumber(first[2]) or 0\n"
    "end\n"
    "local tn, tfirst = live(KEYS[1])\n"
    "if #KEYS < 3 then return {now, tn, tfirst} end\n"
    "local cn, cfirst = live(KEYS[3])\n"
    "local h = redis.call('HMGET', KEYS[2], 'tat', 'iv', 'burst')\n"
    "return {now, tn, tfirst, cn, cfirst, tonumber(h[1]) or -1, tonumber(h[2]) or -1, tonumber(h[3]) or -1}\n";

/* Calls. KEYS: fleet, tenant and channel call leases, the channel's dialling pace. ARGV: fleet max, tenant max,
 * channel max (0: none), lease ms, lease id (the call's key), T µs between two dials (0: not paced).
 * Reply {verdict, now, lease expiry | full bits, dial at, fleet, tenant, channel live calls}:
 *   {0, now, expiry, when to dial, f, t, c}   admitted (this call counted); a lease already held is renewed
 *   {1, now, full bits, 0, f, t, c}           a cap is full: nothing taken
 * The pace is a reservation, not a refusal (GCRA's virtual scheduling with burst 1): an admitted call is told the
 * time its dial is due, at least T after the previous one's, so admission never waits and dials never bunch. */
static const char call_admit_lua[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local function num(x) return string.format('%.0f', x) end\n"
    "local exp, ttl = now + tonumber(ARGV[4]) * 1000, tonumber(ARGV[4]) + 1\n"
    "local n, full = {}, 0\n"
    "local held = redis.call('ZSCORE', KEYS[1], ARGV[5])\n"
    "held = held and tonumber(held) > now\n"
    "for i = 1, 3 do\n"
    "  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', num(now))\n"
    "  n[i] = redis.call('ZCARD', KEYS[i])\n"
    "  local max = tonumber(ARGV[i])\n"
    "  if not held and max > 0 and n[i] >= max then full = full + 2 ^ (i - 1) end\n"
    "end\n"
    "if full > 0 then return {1, now, full, 0, n[1], n[2], n[3]} end\n"
    "local at, iv = now, tonumber(ARGV[6])\n"
    "if iv > 0 and not held then\n"
    "  local tat = tonumber(redis.call('HGET', KEYS[4], 'tat'))\n"
    "  if tat and tat > now then at = tat end\n"
    "  redis.call('HSET', KEYS[4], 'tat', num(at + iv))\n"
    "  redis.call('PEXPIRE', KEYS[4], math.ceil((at + iv - now) / 1000) + 1)\n"
    "end\n"
    "for i = 1, 3 do\n"
    "  if not held then n[i] = n[i] + 1 end\n"
    "  redis.call('ZADD', KEYS[i], num(exp), ARGV[5])\n"
    "  if redis.call('PTTL', KEYS[i]) < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end\n"
    "end\n"
    "return {0, now, exp, at, n[1], n[2], n[3]}\n";

/* KEYS: fleet [, tenant] call leases. Read-only. Reply {now, fleet live [, tenant live]}. */
static const char calls_read_lua[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local r = {now}\n"
    "for i = 1, #KEYS do r[i + 1] = redis.call('ZCOUNT', KEYS[i], '(' .. string.format('%.0f', now), '+inf') end\n"
    "return r\n";

static sb_redis_script_t acquire_script, release_script, extend_script, read_script, call_admit_script,
    calls_read_script;
static pthread_once_t scripts_once = PTHREAD_ONCE_INIT;

static void scripts_init(void)
{
    sb_redis_script_init(&acquire_script, acquire_lua);
    sb_redis_script_init(&release_script, release_lua);
    sb_redis_script_init(&extend_script, extend_lua);
    sb_redis_script_init(&read_script, read_lua);
    sb_redis_script_init(&call_admit_script, call_admit_lua);
    sb_redis_script_init(&calls_read_script, calls_read_lua);
}

static void scripts(void)
{
    pthread_once(&scripts_once, scripts_init);
}

/* ---- helpers -------------------------------------------------------------------------------------------------- */

/* Key names are short: "sb:{t" + 20 digits + "}:inflight:ch:" + 20 digits. */
#define KEY_MAX 80

enum { KEY_RATE, KEY_CHANNEL, KEY_TENANT, KEY_CALLS_FLEET, KEY_CALLS_TENANT, KEY_CALLS_CHANNEL, KEY_CALLS_PACE };

static size_t key(char out[KEY_MAX], int kind, int64_t tenant, int64_t channel)
{
    int n;
    switch (kind) {
    case KEY_RATE:
        n = snprintf(out, KEY_MAX, "sb:{t%lld}:rl:%lld", (long long)tenant, (long long)channel);
        break;
    case KEY_CHANNEL:
        n = snprintf(out, KEY_MAX, "sb:{t%lld}:inflight:ch:%lld", (long long)tenant, (long long)channel);
        break;
    case KEY_TENANT:
        n = snprintf(out, KEY_MAX, "sb:{t%lld}:inflight:tenant", (long long)tenant);
        break;
    case KEY_CALLS_FLEET:
        n = snprintf(out, KEY_MAX, "sb:{calls}:fleet");
        break;
    case KEY_CALLS_TENANT:
        n = snprintf(out, KEY_MAX, "sb:{calls}:t:%lld", (long long)tenant);
        break;
    case KEY_CALLS_CHANNEL:
        n = snprintf(out, KEY_MAX, "sb:{calls}:ch:%lld", (long long)channel);
        break;
    default:
        n = snprintf(out, KEY_MAX, "sb:{calls}:pace:%lld", (long long)channel);
        break;
    }
    SB_BUG_ON(n < 0 || n >= KEY_MAX);
    return (size_t)n;
}

static size_t num(char out[24], int64_t v)
{
    int n = snprintf(out, 24, "%lld", (long long)v);
    SB_BUG_ON(n < 0 || n >= 24);
    return (size_t)n;
}

/* Failures Redis answers (out of memory, a script error after a bad deployment) are logged at most once a second
 * per thread, with how many were not: at full rate they would be a log flood of identical lines. */
static int failed(const struct redisReply *rep, const char *what)
{
    static _Thread_local uint64_t last_s, quiet;
    uint64_t now_s = (uint64_t)time(NULL);
    int err = rep->type == REDIS_REPLY_ERROR ? SB_EUNAVAIL : SB_EPARSE;
    if (now_s == last_s) {
        quiet++;
        return err;
    }
    if (rep->type == REDIS_REPLY_ERROR)
        sb_log_warn("counters: %s: Redis answered %.*s (%llu more not logged)", what, (int)rep->len, rep->str,
                    (unsigned long long)quiet);
    else
        sb_log_warn("counters: %s: unexpected reply of type %d (%llu more not logged)", what, rep->type,
                    (unsigned long long)quiet);
    last_s = now_s;
    quiet = 0;
    return err;
}

/* The integer element i of an array reply, or false if it is not one. */
static bool int_at(const struct redisReply *rep, size_t i, int64_t *out)
{
    if (rep->type != REDIS_REPLY_ARRAY || i >= rep->elements || rep->element[i]->type != REDIS_REPLY_INTEGER)
        return false;
    *out = rep->element[i]->integer;
    return true;
}

static void lease_id(char out[SB_COUNTERS_LEASE_ID_LEN + 1])
{
    static _Thread_local uint64_t prefix, counter;
    static _Thread_local bool seeded;
    if (!seeded) {
        if (sb_crypto_random(&prefix, sizeof prefix) != 0) /* no getrandom: still distinct per thread and start */
            prefix = (uint64_t)uv_hrtime() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)&prefix;
        seeded = true;
    }
    counter++;
    snprintf(out, SB_COUNTERS_LEASE_ID_LEN + 1, "%012llx%012llx", (unsigned long long)(prefix & 0xffffffffffffULL),
             (unsigned long long)(counter & 0xffffffffffffULL));
}

int64_t sb_counters_interval_us(double per_second)
{
    if (!(per_second > 0) || !isfinite(per_second))
        return 0;
    double t = 1e6 / per_second;
    if (t > (double)SB_COUNTERS_MAX_INTERVAL_US)
        return SB_COUNTERS_MAX_INTERVAL_US;
    return t < 1 ? 1 : (int64_t)llround(t);
}

int64_t sb_counters_gcra_tokens(int64_t tat_us, int64_t now_us, int64_t interval_us, int64_t burst,
                                int64_t *next_free_us)
{
    int64_t backlog = tat_us > now_us ? tat_us - now_us : 0, tau = (burst - 1) * interval_us;
    if (interval_us <= 0) {
        if (next_free_us)
            *next_free_us = now_us;
        return burst;
    }
    if (backlog > tau) {
        if (next_free_us)
            *next_free_us = tat_us - tau;
        return 0;
    }
    if (next_free_us)
        *next_free_us = now_us;
    return (tau - backlog) / interval_us + 1;
}

/* ---- acquire -------------------------------------------------------------------------------------------------- */

typedef struct acquire_req {
    sb_counters_acquire_cb cb;
    void *arg;
    sb_counters_lease_t lease;
} acquire_req_t;

static void acquire_reply(void *arg, int err, const struct redisReply *rep)
{
    acquire_req_t *q = arg;
    sb_counters_grant_t g = {0};
    int64_t v[6];
    if (!err) {
        bool shaped = rep->type == REDIS_REPLY_ARRAY && rep->elements == 6;
        for (size_t i = 0; shaped && i < 6; i++)
            shaped = int_at(rep, i, &v[i]);
        if (!shaped || v[0] < SB_COUNTERS_OK || v[0] > SB_COUNTERS_BUSY)
            err = failed(rep, "acquire");
    }
    if (err) {
        q->cb(q->arg, err, NULL);
        free(q);
        return;
    }
    g.verdict = (sb_counters_verdict_t)v[0];
    g.now_us = v[1];
    g.at_us = v[2];
    g.channel_inflight = v[4];
    g.tenant_inflight = v[5];
    g.lease.tenant = q->lease.tenant;
    g.lease.channel = q->lease.channel;
    switch (g.verdict) {
    case SB_COUNTERS_OK:
        g.tokens = v[3];
        memcpy(g.lease.id, q->lease.id, sizeof g.lease.id);
        break;
    case SB_COUNTERS_RATE:
        g.wait_us = g.at_us - g.now_us;
        break;
    case SB_COUNTERS_BUSY:
        g.wait_us = g.at_us - g.now_us;
        g.full = (int)v[3];
        break;
    }
    q->cb(q->arg, 0, &g);
    free(q);
}

static bool limits_valid(const sb_counters_limits_t *lim)
{
    return lim && lim->interval_us >= 0 && lim->interval_us <= SB_COUNTERS_MAX_INTERVAL_US && lim->burst >= 1 &&
           lim->burst <= SB_COUNTERS_MAX_BURST && lim->channel_max >= 0 && lim->tenant_max >= 0 &&
           lim->lease_ms >= 1 && lim->lease_ms <= SB_COUNTERS_MAX_LEASE_MS;
}

int sb_counters_acquire(sb_redis_t *r, int64_t tenant, int64_t channel, const sb_counters_limits_t *lim,
                        sb_counters_acquire_cb cb, void *arg)
{
    if (!limits_valid(lim))
        return SB_EINVAL;
    if (!sb_redis_connected(r))
        return SB_EUNAVAIL;
    scripts();
    char k[3][KEY_MAX], a[5][24];
    const char *argv[9];
    size_t len[9];
    acquire_req_t *q = sb_malloc(sizeof *q);
    q->cb = cb;
    q->arg = arg;
    q->lease.tenant = tenant;
    q->lease.channel = channel;
    lease_id(q->lease.id);
    for (int i = 0; i < 3; i++) {
        len[i] = key(k[i], i, tenant, channel);
        argv[i] = k[i];
    }
    const int64_t nums[5] = {lim->interval_us, lim->burst, lim->channel_max, lim->tenant_max, lim->lease_ms};
    for (int i = 0; i < 5; i++) {
        len[3 + i] = num(a[i], nums[i]);
        argv[3 + i] = a[i];
    }
    argv[8] = q->lease.id;
    len[8] = SB_COUNTERS_LEASE_ID_LEN;
    int rc = sb_redis_evalsha(r, &acquire_script, 3, 6, argv, len, acquire_reply, q);
    if (rc)
        free(q);
    return rc;
}

/* ---- release and extend --------------------------------------------------------------------------------------- */

typedef struct done_req {
    sb_counters_done_cb cb;
    void *arg;
    const char *what;
} done_req_t;

static void done_reply(void *arg, int err, const struct redisReply *rep)
{
    done_req_t *q = arg;
    if (!err) {
        if (rep->type != REDIS_REPLY_INTEGER)
            err = failed(rep, q->what);
        else if (rep->integer == 0)
            err = SB_ENOENT;
    }
    if (q->cb)
        q->cb(q->arg, err);
    free(q);
}

/* Runs a release or an extend over the nkeys sets (KEY_* kinds) holding lease id. */
static int lease_call(sb_redis_t *r, const sb_redis_script_t *s, const int *kinds, int nkeys, int64_t tenant,
                      int64_t channel, const char *id, size_t id_len, const int64_t *lease_ms, sb_counters_done_cb cb,
                      void *arg, const char *what)
{
    if (!sb_redis_connected(r))
        return SB_EUNAVAIL;
    char k[3][KEY_MAX], ms[24];
    const char *argv[5];
    size_t len[5];
    int n = 0;
    for (; n < nkeys; n++) {
        len[n] = key(k[n], kinds[n], tenant, channel);
        argv[n] = k[n];
    }
    if (lease_ms) {
        len[n] = num(ms, *lease_ms);
        argv[n++] = ms;
    }
    argv[n] = id;
    len[n++] = id_len;
    done_req_t *q = sb_malloc(sizeof *q);
    q->cb = cb;
    q->arg = arg;
    q->what = what;
    int rc = sb_redis_evalsha(r, s, nkeys, n - nkeys, argv, len, done_reply, q);
    if (rc)
        free(q);
    return rc;
}

static const int send_sets[2] = {KEY_CHANNEL, KEY_TENANT};

int sb_counters_release(sb_redis_t *r, const sb_counters_lease_t *lease, sb_counters_done_cb cb, void *arg)
{
    scripts();
    return lease_call(r, &release_script, send_sets, 2, lease->tenant, lease->channel, lease->id,
                      strnlen(lease->id, SB_COUNTERS_LEASE_ID_LEN), NULL, cb, arg, "release");
}

int sb_counters_extend(sb_redis_t *r, const sb_counters_lease_t *lease, int64_t lease_ms, sb_counters_done_cb cb,
                       void *arg)
{
    if (lease_ms < 1 || lease_ms > SB_COUNTERS_MAX_LEASE_MS)
        return SB_EINVAL;
    scripts();
    return lease_call(r, &extend_script, send_sets, 2, lease->tenant, lease->channel, lease->id,
                      strnlen(lease->id, SB_COUNTERS_LEASE_ID_LEN), &lease_ms, cb, arg, "extend");
}

/* ---- read-out ------------------------------------------------------------------------------------------------- */

typedef struct read_req {
    sb_counters_read_cb cb;
    void *arg;
    bool channel;
} read_req_t;

static void read_reply(void *arg, int err, const struct redisReply *rep)
{
    read_req_t *q = arg;
    sb_counters_state_t st = {0};
    int64_t v[8];
    size_t n = q->channel ? 8 : 3;
    if (!err) {
        bool shaped = rep->type == REDIS_REPLY_ARRAY && rep->elements == n;
        for (size_t i = 0; shaped && i < n; i++)
            shaped = int_at(rep, i, &v[i]);
        if (!shaped)
            err = failed(rep, "read");
    }
    if (err) {
        q->cb(q->arg, err, NULL);
        free(q);
        return;
    }
    st.now_us = v[0];
    st.tenant_inflight = v[1];
    st.tenant_next_expiry_us = v[2];
    st.channel_inflight = -1;
    st.tokens = -1;
    st.next_free_us = st.now_us;
    if (q->channel) {
        st.channel_inflight = v[3];
        st.channel_next_expiry_us = v[4];
        st.rate_state = v[5] >= 0 && v[6] > 0 && v[7] >= 1;
        if (st.rate_state) {
            st.tat_us = v[5];
            st.interval_us = v[6];
            st.burst = v[7];
            st.tokens = sb_counters_gcra_tokens(st.tat_us, st.now_us, st.interval_us, st.burst, &st.next_free_us);
        }
    }
    q->cb(q->arg, 0, &st);
    free(q);
}

int sb_counters_read(sb_redis_t *r, int64_t tenant, int64_t channel, sb_counters_read_cb cb, void *arg)
{
    if (!sb_redis_connected(r))
        return SB_EUNAVAIL;
    scripts();
    char k[3][KEY_MAX];
    const char *argv[3];
    size_t len[3];
    bool with_channel = channel != SB_COUNTERS_NO_CHANNEL;
    len[0] = key(k[0], KEY_TENANT, tenant, 0);
    len[1] = key(k[1], KEY_RATE, tenant, channel);
    len[2] = key(k[2], KEY_CHANNEL, tenant, channel);
    for (int i = 0; i < 3; i++)
        argv[i] = k[i];
    read_req_t *q = sb_malloc(sizeof *q);
    q->cb = cb;
    q->arg = arg;
    q->channel = with_channel;
    int rc = sb_redis_evalsha(r, &read_script, with_channel ? 3 : 1, 0, argv, len, read_reply, q);
    if (rc)
        free(q);
    return rc;
}

/* ---- calls ---------------------------------------------------------------------------------------------------- */

static const int call_sets[3] = {KEY_CALLS_FLEET, KEY_CALLS_TENANT, KEY_CALLS_CHANNEL};

typedef struct admit_req {
    sb_counters_admit_cb cb;
    void *arg;
} admit_req_t;

static void admit_reply(void *arg, int err, const struct redisReply *rep)
{
    admit_req_t *q = arg;
    int64_t v[7];
    if (!err) {
        bool shaped = rep->type == REDIS_REPLY_ARRAY && rep->elements == 7;
        for (size_t i = 0; shaped && i < 7; i++)
            shaped = int_at(rep, i, &v[i]);
        if (!shaped || v[0] < 0 || v[0] > 1)
            err = failed(rep, "call admission");
    }
    if (err) {
        q->cb(q->arg, err, NULL);
        free(q);
        return;
    }
    sb_counters_call_grant_t g = {.admitted = v[0] == 0, .now_us = v[1], .fleet = v[4], .tenant = v[5],
                                  .channel = v[6]};
    if (g.admitted) {
        g.expires_us = v[2];
        g.dial_at_us = v[3];
    } else {
        g.full = (int)v[2];
    }
    q->cb(q->arg, 0, &g);
    free(q);
}

int sb_counters_call_admit(sb_redis_t *r, int64_t tenant, int64_t channel, const char *call_key,
                           const sb_counters_call_caps_t *caps, sb_counters_admit_cb cb, void *arg)
{
    size_t klen = call_key ? strlen(call_key) : 0;
    if (!caps || klen == 0 || klen > SB_COUNTERS_CALL_KEY_MAX || caps->fleet_max < 0 || caps->tenant_max < 0 ||
        caps->channel_max < 0 || caps->lease_ms < 1 || caps->lease_ms > SB_COUNTERS_MAX_LEASE_MS ||
        caps->interval_us < 0 || caps->interval_us > SB_COUNTERS_MAX_INTERVAL_US)
        return SB_EINVAL;
    if (!sb_redis_connected(r))
        return SB_EUNAVAIL;
    scripts();
    char k[4][KEY_MAX], a[5][24];
    const char *argv[10];
    size_t len[10];
    static const int kinds[4] = {KEY_CALLS_FLEET, KEY_CALLS_TENANT, KEY_CALLS_CHANNEL, KEY_CALLS_PACE};
    for (int i = 0; i < 4; i++) {
        len[i] = key(k[i], kinds[i], tenant, channel);
        argv[i] = k[i];
    }
    const int64_t nums[4] = {caps->fleet_max, caps->tenant_max, caps->channel_max, caps->lease_ms};
    for (int i = 0; i < 4; i++) {
        len[4 + i] = num(a[i], nums[i]);
        argv[4 + i] = a[i];
    }
    argv[8] = call_key;
    len[8] = klen;
    len[9] = num(a[4], caps->interval_us);
    argv[9] = a[4];
    admit_req_t *q = sb_malloc(sizeof *q);
    q->cb = cb;
    q->arg = arg;
    int rc = sb_redis_evalsha(r, &call_admit_script, 4, 6, argv, len, admit_reply, q);
    if (rc)
        free(q);
    return rc;
}

int sb_counters_call_extend(sb_redis_t *r, int64_t tenant, int64_t channel, const char *call_key, int64_t lease_ms,
                            sb_counters_done_cb cb, void *arg)
{
    if (lease_ms < 1 || lease_ms > SB_COUNTERS_MAX_LEASE_MS || !call_key || !*call_key)
        return SB_EINVAL;
    scripts();
    return lease_call(r, &extend_script, call_sets, 3, tenant, channel, call_key, strlen(call_key), &lease_ms, cb,
                      arg, "call extend");
}

int sb_counters_call_release(sb_redis_t *r, int64_t tenant, int64_t channel, const char *call_key,
                             sb_counters_done_cb cb, void *arg)
{
    if (!call_key || !*call_key)
        return SB_EINVAL;
    scripts();
    return lease_call(r, &release_script, call_sets, 3, tenant, channel, call_key, strlen(call_key), NULL, cb, arg,
                      "call release");
}

typedef struct calls_read_req {
    sb_counters_calls_read_cb cb;
    void *arg;
    bool tenant;
} calls_read_req_t;

static void calls_read_reply(void *arg, int err, const struct redisReply *rep)
{
    calls_read_req_t *q = arg;
    int64_t v[3] = {0, 0, -1};
    size_t n = q->tenant ? 3 : 2;
    if (!err) {
        bool shaped = rep->type == REDIS_REPLY_ARRAY && rep->elements == n;
        for (size_t i = 0; shaped && i < n; i++)
            shaped = int_at(rep, i, &v[i]);
        if (!shaped)
            err = failed(rep, "calls read");
    }
    q->cb(q->arg, err, v[1], v[2]);
    free(q);
}

int sb_counters_calls_read(sb_redis_t *r, int64_t tenant, sb_counters_calls_read_cb cb, void *arg)
{
    if (!sb_redis_connected(r))
        return SB_EUNAVAIL;
    scripts();
    char k[2][KEY_MAX];
    const char *argv[2] = {k[0], k[1]};
    size_t len[2];
    len[0] = key(k[0], KEY_CALLS_FLEET, tenant, 0);
    len[1] = key(k[1], KEY_CALLS_TENANT, tenant, 0);
    calls_read_req_t *q = sb_malloc(sizeof *q);
    q->cb = cb;
    q->arg = arg;
    q->tenant = tenant >= 0;
    int rc = sb_redis_evalsha(r, &calls_read_script, q->tenant ? 2 : 1, 0, argv, len, calls_read_reply, q);
    if (rc)
        free(q);
    return rc;
}
