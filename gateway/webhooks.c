/* Provider webhooks; see webhooks.h for the contract.
 *
 * A Twilio request is checked in this order, cheapest refusal first: route and method, channel (gateway/chancache:
 * a per-shard cache, so a rotated token takes effect within a minute) and that its type fits the route, content
 * type, form, signature (over public_url or http://Host, plus the request-target exactly as received), payload.
 * Only then is a message's receipt written, and only its commit earns the 200. The voice routes go to gateway/voice
 * (a call's actor answers) and the Media Streams upgrade to gateway/media once verified the same way. */
#include "gateway/webhooks.h"

#include "adapters/crypto.h"
#include "adapters/meta.h"
#include "adapters/twilio.h"
#include "actors/session.h"
#include "adapters/store/queries.h"
#include "adapters/store/store.h"
#include "gateway/chancache.h"
#include "gateway/log.h"
#include "gateway/media.h"
#include "gateway/metrics.h"
#include "gateway/voice.h"
#include "proto/codec.h"
#include "proto/err.h"
#include "proto/event.h"
#include "proto/form.h"
#include "proto/htable.h"
#include "proto/mem.h"
#include "proto/sig.h"
#include "shards/cluster.h"
#include "shards/domain.h"

#include <jansson.h>
#include <string.h>

#define CACHE_TTL_MS 60000 /* Meta apps are looked up again after this */

static const sb_config_t *cfg;

void sb_webhooks_init(const sb_config_t *c)
{
    cfg = c;
}

/* ---- the per-shard cache of Meta apps (channels are gateway/chancache's) ----------------------------------------- */

typedef struct app app_t;

typedef struct cache {   /* the module's state on a shard */
    app_t *apps;
} cache_t;

static cache_t *cache_of(sb_shard_t *s)
{
    return sb_shard_state(s, &sb_webhooks_module);
}

static void apps_free(cache_t *k);

static int cache_start(sb_shard_t *s, void **state)
{
    (void)s;
    *state = sb_calloc(1, sizeof(cache_t));
    return 0;
}

static void cache_finish(sb_shard_t *s, void *state)
{
    cache_t *k = state;
    (void)s;
    apps_free(k);
    free(k);
}

const sb_shard_module_t sb_webhooks_module = {
    .name = "webhooks",
    .start = cache_start,
    .finish = cache_finish,
};

/* ---- answers, counted by provider and status class (sb_webhooks_total) ---------------------------------------- */

enum { WH_TWILIO, WH_META };

static void wh_count(int provider, int status)
{
    sb_shard_t *s = sb_shard_self();
    if (s && status >= 200 && status < 600)
        sb_metric_add(&sb_metrics_shard(sb_shard_index(s))->webhooks[provider][status / 100], 1);
}

static void wh_error(int provider, sb_http_req_t *req, int status, const char *code, const char *message)
{
    wh_count(provider, status);
    sb_http_respond_error(req, status, code, message);
}

static void wh_respond(int provider, sb_http_req_t *req, int status, const char *type, const void *body, size_t len)
{
    wh_count(provider, status);
    sb_http_respond(req, status, type, body, len);
}

/* ---- storing the receipt -------------------------------------------------------------------------------------- */

static const char twiml_ok[] = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response/>";

/* A receipt on its way into the store's batch of the ingest connection (adapters/store): where it goes (Twilio: the
 * tenant and channel; Meta: the channel type and account address, which the store resolves), its dedup key (a
 * message is known by its provider id; a status by the id and the status, since one message has many), the event's
 * JSON and the provider's bytes for it (Twilio: the body as received; Meta: the JSON of the event's own item, see
 * meta.h, never the whole batch). Once committed, the event goes to its channel's session on the tenant's shard,
 * packed (sb_event_pack) when it was made: nothing is parsed again on the way. */
typedef struct receipt {
    sb_store_receipt_t r;
    sb_shard_t *s;
    void *owner; /* Twilio: the request; Meta: its meta_request_t */
    char *account, *key, *event, *raw;
    sb_buf_t packed;
    sb_channel_type_t type;
    bool status; /* a status callback's, not a message's */
} receipt_t;

