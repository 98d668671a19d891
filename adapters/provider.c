/* The provider port; see provider.h. */
#include "adapters/provider.h"

#include "adapters/net/http_client.h"
#include "adapters/outbound.h"
#include "gateway/log.h"
#include "gateway/metrics.h"
#include "proto/breaker.h"
#include "proto/err.h"
#include "proto/htable.h"
#include "proto/list.h"
#include "proto/mem.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#define BREAKER_FAULTS 5
#define BREAKER_MIN_MS 2000
#define BREAKER_MAX_MS 60000
#define DRAIN_HOLD_MS 1000
#define REQUEST_TIMEOUT_MS 30000

/* A channel's credentials, opened: kept while the sealed text they came from stays the same (a rotation changes it),
 * so a send does not decrypt and parse them again. Wiped when dropped. */
typedef struct creds {
    sb_hnode_t node;
    int64_t channel;
    char *sealed;
    char *account_sid, *auth_token, *access_token;
} creds_t;

#define CREDS_MAX 4096

struct sb_provider {
    uv_loop_t *loop;
    sb_htable_t creds;        /* creds_t by channel */
    sb_http_client_t *client;
    sb_breaker_t breakers[2]; /* [0] Twilio's API, [1] Meta's Graph API */
    unsigned char key[SB_CRYPTO_KEY_LEN];
    bool has_key, draining;
    char *public_url, *twilio_api_base, *meta_graph_base;
    unsigned inflight;
    sb_list_t refusals;       /* answered on the loop's next turn */
    sb_metrics_t *m;
};

typedef struct job job_t;
static void refusals_end(sb_provider_t *p);

static void creds_free(creds_t *c)
{
    free(c->sealed);
    sb_free_secret(c->account_sid);
    sb_free_secret(c->auth_token);
    sb_free_secret(c->access_token);
    free(c);
}

static void creds_clear(sb_provider_t *p)
{
    size_t pos = 0;
    for (sb_hnode_t *n; (n = sb_htable_next(&p->creds, &pos));) {
        sb_htable_remove_at(&p->creds, &pos);
        creds_free(sb_container_of(n, creds_t, node));
    }
    sb_htable_cleanup(&p->creds);
}

static bool creds_eq(const sb_hnode_t *n, const void *key)
{
    return sb_container_of(n, creds_t, node)->channel == *(const int64_t *)key;
}

static char *json_str_dup(json_t *o, const char *key)
{
    const char *v = json_string_value(json_object_get(o, key));
    return sb_strdup(v ? v : "");
}

/* The channel's credentials, opened (from the cache while its sealed text is the same), or NULL when they cannot be
 * opened. */
static const creds_t *creds_of(sb_provider_t *p, const sb_channel_info_t *ch)
{
    sb_hnode_t *n = sb_htable_find(&p->creds, sb_hash_u64((uint64_t)ch->channel), creds_eq, &ch->channel);
    creds_t *c = n ? sb_container_of(n, creds_t, node) : NULL;
    if (c && ch->credentials_sealed && strcmp(c->sealed, ch->credentials_sealed) == 0)
        return c;
    if (c) {
        sb_htable_remove(&p->creds, &c->node);
        creds_free(c);
    }
    sb_buf_t plain;
    sb_buf_init(&plain);
    char ad[40];
    snprintf(ad, sizeof ad, "tenant:%" PRId64, ch->tenant);
    json_t *j = NULL;
    if (!p->has_key || !ch->credentials_sealed ||
        sb_crypto_open(p->key, sb_str_cstr(ch->credentials_sealed), sb_str_cstr(ad), &plain) < 0 ||
        !(j = json_loadb(plain.p, plain.len, 0, NULL))) {
        sb_crypto_buf_wipe(&plain);
        return NULL;
    }
    if (p->creds.n >= CREDS_MAX) /* a shard with more channels than this at once: start again */
        creds_clear(p);
    c = sb_calloc(1, sizeof *c);
    c->channel = ch->channel;
    c->sealed = sb_strdup(ch->credentials_sealed);
    c->account_sid = json_str_dup(j, "account_sid");
    c->auth_token = json_str_dup(j, "auth_token");
    c->access_token = json_str_dup(j, "access_token");
    json_decref(j); /* jansson does not wipe; the plaintext buffer is wiped below */
    sb_crypto_buf_wipe(&plain);
    c->node.hash = sb_hash_u64((uint64_t)ch->channel);
    sb_htable_insert(&p->creds, &c->node);
    return c;
}

