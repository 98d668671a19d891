/* The tenant REST API; see api.h.
 *
 * Authentication: the bearer key must have our shape (sb_crypto_key_well_formed), then its SHA-256 is looked up
 * through api_key_routes, revoked keys excluded. The tenant id that comes back is the only tenant the request can
 * read: every query below filters on it. */
#include "gateway/api.h"

#include "adapters/crypto.h"
#include "adapters/store/queries.h"
#include "adapters/store/store.h"
#include "gateway/log.h"
#include "gateway/sends.h"
#include "gateway/voice.h"
#include "proto/digest.h"
#include "proto/err.h"
#include "proto/fallback.h"
#include "proto/form.h"
#include "proto/jwt.h"
#include "proto/mem.h"
#include "proto/rfc3339.h"
#include "shards/domain.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define TOKEN_TTL_DEFAULT 3600
#define TOKEN_TTL_MAX 86400

static const sb_config_t *cfg;
static unsigned char jwt_key[SB_DIGEST_SHA256_LEN]; /* HMAC(master_key, purpose): never the master key itself */
static bool have_jwt_key;

void sb_api_init(const sb_config_t *c)
{
    cfg = c;
    have_jwt_key = c->has_master_key;
    if (have_jwt_key)
        sb_digest_hmac_sha256(sb_str((const char *)c->master_key, sizeof c->master_key),
                              SB_STR("switchboard/inbox-token/v1"), jwt_key);
}

/* ---- roles ------------------------------------------------------------------------------------------------------ */

static const char *const role_names[] = {"none", "readonly", "agent", "owner"};

sb_role_t sb_role_parse(sb_str_t name)
{
    for (int r = SB_ROLE_READONLY; r <= SB_ROLE_OWNER; r++)
        if (sb_str_eq_cstr(name, role_names[r]))
            return (sb_role_t)r;
    return SB_ROLE_NONE;
}

const char *sb_role_name(sb_role_t r)
{
    return (unsigned)r <= SB_ROLE_OWNER ? role_names[r] : "none";
}

/* ---- keys used lately: api_keys.last_used_at ------------------------------------------------------------------- */

#define USED_TICK_MS 1000
#define USED_EVERY_MS 60000 /* a key's last use is written at most this often per shard */
#define USED_MAX 100000     /* keys remembered per shard; past it, newcomers wait for room */

typedef struct used {
    sb_hnode_t node;
    int64_t tenant, key;
    int64_t at;          /* unix seconds of the last use not yet written */
    uint64_t written_ms; /* loop time of the last write; 0: never */
    bool dirty;
} used_t;

typedef struct used_table {
    sb_shard_t *shard;
    sb_htable_t map;
    uv_timer_t *tick;
    bool writing;
} used_table_t;

static bool used_eq(const sb_hnode_t *n, const void *key)
{
    const used_t *u = sb_container_of(n, used_t, node);
    const int64_t *k = key;
    return u->tenant == k[0] && u->key == k[1];
}

/* Notes that tenant's key was used now; the tick writes it. */
static void key_used(sb_shard_t *s, int64_t tenant, int64_t key)
{
    used_table_t *t = sb_shard_state(s, &sb_api_module);
    if (!t)
        return;
    int64_t k[2] = {tenant, key};
    uint64_t h = sb_hash_u64((uint64_t)tenant * 0x9e3779b97f4a7c15ULL ^ (uint64_t)key);
    sb_hnode_t *n = sb_htable_find(&t->map, h, used_eq, k);
    used_t *u = n ? sb_container_of(n, used_t, node) : NULL;
    if (!u) {
        if (t->map.n >= USED_MAX)
            return;
        u = sb_calloc(1, sizeof *u);
        u->tenant = tenant;
        u->key = key;
        u->node.hash = h;
        sb_htable_insert(&t->map, &u->node);
    }
    u->at = (int64_t)time(NULL);
    u->dirty = true;
}

static void used_written(void *arg, int err)
{
    used_table_t *t = arg;
    t->writing = false;
    if (err)
        sb_log_warn("api: keys' last use not recorded: %s", sb_strerror(err));
}

/* Every second: one statement for the keys used since their last write, when that was a minute ago or never;
 * entries idle for a minute are forgotten (their next use writes at once). */
