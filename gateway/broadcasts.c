/* Broadcasts, the front door; see broadcasts.h.
 *
 * A request of 100,000 recipients is a few MB of JSON: parsed once (jansson), rendered recipient by recipient into
 * one text block (to, body, template, each NUL-terminated) whose pieces the session's request points into, so the
 * whole broadcast is three allocations and a pointer array, not three hundred thousand strings. */
#include "gateway/forward.h"
#include "gateway/broadcasts.h"

#include "actors/session.h"
#include "adapters/store/broadcasts.h"
#include "gateway/api.h"
#include "gateway/log.h"
#include "gateway/sends.h"
#include "proto/err.h"
#include "proto/line.h"
#include "proto/mem.h"
#include "proto/rfc3339.h"
#include "shards/cluster.h"
#include "shards/domain.h"

#include <ctype.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- {{var}} substitution ---------------------------------------------------------------------------------------- */

static bool name_char(char c)
{
    return isalnum((unsigned char)c) || c == '_' || c == '.' || c == '-';
}

bool sb_broadcast_render(sb_buf_t *out, sb_str_t text, json_t *vars, char *missing, size_t cap)
{
    if (!text.len) /* (text.p may be NULL then: no pointer arithmetic on it) */
        return true;
    const char *p = text.p, *end = text.p + text.len;
    while (p < end) {
        const char *open = p + 1 < end ? memmem(p, (size_t)(end - p), "{{", 2) : NULL;
        if (!open) {
            sb_buf_append(out, p, (size_t)(end - p));
            break;
        }
        const char *n = open + 2;
        while (n < end && *n == ' ')
            n++;
        const char *ne = n;
        while (ne < end && name_char(*ne))
            ne++;
        const char *c = ne;
        while (c < end && *c == ' ')
            c++;
        if (ne == n || end - c < 2 || c[0] != '}' || c[1] != '}') { /* not a placeholder: the braces stay */
            sb_buf_append(out, p, (size_t)(open + 2 - p));
            p = open + 2;
            continue;
        }
        sb_buf_append(out, p, (size_t)(open - p));
        char name[128];
        size_t nl = (size_t)(ne - n) < sizeof name - 1 ? (size_t)(ne - n) : sizeof name - 1;
        memcpy(name, n, nl);
        name[nl] = '\0';
        json_t *v = json_is_object(vars) ? json_object_get(vars, name) : NULL;
        if (json_is_string(v)) {
            sb_buf_append(out, json_string_value(v), json_string_length(v));
        } else if (json_is_integer(v)) {
            sb_buf_printf(out, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        } else if (json_is_real(v)) {
            sb_buf_printf(out, "%.17g", json_real_value(v));
        } else if (json_is_boolean(v)) {
            sb_buf_puts(out, json_is_true(v) ? "true" : "false");
        } else {
            size_t ml = nl < cap - 1 ? nl : cap - 1;
            memcpy(missing, name, ml);
            missing[ml] = '\0';
            return false;
        }
        p = c + 2;
    }
    return true;
}

/* Renders every string of a template (a deep copy, changed in place). */
static bool render_json(json_t *j, json_t *vars, sb_buf_t *tmp, char *missing, size_t cap)
{
    if (json_is_string(j)) {
        tmp->len = 0;
        if (!sb_broadcast_render(tmp, sb_str(json_string_value(j), json_string_length(j)), vars, missing, cap))
            return false;
        json_string_setn(j, tmp->p ? tmp->p : "", tmp->len);
        return true;
    }
    if (json_is_object(j)) {
        const char *k;
        json_t *v;
        json_object_foreach(j, k, v)
        {
            if (!render_json(v, vars, tmp, missing, cap))
                return false;
        }
    } else if (json_is_array(j)) {
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v)
        {
            if (!render_json(v, vars, tmp, missing, cap))
                return false;
        }
    }
    return true;
}

/* ---- the request to the session and back ------------------------------------------------------------------------- */

typedef struct job {
    sb_session_broadcast_t req; /* first: the session hands back this pointer */
    unsigned origin;
    sb_http_req_t *http;
} job_t;