static char *dup_or_null(const char *s)
{
    return s ? sb_strdup(s) : NULL;
}

sb_provider_t *sb_provider_create(uv_loop_t *loop, const sb_provider_opts_t *opts)
{
    sb_provider_t *p = sb_calloc(1, sizeof *p);
    p->loop = loop;
    p->m = sb_metrics_shard(opts->shard);
    sb_list_init(&p->refusals);
    sb_htable_init(&p->creds);
    sb_http_client_opts_t o = {.max_host_connections = 32, .timeout_ms = REQUEST_TIMEOUT_MS};
    if (sb_http_client_create(loop, &o, &p->client) < 0) {
        free(p);
        return NULL;
    }
    for (int i = 0; i < 2; i++)
        sb_breaker_init(&p->breakers[i], BREAKER_FAULTS, BREAKER_MIN_MS, BREAKER_MAX_MS);
    if (opts->master_key) {
        memcpy(p->key, opts->master_key, sizeof p->key);
        p->has_key = true;
    }
    p->public_url = dup_or_null(opts->public_url);
    p->twilio_api_base = dup_or_null(opts->twilio_api_base);
    p->meta_graph_base = dup_or_null(opts->meta_graph_base);
    return p;
}

void sb_provider_destroy(sb_provider_t *p)
{
    if (!p)
        return;
    sb_http_client_destroy(p->client); /* the requests in flight end here: their outcome is unknown */
    refusals_end(p);
    creds_clear(p);
    sb_crypto_wipe(p->key, sizeof p->key);
    free(p->public_url);
    free(p->twilio_api_base);
    free(p->meta_graph_base);
    free(p);
}

void sb_provider_drain(sb_provider_t *p)
{
    p->draining = true;
}

unsigned sb_provider_inflight(const sb_provider_t *p)
{
    return p->inflight;
}

struct sb_http_client *sb_provider_client(sb_provider_t *p)
{
    return p->client;
}

/* Whether the channel type sends through Meta's Graph API (else Twilio's). */
static bool is_meta(sb_channel_type_t type)
{
    return type == SB_CH_META_WHATSAPP || type == SB_CH_META_MESSENGER || type == SB_CH_META_INSTAGRAM;
}

static sb_breaker_t *breaker_of(sb_provider_t *p, sb_channel_type_t type)
{
    return &p->breakers[is_meta(type)];
}

static const char *endpoint_name(sb_channel_type_t type)
{
    return is_meta(type) ? "Meta" : "Twilio";
}

/* ---- the message as outbound.c takes it ---------------------------------------------------------------------- */

/* What a request's JSON fields hold, parsed once: the media URLs, the template's parts. template_json is the
 * message's framing for the provider, as the front door stored it: a Meta template {"name","language",
 * "components"}, a Twilio Content API template {"content_sid","variables"}, or a Messenger / Instagram message tag
 * {"tag"}. */
typedef struct parts {
    json_t *media, *tpl;
    sb_str_t urls[SB_OUTBOUND_MAX_MEDIA];
    size_t nurls;
    char *components, *variables;
    const char *name, *language, *content_sid, *tag;
} parts_t;

static void parts_open(parts_t *x, const sb_send_request_t *req)
{
    memset(x, 0, sizeof *x);
    if (req->media_json && strcmp(req->media_json, "[]") != 0) /* (most messages have none: no parse) */
        x->media = json_loads(req->media_json, 0, NULL);
    for (size_t i = 0; json_is_array(x->media) && i < json_array_size(x->media) && x->nurls < SB_OUTBOUND_MAX_MEDIA;
         i++) {
        json_t *u = json_object_get(json_array_get(x->media, i), "url");
        if (json_is_string(u))
            x->urls[x->nurls++] = sb_str(json_string_value(u), json_string_length(u));
    }
    if (req->template_json)
        x->tpl = json_loads(req->template_json, 0, NULL);
    json_t *lang = json_object_get(x->tpl, "language"), *comps = json_object_get(x->tpl, "components");
    json_t *vars = json_object_get(x->tpl, "variables");
    x->components = comps ? json_dumps(comps, JSON_COMPACT) : NULL;
    x->variables = vars ? json_dumps(vars, JSON_COMPACT) : NULL;
    x->name = json_string_value(json_object_get(x->tpl, "name"));
    x->content_sid = json_string_value(json_object_get(x->tpl, "content_sid"));
    x->tag = json_string_value(json_object_get(x->tpl, "tag"));
    x->language = json_is_string(lang) ? json_string_value(lang) : json_string_value(json_object_get(lang, "code"));
    if (!x->language)
        x->language = x->name ? "en_US" : "";
}

