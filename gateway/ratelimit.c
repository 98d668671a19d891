/* The tenant API's rate limits; see ratelimit.h. */
#include "gateway/ratelimit.h"

#include "gateway/metrics.h"
#include "proto/err.h"
#include "proto/mem.h"
#include "shards/domain.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RATE_MAX 100000.0
#define BURST_MAX 100000
#define AUTH_FAIL_RATE 5.0 /* failed authentications an address may make, per second and shard, after a burst of */
#define AUTH_FAIL_BURST 50

const char *const sb_ratelimit_names[SB_RL_N] = {"rest_per_key",  "rest_per_address",  "send_per_key",
                                                 "send_per_address", "tokens_per_key", "tokens_per_address"};

static const sb_gcra_limit_t defaults[SB_RL_N] = {
    [SB_RL_REST_KEY] = {50, 100},  [SB_RL_REST_ADDR] = {100, 200}, [SB_RL_SEND_KEY] = {20, 100},
    [SB_RL_SEND_ADDR] = {40, 200}, [SB_RL_TOKENS_KEY] = {1, 10},   [SB_RL_TOKENS_ADDR] = {1, 10},
};

void sb_ratelimit_defaults(sb_rl_limits_t *out)
{
    memcpy(out->l, defaults, sizeof defaults);
}

/* A limit object's members over base: false when it is not one. */
static bool limit_read(const json_t *v, sb_gcra_limit_t base, sb_gcra_limit_t *out)
{
    if (!json_is_object(v))
        return false;
    const json_t *r = json_object_get(v, "rate"), *b = json_object_get(v, "burst");
    if (json_object_size(v) != (size_t)(r != NULL) + (b != NULL))
        return false;
    if (r && (!json_is_number(r) || !(json_number_value(r) > 0) || json_number_value(r) > RATE_MAX))
        return false;
    if (b && (!json_is_integer(b) || json_integer_value(b) < 1 || json_integer_value(b) > BURST_MAX))
        return false;
    *out = base;
    if (r)
        out->rate = json_number_value(r);
    if (b)
        out->burst = (uint32_t)json_integer_value(b);
    return true;
}

static int kind_of(const char *name)
{
    for (int k = 0; k < SB_RL_N; k++)
        if (strcmp(name, sb_ratelimit_names[k]) == 0)
            return k;
    return -1;
}

void sb_ratelimit_parse(const char *overrides, sb_rl_limits_t *out)
{
    sb_ratelimit_defaults(out);
    if (!overrides || strcmp(overrides, "{}") == 0)
        return;
    json_t *j = json_loads(overrides, 0, NULL);
    const char *name;
    json_t *v;
    json_object_foreach(j, name, v)
    {
        int k = kind_of(name);
        if (k >= 0)
            limit_read(v, defaults[k], &out->l[k]);
    }
    json_decref(j);
}

const char *sb_ratelimit_check(const json_t *v)
{
    static const char bad[] = "'rate_limits' must be null or an object of limits (rest_per_key, rest_per_address, "
                              "send_per_key, send_per_address, tokens_per_key, tokens_per_address), each null or "
                              "{\"rate\": per second in (0, 100000], \"burst\": 1..100000}";
    if (json_is_null(v))
        return NULL;
    if (!json_is_object(v))
        return bad;
    const char *name;
    json_t *m;
    sb_gcra_limit_t scratch;
    json_object_foreach((json_t *)v, name, m)
    {
        int k = kind_of(name);
        if (k < 0 || (!json_is_null(m) && !limit_read(m, defaults[k], &scratch)))
            return bad;
    }
    return NULL;
}

json_t *sb_ratelimit_json(const sb_rl_limits_t *l)
{
    json_t *o = json_object();
    for (int k = 0; k < SB_RL_N; k++)
        json_object_set_new(o, sb_ratelimit_names[k],
                            json_pack("{s:f,s:i}", "rate", l->l[k].rate, "burst", (int)l->l[k].burst));
    return o;
}

/* ---- the buckets ------------------------------------------------------------------------------------------------- */

typedef struct tables {
    sb_gcra_t tenants; /* the tenants whose shard this is: their keys' and addresses' buckets */
    sb_gcra_t auth;    /* failed authentications seen by this shard, per address */
} tables_t;

static int rl_start(sb_shard_t *s, void **state)
{
    (void)s;
    tables_t *t = sb_calloc(1, sizeof *t);
    sb_gcra_init(&t->tenants, SB_RATELIMIT_BUCKETS);
    sb_gcra_init(&t->auth, SB_RATELIMIT_AUTH_BUCKETS);
    *state = t;
    return 0;
}

static void rl_finish(sb_shard_t *s, void *state)
{
    tables_t *t = state;
    (void)s;
    sb_gcra_cleanup(&t->tenants);
    sb_gcra_cleanup(&t->auth);
    free(t);
}

const sb_shard_module_t sb_ratelimit_module = {
    .name = "rate limits",
    .start = rl_start,
    .finish = rl_finish,
};

static uint64_t addr_word(const sb_guard_addr_t *a, int half)
{
    uint64_t w;
    memcpy(&w, a->b + 8 * half, sizeof w);
    return w;
}

