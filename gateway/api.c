/* The tenant REST API; see api.h.
 *
 * Authentication: the bearer key must have our shape (sb_crypto_key_well_formed), then its SHA-256 is looked up
 * through api_key_routes, revoked keys excluded. The tenant id that comes back is the only tenant the request can
 * read: every query below filters on it. */
#include "gateway/api.h"

#include "adapters/crypto.h"
#include "adapters/pg.h"
#include "proto/err.h"
#include "proto/form.h"
#include "proto/mem.h"

#include <stdlib.h>
#include <string.h>

typedef void (*authed_fn)(sb_shard_t *s, sb_http_req_t *req, const char *tenant);

typedef struct auth_op {
    sb_shard_t *s;
    sb_http_req_t *req;
    authed_fn next;
} auth_op_t;

static void key_looked_up(void *arg, int err, const char *detail, const PGresult *res)
{
    auth_op_t *op = arg;
    (void)detail;
    if (err)
        sb_http_respond_error(op->req, 503, "unavailable", "the database is not reachable; retry");
    else if (PQntuples(res) != 1)
        sb_http_respond_error(op->req, 401, "unauthorized", "unknown or revoked API key");
    else
        op->next(op->s, op->req, PQgetvalue(res, 0, 0));
    free(op);
}

/* Authenticates the request, then calls next with its tenant; or answers 401/503. */
static void authenticate(sb_shard_t *s, sb_http_req_t *req, authed_fn next)
{
    sb_str_t h;
    if (!sb_http_req_header(req, "authorization", &h) || !sb_str_has_prefix(h, SB_STR("Bearer "))) {
        sb_http_respond_error(req, 401, "unauthorized", "send Authorization: Bearer <api key>");
        return;
    }
    sb_str_t key = sb_str(h.p + 7, h.len - 7);
    if (!sb_crypto_key_well_formed(key)) {
        sb_http_respond_error(req, 401, "unauthorized", "unknown or revoked API key");
        return;
    }
    char hash[SB_CRYPTO_KEY_HASH_LEN + 1];
    sb_crypto_key_hash(key, hash);
    auth_op_t *op = sb_malloc(sizeof *op);
    op->s = s;
    op->req = req;
    op->next = next;
    const char *p[1] = {hash};
    if (sb_pg_query(sb_shard_pg(s),
                    "SELECT r.tenant_id::text FROM api_key_routes r JOIN api_keys k"
                    " ON k.tenant_id = r.tenant_id AND k.id = r.key_id WHERE r.key_hash = $1 AND k.revoked_at IS NULL",
                    1, p, 0, key_looked_up, op) < 0) {
        free(op);
        sb_http_respond_error(req, 503, "unavailable", "the database is not reachable; retry");
    }
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

static void events_read(void *arg, int err, const char *detail, const PGresult *res)
{
    events_op_t *op = arg;
    (void)detail;
    if (err) {
        sb_http_respond_error(op->req, 503, "unavailable", "the database is not reachable; retry");
        free(op);
        return;
    }
    sb_buf_t b;
    sb_buf_init(&b);
    const char *last = NULL;
    sb_buf_puts(&b, "{\"events\":[");
    for (int i = 0; i < PQntuples(res); i++) {
        last = PQgetvalue(res, i, 0);
        sb_buf_printf(&b, "%s{\"cursor\":%s,\"type\":\"", i ? "," : "", last);
        sb_buf_json_escape(&b, sb_str_cstr(PQgetvalue(res, i, 1)));
        sb_buf_printf(&b, "\",\"data\":%s}", PQgetvalue(res, i, 2)); /* data is JSON from jsonb */
    }
    if (last)
        sb_buf_printf(&b, "],\"cursor\":%s}\n", last);
    else
        sb_buf_printf(&b, "],\"cursor\":%lld}\n", op->after);
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
    char a[24], l[24];
    snprintf(a, sizeof a, "%lld", after);
    snprintf(l, sizeof l, "%lld", limit);
    const char *p[3] = {tenant, a, l};
    events_op_t *op = sb_malloc(sizeof *op);
    op->req = req;
    op->after = after;
    if (sb_pg_query(sb_shard_pg(s),
                    "SELECT cursor, type, data::text FROM inbox_events WHERE tenant_id = $1 AND cursor > $2"
                    " ORDER BY cursor LIMIT $3",
                    3, p, 0, events_read, op) < 0) {
        free(op);
        sb_http_respond_error(req, 503, "unavailable", "the database is not reachable; retry");
    }
out:
    sb_form_cleanup(&q);
}

bool sb_api_handle(sb_shard_t *s, sb_http_req_t *req)
{
    sb_str_t path = sb_http_req_path(req);
    if (sb_str_eq_cstr(path, "/v1/events")) {
        if (sb_http_req_method(req) != SB_HTTP_GET)
            sb_http_respond_error(req, 405, "method_not_allowed", "this route answers GET");
        else
            authenticate(s, req, get_events);
        return true;
    }
    return false;
}