static void used_tick(uv_timer_t *tm)
{
    used_table_t *t = tm->data;
    if (t->writing)
        return;
    uint64_t now = uv_now(tm->loop);
    size_t cap = 64, n = 0, pos = 0;
    int64_t *tenants = NULL, *keys = NULL, *at = NULL;
    for (sb_hnode_t *nd; (nd = sb_htable_next(&t->map, &pos));) {
        used_t *u = sb_container_of(nd, used_t, node);
        bool due = !u->written_ms || now - u->written_ms >= USED_EVERY_MS;
        if (u->dirty && due) {
            if (!tenants) {
                tenants = sb_malloc(cap * sizeof *tenants);
                keys = sb_malloc(cap * sizeof *keys);
                at = sb_malloc(cap * sizeof *at);
            } else if (n == cap) {
                cap *= 2;
                tenants = sb_realloc(tenants, cap * sizeof *tenants);
                keys = sb_realloc(keys, cap * sizeof *keys);
                at = sb_realloc(at, cap * sizeof *at);
            }
            tenants[n] = u->tenant;
            keys[n] = u->key;
            at[n++] = u->at;
            u->dirty = false;
            u->written_ms = now;
        } else if (!u->dirty && due) {
            sb_htable_remove_at(&t->map, &pos);
            free(u);
        }
    }
    if (n) {
        t->writing = true;
        if (sb_query_api_keys_used(sb_domain_store(t->shard), n, tenants, keys, at, used_written, t) < 0)
            t->writing = false; /* the database is away: these uses are lost, the next ones are not */
    }
    free(tenants);
    free(keys);
    free(at);
}

static int used_start(sb_shard_t *s, void **state)
{
    used_table_t *t = sb_calloc(1, sizeof *t);
    t->shard = s;
    sb_htable_init(&t->map);
    t->tick = sb_malloc(sizeof *t->tick);
    uv_timer_init(sb_shard_loop(s), t->tick);
    t->tick->data = t;
    uv_timer_start(t->tick, used_tick, USED_TICK_MS, USED_TICK_MS);
    *state = t;
    return 0;
}

static void tick_closed(uv_handle_t *h)
{
    free(h);
}

static void used_stop(sb_shard_t *s, void *state)
{
    used_table_t *t = state;
    (void)s;
    uv_close((uv_handle_t *)t->tick, tick_closed);
    t->tick = NULL;
}

static void used_finish(sb_shard_t *s, void *state)
{
    used_table_t *t = state;
    (void)s;
    size_t pos = 0;
    for (sb_hnode_t *n; (n = sb_htable_next(&t->map, &pos));) {
        sb_htable_remove_at(&t->map, &pos);
        free(sb_container_of(n, used_t, node));
    }
    sb_htable_cleanup(&t->map);
    free(t);
}

const sb_shard_module_t sb_api_module = {
    .name = "api keys",
    .start = used_start,
    .stop = used_stop,
    .finish = used_finish,
};

/* ---- authentication: an API key (looked up) or an inbox token (verified here, its key looked up) -------------- */

typedef struct cred_op {
    sb_shard_t *s;
    sb_api_auth_fn cb;
    void *arg;
    bool has_addr, token;
    sb_guard_addr_t addr;
    sb_role_t token_role; /* a token's role claim; SB_ROLE_NONE: the key's */
} cred_op_t;

static void cred_failed(cred_op_t *op, const char *code, const char *message)
{
    if (op->has_addr)
        sb_ratelimit_auth_failed(op->s, &op->addr);
    op->cb(op->arg, 401, code, message, NULL);
}

static void key_looked_up(void *arg, int err, const sb_query_key_t *k)
{
    cred_op_t *op = arg;
    sb_role_t role = err ? SB_ROLE_NONE : sb_role_parse(sb_str_cstr(k->role));
    if (err == SB_ENOENT || (!err && role == SB_ROLE_NONE)) {
        if (op->token)
            cred_failed(op, "token_revoked", "the API key this token was minted from is revoked or expired");
        else
            cred_failed(op, "unauthorized", "unknown, revoked or expired API key");
    } else if (err) {
        op->cb(op->arg, 503, "unavailable", "the database is not reachable; retry", NULL);
    } else {
        sb_principal_t p = {.tenant = k->tenant,
                            .key_id = k->id,
                            .role = op->token_role && op->token_role < role ? op->token_role : role,
                            .token = op->token,
                            .key_expires = k->expires};
        snprintf(p.tenant_s, sizeof p.tenant_s, "%lld", (long long)k->tenant);
        sb_ratelimit_parse(k->rate_limits, &p.limits);
        key_used(op->s, p.tenant, p.key_id);
        op->cb(op->arg, 0, NULL, NULL, &p);
    }
    free(op);
}