/* The bucket of limit k for ask: a key's (kind, tenant, key id) or an address's (kind, tenant, its 16 bytes). */
static sb_gcra_key_t bucket_key(const sb_rl_ask_t *ask, int k)
{
    bool per_key = k == SB_RL_REST_KEY || k == SB_RL_SEND_KEY || k == SB_RL_TOKENS_KEY;
    if (per_key)
        return (sb_gcra_key_t){{(uint64_t)k, (uint64_t)ask->tenant, (uint64_t)ask->key_id, 0}};
    return (sb_gcra_key_t){{(uint64_t)k | (uint64_t)ask->tenant << 8, addr_word(&ask->addr, 0),
                            addr_word(&ask->addr, 1), 0}};
}

/* Draws ask from shard s's tables: 0, or the wait and *limit named. */
static uint64_t draw(sb_shard_t *s, const sb_rl_ask_t *ask, const char **limit)
{
    static const int order[SB_RL_N] = {SB_RL_REST_KEY,   SB_RL_SEND_KEY,   SB_RL_TOKENS_KEY,
                                       SB_RL_REST_ADDR,  SB_RL_SEND_ADDR,  SB_RL_TOKENS_ADDR};
    tables_t *t = sb_shard_state(s, &sb_ratelimit_module);
    if (!t)
        return 0; /* a shard without the module (unit tests): no limits */
    uint64_t now = uv_now(sb_shard_loop(s));
    for (int i = 0; i < SB_RL_N; i++) {
        int k = order[i];
        unsigned fam = k <= SB_RL_REST_ADDR ? SB_RL_REST : k <= SB_RL_SEND_ADDR ? SB_RL_SEND : SB_RL_TOKENS;
        if (!(ask->families & fam))
            continue;
        sb_gcra_key_t key = bucket_key(ask, k);
        uint64_t w = sb_gcra_take(&t->tenants, &key, ask->limits.l[k], now);
        if (w) {
            *limit = sb_ratelimit_names[k];
            return w;
        }
    }
    *limit = NULL;
    return 0;
}

typedef struct trip {
    sb_rl_ask_t ask;
    unsigned from;
    sb_ratelimit_cb cb;
    void *arg;
    const char *limit;
    uint64_t wait;
} trip_t;

static void answered(sb_shard_t *s, void *arg)
{
    trip_t *t = arg;
    if (t->wait)
        sb_metric_add(&sb_metrics_shard(sb_shard_index(s))->rate_limited, 1);
    t->cb(t->arg, t->limit, t->wait);
    free(t);
}

static void drawn_there(sb_shard_t *s, void *arg)
{
    trip_t *t = arg;
    t->wait = draw(s, &t->ask, &t->limit);
    if (sb_shard_exec(t->from, answered, t) < 0) /* the asking shard is gone, and its request with it */
        free(t);
}

int sb_ratelimit_take(sb_shard_t *s, const sb_rl_ask_t *ask, sb_ratelimit_cb cb, void *arg)
{
    unsigned owner = sb_domain_owner(ask->tenant), self = sb_shard_index(s);
    if (owner == self) {
        const char *limit;
        uint64_t w = draw(s, ask, &limit);
        if (w)
            sb_metric_add(&sb_metrics_shard(self)->rate_limited, 1);
        cb(arg, limit, w);
        return 0;
    }
    trip_t *t = sb_calloc(1, sizeof *t);
    t->ask = *ask;
    t->from = self;
    t->cb = cb;
    t->arg = arg;
    int rc = sb_shard_exec(owner, drawn_there, t);
    if (rc < 0)
        free(t);
    return rc;
}

static const sb_gcra_limit_t auth_limit = {AUTH_FAIL_RATE, AUTH_FAIL_BURST};

static sb_gcra_key_t auth_key(const sb_guard_addr_t *a)
{
    return (sb_gcra_key_t){{0, addr_word(a, 0), addr_word(a, 1), 0}};
}

uint64_t sb_ratelimit_auth_blocked(sb_shard_t *s, const sb_guard_addr_t *addr)
{
    tables_t *t = sb_shard_state(s, &sb_ratelimit_module);
    sb_gcra_key_t k = auth_key(addr);
    return t ? sb_gcra_peek(&t->auth, &k, auth_limit, uv_now(sb_shard_loop(s))) : 0;
}

void sb_ratelimit_auth_failed(sb_shard_t *s, const sb_guard_addr_t *addr)
{
    tables_t *t = sb_shard_state(s, &sb_ratelimit_module);
    sb_gcra_key_t k = auth_key(addr);
    if (t)
        sb_gcra_take(&t->auth, &k, auth_limit, uv_now(sb_shard_loop(s)));
}

void sb_ratelimit_respond(sb_http_req_t *req, const char *limit, uint64_t retry_ms)
{
    char headers[48], msg[160];
    unsigned long long secs = (retry_ms + 999) / 1000;
    snprintf(headers, sizeof headers, "retry-after: %llu\r\n", secs ? secs : 1);
    snprintf(msg, sizeof msg, "rate limit %s exceeded; retry after %llu s", limit ? limit : "", secs ? secs : 1);
    sb_buf_t b;
    sb_buf_init(&b);
    sb_http_error_body(&b, "rate_limited", msg);
    sb_http_respond_headers(req, 429, "application/json", headers, b.p, b.len);
    sb_buf_cleanup(&b);
}