static receipt_t *receipt_new(sb_shard_t *s, void *owner, const sb_event_t *ev, sb_str_t raw)
{
    receipt_t *x = sb_calloc(1, sizeof *x);
    x->s = s;
    x->owner = owner;
    x->type = ev->channel;
    x->status = ev->kind == SB_EV_STATUS;
    sb_buf_t key;
    sb_buf_init(&key);
    if (ev->kind == SB_EV_STATUS)
        sb_buf_printf(&key, "status:%s:%s", ev->provider_id, ev->status);
    else
        sb_buf_printf(&key, "msg:%s", ev->provider_id);
    x->key = sb_strdup(sb_buf_cstr(&key));
    sb_buf_cleanup(&key);
    json_t *j = sb_event_json(ev);
    x->event = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    x->raw = sb_strndup(raw.p, raw.len);
    sb_buf_init(&x->packed);
    sb_event_pack(ev, &x->packed);
    x->r.dedup_key = x->key;
    x->r.event_json = x->event;
    x->r.raw = x->raw;
    x->r.arg = x;
    return x;
}

static void receipt_free(receipt_t *x)
{
    free(x->account);
    free(x->key);
    free(x->event);
    free(x->raw);
    sb_buf_cleanup(&x->packed);
    free(x);
}

/* Committed: the event goes to its session (a repeat, stored before, went the first time). */
static void receipt_route(receipt_t *x)
{
    if (!x->r.id)
        return;
    if ((unsigned)x->type < SB_METRICS_CH_TYPES) /* a new one: a repeat was counted the first time */
        sb_metric_add(&sb_metrics_shard(sb_shard_index(x->s))->webhook_events[x->type][x->status], 1);
    sb_session_receipt_t r = {.receipt_id = x->r.id, .tenant = x->r.tenant, .age_ms = 0};
    if (sb_cluster_enabled()) { /* several nodes: shard 0 decides where it goes (shards/cluster.h) */
        if (sb_cluster_route_receipt(x->s, &r, x->r.channel, x->packed.p, x->packed.len) < 0)
            sb_log_warn("webhook: receipt %lld not routed (the sweeper will)", (long long)x->r.id);
        return;
    }
    if (sb_session_receipt_packed(sb_shard_rt(x->s), sb_domain_owner(x->r.tenant), x->r.channel, &r, x->packed.p,
                                  x->packed.len) < 0)
        sb_log_warn("webhook: receipt %lld not handed to its session (the sweeper will)", (long long)x->r.id);
}

/* Committed: routed first, answered after. The 200 may reach the provider at once, and its next webhook for the
 * sender land on another shard; were this one routed only after the answer, a thread preempted in between would let
 * the later one reach the session first, and the sender's messages be numbered the wrong way round. */
static void twilio_committed(sb_store_receipt_t *r, int err)
{
    receipt_t *x = r->arg;
    if (!err)
        receipt_route(x);
    if (err == SB_ECANCELED)
        wh_error(WH_TWILIO, x->owner, 503, "unavailable", "the gateway is stopping; retry");
    else if (err)
        wh_error(WH_TWILIO, x->owner, 503, "unavailable", "the event could not be stored; retry");
    else
        wh_respond(WH_TWILIO, x->owner, 200, "text/xml", twiml_ok, sizeof twiml_ok - 1);
    receipt_free(x);
}

static void store_receipt(sb_shard_t *s, sb_http_req_t *req, const sb_chan_t *ch, const sb_event_t *ev)
{
    receipt_t *x = receipt_new(s, req, ev, sb_http_req_body(req));
    x->r.tenant = ch->tenant;
    x->r.channel = ch->id;
    x->type = ch->type;
    x->r.done = twilio_committed;
    if (sb_store_receipt_add(sb_domain_store(s), &x->r) < 0) {
        wh_error(WH_TWILIO, req, 503, "unavailable", "the database is not reachable; retry");
        receipt_free(x);
    }
}

/* ---- Twilio --------------------------------------------------------------------------------------------------- */

enum twilio_route { TW_MESSAGE, TW_STATUS, TW_VOICE, TW_VOICE_STATUS, TW_MEDIA };

