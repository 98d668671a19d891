/* API keys: issue, list, revoke, rotate; see keys.h. */
#include "gateway/keys.h"

#include "adapters/crypto.h"
#include "adapters/store/queries.h"
#include "gateway/answers.h"
#include "gateway/api.h"
#include "gateway/live.h"
#include "proto/err.h"
#include "proto/mem.h"
#include "shards/domain.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The body as a JSON object; an empty body is an empty object. Answers 400/415 and returns NULL otherwise. */
static json_t *body_object(sb_http_req_t *req)
{
    sb_str_t body = sb_http_req_body(req), ct;
    if (sb_str_trim(body).len == 0)
        return json_object();
    if (!sb_http_req_header(req, "content-type", &ct) || !sb_str_has_prefix(ct, SB_STR("application/json"))) {
        sb_http_respond_error(req, 415, "unsupported_media_type", "send Content-Type: application/json");
        return NULL;
    }
    json_t *j = json_loadb(body.p, body.len, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        sb_http_respond_error(req, 400, "bad_request", "the body must be a JSON object");
        return NULL;
    }
    return j;
}

/* ---- issue ------------------------------------------------------------------------------------------------------ */

typedef struct key_op {
    sb_http_req_t *req;
    int64_t tenant, old_id;
    sb_crypto_api_key_t key;
    sb_role_t role;
} key_op_t;

static void key_op_free(key_op_t *op)
{
    sb_crypto_wipe(op, sizeof *op);
    free(op);
}

/* A new key_op with a fresh key, or NULL (answered 503). */
static key_op_t *key_op_new(sb_http_req_t *req, int64_t tenant)
{
    key_op_t *op = sb_calloc(1, sizeof *op);
    op->req = req;
    op->tenant = tenant;
    if (sb_crypto_key_generate(&op->key) < 0) {
        free(op);
        sb_http_respond_error(req, 503, "unavailable", "no randomness available");
        return NULL;
    }
    return op;
}

static json_t *key_json(const key_op_t *op, int64_t id, const char *role)
{
    return json_pack("{s:o,s:s,s:s,s:s}", "id", sb_answer_id(id), "key", op->key.key, "prefix", op->key.prefix, "role",
                     role);
}

static void key_created(void *arg, int err, int64_t id)
{
    key_op_t *op = arg;
    if (err)
        sb_answer_db_error(op->req, err, "no such tenant", NULL);
    else
        sb_answer_json(op->req, 201, key_json(op, id, sb_role_name(op->role)));
    key_op_free(op);
}

static void create_key(sb_shard_t *s, sb_http_req_t *req, int64_t tenant)
{
    json_t *j = body_object(req);
    if (!j)
        return;
    json_t *r = json_object_get(j, "role");
    sb_role_t role = SB_ROLE_OWNER;
    bool ok = json_object_size(j) == (r ? 1u : 0u);
    if (ok && r && !json_is_null(r))
        ok = json_is_string(r) && (role = sb_role_parse(sb_str(json_string_value(r), json_string_length(r))));
    json_decref(j);
    if (!ok) {
        sb_http_respond_error(req, 400, "bad_request",
                              "the body must be empty or {\"role\": \"owner\", \"agent\" or \"readonly\"}");
        return;
    }
    key_op_t *op = key_op_new(req, tenant);
    if (!op)
        return;
    op->role = role;
    if (sb_query_api_key_create(sb_domain_store(s), tenant, op->key.prefix, op->key.hash, sb_role_name(role),
                                key_created, op) < 0) {
        key_op_free(op);
        sb_answer_db_error(req, SB_EUNAVAIL, "", NULL);
    }
}

/* ---- list ------------------------------------------------------------------------------------------------------- */

static void keys_listed(void *arg, int err, const char *detail, const sb_rows_t *rows)
{
    (void)detail;
    sb_answer_rows(arg, err, "keys", rows, "no such tenant");
}

static void list_keys(sb_shard_t *s, sb_http_req_t *req, int64_t tenant)
{
    if (sb_query_api_key_list(sb_domain_store(s), tenant, keys_listed, req) < 0)
        sb_answer_db_error(req, SB_EUNAVAIL, "", NULL);
}

/* ---- revoke ----------------------------------------------------------------------------------------------------- */

typedef struct revoke_op {
    sb_http_req_t *req;
    int64_t tenant, key;
} revoke_op_t;

static void key_revoked(void *arg, int err)
{
    revoke_op_t *op = arg;
    if (err) {
        sb_answer_db_error(op->req, err, "no such key (or it was revoked already)", NULL);
    } else {
        sb_live_key_ended(op->tenant, op->key, 0); /* committed: the live inbox clients of the key go too */
        sb_answer_json(op->req, 200, json_pack("{s:o,s:b}", "id", sb_answer_id(op->key), "revoked", 1));
    }
    free(op);
}

