/* Rate limits of the tenant API (README "Rate limits"): per API key and per client address, for REST requests
 * (every /v1/ call of a tenant), sends (POST /v1/messages and the live inbox's send op) and token minting
 * (POST /v1/tokens); and, before any credential is looked up, a budget of failed authentications per address.
 *
 * Where the buckets live: a tenant's buckets (its keys', and each address's for that tenant) are kept on the
 * tenant's shard (sb_domain_owner), touched only by its thread, in one bounded GCRA table (proto/gcra: at most
 * SB_RATELIMIT_BUCKETS buckets per shard, least recently used evicted). A request on another shard asks there by
 * sb_shard_exec message and gets its verdict back the same way, so every limit is exact for the whole node: however
 * the kernel spreads a client's connections over the shards, it draws from one bucket. The limits are per node: a
 * fleet of N gateways lets a key make up to N times its limit (each node counts its own traffic). Failed
 * authentications are counted by the shard that saw them (no hop before the credential is known), so an address
 * may fail up to `shards` times that budget.
 *
 * Each limit is a rate per second and a burst; defaults below, each replaceable per tenant (PATCH
 * /v1/admin/tenants/{id} {"rate_limits": {"rest_per_key": {"rate": 50, "burst": 100}, ...}}). A refused request is
 * answered 429 rate_limited with Retry-After (whole seconds, rounded up) and counts nothing. */
#ifndef SB_RATELIMIT_H
#define SB_RATELIMIT_H

#include "adapters/net/http_server.h"
#include "proto/gcra.h"
#include "proto/guard.h"
#include "shards/shard.h"

#include <jansson.h>
#include <stdint.h>

#define SB_RATELIMIT_BUCKETS 65536      /* a shard's buckets of tenant limits */
#define SB_RATELIMIT_AUTH_BUCKETS 16384 /* a shard's buckets of failed authentications */

/* The limits, in the order of sb_ratelimit_names. */
typedef enum sb_rl_kind {
    SB_RL_REST_KEY,
    SB_RL_REST_ADDR,
    SB_RL_SEND_KEY,
    SB_RL_SEND_ADDR,
    SB_RL_TOKENS_KEY,
    SB_RL_TOKENS_ADDR,
    SB_RL_N
} sb_rl_kind_t;

/* "rest_per_key", "rest_per_address", "send_per_key", "send_per_address", "tokens_per_key", "tokens_per_address" */
extern const char *const sb_ratelimit_names[SB_RL_N];

typedef struct sb_rl_limits {
    sb_gcra_limit_t l[SB_RL_N];
} sb_rl_limits_t;

/* The families a request draws from (a bit set). */
enum { SB_RL_REST = 1, SB_RL_SEND = 2, SB_RL_TOKENS = 4 };

/* The defaults into *out. */
void sb_ratelimit_defaults(sb_rl_limits_t *out);
/* The defaults with a tenant's overrides (JSON text as stored, borrowed; NULL or "{}" for none) into *out. A member
 * that is not a valid limit is ignored (the admin API never stores one). */
void sb_ratelimit_parse(const char *overrides, sb_rl_limits_t *out);
/* Checks a PATCH's "rate_limits" value (borrowed): null, or an object whose members are limit names each null or
 * {"rate": number in (0, 100000], "burst": integer 1..100000} (either may be left out: its default). Returns NULL
 * when acceptable, or a message for a 400. */
const char *sb_ratelimit_check(const json_t *v);
/* The limits as JSON: {"rest_per_key": {"rate", "burst"}, ...} (a new reference). */
json_t *sb_ratelimit_json(const sb_rl_limits_t *l);

/* One request's draw: its tenant, key and client address, the families it draws from, and the tenant's limits. */
typedef struct sb_rl_ask {
    int64_t tenant, key_id;
    sb_guard_addr_t addr;
    unsigned families;
    sb_rl_limits_t limits;
} sb_rl_ask_t;

/* retry_ms 0: go ahead (one was counted in every bucket drawn from); otherwise refused by the limit named `limit`
 * (static), one may come retry_ms from now. */
typedef void (*sb_ratelimit_cb)(void *arg, const char *limit, uint64_t retry_ms);

/* From shard s: draws one request from the buckets ask names (copied), on the tenant's shard; cb runs on s, exactly
 * once when this returns 0 (possibly before it returns, when s is the tenant's shard). The per-key buckets are drawn
 * first; a refusal stops there, and buckets already drawn keep their count. Returns a negative code (the tenant's
 * shard is stopping) and never calls cb. */
int sb_ratelimit_take(sb_shard_t *s, const sb_rl_ask_t *ask, sb_ratelimit_cb cb, void *arg);

/* Failed authentications of addr counted on shard s (its thread): 0 when addr may present a credential now, else
 * the ms until it may. */
uint64_t sb_ratelimit_auth_blocked(sb_shard_t *s, const sb_guard_addr_t *addr);
/* Counts a failed authentication of addr on shard s. */
void sb_ratelimit_auth_failed(sb_shard_t *s, const sb_guard_addr_t *addr);

/* Answers req 429 rate_limited naming limit, with Retry-After: ceil(retry_ms / 1000) s. */
void sb_ratelimit_respond(sb_http_req_t *req, const char *limit, uint64_t retry_ms);

/* The shards' module: each shard's buckets. */
extern const sb_shard_module_t sb_ratelimit_module;

#endif
