/* The tenant REST API; see api.h.
 *
 * Authentication: the bearer key must have our shape (sb_crypto_key_well_formed), then its SHA-256 is looked up
 * through api_key_routes, revoked keys excluded. The tenant id that comes back is the only tenant the request can
 * read: every query below filters on it. */
#include "gateway/api.h"

#include "adapters/crypto.h"
#include "adapters/store/queries.h"
#include "adapters/store/store.h"
#include "gateway/sends.h"
#include "gateway/voice.h"
#include "proto/digest.h"
#include "proto/err.h"
#include "proto/form.h"
#include "proto/jwt.h"
#include "proto/mem.h"
#include "shards/domain.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
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

/* ---- authentication: an API key (looked up) or an inbox token (verified here) ----------------------------------- */

typedef struct cred_op {
    sb_api_auth_fn cb;
    void *arg;
} cred_op_t;

static void key_looked_up(void *arg, int err, int64_t tenant)
{
    cred_op_t *op = arg;
    char t[24];
    snprintf(t, sizeof t, "%lld", (long long)tenant);
    if (err == SB_ENOENT)
        op->cb(op->arg, 401, "unauthorized", "unknown or revoked API key", NULL);
    else if (err)
        op->cb(op->arg, 503, "unavailable", "the database is not reachable; retry", NULL);
    else
        op->cb(op->arg, 0, NULL, NULL, t);
    free(op);
}

void sb_api_auth(sb_shard_t *s, sb_str_t cred, bool key_only, sb_api_auth_fn cb, void *arg)
{
    if (memchr(cred.p, '.', cred.len)) { /* a JWT: only tokens have dots */
        sb_jwt_claims_t claims;
        int rc = key_only ? SB_EACCES
                 : !have_jwt_key
                     ? SB_EUNAVAIL
                     : sb_jwt_verify(cred, sb_str((const char *)jwt_key, sizeof jwt_key), (int64_t)time(NULL), &claims);
        if (rc == 0)
            cb(arg, 0, NULL, NULL, claims.tenant);
        else if (key_only)
            cb(arg, 401, "unauthorized", "this call takes an API key, not a token", NULL);
        else if (rc == SB_EUNAVAIL)
            cb(arg, 401, "unauthorized", "tokens are not available: no master_key configured", NULL);
        else
            cb(arg, 401, sb_jwt_error_code(rc), sb_jwt_strerror(rc), NULL);
        return;
    }
    if (!sb_crypto_key_well_formed(cred)) {
        cb(arg, 401, "unauthorized", "unknown or revoked API key", NULL);
        return;
    }
    char hash[SB_CRYPTO_KEY_HASH_LEN + 1];
    sb_crypto_key_hash(cred, hash);
    cred_op_t *op = sb_malloc(sizeof *op);
    op->cb = cb;
    op->arg = arg;
    if (sb_query_api_key_tenant(sb_domain_store(s), hash, key_looked_up, op) < 0) {
        free(op);
        cb(arg, 503, "unavailable", "the database is not reachable; retry", NULL);
    }
}

typedef void (*authed_fn)(sb_shard_t *s, sb_http_req_t *req, const char *tenant);

typedef struct auth_op {
    sb_shard_t *s;
    sb_http_req_t *req;
    authed_fn next;
} auth_op_t;

static void request_authed(void *arg, int status, const char *code, const char *message, const char *tenant)
{
    auth_op_t *op = arg;
    if (status)
        sb_http_respond_error(op->req, status, code, message);
    else
        op->next(op->s, op->req, tenant);
    free(op);
}