static void job_free(job_t *j)
{
    free(j->req.body);
    free(j->req.template_json);
    free(j->req.send_at);
    free(j->req.idempotency_key);
    free(j->req.to);
    free(j->req.bodies);
    free(j->req.templates);
    free(j->req.text);
    free(j);
}

static void answer_on_origin(sb_shard_t *s, void *arg)
{
    job_t *j = arg;
    (void)s;
    sb_session_broadcast_t *r = &j->req;
    if (r->status == 202 || r->status == 200) {
        char b[96];
        int n = r->status == 202 ? snprintf(b, sizeof b, "{\"id\":\"%lld\",\"recipients\":%zu}\n", (long long)r->id,
                                            r->n)
                                 : snprintf(b, sizeof b, "{\"id\":\"%lld\"}\n", (long long)r->id);
        sb_http_respond(j->http, r->status, "application/json", b, (size_t)n);
    } else {
        sb_http_respond_error(j->http, r->status, r->code ? r->code : "unavailable", r->message);
    }
    job_free(j);
}

static void answered(sb_session_broadcast_t *req)
{
    job_t *j = (job_t *)req;
    sb_shard_t *self = sb_shard_self();
    if (self && sb_shard_index(self) == j->origin)
        answer_on_origin(self, j);
    else if (sb_shard_exec(j->origin, answer_on_origin, j) < 0)
        job_free(j);
}

/* ---- POST /v1/broadcasts -------------------------------------------------------------------------------------------- */

static bool id_field(json_t *v, long long *out)
{
    *out = 0;
    if (json_is_integer(v))
        *out = json_integer_value(v);
    else if (json_is_string(v))
        sb_str_to_ll(sb_str(json_string_value(v), json_string_length(v)), 1, INT64_MAX, out);
    return *out >= 1;
}

/* Renders and checks every recipient into j (its text block, arrays and count). Returns NULL, or the answer's
 * message (in msg) with *code set. */
static const char *build(job_t *j, json_t *recipients, sb_str_t body, json_t *tpl, const char **code, char *msg,
                         size_t cap)
{
    size_t n = json_array_size(recipients);
    size_t (*off)[3] = sb_malloc(n * sizeof *off);
    sb_buf_t text, tmp;
    sb_buf_init(&text);
    sb_buf_init(&tmp);
    const char *bad = NULL;
    char missing[64];
    *code = "invalid_request";
    for (size_t i = 0; i < n && !bad; i++) {
        json_t *r = json_array_get(recipients, i), *to = json_object_get(r, "to"), *vars = json_object_get(r, "vars");
        if (!json_is_object(r) || !json_is_string(to) || (vars && !json_is_null(vars) && !json_is_object(vars))) {
            snprintf(msg, cap, "recipients[%zu] must be an object with a string 'to' and an object 'vars'", i);
            bad = msg;
            break;
        }
        sb_send_t send = {.to = sb_str(json_string_value(to), json_string_length(to))};
        off[i][0] = text.len;
        sb_buf_append_str(&text, send.to);
        sb_buf_append(&text, "", 1);
        off[i][1] = text.len;
        if (body.p && !sb_broadcast_render(&text, body, vars, missing, sizeof missing)) {
            snprintf(msg, cap, "recipients[%zu] has no variable '%s' (the body uses it)", i, missing);
            *code = "missing_variable";
            bad = msg;
            break;
        }
        size_t body_len = text.len - off[i][1];
        sb_buf_append(&text, "", 1);
        off[i][2] = text.len;
        if (tpl) {
            json_t *copy = json_deep_copy(tpl);
            bool ok = render_json(copy, vars, &tmp, missing, sizeof missing);
            char *t = ok ? json_dumps(copy, JSON_COMPACT) : NULL;
            json_decref(copy);
            if (!ok) {
                snprintf(msg, cap, "recipients[%zu] has no variable '%s' (the template uses it)", i, missing);
                *code = "missing_variable";
                bad = msg;
                break;
            }
            sb_buf_puts(&text, t ? t : "{}");
            free(t);
        }
        size_t tpl_len = text.len - off[i][2];
        sb_buf_append(&text, "", 1);
        /* (views only now: the appends may have moved the text) */
        send.body = sb_str(text.p + off[i][1], body_len);
        if (tpl)
            send.template_json = sb_str(text.p + off[i][2], tpl_len);
        const char *why = sb_sends_check(&send, code);
        if (why) {
            snprintf(msg, cap, "recipients[%zu]: %s", i, why);
            bad = msg;
        }
    }
    sb_buf_cleanup(&tmp);
    if (bad) {
        free(off);
        sb_buf_cleanup(&text);
        return bad;
    }
    j->req.n = n;
    j->req.text = text.p; /* taken: the strings below point into it */
    j->req.to = sb_malloc(n * sizeof *j->req.to);
    j->req.bodies = sb_malloc(n * sizeof *j->req.bodies);
    j->req.templates = tpl ? sb_malloc(n * sizeof *j->req.templates) : NULL;
    for (size_t i = 0; i < n; i++) {
        j->req.to[i] = text.p + off[i][0];
        j->req.bodies[i] = tpl ? text.p + off[i][2] - 1 : text.p + off[i][1]; /* a template's body: the "" before it */
        if (tpl)
            j->req.templates[i] = text.p + off[i][2];
    }
    free(off);
    return NULL;
}

