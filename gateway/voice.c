/* The voice front doors; see voice.h.
 *
 * Each request becomes an sb_call_req_t for the call's actor on the tenant's shard; the actor's answer comes back to
 * the shard the request arrived on (as a send's does, gateway/sends), which answers the HTTP request. */
#include "gateway/forward.h"
#include "gateway/voice.h"

#include "adapters/counters.h"
#include "adapters/crypto.h"
#include "adapters/store/queries.h"
#include "gateway/log.h"
#include "proto/codec.h"
#include "proto/err.h"
#include "proto/form.h"
#include "proto/mem.h"
#include "shards/cluster.h"
#include "shards/domain.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#define CALLS_PAGE_MAX 200

static const char twiml_ok[] = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response/>";

/* ---- on the way to the call's actor and back ------------------------------------------------------------------ */

typedef void (*answered_fn)(sb_call_req_t *r, void *arg);

typedef struct job {
    sb_call_req_t *r;
    unsigned origin;
    answered_fn fn;
    void *arg;
} job_t;

static void answer_on_origin(sb_shard_t *s, void *arg)
{
    job_t *j = arg;
    (void)s;
    j->fn(j->r, j->arg);
    sb_call_req_free(j->r);
    free(j);
}

static void answered(sb_call_req_t *r)
{
    job_t *j = r->arg;
    sb_shard_t *self = sb_shard_self();
    if (self && sb_shard_index(self) == j->origin)
        answer_on_origin(self, j);
    else if (sb_shard_exec(j->origin, answer_on_origin, j) < 0) { /* that shard is gone, and its client with it */
        sb_call_req_free(r);
        free(j);
    }
}

/* Hands r to its call's actor; fn(r, arg) runs on this shard with the outcome. */
static void dispatch(sb_shard_t *s, sb_call_req_t *r, answered_fn fn, void *arg)
{
    job_t *j = sb_malloc(sizeof *j);
    *j = (job_t){r, sb_shard_index(s), fn, arg};
    r->answer = answered;
    r->arg = j;
    if (!sb_cluster_owns(r->tenant)) { /* (calls are not handed between nodes: the owner takes them) */
        r->http_status = 503;
        r->code = "unavailable";
        snprintf(r->message, sizeof r->message, "%s", SB_CLUSTER_NOT_HERE);
        r->answer(r);
        return;
    }
    sb_call_request(sb_shard_rt(s), sb_domain_owner(r->tenant), r);
}

static void respond_refusal(sb_http_req_t *req, const sb_call_req_t *r)
{
    sb_http_respond_error(req, r->http_status, r->code ? r->code : "unavailable",
                          r->message[0] ? r->message : "the call could not be handled now; retry");
}

static void with_channel(sb_call_req_t *r, const sb_voice_channel_t *vc)
{
    r->tenant = vc->tenant;
    r->channel = vc->id;
    r->channel_address = sb_strdup(vc->address);
    r->credentials_sealed = sb_strdup(vc->credentials_sealed);
    r->secret = vc->secret ? sb_strdup(vc->secret) : NULL;
    sb_voice_settings_copy(&r->v, &vc->v);
}

bool sb_voice_ws_base(sb_http_req_t *req, const sb_config_t *cfg, sb_buf_t *out)
{
    sb_buf_t base;
    sb_buf_init(&base);
    bool ok = sb_http_req_base_url(req, cfg->public_url, &base) &&
              sb_str_has_prefix(sb_str(base.p, base.len), SB_STR("http"));
    if (ok) { /* http:// -> ws://, https:// -> wss:// */
        sb_buf_puts(out, "ws");
        sb_buf_append(out, base.p + 4, base.len - 4);
    }
    sb_buf_cleanup(&base);
    return ok;
}

bool sb_voice_stream_url(sb_http_req_t *req, const sb_config_t *cfg, int64_t channel, sb_buf_t *out)
{
    if (!sb_voice_ws_base(req, cfg, out))
        return false;
    sb_buf_printf(out, "/webhooks/twilio/%" PRId64 "/media", channel);
    return true;
}

/* ---- Twilio's webhooks ---------------------------------------------------------------------------------------- */

static void twiml_answered(sb_call_req_t *r, void *arg)
{
    sb_http_req_t *req = arg;
    if (r->http_status == 200)
        sb_http_respond(req, 200, "text/xml", r->body.p ? r->body.p : twiml_ok,
                        r->body.p ? r->body.len : sizeof twiml_ok - 1);
    else
        respond_refusal(req, r);
}