void sb_api_auth(sb_shard_t *s, sb_str_t cred, bool key_only, const sb_guard_addr_t *addr, sb_api_auth_fn cb,
                 void *arg)
{
    uint64_t blocked = addr ? sb_ratelimit_auth_blocked(s, addr) : 0;
    if (blocked) {
        cb(arg, 429, "rate_limited", "too many failed authentications from this address; retry later", NULL);
        return;
    }
    cred_op_t *op = sb_calloc(1, sizeof *op);
    op->s = s;
    op->cb = cb;
    op->arg = arg;
    if (addr) {
        op->has_addr = true;
        op->addr = *addr;
    }
    int rc;
    if (memchr(cred.p, '.', cred.len)) { /* a JWT: only tokens have dots */
        sb_jwt_claims_t claims;
        long long tenant = 0;
        rc = key_only ? SB_EACCES
             : !have_jwt_key
                 ? SB_EUNAVAIL
                 : sb_jwt_verify(cred, sb_str((const char *)jwt_key, sizeof jwt_key), (int64_t)time(NULL), &claims);
        if (rc == 0 && (sb_str_to_ll(sb_str(claims.tenant, claims.tenant_len), 1, INT64_MAX, &tenant) < 0 ||
                        !claims.key_id ||
                        (claims.role[0] && !(op->token_role = sb_role_parse(sb_str_cstr(claims.role)))))) {
            cb(arg, 401, "token_invalid", "this token names no key or role: mint a new one", NULL);
        } else if (rc == 0) {
            op->token = true;
            rc = sb_query_api_key_by_id(sb_domain_store(s), tenant, claims.key_id, key_looked_up, op);
            if (rc == 0)
                return;
            cb(arg, 503, "unavailable", "the database is not reachable; retry", NULL);
        } else if (key_only) {
            cb(arg, 401, "unauthorized", "this call takes an API key, not a token", NULL);
        } else if (rc == SB_EUNAVAIL) {
            cb(arg, 401, "unauthorized", "tokens are not available: no master_key configured", NULL);
        } else {
            cb(arg, 401, sb_jwt_error_code(rc), sb_jwt_strerror(rc), NULL);
        }
        free(op);
        return;
    }
    if (!sb_crypto_key_well_formed(cred)) {
        free(op);
        cb(arg, 401, "unauthorized", "unknown, revoked or expired API key", NULL);
        return;
    }
    char hash[SB_CRYPTO_KEY_HASH_LEN + 1];
    sb_crypto_key_hash(cred, hash);
    if (sb_query_api_key_auth(sb_domain_store(s), hash, key_looked_up, op) < 0) {
        free(op);
        cb(arg, 503, "unavailable", "the database is not reachable; retry", NULL);
    }
}

typedef struct auth_op {
    sb_shard_t *s;
    sb_http_req_t *req;
    sb_api_authed_fn next;
    sb_role_t min_role;
    unsigned families;
    bool has_addr;
    sb_guard_addr_t addr;
    sb_principal_t p;
} auth_op_t;

static void request_limited(void *arg, const char *limit, uint64_t retry_ms)
{
    auth_op_t *op = arg;
    if (retry_ms)
        sb_ratelimit_respond(op->req, limit, retry_ms);
    else
        op->next(op->s, op->req, &op->p);
    free(op);
}

static void request_authed(void *arg, int status, const char *code, const char *message, const sb_principal_t *p)
{
    auth_op_t *op = arg;
    if (status == 429) {
        sb_ratelimit_respond(op->req, "auth_failures_per_address", sb_ratelimit_auth_blocked(op->s, &op->addr));
    } else if (status) {
        sb_http_respond_error(op->req, status, code, message);
    } else if (p->role < op->min_role) {
        char msg[160];
        snprintf(msg, sizeof msg, "a%s %s %s may not do this (it takes %s)", p->role == SB_ROLE_AGENT ? "n" : "",
                 sb_role_name(p->role), p->token ? "token" : "key", sb_role_name(op->min_role));
        sb_http_respond_error(op->req, 403, "forbidden", msg);
    } else {
        op->p = *p;
        sb_rl_ask_t ask = {.tenant = p->tenant,
                           .key_id = p->key_id,
                           .addr = op->addr,
                           .families = SB_RL_REST | op->families,
                           .limits = p->limits};
        if (sb_ratelimit_take(op->s, &ask, request_limited, op) == 0)
            return;
        sb_http_respond_error(op->req, 503, "unavailable", "the gateway is stopping");
    }
    free(op);
}

void sb_api_authenticate(sb_shard_t *s, sb_http_req_t *req, sb_role_t min_role, unsigned families, bool key_only,
                         sb_api_authed_fn next)
{
    sb_str_t h;
    if (!sb_http_req_header(req, "authorization", &h) || !sb_str_has_prefix(h, SB_STR("Bearer "))) {
        sb_http_respond_error(req, 401, "unauthorized", "send Authorization: Bearer <api key>");
        return;
    }
    struct sockaddr_storage ss;
    if (sb_http_req_peer(req, &ss) < 0) { /* the client is gone: the answer goes nowhere */
        sb_http_respond_error(req, 401, "unauthorized", "the client is gone");
        return;
    }
    auth_op_t *op = sb_calloc(1, sizeof *op);
    op->s = s;
    op->req = req;
    op->next = next;
    op->min_role = min_role;
    op->families = families;
    sb_guard_addr_from(&op->addr, (const struct sockaddr *)&ss);
    sb_api_auth(s, sb_str(h.p + 7, h.len - 7), key_only, &op->addr, request_authed, op);
}

/* A non-negative integer query parameter in [0, max], or def when absent. Answers 400 and returns false when bad. */
static bool query_int(sb_http_req_t *req, const sb_form_t *q, const char *name, long long def, long long max,
                      long long *out)
{
    const sb_form_pair_t *p = sb_form_find_cstr(q, name);
    *out = def;
    if (!p)
        return true;
    if (sb_str_to_ll(p->value, 0, max, out) < 0) {
        char msg[128];
        snprintf(msg, sizeof msg, "'%s' must be an integer from 0 to %lld", name, max);
        sb_http_respond_error(req, 400, "bad_request", msg);
        return false;
    }
    return true;
}