static void post_broadcast(sb_shard_t *s, sb_http_req_t *req, const sb_principal_t *p)
{
    if (sb_forward_if_elsewhere(s, req, p->tenant)) /* another node's tenant: its session takes it there */
        return;
    sb_str_t raw = sb_http_req_body(req), ct;
    if (!sb_http_req_header(req, "content-type", &ct) || !sb_str_has_prefix(ct, SB_STR("application/json"))) {
        sb_http_respond_error(req, 415, "unsupported_media_type", "send Content-Type: application/json");
        return;
    }
    uint64_t t0 = uv_hrtime();
    json_t *j = json_loadb(raw.p, raw.len, JSON_REJECT_DUPLICATES, NULL);
    json_t *ch = json_object_get(j, "channel_id"), *body = json_object_get(j, "body"),
           *tpl = json_object_get(j, "template"), *rcp = json_object_get(j, "recipients"),
           *at = json_object_get(j, "send_at"), *key = json_object_get(j, "idempotency_key");
    long long channel;
    const char *bad = NULL, *code = "invalid_request";
    char msg[200];
    sb_str_t key_s = sb_str(NULL, 0);
    int64_t at_ms = 0;
    if (body && json_is_null(body))
        body = NULL;
    if (tpl && json_is_null(tpl))
        tpl = NULL;
    if (!json_is_object(j))
        bad = "the body must be a JSON object";
    else if (!id_field(ch, &channel))
        bad = "'channel_id' must be a channel id";
    else if ((body && !json_is_string(body)) || (tpl && (!json_is_object(tpl) ||
                                                         !json_is_string(json_object_get(tpl, "name")))))
        bad = "'body' must be a string, 'template' an object with a 'name'";
    else if (!body == !tpl)
        bad = "a broadcast takes one of 'body' and 'template'";
    else if (!json_is_array(rcp) || json_array_size(rcp) == 0)
        bad = "'recipients' must be a non-empty array of {\"to\", \"vars\"}";
    else if (json_array_size(rcp) > SB_BROADCAST_MAX_RECIPIENTS) {
        snprintf(msg, sizeof msg, "a broadcast has at most %d recipients", SB_BROADCAST_MAX_RECIPIENTS);
        bad = msg;
        code = "too_many_recipients";
    } else if (at && !json_is_null(at) &&
               (!json_is_string(at) ||
                sb_rfc3339_parse(sb_str(json_string_value(at), json_string_length(at)), &at_ms) < 0))
        bad = "'send_at' must be an RFC 3339 date-time such as 2026-12-24T09:00:00Z";
    else if (at_ms && at_ms > (int64_t)time(NULL) * 1000 + (int64_t)SB_BROADCAST_MAX_AHEAD_S * 1000)
        bad = "'send_at' is at most 30 days ahead";
    else if (key && !json_is_null(key) && !json_is_string(key))
        bad = "'idempotency_key' must be a string";
    if (!bad) {
        sb_str_t header_key;
        if (json_is_string(key))
            key_s = sb_str(json_string_value(key), json_string_length(key));
        else if (sb_http_req_header(req, "idempotency-key", &header_key))
            key_s = header_key;
        if (key_s.p && (key_s.len == 0 || key_s.len > SB_SENDS_MAX_KEY || !sb_utf8_valid(key_s.p, key_s.len) ||
                        memchr(key_s.p, '\0', key_s.len)))
            bad = "'idempotency_key' must be 1 to 255 bytes of UTF-8 text";
    }
    if (bad) {
        sb_http_respond_error(req, 400, code, bad);
        json_decref(j);
        return;
    }
    job_t *job = sb_calloc(1, sizeof *job);
    bad = build(job, rcp, body ? sb_str(json_string_value(body), json_string_length(body)) : sb_str(NULL, 0), tpl,
                &code, msg, sizeof msg);
    if (bad) {
        sb_http_respond_error(req, 400, code, bad);
        job_free(job);
        json_decref(j);
        return;
    }
    job->origin = sb_shard_index(s);
    job->http = req;
    job->req.tenant = p->tenant;
    job->req.channel = channel;
    job->req.body = body ? sb_strndup(json_string_value(body), json_string_length(body)) : NULL;
    job->req.template_json = tpl ? json_dumps(tpl, JSON_COMPACT) : NULL;
    if (at_ms) {
        job->req.send_at = sb_strndup(json_string_value(at), json_string_length(at));
        job->req.scheduled = at_ms > (int64_t)time(NULL) * 1000;
    }
    job->req.idempotency_key = key_s.p ? sb_strndup(key_s.p, key_s.len) : NULL;
    job->req.answer = answered;
    json_decref(j);
    sb_log_info("broadcasts: %zu recipients (%zu bytes) read and rendered in %llu ms", job->req.n, raw.len,
                (unsigned long long)((uv_hrtime() - t0) / 1000000));
    if (!sb_cluster_owns(p->tenant)) { /* (broadcasts are not handed between nodes: the owner takes them) */
        job->req.status = 503;
        job->req.code = "unavailable";
        snprintf(job->req.message, sizeof job->req.message, "%s", SB_CLUSTER_NOT_HERE);
        job->req.answer(&job->req);
        return;
    }
    sb_session_broadcast(sb_shard_rt(s), sb_domain_owner(p->tenant), &job->req);
}