static void revoke_key(sb_shard_t *s, sb_http_req_t *req, int64_t tenant, int64_t key)
{
    revoke_op_t *op = sb_malloc(sizeof *op);
    *op = (revoke_op_t){req, tenant, key};
    if (sb_query_api_key_revoke(sb_domain_store(s), tenant, key, key_revoked, op) < 0) {
        free(op);
        sb_answer_db_error(req, SB_EUNAVAIL, "", NULL);
    }
}

/* ---- rotate ----------------------------------------------------------------------------------------------------- */

static void key_rotated(void *arg, int err, int64_t id, const char *role, int64_t old_expires)
{
    key_op_t *op = arg;
    if (err) {
        sb_answer_db_error(op->req, err, "no such key (or it was revoked already)", NULL);
    } else {
        sb_live_key_ended(op->tenant, op->old_id, old_expires);
        char when[32];
        time_t t = (time_t)old_expires;
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
        json_t *j = key_json(op, id, role);
        json_object_set_new(j, "replaces", sb_answer_id(op->old_id));
        json_object_set_new(j, "old_expires_at", json_string(when));
        sb_answer_json(op->req, 201, j);
    }
    key_op_free(op);
}

static void rotate_key(sb_shard_t *s, sb_http_req_t *req, int64_t tenant, int64_t key)
{
    json_t *j = body_object(req);
    if (!j)
        return;
    json_t *o = json_object_get(j, "overlap_s");
    bool ok = json_object_size(j) == (o ? 1u : 0u) &&
              (!o || json_is_null(o) ||
               (json_is_integer(o) && json_integer_value(o) >= 0 && json_integer_value(o) <= SB_KEYS_OVERLAP_MAX));
    int64_t overlap = o && json_is_integer(o) ? json_integer_value(o) : SB_KEYS_OVERLAP_DEFAULT;
    json_decref(j);
    if (!ok) {
        sb_http_respond_error(req, 400, "bad_request", "the body must be empty or {\"overlap_s\": 0..604800}");
        return;
    }
    key_op_t *op = key_op_new(req, tenant);
    if (!op)
        return;
    op->old_id = key;
    if (sb_query_api_key_rotate(sb_domain_store(s), tenant, key, overlap, op->key.prefix, op->key.hash, key_rotated,
                                op) < 0) {
        key_op_free(op);
        sb_answer_db_error(req, SB_EUNAVAIL, "", NULL);
    }
}

/* ---- routing ---------------------------------------------------------------------------------------------------- */

/* rest: "", "/{id}" or "/{id}/rotate", routed by method for tenant. */
static void route(sb_shard_t *s, sb_http_req_t *req, int64_t tenant, sb_str_t rest)
{
    sb_http_method_t m = sb_http_req_method(req);
    if (rest.len == 0) {
        if (m == SB_HTTP_POST)
            create_key(s, req, tenant);
        else if (m == SB_HTTP_GET || m == SB_HTTP_HEAD)
            list_keys(s, req, tenant);
        else
            sb_http_respond_error(req, 405, "method_not_allowed", "this route answers GET and POST");
        return;
    }
    size_t n = 1;
    while (n < rest.len && rest.p[n] != '/')
        n++;
    long long id;
    sb_str_t tail = sb_str(rest.p + n, rest.len - n);
    bool rotate = sb_str_eq_cstr(tail, "/rotate");
    if (rest.p[0] != '/' || n - 1 > 19 || sb_str_to_ll(sb_str(rest.p + 1, n - 1), 1, INT64_MAX, &id) < 0 ||
        (tail.len && !rotate)) {
        sb_http_respond_error(req, 404, "not_found", "no such key");
        return;
    }
    if (rotate && m == SB_HTTP_POST)
        rotate_key(s, req, tenant, id);
    else if (!rotate && m == SB_HTTP_DELETE)
        revoke_key(s, req, tenant, id);
    else
        sb_http_respond_error(req, 405, "method_not_allowed",
                              rotate ? "this route answers POST" : "this route answers DELETE");
}

void sb_keys_admin(sb_shard_t *s, sb_http_req_t *req, int64_t tenant, sb_str_t rest)
{
    route(s, req, tenant, rest);
}

static void owner_authed(sb_shard_t *s, sb_http_req_t *req, const sb_principal_t *p)
{
    sb_str_t path = sb_http_req_path(req);
    route(s, req, p->tenant, sb_str(path.p + strlen("/v1/keys"), path.len - strlen("/v1/keys")));
}

bool sb_keys_handle(sb_shard_t *s, sb_http_req_t *req)
{
    sb_str_t path = sb_http_req_path(req);
    if (!sb_str_eq_cstr(path, "/v1/keys") && !sb_str_has_prefix(path, SB_STR("/v1/keys/")))
        return false;
    sb_api_authenticate(s, req, SB_ROLE_OWNER, 0, true, owner_authed);
    return true;
}