void sb_voice_incoming(sb_shard_t *s, sb_http_req_t *req, const sb_config_t *cfg, const sb_voice_channel_t *vc,
                       const sb_twilio_call_t *call)
{
    if (sb_forward_if_elsewhere(s, req, vc->tenant)) /* another node's tenant: its call actor answers there */
        return;
    sb_call_req_t *r = sb_call_req_new(SB_CALL_OP_INCOMING);
    with_channel(r, vc);
    r->call_key = sb_strdup(call->call_sid);
    r->call_sid = sb_strdup(call->call_sid);
    r->from = sb_strdup(call->from ? call->from : "");
    r->to = sb_strdup(call->to ? call->to : "");
    sb_str_t body = sb_http_req_body(req);
    r->form = sb_strndup(body.p ? body.p : "", body.len);
    sb_buf_t url;
    sb_buf_init(&url);
    sb_voice_stream_url(req, cfg, vc->id, &url);
    r->stream_url = sb_strdup(sb_buf_cstr(&url));
    sb_buf_cleanup(&url);
    dispatch(s, r, twiml_answered, req);
}

static void status_answered(sb_call_req_t *r, void *arg)
{
    sb_http_req_t *req = arg;
    if (r->http_status == 200)
        sb_http_respond(req, 200, "text/xml", twiml_ok, sizeof twiml_ok - 1);
    else
        respond_refusal(req, r);
}

void sb_voice_status(sb_shard_t *s, sb_http_req_t *req, const sb_voice_channel_t *vc, const sb_twilio_call_t *call)
{
    if (sb_forward_if_elsewhere(s, req, vc->tenant))
        return;
    sb_call_req_t *r = sb_call_req_new(SB_CALL_OP_STATUS);
    r->tenant = vc->tenant;
    r->channel = vc->id;
    sb_form_t q;
    sb_form_init(&q);
    const sb_form_pair_t *key = NULL;
    if (sb_form_parse(&q, sb_http_req_query(req)) == 0) /* a call we placed names itself: ?call=<key> */
        key = sb_form_find_cstr(&q, "call");
    r->call_key = key && key->value.len && key->value.len <= SB_COUNTERS_CALL_KEY_MAX
                      ? sb_strndup(key->value.p, key->value.len)
                      : sb_strdup(call->call_sid);
    sb_form_cleanup(&q);
    r->call_sid = sb_strdup(call->call_sid);
    r->status = sb_twilio_call_status_name(call->status);
    r->final = sb_twilio_call_status_is_final(call->status);
    r->duration = call->duration;
    r->sequence = call->sequence;
    dispatch(s, r, status_answered, req);
}

/* ---- REST: /v1/calls ------------------------------------------------------------------------------------------ */

typedef struct place {
    sb_shard_t *s;
    sb_http_req_t *req;
    const sb_config_t *cfg;
    int64_t tenant, channel;
    char *to, *mode, *key;
} place_t;

static void place_free(place_t *p)
{
    free(p->to);
    free(p->mode);
    free(p->key);
    free(p);
}

static void placed(sb_call_req_t *r, void *arg)
{
    sb_http_req_t *req = arg;
    if (r->http_status != 200 && r->http_status != 202) {
        respond_refusal(req, r);
        return;
    }
    char b[96];
    int n = snprintf(b, sizeof b, "{\"id\":\"%" PRId64 "\",\"status\":\"%s\"}", r->id,
                     r->call_status ? r->call_status : "queued");
    sb_http_respond(req, r->http_status, "application/json", b, (size_t)n);
}

static void place_channel(void *arg, int err, const sb_chan_t *ch)
{
    place_t *p = arg;
    sb_http_req_t *req = p->req;
    if (err == SB_EUNAVAIL || err == SB_EACCES) {
        sb_http_respond_error(req, 503, "unavailable", "the channel cannot be read now; retry");
    } else if (err || ch->tenant != p->tenant) {
        sb_http_respond_error(req, 404, "not_found", "no such channel");
    } else if (!ch->voice) {
        sb_http_respond_error(req, 422, "not_a_voice_channel", "calls are placed from a twilio_voice channel");
    } else {
        sb_call_req_t *r = sb_call_req_new(SB_CALL_OP_PLACE);
        with_channel(r, ch->voice);
        if (p->mode) {
            free(r->v.mode);
            r->v.mode = sb_strdup(p->mode);
        }
        unsigned char rnd[16];
        sb_buf_t b;
        sb_buf_init(&b);
        if (sb_crypto_random(rnd, sizeof rnd) < 0) /* no getrandom: the clock, unique enough here */
            snprintf((char *)rnd, sizeof rnd, "%015llx", (unsigned long long)uv_hrtime());
        sb_buf_puts(&b, "SB");
        sb_codec_hex_append(&b, rnd, sizeof rnd);
        r->call_key = sb_strdup(sb_buf_cstr(&b));
        sb_buf_cleanup(&b);
        r->to = p->to;
        p->to = NULL;
        r->from = sb_strdup(ch->voice->address);
        r->idempotency_key = p->key;
        p->key = NULL;
        sb_buf_init(&b);
        sb_voice_stream_url(req, p->cfg, p->channel, &b);
        r->stream_url = sb_strdup(sb_buf_cstr(&b));
        sb_buf_cleanup(&b);
        sb_buf_init(&b);
        if (sb_http_req_base_url(req, p->cfg->public_url, &b))
            sb_buf_printf(&b, "/webhooks/twilio/%" PRId64 "/voice/status?call=%s", p->channel, r->call_key);
        r->status_url = sb_strdup(sb_buf_cstr(&b));
        sb_buf_cleanup(&b);
        dispatch(p->s, r, placed, req);
    }
    place_free(p);
}