static bool route_fits(enum twilio_route route, sb_channel_type_t t)
{
    if (route == TW_MESSAGE || route == TW_STATUS)
        return t == SB_CH_TWILIO_SMS || t == SB_CH_TWILIO_WHATSAPP;
    return t == SB_CH_TWILIO_VOICE;
}

/* Twilio's signature: over public_url (or http://Host) and the request-target exactly as received, and the form's
 * pairs; a Media Streams upgrade is signed over its ws:// or wss:// URL, without pairs. */
static bool signed_by_twilio(sb_http_req_t *req, const sb_chan_t *ch, const sb_form_t *form, enum twilio_route route)
{
    sb_str_t sig;
    if (!sb_http_req_header(req, "x-twilio-signature", &sig)) {
        wh_error(WH_TWILIO, req, 403, "forbidden", "missing X-Twilio-Signature");
        return false;
    }
    sb_buf_t url;
    sb_buf_init(&url);
    if (route == TW_MEDIA) /* with neither public_url nor Host, the signature cannot match */
        sb_voice_ws_base(req, cfg, &url);
    else
        sb_http_req_base_url(req, cfg->public_url, &url);
    sb_buf_append_str(&url, sb_http_req_target(req));
    size_t n = form ? form->n : 0;
    sb_sig_param_t *params = sb_calloc(n ? n : 1, sizeof *params);
    for (size_t i = 0; i < n; i++) {
        params[i].name = form->pairs[i].name;
        params[i].value = form->pairs[i].value;
    }
    bool ok = sb_sig_twilio_verify(sb_str_cstr(ch->auth_token), sb_str(url.p, url.len), params, n, sig) == 0;
    free(params);
    sb_buf_cleanup(&url);
    if (!ok) {
        sb_log_warn("webhook: bad Twilio signature for channel %lld", (long long)ch->id);
        wh_error(WH_TWILIO, req, 403, "forbidden", "X-Twilio-Signature does not match");
    }
    return ok;
}

/* The voice routes, once verified. */
static void twilio_voice(sb_shard_t *s, sb_http_req_t *req, const sb_chan_t *ch, const sb_form_t *form,
                         enum twilio_route route)
{
    char err[160];
    sb_twilio_call_t call = {0};
    int rc = route == TW_VOICE ? sb_twilio_parse_call(form, &call, err, sizeof err)
                               : sb_twilio_parse_call_status(form, &call, err, sizeof err);
    if (rc < 0)
        wh_error(WH_TWILIO, req, 400, "bad_request", err);
    else if (route == TW_VOICE)
        sb_voice_incoming(s, req, cfg, ch->voice, &call);
    else
        sb_voice_status(s, req, ch->voice, &call);
    sb_twilio_call_cleanup(&call);
}

/* Everything after the channel is known. */
static void twilio_proceed(sb_shard_t *s, sb_http_req_t *req, const sb_chan_t *ch, enum twilio_route route)
{
    sb_str_t ct;
    char err[160];
    sb_form_t form;
    sb_event_t ev;
    sb_form_init(&form);
    memset(&ev, 0, sizeof ev);

    if (!route_fits(route, ch->type)) {
        wh_error(WH_TWILIO, req, 404, "not_found", route == TW_MESSAGE || route == TW_STATUS
                                                         ? "no Twilio messaging channel with this id"
                                                         : "no Twilio voice channel with this id");
        return;
    }
    if (route == TW_MEDIA) {
        if (signed_by_twilio(req, ch, NULL, route))
            sb_media_accept(s, req, ch);
        return;
    }
    if (!sb_http_req_header(req, "content-type", &ct) ||
        !sb_str_has_prefix(ct, SB_STR("application/x-www-form-urlencoded"))) {
        wh_error(WH_TWILIO, req, 415, "unsupported_media_type",
                              "Twilio webhooks are application/x-www-form-urlencoded");
        goto out;
    }
    if (sb_form_parse(&form, sb_http_req_body(req)) < 0) {
        wh_error(WH_TWILIO, req, 400, "bad_request", "the body is not a valid form");
        goto out;
    }
    if (!signed_by_twilio(req, ch, &form, route))
        goto out;
    if (route == TW_VOICE || route == TW_VOICE_STATUS) {
        twilio_voice(s, req, ch, &form, route);
        goto out;
    }
    int rc = route == TW_MESSAGE ? sb_twilio_parse_message(&form, &ev, err, sizeof err)
                                 : sb_twilio_parse_status(&form, &ev, err, sizeof err);
    if (rc == SB_ENOENT) { /* a state of an inbound message: nothing to record */
        wh_respond(WH_TWILIO, req, 200, "text/xml", twiml_ok, sizeof twiml_ok - 1);
        goto out;
    }
    if (rc < 0) {
        wh_error(WH_TWILIO, req, 400, "bad_request", err);
        goto out;
    }
    store_receipt(s, req, ch, &ev);
out:
    sb_event_cleanup(&ev);
    sb_form_cleanup(&form);
}