/* ---- GET /v1/events ------------------------------------------------------------------------------------------- */

typedef struct events_op {
    sb_http_req_t *req;
    long long after;
} events_op_t;

static void events_read(void *arg, int err, const sb_event_rec_t *ev, size_t n)
{
    events_op_t *op = arg;
    if (err) {
        sb_http_respond_error(op->req, 503, "unavailable", "the database is not reachable; retry");
        free(op);
        return;
    }
    sb_buf_t b;
    sb_buf_init(&b);
    sb_buf_puts(&b, "{\"events\":[");
    for (size_t i = 0; i < n; i++) {
        sb_buf_printf(&b, "%s{\"cursor\":%lld,\"type\":\"", i ? "," : "", (long long)ev[i].cursor);
        sb_buf_json_escape(&b, sb_str_cstr(ev[i].type));
        sb_buf_puts(&b, "\",\"data\":");
        sb_buf_append_str(&b, ev[i].data); /* JSON, as the actor wrote it */
        sb_buf_puts(&b, "}");
    }
    sb_buf_printf(&b, "],\"cursor\":%lld}\n", n ? (long long)ev[n - 1].cursor : op->after);
    sb_http_respond(op->req, 200, "application/json", b.p, b.len);
    sb_buf_cleanup(&b);
    free(op);
}

static void get_events(sb_shard_t *s, sb_http_req_t *req, const sb_principal_t *p)
{
    const char *tenant = p->tenant_s;
    sb_form_t q;
    sb_form_init(&q);
    long long after, limit;
    if (sb_form_parse(&q, sb_http_req_query(req)) < 0) {
        sb_http_respond_error(req, 400, "bad_request", "malformed query string");
        goto out;
    }
    if (!query_int(req, &q, "after", 0, INT64_MAX, &after) || !query_int(req, &q, "limit", 100, 1000, &limit))
        goto out;
    if (limit == 0)
        limit = 100;
    events_op_t *op = sb_malloc(sizeof *op);
    op->req = req;
    op->after = after;
    if (sb_store_events(sb_domain_store(s), strtoll(tenant, NULL, 10), after, (size_t)limit, events_read, op) < 0) {
        free(op);
        sb_http_respond_error(req, 503, "unavailable", "the database is not reachable; retry");
    }
out:
    sb_form_cleanup(&q);
}

/* ---- GET /v1/conversations, /v1/conversations/{id}/messages, /v1/messages/{id} -------------------------------- */

/* Answers {key:[docs]}: the JSON objects as the store read them (built by PostgreSQL). SB_ENOENT comes only with a
 * conversation's messages: the conversation is not the tenant's. */
static void respond_docs(sb_http_req_t *req, int err, const char *key, const sb_str_t *docs, size_t n)
{
    if (err == SB_ENOENT) {
        sb_http_respond_error(req, 404, "not_found", "no such conversation");
        return;
    }
    if (err) {
        sb_http_respond_error(req, 503, "unavailable", "the database is not reachable; retry");
        return;
    }
    sb_buf_t b;
    sb_buf_init(&b);
    sb_buf_printf(&b, "{\"%s\":[", key);
    for (size_t i = 0; i < n; i++) {
        if (i)
            sb_buf_puts(&b, ",");
        sb_buf_append_str(&b, docs[i]);
    }
    sb_buf_puts(&b, "]}\n");
    sb_http_respond(req, 200, "application/json", b.p, b.len);
    sb_buf_cleanup(&b);
}

static void conversations_read(void *arg, int err, const sb_str_t *docs, size_t n)
{
    respond_docs(arg, err, "conversations", docs, n);
}

static void messages_read(void *arg, int err, const sb_str_t *docs, size_t n)
{
    respond_docs(arg, err, "messages", docs, n);
}

/* Reads before/limit from the query (absent or 0: no bound, and 50). Answers 400 and returns false when bad. */
static bool page_params(sb_http_req_t *req, long long *before, long long *limit)
{
    sb_form_t q;
    sb_form_init(&q);
    long long b = 0, l = 0;
    bool ok = sb_form_parse(&q, sb_http_req_query(req)) == 0;
    if (!ok)
        sb_http_respond_error(req, 400, "bad_request", "malformed query string");
    ok = ok && query_int(req, &q, "before", 0, INT64_MAX, &b) && query_int(req, &q, "limit", 50, 1000, &l);
    sb_form_cleanup(&q);
    *before = b ? b : INT64_MAX;
    *limit = l ? l : 50;
    return ok;
}

static void get_conversations(sb_shard_t *s, sb_http_req_t *req, const sb_principal_t *p)
{
    const char *tenant = p->tenant_s;
    long long before, limit;
    if (page_params(req, &before, &limit) &&
        sb_query_conversations(sb_domain_store(s), strtoll(tenant, NULL, 10), before, limit, conversations_read,
                               req) < 0)
        sb_http_respond_error(req, 503, "unavailable", "the database is not reachable; retry");
}