static void parts_close(parts_t *x)
{
    json_decref(x->media);
    json_decref(x->tpl);
    free(x->components);
    free(x->variables);
}

static void msg_of(sb_outbound_msg_t *m, sb_channel_type_t type, const sb_send_request_t *req, const parts_t *x)
{
    *m = (sb_outbound_msg_t){.channel = type,
                             .to = sb_str_cstr(req->to ? req->to : ""),
                             .body = sb_str_cstr(req->body ? req->body : ""),
                             .media = x->urls,
                             .nmedia = x->nurls,
                             .template_name = sb_str_cstr(x->name ? x->name : ""),
                             .template_language = sb_str_cstr(x->language),
                             .template_components = sb_str_cstr(x->components ? x->components : ""),
                             .content_sid = sb_str_cstr(x->content_sid ? x->content_sid : ""),
                             .content_variables = sb_str_cstr(x->variables ? x->variables : ""),
                             .tag = sb_str_cstr(x->tag ? x->tag : "")};
}

int sb_provider_check(sb_channel_type_t type, const sb_send_request_t *req, char *to, size_t to_cap, const char **code,
                      char *message, size_t message_cap)
{
    parts_t x;
    parts_open(&x, req);
    sb_outbound_msg_t m;
    msg_of(&m, type, req, &x);
    sb_outbound_valid_t valid;
    sb_outbound_error_t err;
    int rc = sb_outbound_validate(&m, &valid, &err);
    parts_close(&x);
    if (rc < 0) {
        *code = err.code;
        snprintf(message, message_cap, "%s", err.message);
        return rc;
    }
    snprintf(to, to_cap, "%s", valid.to);
    return 0;
}

/* The 24-hour window for a send (see the port in actors/ports.h): channels without one answer 0 without parsing the
 * request; the others parse its framing (template, content sid, tag) and ask sb_outbound_window. */
int sb_provider_window(sb_channel_type_t type, const sb_send_request_t *req, int64_t since_inbound_ms,
                       const char **code, char *message, size_t message_cap)
{
    if (type != SB_CH_META_WHATSAPP && type != SB_CH_TWILIO_WHATSAPP && type != SB_CH_META_MESSENGER &&
        type != SB_CH_META_INSTAGRAM)
        return 0; /* (no window: nothing to parse) */
    parts_t x;
    parts_open(&x, req);
    sb_outbound_msg_t m;
    msg_of(&m, type, req, &x);
    sb_outbound_error_t err;
    int rc = sb_outbound_window(&m, since_inbound_ms, &err);
    parts_close(&x);
    if (rc < 0) {
        *code = err.code;
        snprintf(message, message_cap, "%s", err.message);
    }
    return rc;
}

static int port_check(void *ctx, sb_channel_type_t type, const sb_send_request_t *req, char *to, size_t to_cap,
                      const char **code, char *message, size_t message_cap)
{
    (void)ctx;
    return sb_provider_check(type, req, to, to_cap, code, message, message_cap);
}

static int port_window(void *ctx, sb_channel_type_t type, const sb_send_request_t *req, int64_t since_inbound_ms,
                       const char **code, char *message, size_t message_cap)
{
    (void)ctx;
    return sb_provider_window(type, req, since_inbound_ms, code, message, message_cap);
}

/* ---- a send ----------------------------------------------------------------------------------------------------- */

struct job {
    sb_provider_t *p;
    sb_channel_type_t type;
    void (*cb)(void *arg, const sb_send_outcome_t *o);
    void *arg;
    uv_timer_t *later;          /* a refusal before any request: answered from the loop, not from inside send() */
    sb_send_outcome_t refusal;
    char message[160];
    sb_list_t link;             /* on the provider's list of refusals, while later runs */
};

static void job_end(job_t *j, const sb_send_outcome_t *o)
{
    j->p->inflight--;
    j->cb(j->arg, o);
}