typedef struct lookup {
    sb_shard_t *s;
    sb_http_req_t *req;
    enum twilio_route route;
} lookup_t;

static void channel_found(void *arg, int err, const sb_chan_t *ch)
{
    lookup_t *op = arg;
    if (err == SB_ENOENT)
        wh_error(WH_TWILIO, op->req, 404, "not_found", "no such channel");
    else if (err == SB_EACCES)
        wh_error(WH_TWILIO, op->req, 503, "unavailable", "the channel's credentials cannot be opened");
    else if (err)
        wh_error(WH_TWILIO, op->req, 503, "unavailable", "the database is not reachable; retry");
    else
        twilio_proceed(op->s, op->req, ch, op->route);
    free(op);
}

static void twilio(sb_shard_t *s, sb_http_req_t *req, sb_str_t id_s, enum twilio_route route)
{
    long long id;
    if (id_s.len > 19 || sb_str_to_ll(id_s, 1, INT64_MAX, &id) < 0) {
        wh_error(WH_TWILIO, req, 404, "not_found", "no such channel");
        return;
    }
    if (route != TW_MEDIA && sb_http_req_method(req) != SB_HTTP_POST) {
        wh_error(WH_TWILIO, req, 405, "method_not_allowed", "Twilio webhooks are POST");
        return;
    }
    lookup_t *op = sb_malloc(sizeof *op);
    *op = (lookup_t){s, req, route};
    sb_chancache_get(s, id, channel_found, op);
}


/* ---- Meta ----------------------------------------------------------------------------------------------------- */

/* Registered Meta apps, cached per shard like channels (there are few: a short list). */
struct app {
    struct app *next;
    char id[65];
    char *secret;                                  /* opened app secret */
    char verify_hash[SB_CRYPTO_KEY_HASH_LEN + 1];  /* SHA-256 hex of the verify token */
    uint64_t expires;
};

static void app_free(app_t *a)
{
    sb_crypto_wipe(a->secret, strlen(a->secret));
    free(a->secret);
    free(a);
}

static void apps_free(cache_t *k)
{
    while (k->apps) {
        app_t *a = k->apps;
        k->apps = a->next;
        app_free(a);
    }
}

static app_t *app_get(sb_shard_t *s, sb_str_t id)
{
    uint64_t now = uv_now(sb_shard_loop(s));
    for (app_t **pp = &cache_of(s)->apps; *pp; pp = &(*pp)->next) {
        app_t *a = *pp;
        if (!sb_str_eq_cstr(id, a->id))
            continue;
        if (now < a->expires)
            return a;
        *pp = a->next;
        app_free(a);
        return NULL;
    }
    return NULL;
}