static void get_conversation_messages(sb_shard_t *s, sb_http_req_t *req, const char *tenant, long long conv)
{
    long long before, limit;
    if (page_params(req, &before, &limit) &&
        sb_query_conversation_messages(sb_domain_store(s), strtoll(tenant, NULL, 10), conv, before, limit,
                                       messages_read, req) < 0)
        sb_http_respond_error(req, 503, "unavailable", "the database is not reachable; retry");
}

static void message_read(void *arg, int err, sb_str_t json)
{
    sb_http_req_t *req = arg;
    if (err == SB_ENOENT)
        sb_http_respond_error(req, 404, "not_found", "no such message");
    else if (err)
        sb_http_respond_error(req, 503, "unavailable", "the database is not reachable; retry");
    else
        sb_http_respond(req, 200, "application/json", json.p, json.len);
}

static void get_message(sb_shard_t *s, sb_http_req_t *req, const char *tenant, long long id)
{
    if (sb_query_message(sb_domain_store(s), strtoll(tenant, NULL, 10), id, message_read, req) < 0)
        sb_http_respond_error(req, 503, "unavailable", "the database is not reachable; retry");
}

/* ---- POST /v1/tokens ------------------------------------------------------------------------------------------ */

static void post_token(sb_shard_t *s, sb_http_req_t *req, const sb_principal_t *p)
{
    (void)s;
    long long ttl = TOKEN_TTL_DEFAULT;
    sb_role_t role = p->role;
    sb_str_t body = sb_http_req_body(req);
    if (body.len) {
        json_t *j = json_loadb(body.p, body.len, JSON_REJECT_DUPLICATES, NULL);
        json_t *t = j ? json_object_get(j, "ttl_s") : NULL, *r = j ? json_object_get(j, "role") : NULL;
        bool ok = json_is_object(j) && (!t || (json_is_integer(t) && json_integer_value(t) >= 1 &&
                                               json_integer_value(t) <= TOKEN_TTL_MAX));
        if (ok && t)
            ttl = json_integer_value(t);
        if (ok && r && !json_is_null(r))
            ok = json_is_string(r) && (role = sb_role_parse(sb_str(json_string_value(r), json_string_length(r))));
        json_decref(j);
        if (!ok) {
            sb_http_respond_error(req, 400, "bad_request",
                                  "the body must be {\"ttl_s\": 1..86400, \"role\": \"owner\", \"agent\" or "
                                  "\"readonly\"} (both optional)");
            return;
        }
    }
    if (role > p->role) {
        char msg[128];
        snprintf(msg, sizeof msg, "a%s %s key cannot mint a%s %s token: a token can only narrow its key's role",
                 p->role == SB_ROLE_AGENT ? "n" : "", sb_role_name(p->role), role == SB_ROLE_AGENT ? "n" : "",
                 sb_role_name(role));
        sb_http_respond_error(req, 403, "forbidden", msg);
        return;
    }
    if (!have_jwt_key) {
        sb_http_respond_error(req, 503, "unavailable", "tokens need a master_key");
        return;
    }
    int64_t now = (int64_t)time(NULL);
    char kid[24];
    snprintf(kid, sizeof kid, "%lld", (long long)p->key_id);
    json_t *claims = json_pack("{s:s,s:s,s:s,s:I,s:I}", "tenant", p->tenant_s, "role", sb_role_name(role), "key_id",
                               kid, "iat", (json_int_t)now, "exp", (json_int_t)(now + ttl));
    sb_buf_t tok;
    sb_buf_init(&tok);
    int rc = claims ? sb_jwt_sign(claims, sb_str((const char *)jwt_key, sizeof jwt_key), &tok) : SB_EINVAL;
    json_decref(claims);
    if (rc < 0) {
        sb_http_respond_error(req, 500, "internal", "the token could not be signed");
        sb_buf_cleanup(&tok);
        return;
    }
    sb_buf_t b;
    sb_buf_init(&b);
    sb_buf_printf(&b, "{\"token\":\"%s\",\"expires_at\":%lld,\"role\":\"%s\"}\n", sb_buf_cstr(&tok),
                  (long long)(now + ttl), sb_role_name(role));
    sb_http_respond(req, 201, "application/json", b.p, b.len);
    sb_buf_cleanup(&b);
    sb_buf_cleanup(&tok);
}

/* ---- POST /v1/messages ---------------------------------------------------------------------------------------- */

static void send_accepted(void *arg, int status, const char *code, const char *message, const char *id, bool created)
{
    sb_http_req_t *req = arg;
    if (status != 202) {
        sb_http_respond_error(req, status, code, message);
        return;
    }
    char b[96];
    int n = snprintf(b, sizeof b, "{\"id\":\"%s\",\"status\":\"%s\"}\n", id, code ? code : "queued");
    sb_http_respond(req, created ? 202 : 200, "application/json", b, (size_t)n);
}