static void answered(void *arg, const sb_http_client_res_t *res)
{
    job_t *j = arg;
    sb_outbound_result_t r;
    sb_outbound_classify(j->type, res, &r);
    sb_breaker_t *b = breaker_of(j->p, j->type);
    if (sb_breaker_report(b, r.endpoint_fault, uv_now(j->p->loop))) {
        if (b->state == SB_BREAKER_OPEN)
            sb_log_warn("provider: %s endpoint failing (%s): circuit open for %llu ms", endpoint_name(j->type),
                        r.error_code, (unsigned long long)b->cooldown_ms);
        else
            sb_log_info("provider: %s endpoint answers again: circuit closed", endpoint_name(j->type));
        sb_metrics_t *m = j->p->m;
        int e = is_meta(j->type);
        sb_gauge_add(&m->breaker_open[e], (b->state != SB_BREAKER_CLOSED) - sb_gauge_get(&m->breaker_open[e]));
    }
    sb_send_outcome_t o = {.retry_after_s = r.retry_after_s,
                           .provider_id = r.provider_id,
                           .error_code = r.error_code,
                           .error_message = r.error_message};
    switch (r.outcome) {
    case SB_OUTBOUND_SENT: o.result = SB_SEND_SENT; break;
    case SB_OUTBOUND_FAILED: o.result = SB_SEND_FAILED; break;
    case SB_OUTBOUND_RETRY: o.result = SB_SEND_RETRY; break;
    default: o.result = SB_SEND_UNKNOWN; break;
    }
    if ((unsigned)j->type < SB_METRICS_CH_TYPES) {
        sb_metric_add(&j->p->m->sends[j->type][o.result - SB_SEND_SENT], 1);
        if (o.result != SB_SEND_SENT)
            sb_metric_add(&j->p->m->provider_errors[j->type][sb_metrics_provider_err(r.http_status, r.error_code)],
                          1);
    }
    job_end(j, &o);
    free(j);
}

static void later_closed(uv_handle_t *h)
{
    free(h->data);
    free(h);
}

/* A refusal is answered (now: from its timer, or from destroy). */
static void refusal_end(job_t *j)
{
    sb_list_remove(&j->link);
    job_end(j, &j->refusal);
    uv_close((uv_handle_t *)j->later, later_closed);
}

static void on_later(uv_timer_t *t)
{
    refusal_end(t->data);
}

static void refusals_end(sb_provider_t *p)
{
    for (sb_list_t *l; (l = sb_list_first(&p->refusals));)
        refusal_end(sb_container_of(l, job_t, link));
}

/* The message cannot become a request: a permanent failure, answered from the loop's next turn. */
static void refuse(job_t *j, const char *code, const char *message)
{
    snprintf(j->message, sizeof j->message, "%s", message);
    j->refusal = (sb_send_outcome_t){.result = SB_SEND_FAILED, .retry_after_s = -1, .provider_id = "",
                                     .error_code = code, .error_message = j->message};
    j->later = sb_malloc(sizeof *j->later);
    uv_timer_init(j->p->loop, j->later);
    j->later->data = j;
    uv_timer_start(j->later, on_later, 0, 0);
    sb_list_push_back(&j->p->refusals, &j->link);
}

static int port_send(void *ctx, const sb_send_request_t *req, void (*cb)(void *, const sb_send_outcome_t *),
                     void *arg)
{
    sb_provider_t *p = ctx;
    const sb_channel_info_t *ch = req->channel;
    if (!p->client || !ch)
        return SB_EUNAVAIL;
    job_t *j = sb_calloc(1, sizeof *j);
    j->p = p;
    j->type = ch->type;
    j->cb = cb;
    j->arg = arg;
    p->inflight++;

    const creds_t *cr = creds_of(p, ch);
    if (!cr) {
        sb_log_error("provider: channel %" PRId64 ": credentials cannot be opened (master_key changed?)", ch->channel);
        refuse(j, "credentials_unavailable", "the channel's credentials cannot be opened");
        return 0;
    }
    sb_buf_t callback;
    sb_buf_init(&callback);
    parts_t x;
    parts_open(&x, req);
    if (p->public_url && (ch->type == SB_CH_TWILIO_SMS || ch->type == SB_CH_TWILIO_WHATSAPP))
        sb_buf_printf(&callback, "%s/webhooks/twilio/%" PRId64 "/status", p->public_url, ch->channel);
    sb_outbound_msg_t m;
    msg_of(&m, ch->type, req, &x);
    m.address = sb_str_cstr(ch->address ? ch->address : "");
    m.account_sid = sb_str_cstr(cr->account_sid);
    m.auth_token = sb_str_cstr(cr->auth_token);
    m.access_token = sb_str_cstr(cr->access_token);
    m.status_callback = sb_str(callback.p ? callback.p : "", callback.len);
    sb_outbound_endpoints_t ep = {.twilio_api_base = p->twilio_api_base, .meta_graph_base = p->meta_graph_base};
    sb_outbound_request_t out;
    sb_outbound_error_t berr;
    int rc = sb_outbound_build(&m, &ep, &out, &berr);
    parts_close(&x);
    sb_buf_cleanup(&callback);
    if (rc < 0) {
        refuse(j, berr.code, berr.message);
        return 0;
    }
    rc = sb_http_client_request(p->client, &out.http, answered, j);
    sb_outbound_request_cleanup(&out);
    if (rc < 0) {
        refuse(j, "invalid_request", "the provider request could not be made");
        return 0;
    }
    return 0;
}