/* ---- GET /v1/broadcasts/{id} ------------------------------------------------------------------------------------ */

static void broadcast_read(void *arg, int err, sb_str_t json)
{
    sb_http_req_t *req = arg;
    if (err == SB_ENOENT) {
        sb_http_respond_error(req, 404, "not_found", "no such broadcast");
    } else if (err) {
        sb_http_respond_error(req, 503, "unavailable", "the database is not reachable; retry");
    } else {
        sb_buf_t b;
        sb_buf_init(&b);
        sb_buf_append_str(&b, json);
        sb_buf_puts(&b, "\n");
        sb_http_respond(req, 200, "application/json", b.p, b.len);
        sb_buf_cleanup(&b);
    }
}

static void get_broadcast(sb_shard_t *s, sb_http_req_t *req, const sb_principal_t *p)
{
    if (sb_query_broadcast(sb_domain_store(s), p->tenant, (int64_t)(intptr_t)sb_http_req_user(req), broadcast_read,
                           req) < 0)
        sb_http_respond_error(req, 503, "unavailable", "the database is not reachable; retry");
}

/* ---- DELETE /v1/broadcasts/{id} --------------------------------------------------------------------------------- */

typedef struct cancel_job {
    sb_session_bcancel_t req; /* first */
    unsigned origin;
    sb_http_req_t *http;
} cancel_job_t;

static void cancel_on_origin(sb_shard_t *s, void *arg)
{
    cancel_job_t *c = arg;
    (void)s;
    if (c->req.status == 200) {
        char b[128];
        int n = snprintf(b, sizeof b, "{\"id\":\"%lld\",\"status\":\"canceled\",\"canceled\":%lld}\n",
                         (long long)c->req.broadcast_id, (long long)c->req.canceled);
        sb_http_respond(c->http, 200, "application/json", b, (size_t)n);
    } else {
        sb_http_respond_error(c->http, c->req.status, c->req.code ? c->req.code : "unavailable", c->req.message);
    }
    free(c);
}