/* GET: the subscription handshake. The verify token is compared by its hash, as stored. */
static void meta_challenge(sb_http_req_t *req, const app_t *a)
{
    sb_form_t q;
    sb_form_init(&q);
    const sb_form_pair_t *mode = NULL, *token = NULL, *challenge = NULL;
    if (sb_form_parse(&q, sb_http_req_query(req)) == 0) {
        mode = sb_form_find_cstr(&q, "hub.mode");
        token = sb_form_find_cstr(&q, "hub.verify_token");
        challenge = sb_form_find_cstr(&q, "hub.challenge");
    }
    char given[SB_CRYPTO_KEY_HASH_LEN + 1];
    sb_crypto_key_hash(token ? token->value : SB_STR(""), given);
    sb_str_t echo;
    if (mode && token && challenge &&
        sb_meta_verify_challenge(mode->value, sb_str_cstr(given), challenge->value, sb_str_cstr(a->verify_hash),
                                 &echo) == 0)
        wh_respond(WH_META, req, 200, "text/plain", echo.p, echo.len);
    else
        wh_error(WH_META, req, 403, "forbidden", "verification failed");
    sb_form_cleanup(&q);
}

/* A Meta request's events are receipts of a batch of the ingest connection, like Twilio's, one item each; the
 * request is answered when the last of them is answered. */
typedef struct meta_request {
    sb_http_req_t *req;
    int pending, failed;
} meta_request_t;

static void meta_answered(meta_request_t *mr, int err)
{
    mr->failed += err != 0;
    if (--mr->pending)
        return;
    if (mr->failed)
        wh_error(WH_META, mr->req, 503, "unavailable", "the events could not be stored; retry");
    else
        wh_respond(WH_META, mr->req, 200, "text/plain", "EVENT_RECEIVED", 14);
    free(mr);
}

static void meta_stored(sb_store_receipt_t *r, int err)
{
    receipt_t *x = r->arg;
    if (!err)
        receipt_route(x);
    meta_answered(x->owner, err);
    receipt_free(x);
}

/* POST: every event of the body becomes a receipt of the channel its account routes to, with the other requests of
 * the loop turn; events for accounts no channel claims are dropped (Meta would retry them forever otherwise). */
static void meta_events(sb_shard_t *s, sb_http_req_t *req, const app_t *a)
{
    sb_str_t body = sb_http_req_body(req), sig;
    if (!sb_http_req_header(req, "x-hub-signature-256", &sig) ||
        sb_sig_meta_verify(sb_str_cstr(a->secret), body, sig) != 0) {
        sb_log_warn("webhook: bad or missing X-Hub-Signature-256 for Meta app %s", a->id);
        wh_error(WH_META, req, 403, "forbidden", "X-Hub-Signature-256 missing or wrong");
        return;
    }
    sb_event_list_t events = {0};
    sb_meta_diag_t diag;
    memset(&diag, 0, sizeof diag);
    if (sb_meta_parse(body.p, body.len, &events, &diag) < 0) {
        wh_error(WH_META, req, 400, "bad_request", diag.error[0] ? diag.error : "not a Meta webhook body");
        return;
    }
    meta_request_t *mr = sb_calloc(1, sizeof *mr);
    mr->req = req;
    mr->pending = (int)events.n + 1; /* +1 until every event is queued */
    for (size_t i = 0; i < events.n; i++) {
        const sb_event_t *ev = &events.v[i];
        receipt_t *x = receipt_new(s, mr, ev, sb_str_cstr(ev->raw ? ev->raw : ""));
        x->account = sb_strdup(ev->account ? ev->account : "");
        x->r.type = sb_channel_type_name(ev->channel);
        x->r.account = x->account;
        x->r.done = meta_stored;
        if (sb_store_receipt_add(sb_domain_store(s), &x->r) < 0) {
            receipt_free(x);
            meta_answered(mr, SB_EUNAVAIL);
        }
    }
    sb_event_list_cleanup(&events);
    meta_answered(mr, 0); /* drop the queueing guard */
}

typedef struct app_lookup {
    sb_shard_t *s;
    sb_http_req_t *req;
    char id[65];
} app_lookup_t;

static void meta_dispatch(sb_shard_t *s, sb_http_req_t *req, const app_t *a)
{
    if (sb_http_req_method(req) == SB_HTTP_GET)
        meta_challenge(req, a);
    else
        meta_events(s, req, a);
}