/* "+" and 8 to 15 digits, the first not 0. */
static bool is_e164(const char *s)
{
    size_t n = strlen(s);
    if (n < 9 || n > 16 || s[0] != '+' || s[1] == '0')
        return false;
    for (size_t i = 1; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

static void post_call(sb_shard_t *s, sb_http_req_t *req, const sb_config_t *cfg, int64_t tenant)
{
    if (sb_forward_if_elsewhere(s, req, tenant))
        return;
    sb_str_t body = sb_http_req_body(req), ct;
    if (!sb_http_req_header(req, "content-type", &ct) || !sb_str_has_prefix(ct, SB_STR("application/json"))) {
        sb_http_respond_error(req, 415, "unsupported_media_type", "send Content-Type: application/json");
        return;
    }
    json_t *j = json_loadb(body.p, body.len, JSON_REJECT_DUPLICATES, NULL);
    json_t *ch = json_object_get(j, "channel_id"), *to = json_object_get(j, "to"),
           *mode = json_object_get(j, "voice_mode"), *key = json_object_get(j, "idempotency_key");
    long long channel = 0;
    if (json_is_integer(ch))
        channel = json_integer_value(ch);
    else if (json_is_string(ch))
        sb_str_to_ll(sb_str(json_string_value(ch), json_string_length(ch)), 1, INT64_MAX, &channel);
    const char *bad = NULL, *code = "invalid_request";
    if (!json_is_object(j))
        bad = "the body must be a JSON object";
    else if (channel < 1)
        bad = "'channel_id' must be a channel id";
    else if (!json_is_string(to) || !is_e164(json_string_value(to))) {
        bad = "'to' must be an E.164 number such as +14155550100";
        code = "invalid_recipient";
    } else if (mode && !json_is_null(mode) &&
               (!json_is_string(mode) ||
                (strcmp(json_string_value(mode), "stream") && strcmp(json_string_value(mode), "forward"))))
        bad = "'voice_mode' must be \"stream\" or \"forward\"";
    else if (key && !json_is_null(key) &&
             (!json_is_string(key) || json_string_length(key) < 1 || json_string_length(key) > 255))
        bad = "'idempotency_key' must be 1 to 255 bytes of text";
    if (bad) {
        sb_http_respond_error(req, 400, code, bad);
        json_decref(j);
        return;
    }
    place_t *p = sb_calloc(1, sizeof *p);
    *p = (place_t){.s = s, .req = req, .cfg = cfg, .tenant = tenant, .channel = channel};
    p->to = sb_strdup(json_string_value(to));
    p->mode = json_is_string(mode) ? sb_strdup(json_string_value(mode)) : NULL;
    p->key = json_is_string(key) ? sb_strdup(json_string_value(key)) : NULL;
    json_decref(j);
    sb_chancache_get(s, channel, place_channel, p);
}

static void calls_read(void *arg, int err, const sb_str_t *docs, size_t n)
{
    sb_http_req_t *req = arg;
    if (err) {
        sb_http_respond_error(req, 503, "unavailable", "the database is not reachable; retry");
        return;
    }
    sb_buf_t b;
    sb_buf_init(&b);
    sb_buf_puts(&b, "{\"calls\":[");
    for (size_t i = 0; i < n; i++) {
        if (i)
            sb_buf_puts(&b, ",");
        sb_buf_append_str(&b, docs[i]);
    }
    sb_buf_puts(&b, "]}");
    sb_http_respond(req, 200, "application/json", b.p, b.len);
    sb_buf_cleanup(&b);
}

static void get_calls(sb_shard_t *s, sb_http_req_t *req, int64_t tenant)
{
    sb_form_t q;
    sb_form_init(&q);
    long long limit = 50, before = INT64_MAX;
    bool ok = sb_form_parse(&q, sb_http_req_query(req)) == 0;
    const sb_form_pair_t *l = ok ? sb_form_find_cstr(&q, "limit") : NULL,
                         *b = ok ? sb_form_find_cstr(&q, "before") : NULL;
    ok = ok && (!l || sb_str_to_ll(l->value, 1, CALLS_PAGE_MAX, &limit) == 0) &&
         (!b || sb_str_to_ll(b->value, 1, INT64_MAX, &before) == 0);
    sb_form_cleanup(&q);
    if (!ok) {
        sb_http_respond_error(req, 400, "invalid_request", "'limit' must be 1 to 200 and 'before' a call id");
        return;
    }
    if (sb_query_calls(sb_domain_store(s), tenant, before, limit, calls_read, req) < 0)
        sb_http_respond_error(req, 503, "unavailable", "the database is not reachable; retry");
}

static void call_read(void *arg, int err, sb_str_t json)
{
    sb_http_req_t *req = arg;
    if (err == SB_ENOENT)
        sb_http_respond_error(req, 404, "not_found", "no such call");
    else if (err)
        sb_http_respond_error(req, 503, "unavailable", "the database is not reachable; retry");
    else
        sb_http_respond(req, 200, "application/json", json.p, json.len);
}

bool sb_voice_api(sb_shard_t *s, sb_http_req_t *req, const sb_config_t *cfg, int64_t tenant)
{
    sb_str_t path = sb_http_req_path(req);
    sb_http_method_t m = sb_http_req_method(req);
    bool get = m == SB_HTTP_GET || m == SB_HTTP_HEAD;
    if (sb_str_eq_cstr(path, "/v1/calls")) {
        if (m == SB_HTTP_POST)
            post_call(s, req, cfg, tenant);
        else if (get)
            get_calls(s, req, tenant);
        else
            sb_http_respond_error(req, 405, "method_not_allowed", "this route answers GET and POST");
        return true;
    }
    if (!sb_str_has_prefix(path, SB_STR("/v1/calls/")))
        return false;
    long long id;
    sb_str_t rest = sb_str(path.p + 10, path.len - 10);
    if (rest.len == 0 || rest.len > 19 || sb_str_to_ll(rest, 1, INT64_MAX, &id) < 0) {
        sb_http_respond_error(req, 404, "not_found", "no such call");
        return true;
    }
    if (!get) {
        sb_http_respond_error(req, 405, "method_not_allowed", "this route answers GET");
        return true;
    }
    if (sb_query_call(sb_domain_store(s), tenant, id, call_read, req) < 0)
        sb_http_respond_error(req, 503, "unavailable", "the database is not reachable; retry");
    return true;
}

/* ---- the console's hangup ------------------------------------------------------------------------------------- */

typedef struct hangup {
    sb_shard_t *s;
    int64_t id;
    char *call_key;
    void (*cb)(void *arg, int status, const char *message);
    void *arg;
} hangup_t;

static void hung(sb_call_req_t *r, void *arg)
{
    hangup_t *h = arg;
    h->cb(h->arg, r->http_status, r->http_status == 202 ? "hanging up" : r->message);
    free(h->call_key);
    free(h);
}

static void hangup_channel(void *arg, int err, const sb_chan_t *ch)
{
    hangup_t *h = arg;
    if (err || !ch->voice) {
        h->cb(h->arg, err == SB_ENOENT || (!err && !ch->voice) ? 404 : 503,
              err == SB_ENOENT ? "the call's channel is gone" : "the channel cannot be read now");
        free(h->call_key);
        free(h);
        return;
    }
    sb_call_req_t *r = sb_call_req_new(SB_CALL_OP_HANGUP);
    with_channel(r, ch->voice);
    r->call_key = h->call_key;
    h->call_key = NULL;
    r->call_id = h->id;
    dispatch(h->s, r, hung, h);
}

static void hangup_found(void *arg, int err, const sb_query_call_ref_t *ref)
{
    hangup_t *h = arg;
    if (err) {
        h->cb(h->arg, err == SB_ENOENT ? 404 : 503, err == SB_ENOENT ? "no such call" : "the database is away");
        free(h);
        return;
    }
    h->call_key = sb_strdup(ref->call_key);
    sb_chancache_get(h->s, ref->channel, hangup_channel, h);
}

void sb_voice_hangup(sb_shard_t *s, int64_t id, void (*cb)(void *arg, int status, const char *message), void *arg)
{
    hangup_t *h = sb_calloc(1, sizeof *h);
    *h = (hangup_t){.s = s, .id = id, .cb = cb, .arg = arg};
    if (sb_query_call_ref(sb_domain_store(s), id, hangup_found, h) < 0) {
        free(h);
        cb(arg, 503, "the database is away");
    }
}