static void cancel_answered(sb_session_bcancel_t *req)
{
    cancel_job_t *c = (cancel_job_t *)req;
    sb_shard_t *self = sb_shard_self();
    if (self && sb_shard_index(self) == c->origin)
        cancel_on_origin(self, c);
    else if (sb_shard_exec(c->origin, cancel_on_origin, c) < 0)
        free(c);
}

static void cancel_found(void *arg, int err, int64_t channel)
{
    cancel_job_t *c = arg;
    if (err) {
        c->req.status = err == SB_ENOENT ? 404 : 503;
        c->req.code = err == SB_ENOENT ? "not_found" : "unavailable";
        snprintf(c->req.message, sizeof c->req.message, "%s",
                 err == SB_ENOENT ? "no such broadcast" : "the database is not reachable; retry");
        cancel_on_origin(NULL, c);
        return;
    }
    c->req.channel = channel;
    sb_shard_t *self = sb_shard_self();
    if (!sb_cluster_owns(c->req.tenant)) {
        c->req.status = 503;
        c->req.code = "unavailable";
        snprintf(c->req.message, sizeof c->req.message, "%s", SB_CLUSTER_NOT_HERE);
        cancel_on_origin(NULL, c);
        return;
    }
    sb_session_broadcast_cancel(sb_shard_rt(self), sb_domain_owner(c->req.tenant), &c->req);
}

static void delete_broadcast(sb_shard_t *s, sb_http_req_t *req, const sb_principal_t *p)
{
    if (sb_forward_if_elsewhere(s, req, p->tenant))
        return;
    cancel_job_t *c = sb_calloc(1, sizeof *c);
    c->origin = sb_shard_index(s);
    c->http = req;
    c->req.tenant = p->tenant;
    c->req.broadcast_id = (int64_t)(intptr_t)sb_http_req_user(req);
    c->req.answer = cancel_answered;
    if (sb_query_broadcast_channel(sb_domain_store(s), p->tenant, c->req.broadcast_id, cancel_found, c) < 0) {
        free(c);
        sb_http_respond_error(req, 503, "unavailable", "the database is not reachable; retry");
    }
}

/* ---- routing -------------------------------------------------------------------------------------------------- */

bool sb_broadcasts_handle(sb_shard_t *s, sb_http_req_t *req)
{
    sb_str_t path = sb_http_req_path(req);
    sb_http_method_t m = sb_http_req_method(req);
    if (sb_str_eq_cstr(path, "/v1/broadcasts")) {
        if (m != SB_HTTP_POST)
            sb_http_respond_error(req, 405, "method_not_allowed", "this route answers POST");
        else
            sb_api_authenticate(s, req, SB_ROLE_AGENT, SB_RL_SEND, false, post_broadcast);
        return true;
    }
    if (!sb_str_has_prefix(path, SB_STR("/v1/broadcasts/")))
        return false;
    sb_str_t rest = sb_str(path.p + strlen("/v1/broadcasts/"), path.len - strlen("/v1/broadcasts/"));
    long long id;
    if (rest.len == 0 || rest.len > 19 || memchr(rest.p, '/', rest.len) || sb_str_to_ll(rest, 1, INT64_MAX, &id) < 0) {
        sb_http_respond_error(req, 404, "not_found", "no such broadcast");
        return true;
    }
    sb_http_req_set_user(req, (void *)(intptr_t)id);
    if (m == SB_HTTP_GET || m == SB_HTTP_HEAD)
        sb_api_authenticate(s, req, SB_ROLE_READONLY, 0, false, get_broadcast);
    else if (m == SB_HTTP_DELETE)
        sb_api_authenticate(s, req, SB_ROLE_AGENT, 0, false, delete_broadcast);
    else
        sb_http_respond_error(req, 405, "method_not_allowed", "this route answers GET and DELETE");
    return true;
}