/* Authenticates the request's bearer credential, then calls next with its tenant; or answers 401/503. */
static void authenticate(sb_shard_t *s, sb_http_req_t *req, authed_fn next, bool key_only)
{
    sb_str_t h;
    if (!sb_http_req_header(req, "authorization", &h) || !sb_str_has_prefix(h, SB_STR("Bearer "))) {
        sb_http_respond_error(req, 401, "unauthorized", "send Authorization: Bearer <api key>");
        return;
    }
    auth_op_t *op = sb_malloc(sizeof *op);
    op->s = s;
    op->req = req;
    op->next = next;
    sb_api_auth(s, sb_str(h.p + 7, h.len - 7), key_only, request_authed, op);
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

static void get_events(sb_shard_t *s, sb_http_req_t *req, const char *tenant)
{
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

static void get_conversations(sb_shard_t *s, sb_http_req_t *req, const char *tenant)
{
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

static void post_token(sb_shard_t *s, sb_http_req_t *req, const char *tenant)
{
    (void)s;
    long long ttl = TOKEN_TTL_DEFAULT;
    sb_str_t body = sb_http_req_body(req);
    if (body.len) {
        json_t *j = json_loadb(body.p, body.len, JSON_REJECT_DUPLICATES, NULL);
        json_t *t = j ? json_object_get(j, "ttl_s") : NULL;
        bool ok = json_is_object(j) && (!t || (json_is_integer(t) && json_integer_value(t) >= 1 &&
                                               json_integer_value(t) <= TOKEN_TTL_MAX));
        if (ok && t)
            ttl = json_integer_value(t);
        json_decref(j);
        if (!ok) {
            sb_http_respond_error(req, 400, "bad_request", "the body must be {\"ttl_s\": 1..86400}");
            return;
        }
    }
    if (!have_jwt_key) {
        sb_http_respond_error(req, 503, "unavailable", "tokens need a master_key");
        return;
    }
    int64_t now = (int64_t)time(NULL);
    sb_buf_t tok;
    sb_buf_init(&tok);
    if (sb_jwt_issue(sb_str_cstr(tenant), SB_STR(""), now, ttl, sb_str((const char *)jwt_key, sizeof jwt_key),
                     &tok) < 0) {
        sb_http_respond_error(req, 500, "internal", "the token could not be signed");
        sb_buf_cleanup(&tok);
        return;
    }
    sb_buf_t b;
    sb_buf_init(&b);
    sb_buf_printf(&b, "{\"token\":\"%s\",\"expires_at\":%lld}\n", sb_buf_cstr(&tok), (long long)(now + ttl));
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
    int n = snprintf(b, sizeof b, "{\"id\":\"%s\",\"status\":\"queued\"}\n", id);
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

static void post_message(sb_shard_t *s, sb_http_req_t *req, const char *tenant)
{
    (void)s;
    sb_str_t body = sb_http_req_body(req), ct;
    if (!sb_http_req_header(req, "content-type", &ct) || !sb_str_has_prefix(ct, SB_STR("application/json"))) {
        sb_http_respond_error(req, 415, "unsupported_media_type", "send Content-Type: application/json");
        return;
    }
    json_t *j = json_loadb(body.p, body.len, JSON_REJECT_DUPLICATES, NULL);
    sb_send_t send = {.tenant = strtoll(tenant, NULL, 10)};
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
    else if (!bad && tpl && !json_is_null(tpl) &&
             (!json_is_object(tpl) || !json_is_string(json_object_get(tpl, "name"))))
        bad = "'template' must be an object with a 'name'";
    if (bad) {
        sb_http_respond_error(req, 400, "invalid_request", bad);
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
    sb_sends_accept(&send, send_accepted, req);
    free(template_text);
    json_decref(j);
}

/* ---- routing -------------------------------------------------------------------------------------------------- */

static void with_calls(sb_shard_t *s, sb_http_req_t *req, const char *tenant)
{
    sb_voice_api(s, req, cfg, strtoll(tenant, NULL, 10));
}

/* A route with an id in its path keeps the id in the request's user pointer while authentication runs. */
static void with_conversation_id(sb_shard_t *s, sb_http_req_t *req, const char *tenant)
{
    get_conversation_messages(s, req, tenant, (long long)(intptr_t)sb_http_req_user(req));
}

static void with_message_id(sb_shard_t *s, sb_http_req_t *req, const char *tenant)
{
    get_message(s, req, tenant, (long long)(intptr_t)sb_http_req_user(req));
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
            authenticate(s, req, get_events, false);
        return true;
    }
    if (sb_str_eq_cstr(path, "/v1/conversations")) {
        if (!get)
            sb_http_respond_error(req, 405, "method_not_allowed", "this route answers GET");
        else
            authenticate(s, req, get_conversations, false);
        return true;
    }
    if (sb_str_eq_cstr(path, "/v1/messages")) {
        if (m != SB_HTTP_POST)
            sb_http_respond_error(req, 405, "method_not_allowed", "this route answers POST");
        else
            authenticate(s, req, post_message, false);
        return true;
    }
    if (sb_str_eq_cstr(path, "/v1/tokens")) {
        if (m != SB_HTTP_POST)
            sb_http_respond_error(req, 405, "method_not_allowed", "this route answers POST");
        else
            authenticate(s, req, post_token, true);
        return true;
    }
    if (sb_str_eq_cstr(path, "/v1/calls") || sb_str_has_prefix(path, SB_STR("/v1/calls/"))) {
        authenticate(s, req, with_calls, false);
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
    if (!get) {
        sb_http_respond_error(req, 405, "method_not_allowed", "this route answers GET");
        return true;
    }
    sb_http_req_set_user(req, (void *)(intptr_t)id);
    authenticate(s, req, conv ? with_conversation_id : with_message_id, false);
    return true;
}