/* A JSON string field as a view (absent or null: {NULL, 0}); false when present with another type. */
static bool str_field(json_t *o, const char *name, sb_str_t *out)
{
    json_t *v = json_object_get(o, name);
    *out = sb_str(NULL, 0);
    if (!v || json_is_null(v))
        return true;
    if (!json_is_string(v))
        return false;
    *out = sb_str(json_string_value(v), json_string_length(v));
    return true;
}

/* What is wrong with the shape of a send's "template", or NULL. Two kinds: a Meta template {"name", "language"
 * (a code, or {"code"}), "components" (an array)?} for WhatsApp Cloud, and a Twilio Content API template
 * {"content_sid", "variables" (an object of strings)?}; nothing else beside their members. The channel's rules
 * (which kind, the name's and sid's form) are checked by its session (adapters/outbound). */
static const char *template_problem(json_t *tpl)
{
    static const char *const meta_keys[] = {"name", "language", "components", NULL};
    static const char *const twilio_keys[] = {"content_sid", "variables", NULL};
    if (!json_is_object(tpl))
        return "'template' must be an object: {\"name\",\"language\",\"components\"} (Meta) or "
               "{\"content_sid\",\"variables\"} (Twilio)";
    json_t *name = json_object_get(tpl, "name"), *sid = json_object_get(tpl, "content_sid");
    if (name && sid)
        return "'template' takes a 'name' (Meta) or a 'content_sid' (Twilio), not both";
    const char *const *allowed = sid ? twilio_keys : meta_keys;
    const char *key;
    json_t *v;
    json_object_foreach(tpl, key, v)
    {
        size_t i = 0;
        while (allowed[i] && strcmp(allowed[i], key) != 0)
            i++;
        if (!allowed[i])
            return sid ? "'template' (Content API) takes only 'content_sid' and 'variables'"
                       : "'template' (Meta) takes only 'name', 'language' and 'components'";
    }
    if (sid) {
        json_t *vars = json_object_get(tpl, "variables");
        if (!json_is_string(sid))
            return "'template.content_sid' must be a string";
        if (vars && !json_is_object(vars))
            return "'template.variables' must be an object of strings";
        json_object_foreach(vars, key, v)
        {
            if (!json_is_string(v))
                return "'template.variables' must be an object of strings";
        }
        return NULL;
    }
    json_t *lang = json_object_get(tpl, "language"), *comps = json_object_get(tpl, "components");
    if (!json_is_string(name))
        return "'template' must have a 'name' (Meta) or a 'content_sid' (Twilio)";
    if (lang && !json_is_string(lang) && !(json_is_object(lang) && json_is_string(json_object_get(lang, "code"))))
        return "'template.language' must be a language code or {\"code\"}";
    if (comps && !json_is_array(comps))
        return "'template.components' must be an array";
    return NULL;
}

/* The "priority" field (absent or null: normal, the REST default); false when it is not one of the lanes' names. */
static bool priority_field(json_t *o, sb_priority_t *out)
{
    json_t *v = json_object_get(o, "priority");
    if (!v || json_is_null(v))
        return true;
    for (int p = 0; json_is_string(v) && p < SB_PRIORITY_N; p++)
        if (strcmp(json_string_value(v), sb_priority_names[p]) == 0) {
            *out = (sb_priority_t)p;
            return true;
        }
    return false;
}

/* The send's "send_at" (absent or null: at once), into *ms (0: at once). NULL, or what is wrong with it. A time not
 * ahead means at once; more than SB_SESSION_SCHEDULE_MAX_MS ahead is refused. */
static const char *send_at_field(json_t *o, int64_t *ms)
{
    sb_str_t v;
    *ms = 0;
    if (!str_field(o, "send_at", &v))
        return "'send_at' must be a string: an RFC 3339 time such as 2026-12-05T14:30:00Z or "
               "2026-12-05T15:30:00+01:00";
    if (!v.p)
        return NULL;
    int64_t at;
    if (sb_rfc3339_parse(v, &at) < 0)
        return "'send_at' must be an RFC 3339 time with its offset, such as 2026-12-05T14:30:00Z or "
               "2026-12-05T15:30:00+01:00";
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    if (at - now > SB_SESSION_SCHEDULE_MAX_MS)
        return "'send_at' must be at most 30 days ahead";
    *ms = at > now ? at : 0;
    return NULL;
}