static void app_loaded(void *arg, int err, const sb_query_meta_app_t *row)
{
    app_lookup_t *op = arg;
    sb_buf_t plain;
    sb_buf_init(&plain);
    char ad[80];
    snprintf(ad, sizeof ad, "meta_app:%s", op->id);
    app_t *a = NULL;
    if (err == SB_ENOENT) {
        wh_error(WH_META, op->req, 404, "not_found", "no such Meta app");
    } else if (err) {
        wh_error(WH_META, op->req, 503, "unavailable", "the database is not reachable; retry");
    } else if ((a = app_get(op->s, sb_str_cstr(op->id)))) {
        meta_dispatch(op->s, op->req, a); /* loaded by another request meanwhile */
    } else if (!cfg->has_master_key ||
               sb_crypto_open(cfg->master_key, sb_str_cstr(row->secret_sealed), sb_str_cstr(ad), &plain) < 0) {
        sb_log_error("webhook: Meta app %s: secret cannot be opened (master_key changed?)", op->id);
        wh_error(WH_META, op->req, 503, "unavailable", "the app secret cannot be opened");
    } else {
        a = sb_calloc(1, sizeof *a);
        snprintf(a->id, sizeof a->id, "%s", op->id);
        a->secret = sb_strndup(plain.p, plain.len);
        snprintf(a->verify_hash, sizeof a->verify_hash, "%s", row->verify_token_hash);
        a->expires = uv_now(sb_shard_loop(op->s)) + CACHE_TTL_MS;
        a->next = cache_of(op->s)->apps;
        cache_of(op->s)->apps = a;
        meta_dispatch(op->s, op->req, a);
    }
    sb_crypto_buf_wipe(&plain);
    free(op);
}

static void meta(sb_shard_t *s, sb_http_req_t *req, sb_str_t id)
{
    sb_http_method_t m = sb_http_req_method(req);
    bool digits = id.len > 0 && id.len <= 64;
    for (size_t i = 0; i < id.len && digits; i++)
        digits = id.p[i] >= '0' && id.p[i] <= '9';
    if (!digits) {
        wh_error(WH_META, req, 404, "not_found", "no such Meta app");
        return;
    }
    if (m != SB_HTTP_GET && m != SB_HTTP_POST) {
        wh_error(WH_META, req, 405, "method_not_allowed", "Meta webhooks are GET (verification) and POST");
        return;
    }
    app_t *a = app_get(s, id);
    if (a) {
        meta_dispatch(s, req, a);
        return;
    }
    app_lookup_t *op = sb_calloc(1, sizeof *op);
    op->s = s;
    op->req = req;
    memcpy(op->id, id.p, id.len);
    if (sb_query_meta_app(sb_domain_store(s), op->id, app_loaded, op) < 0) {
        free(op);
        wh_error(WH_META, req, 503, "unavailable", "the database is not reachable; retry");
    }
}

bool sb_webhooks_handle(sb_shard_t *s, sb_http_req_t *req)
{
    sb_str_t path = sb_http_req_path(req);
    static const sb_str_t prefix = {"/webhooks/twilio/", 17}, meta_prefix = {"/webhooks/meta/", 15};
    if (sb_str_has_prefix(path, meta_prefix)) {
        sb_str_t id = sb_str(path.p + meta_prefix.len, path.len - meta_prefix.len);
        if (memchr(id.p, '/', id.len))
            return false;
        meta(s, req, id);
        return true;
    }
    if (!sb_str_has_prefix(path, prefix))
        return false;
    sb_str_t rest = sb_str(path.p + prefix.len, path.len - prefix.len);
    const char *slash = memchr(rest.p, '/', rest.len);
    if (!slash) {
        twilio(s, req, rest, TW_MESSAGE);
        return true;
    }
    sb_str_t id = sb_str(rest.p, (size_t)(slash - rest.p));
    sb_str_t tail = sb_str(slash, rest.len - id.len);
    static const struct {
        const char *tail;
        enum twilio_route route;
    } tails[] = {{"/status", TW_STATUS}, {"/voice", TW_VOICE}, {"/voice/status", TW_VOICE_STATUS}, {"/media", TW_MEDIA}};
    for (size_t i = 0; i < sizeof tails / sizeof *tails; i++)
        if (sb_str_eq_cstr(tail, tails[i].tail)) {
            twilio(s, req, id, tails[i].route);
            return true;
        }
    return false;
}