/* ---- calls ------------------------------------------------------------------------------------------------------ */

typedef struct call_job {
    sb_provider_t *p;
    void (*cb)(void *arg, const sb_call_outcome_t *o);
    void *arg;
} call_job_t;

static void call_answered(void *arg, const sb_http_client_res_t *res)
{
    call_job_t *j = arg;
    char sid[72];
    sb_outbound_error_t err = {.code = ""};
    int rc = sb_outbound_call_answer(res, sid, sizeof sid, &err);
    sb_call_outcome_t o = {.ok = rc == 0, .call_sid = sid, .error_code = err.code, .error_message = err.message};
    j->p->inflight--;
    j->cb(j->arg, &o);
    free(j);
}

/* A call placed or updated at Twilio. No breaker: a call is not retried behind the caller's back, each attempt is
 * an operator's or a caller's, and its failure is reported to the call at once. */
static int port_call(void *ctx, const sb_call_request_t *req, void (*cb)(void *, const sb_call_outcome_t *), void *arg)
{
    sb_provider_t *p = ctx;
    const sb_channel_info_t *ch = req->channel;
    if (!p->client || !ch || p->draining)
        return SB_EUNAVAIL;
    const creds_t *cr = creds_of(p, ch);
    if (!cr) {
        sb_log_error("provider: channel %" PRId64 ": credentials cannot be opened (master_key changed?)", ch->channel);
        return SB_EACCES;
    }
    sb_outbound_call_t c = {.account_sid = sb_str_cstr(cr->account_sid),
                            .auth_token = sb_str_cstr(cr->auth_token),
                            .call_sid = sb_str_cstr(req->call_sid ? req->call_sid : ""),
                            .to = sb_str_cstr(req->to ? req->to : ""),
                            .from = sb_str_cstr(req->from ? req->from : ""),
                            .twiml = sb_str_cstr(req->twiml ? req->twiml : ""),
                            .status_callback = sb_str_cstr(req->status_callback ? req->status_callback : ""),
                            .hangup = req->hangup};
    sb_outbound_endpoints_t ep = {.twilio_api_base = p->twilio_api_base, .meta_graph_base = p->meta_graph_base};
    sb_outbound_request_t out;
    sb_outbound_error_t berr;
    int rc = sb_outbound_call_build(&c, &ep, &out, &berr);
    if (rc < 0) {
        sb_log_warn("provider: channel %" PRId64 ": call request not made: %s", ch->channel, berr.message);
        return rc;
    }
    call_job_t *j = sb_malloc(sizeof *j);
    *j = (call_job_t){p, cb, arg};
    rc = sb_http_client_request(p->client, &out.http, call_answered, j);
    sb_outbound_request_cleanup(&out);
    if (rc < 0) {
        free(j);
        return rc;
    }
    p->inflight++;
    return 0;
}

static uint64_t port_held_ms(void *ctx, sb_channel_type_t type)
{
    sb_provider_t *p = ctx;
    if (p->draining)
        return DRAIN_HOLD_MS;
    return sb_breaker_allow(breaker_of(p, type), uv_now(p->loop));
}

void sb_provider_port(sb_provider_t *p, sb_provider_port_t *out)
{
    *out = (sb_provider_port_t){
        .ctx = p, .call = port_call, .check = port_check, .send = port_send, .held_ms = port_held_ms,
        .window = port_window};
}