static void post_message(sb_shard_t *s, sb_http_req_t *req, const sb_principal_t *p)
{
    const char *tenant = p->tenant_s;
    (void)s;
    sb_str_t body = sb_http_req_body(req), ct;
    if (!sb_http_req_header(req, "content-type", &ct) || !sb_str_has_prefix(ct, SB_STR("application/json"))) {
        sb_http_respond_error(req, 415, "unsupported_media_type", "send Content-Type: application/json");
        return;
    }
    json_t *j = json_loadb(body.p, body.len, JSON_REJECT_DUPLICATES, NULL);
    sb_send_t send = {.tenant = strtoll(tenant, NULL, 10), .priority = SB_PRIORITY_NORMAL};
    const char *bad = NULL;
    char *template_text = NULL;
    json_t *ch = json_object_get(j, "channel_id"), *tpl = json_object_get(j, "template");
    long long channel = 0;
    if (!json_is_object(j))
        bad = "the body must be a JSON object";
    else if (json_is_integer(ch))
        channel = json_integer_value(ch);
    else if (json_is_string(ch))
        sb_str_to_ll(sb_str(json_string_value(ch), json_string_length(ch)), 1, INT64_MAX, &channel);
    if (!bad && channel < 1)
        bad = "'channel_id' must be a channel id";
    else if (!bad && !str_field(j, "to", &send.to))
        bad = "'to' must be a string";
    else if (!bad && !str_field(j, "body", &send.body))
        bad = "'body' must be a string";
    else if (!bad && !str_field(j, "media_url", &send.media_url))
        bad = "'media_url' must be a string";
    else if (!bad && !str_field(j, "idempotency_key", &send.idempotency_key))
        bad = "'idempotency_key' must be a string";
    else if (!bad && !str_field(j, "tag", &send.tag))
        bad = "'tag' must be a string";
    else if (!bad && !priority_field(j, &send.priority))
        bad = "'priority' must be one of \"interactive\", \"normal\", \"bulk\"";
    const char *code = "invalid_request";
    if (!bad && tpl && !json_is_null(tpl) && (bad = template_problem(tpl)))
        code = "invalid_template";
    sb_fallback_t fallback = {0};
    const char *fallback_bad = NULL;
    if (!bad && sb_fallback_from_request(json_object_get(j, "fallback"), json_object_get(j, "fallback_after"),
                                         (int64_t)channel, &fallback, &fallback_bad) < 0)
        bad = fallback_bad;
    if (!bad)
        bad = send_at_field(j, &send.send_at_ms);
    if (bad) {
        sb_http_respond_error(req, 400, code, bad);
        json_decref(j);
        return;
    }
    sb_str_t header_key;
    if (!send.idempotency_key.p && sb_http_req_header(req, "idempotency-key", &header_key))
        send.idempotency_key = header_key;
    if (tpl && json_is_object(tpl)) {
        template_text = json_dumps(tpl, JSON_COMPACT);
        send.template_json = sb_str_cstr(template_text);
    }
    send.channel = channel;
    sb_buf_t fallback_text;
    sb_buf_init(&fallback_text);
    if (sb_fallback_format(&fallback, 0, &fallback_text))
        send.fallback_json = sb_str(fallback_text.p, fallback_text.len);
    sb_sends_accept(&send, send_accepted, req);
    sb_buf_cleanup(&fallback_text);
    free(template_text);
    json_decref(j);
}

/* ---- DELETE /v1/messages/{id} ------------------------------------------------------------------------------------ */

/* A cancel on its way: the request and the message, until the session answered and the message is read back. */
typedef struct cancel_req {
    sb_http_req_t *req;
    sb_shard_t *shard;
    int64_t tenant, id;
} cancel_req_t;

/* The session's answer (sb_sends_cancel_fn): an error as it is, a cancel as the message read back (committed by
 * then); frees c. */
static void canceled(void *arg, int status, const char *code, const char *message)
{
    cancel_req_t *c = arg;
    if (status != 200)
        sb_http_respond_error(c->req, status, code, message);
    else if (sb_query_message(sb_domain_store(c->shard), c->tenant, c->id, message_read, c->req) < 0)
        sb_http_respond_error(c->req, 503, "unavailable", "the message was canceled but cannot be read back now");
    free(c);
}

/* Where the message is decides: unknown 404; inbound, or gone out already (by the store), 409; canceled already,
 * the message again (a DELETE repeated); otherwise its channel's session decides, since only it knows whether it
 * was claimed meanwhile. */
static void message_found(void *arg, int err, const sb_query_message_ref_t *r)
{
    cancel_req_t *c = arg;
    if (err == SB_ENOENT) {
        sb_http_respond_error(c->req, 404, "not_found", "no such message");
    } else if (err) {
        sb_http_respond_error(c->req, 503, "unavailable", "the database is not reachable; retry");
    } else if (!r->out) {
        sb_http_respond_error(c->req, 409, "conflict", "an inbound message cannot be canceled");
    } else if (strcmp(r->status, "canceled") == 0) {
        canceled(c, 200, NULL, NULL);
        return;
    } else if (strcmp(r->status, "scheduled") != 0 && strcmp(r->status, "queued") != 0 &&
               strcmp(r->status, "retrying") != 0) {
        char msg[160];
        snprintf(msg, sizeof msg, "the message is %.32s: only a scheduled or queued message can be canceled",
                 r->status);
        sb_http_respond_error(c->req, 409, "conflict", msg);
    } else {
        sb_sends_cancel(c->tenant, r->channel, c->id, r->intake, canceled, c);
        return;
    }
    free(c);
}

/* DELETE /v1/messages/{id} (an agent's or owner's key; the id in the request's user pointer): the message's row
 * first, for its channel. */
static void delete_message(sb_shard_t *s, sb_http_req_t *req, const sb_principal_t *p)
{
    cancel_req_t *c = sb_calloc(1, sizeof *c);
    *c = (cancel_req_t){.req = req, .shard = s, .tenant = p->tenant, .id = (int64_t)(intptr_t)sb_http_req_user(req)};
    if (sb_query_message_ref(sb_domain_store(s), c->tenant, c->id, message_found, c) < 0) {
        sb_http_respond_error(req, 503, "unavailable", "the database is not reachable; retry");
        free(c);
    }
}

/* ---- routing -------------------------------------------------------------------------------------------------- */

static void with_calls(sb_shard_t *s, sb_http_req_t *req, const sb_principal_t *p)
{
    sb_voice_api(s, req, cfg, p->tenant);
}

/* A route with an id in its path keeps the id in the request's user pointer while authentication runs. */
static void with_conversation_id(sb_shard_t *s, sb_http_req_t *req, const sb_principal_t *p)
{
    get_conversation_messages(s, req, p->tenant_s, (long long)(intptr_t)sb_http_req_user(req));
}

static void with_message_id(sb_shard_t *s, sb_http_req_t *req, const sb_principal_t *p)
{
    get_message(s, req, p->tenant_s, (long long)(intptr_t)sb_http_req_user(req));
}

static bool path_id(sb_str_t rest, long long *id, sb_str_t *tail)
{
    size_t n = 0;
    while (n < rest.len && rest.p[n] != '/')
        n++;
    *tail = sb_str(rest.p + n, rest.len - n);
    return n > 0 && n <= 19 && sb_str_to_ll(sb_str(rest.p, n), 1, INT64_MAX, id) == 0;
}

bool sb_api_handle(sb_shard_t *s, sb_http_req_t *req)
{
    sb_str_t path = sb_http_req_path(req), tail;
    sb_http_method_t m = sb_http_req_method(req);
    bool get = m == SB_HTTP_GET || m == SB_HTTP_HEAD;
    long long id;

    if (sb_str_eq_cstr(path, "/v1/events")) {
        if (!get)
            sb_http_respond_error(req, 405, "method_not_allowed", "this route answers GET");
        else
            sb_api_authenticate(s, req, SB_ROLE_READONLY, 0, false, get_events);
        return true;
    }
    if (sb_str_eq_cstr(path, "/v1/conversations")) {
        if (!get)
            sb_http_respond_error(req, 405, "method_not_allowed", "this route answers GET");
        else
            sb_api_authenticate(s, req, SB_ROLE_READONLY, 0, false, get_conversations);
        return true;
    }
    if (sb_str_eq_cstr(path, "/v1/messages")) {
        if (m != SB_HTTP_POST)
            sb_http_respond_error(req, 405, "method_not_allowed", "this route answers POST");
        else
            sb_api_authenticate(s, req, SB_ROLE_AGENT, SB_RL_SEND, false, post_message);
        return true;
    }
    if (sb_str_eq_cstr(path, "/v1/tokens")) {
        if (m != SB_HTTP_POST)
            sb_http_respond_error(req, 405, "method_not_allowed", "this route answers POST");
        else
            sb_api_authenticate(s, req, SB_ROLE_READONLY, SB_RL_TOKENS, true, post_token);
        return true;
    }
    if (sb_str_eq_cstr(path, "/v1/calls") || sb_str_has_prefix(path, SB_STR("/v1/calls/"))) {
        /* placing a call takes an agent; reading them any role (a wrong method is answered 405 after) */
        sb_api_authenticate(s, req, m == SB_HTTP_POST ? SB_ROLE_AGENT : SB_ROLE_READONLY, 0, false, with_calls);
        return true;
    }
    bool conv = sb_str_has_prefix(path, SB_STR("/v1/conversations/"));
    bool msg = sb_str_has_prefix(path, SB_STR("/v1/messages/"));
    if (!conv && !msg)
        return false;
    size_t skip = conv ? strlen("/v1/conversations/") : strlen("/v1/messages/");
    if (!path_id(sb_str(path.p + skip, path.len - skip), &id, &tail) ||
        !(conv ? sb_str_eq_cstr(tail, "/messages") : tail.len == 0)) {
        sb_http_respond_error(req, 404, "not_found", conv ? "no such conversation" : "no such message");
        return true;
    }
    if (msg && m == SB_HTTP_DELETE) { /* a cancel: an agent's, like a send */
        sb_http_req_set_user(req, (void *)(intptr_t)id);
        sb_api_authenticate(s, req, SB_ROLE_AGENT, SB_RL_SEND, false, delete_message);
        return true;
    }
    if (!get) {
        sb_http_respond_error(req, 405, "method_not_allowed",
                              msg ? "this route answers GET and DELETE" : "this route answers GET");
        return true;
    }
    sb_http_req_set_user(req, (void *)(intptr_t)id);
    sb_api_authenticate(s, req, SB_ROLE_READONLY, 0, false, conv ? with_conversation_id : with_message_id);
    return true;
}
