/* The admin REST API; see admin.h for the routes.
 *
 * Each handler validates the whole request before touching the database, then makes one call of the store
 * (adapters/store/queries.h: one statement each) and answers from the callback. The store's codes map to answers:
 * SB_ENOENT (the tenant does not exist) → 404, SB_EEXIST (a duplicate) → 409. */
#include "gateway/admin.h"

#include "adapters/crypto.h"
#include "adapters/store/queries.h"
#include "gateway/answers.h"
#include "gateway/authguard.h"
#include "gateway/keys.h"
#include "gateway/ratelimit.h"
#include "actors/session.h"
#include "actors/tenant.h"
#include "shards/cluster.h"
#include "shards/domain.h"
#include "proto/codec.h"
#include "proto/err.h"
#include "proto/event.h"
#include "proto/mem.h"
#include "proto/twiml.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define MAX_SEGMENTS 8
#define NAME_MAX_LEN 200

static const sb_config_t *cfg;

void sb_admin_init(const sb_config_t *c)
{
    cfg = c;
}


/* ---- request checks ------------------------------------------------------------------------------------------- */

/* Refuses an address that used up its failure budget: 429 with Retry-After, and the connection closed. */
static void refuse_blocked(sb_http_req_t *req, uint64_t wait_ms)
{
    char headers[48];
    snprintf(headers, sizeof headers, "retry-after: %llu\r\n", (unsigned long long)(wait_ms + 999) / 1000);
    sb_buf_t b;
    sb_buf_init(&b);
    sb_http_error_body(&b, "rate_limited", "too many wrong admin tokens from this address; try again later");
    sb_http_req_close(req);
    sb_http_respond_headers(req, 429, "application/json", headers, b.p, b.len);
    sb_buf_cleanup(&b);
}

/* A route's handler, run once the request is authorized; tenant is the path's tenant id ("" when it has none). */
typedef void (*admin_fn)(sb_shard_t *s, sb_http_req_t *req, const char *tenant);

typedef struct auth_op {
    sb_shard_t *s;
    sb_http_req_t *req;
    admin_fn fn;
    char tenant[24];
} auth_op_t;

static void auth_judged(void *arg, const sb_auth_verdict_t *v)
{
    auth_op_t *op = arg;
    if (v->ok) {
        op->fn(op->s, op->req, op->tenant);
    } else if (v->blocked_ms) {
        refuse_blocked(op->req, v->blocked_ms);
    } else {
        sb_buf_t b;
        sb_buf_init(&b);
        sb_http_error_body(&b, "unauthorized", "missing or wrong admin token");
        sb_http_respond_later(op->req, v->delay_ms, 401, "application/json", NULL, b.p, b.len);
        sb_buf_cleanup(&b);
    }
    free(op);
}

/* Checks the admin bearer, then runs fn. The token is compared here; whether its address may present one at all,
 * and how a wrong one is answered (at once, later, or 429 and closed), is the process-wide failure budget's
 * (gateway/authguard.h), asked of shard 0. */
static void authorized(sb_shard_t *s, sb_http_req_t *req, admin_fn fn, const char *tenant)
{
    sb_str_t h;
    struct sockaddr_storage ss;
    if (!cfg->admin_token) {
        sb_http_respond_error(req, 401, "unauthorized", "no admin_token is configured: the admin API is closed");
        return;
    }
    if (sb_http_req_peer(req, &ss) < 0) { /* the client is gone: the answer goes nowhere */
        sb_http_respond_error(req, 401, "unauthorized", "missing or wrong admin token");
        return;
    }
    sb_guard_addr_t addr;
    sb_guard_addr_from(&addr, (const struct sockaddr *)&ss);
    bool token_ok = sb_http_req_header(req, "authorization", &h) && sb_str_has_prefix(h, SB_STR("Bearer ")) &&
                    sb_codec_ct_eq(sb_str(h.p + 7, h.len - 7), sb_str_cstr(cfg->admin_token));
    auth_op_t *op = sb_calloc(1, sizeof *op);
    op->s = s;
    op->req = req;
    op->fn = fn;
    snprintf(op->tenant, sizeof op->tenant, "%s", tenant);
    if (sb_authguard_ask(s, &addr, token_ok, "admin API", auth_judged, op) < 0) {
        free(op);
        sb_http_respond_error(req, 503, "unavailable", "the gateway is stopping");
    }
}

/* Parses the body as a JSON object. Answers the error itself and returns NULL when it is not one. */
static json_t *json_body(sb_http_req_t *req)
{
    sb_str_t ct;
    if (!sb_http_req_header(req, "content-type", &ct) || !sb_str_has_prefix(ct, SB_STR("application/json"))) {
        sb_http_respond_error(req, 415, "unsupported_media_type", "send Content-Type: application/json");
        return NULL;
    }
    sb_str_t body = sb_http_req_body(req);
    json_error_t e;
    json_t *j = json_loadb(body.p, body.len, JSON_REJECT_DUPLICATES, &e);
    if (!j || !json_is_object(j)) {
        json_decref(j);
        sb_http_respond_error(req, 400, "bad_request", "the body must be a JSON object");
        return NULL;
    }
    return j;
}

/* A required string member of 1..max bytes; answers 400 naming it and returns NULL otherwise. */
static const char *want_string(sb_http_req_t *req, json_t *obj, const char *key, size_t max)
{
    json_t *v = json_object_get(obj, key);
    const char *s = json_is_string(v) ? json_string_value(v) : NULL;
    size_t n = s ? json_string_length(v) : 0;
    if (!s || n == 0 || n > max || memchr(s, '\0', n)) {
        char msg[160];
        snprintf(msg, sizeof msg, "'%s' must be a non-empty string of at most %zu bytes", key, max);
        sb_http_respond_error(req, 400, "bad_request", msg);
        return NULL;
    }
    return s;
}

/* Parses a decimal id path segment. */
static bool parse_id(sb_str_t s, long long *out)
{
    return s.len <= 19 && sb_str_to_ll(s, 1, INT64_MAX, out) == 0;
}

/* The external base URL: public_url, or http:// + the Host header, or http://localhost without either. */
static void base_url(sb_http_req_t *req, sb_buf_t *out)
{
    if (!sb_http_req_base_url(req, cfg->public_url, out))
        sb_buf_puts(out, "http://localhost");
}

/* ---- tenants -------------------------------------------------------------------------------------------------- */

static void tenant_created(void *arg, int err, int64_t id, const char *name)
{
    sb_http_req_t *req = arg;
    if (err)
        sb_answer_db_error(req, err, "", "");
    else
        sb_answer_json(req, 201, json_pack("{s:o,s:s}", "id", sb_answer_id(id), "name", name));
}

static void create_tenant(sb_shard_t *s, sb_http_req_t *req, const char *tenant)
{
    (void)tenant; /* no tenant in its path */
    json_t *j = json_body(req);
    if (!j)
        return;
    const char *name = want_string(req, j, "name", NAME_MAX_LEN);
    if (name && sb_query_tenant_create(sb_domain_store(s), name, tenant_created, req) < 0)
        sb_answer_db_error(req, SB_EUNAVAIL, "", "");
    json_decref(j);
}

static void tenants_listed(void *arg, int err, const char *detail, const sb_rows_t *rows)
{
    (void)detail;
    sb_answer_rows(arg, err, "tenants", rows, "");
}

static void list_tenants(sb_shard_t *s, sb_http_req_t *req, const char *tenant)
{
    (void)tenant; /* no tenant in its path */
    if (sb_query_tenant_list(sb_domain_store(s), tenants_listed, req) < 0)
        sb_answer_db_error(req, SB_EUNAVAIL, "", "");
}

/* ---- API keys: gateway/keys ------------------------------------------------------------------------------------ */

/* The path after /v1/admin/tenants/{id}/keys, kept with the request while the admin token is checked. */
static void keys_route(sb_shard_t *s, sb_http_req_t *req, const char *tenant)
{
    sb_str_t path = sb_http_req_path(req);
    const char *at = memmem(path.p, path.len, "/keys", 5);
    size_t off = at ? (size_t)(at - path.p) + 5 : path.len;
    sb_keys_admin(s, req, strtoll(tenant, NULL, 10), sb_str(path.p + off, path.len - off));
}

/* ---- channels ------------------------------------------------------------------------------------------------- */

static bool is_e164(const char *s)
{
    size_t n = strlen(s);
    if (n < 8 || n > 16 || s[0] != '+' || s[1] < '1' || s[1] > '9')
        return false;
    for (size_t i = 1; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

static bool is_digits(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

/* Checks the address form of the channel type; answers 400 and returns false otherwise. */
static bool valid_address(sb_http_req_t *req, sb_channel_type_t t, const char *addr)
{
    bool ok;
    const char *form;
    switch (t) {
    case SB_CH_TWILIO_SMS:
    case SB_CH_TWILIO_WHATSAPP:
    case SB_CH_TWILIO_VOICE:
        ok = is_e164(addr);
        form = "an E.164 number such as +14155550100";
        break;
    case SB_CH_META_WHATSAPP:
    case SB_CH_META_MESSENGER:
    case SB_CH_META_INSTAGRAM:
        ok = is_digits(addr, 32);
        form = "the numeric id Meta gives (phone_number_id, page id or Instagram account id)";
        break;
    default:
        ok = strlen(addr) <= 128;
        form = "at most 128 bytes";
        break;
    }
    if (!ok) {
        char msg[200];
        snprintf(msg, sizeof msg, "'address' must be %s", form);
        sb_http_respond_error(req, 400, "bad_request", msg);
    }
    return ok;
}

/* The credential members each channel type needs. */
static bool valid_credentials(sb_http_req_t *req, sb_channel_type_t t, json_t *creds)
{
    static const char *const twilio[] = {"account_sid", "auth_token", NULL};
    static const char *const meta[] = {"access_token", NULL};
    const char *const *need = t == SB_CH_TWILIO_SMS || t == SB_CH_TWILIO_WHATSAPP || t == SB_CH_TWILIO_VOICE
                                  ? twilio
                                  : (t == SB_CH_LINKED ? NULL : meta);
    if (!json_is_object(creds)) {
        sb_http_respond_error(req, 400, "bad_request", "'credentials' must be an object");
        return false;
    }
    for (; need && *need; need++) {
        json_t *v = json_object_get(creds, *need);
        if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > 512) {
            char msg[160];
            snprintf(msg, sizeof msg, "'credentials.%s' must be a non-empty string", *need);
            sb_http_respond_error(req, 400, "bad_request", msg);
            return false;
        }
    }
    return true;
}

typedef struct channel_op {
    sb_http_req_t *req;
    sb_channel_type_t type;
    char *meta_app_id;
} channel_op_t;

static void channel_created(void *arg, int err, int64_t channel, int64_t tenant, const char *address)
{
    channel_op_t *op = arg;
    if (err) {
        sb_answer_db_error(op->req, err, "no such tenant (or meta_app_id)",
                         "a channel with this type and address exists");
    } else {
        char id[24];
        snprintf(id, sizeof id, "%lld", (long long)channel);
        sb_buf_t url;
        sb_buf_init(&url);
        base_url(op->req, &url);
        json_t *j = json_pack("{s:s,s:o,s:s,s:s}", "id", id, "tenant_id", sb_answer_id(tenant), "type",
                              sb_channel_type_name(op->type), "address", address);
        size_t base_len = url.len;
        if (op->type == SB_CH_TWILIO_VOICE) {
            sb_buf_printf(&url, "/webhooks/twilio/%s/voice", id);
            json_object_set_new(j, "webhook_url", json_string(sb_buf_cstr(&url)));
            url.len = base_len;
            sb_buf_printf(&url, "/webhooks/twilio/%s/voice/status", id);
            json_object_set_new(j, "status_callback_url", json_string(sb_buf_cstr(&url)));
        } else if (op->type == SB_CH_TWILIO_SMS || op->type == SB_CH_TWILIO_WHATSAPP) {
            sb_buf_printf(&url, "/webhooks/twilio/%s", id);
            json_object_set_new(j, "webhook_url", json_string(sb_buf_cstr(&url)));
            url.len = base_len;
            sb_buf_printf(&url, "/webhooks/twilio/%s/status", id);
            json_object_set_new(j, "status_callback_url", json_string(sb_buf_cstr(&url)));
        } else if (op->meta_app_id) {
            sb_buf_printf(&url, "/webhooks/meta/%s", op->meta_app_id);
            json_object_set_new(j, "webhook_url", json_string(sb_buf_cstr(&url)));
        } else {
            json_object_set_new(j, "webhook_url", json_null());
        }
        sb_buf_cleanup(&url);
        sb_answer_json(op->req, 201, j);
    }
    free(op->meta_app_id);
    free(op);
}

/* A voice channel's settings (README "Voice"): refused with a clear message rather than found wrong on a call. */
static bool valid_voice_settings(sb_http_req_t *req, json_t *set)
{
    static const char *const modes[] = {"stream", "forward", "twiml_url", NULL}, *const fallbacks[] = {"hangup",
                                                                                                      "forward", NULL};
    static const struct {
        const char *key;
        const char *const *values;
    } enums[] = {{"voice_mode", modes}, {"media_fallback", fallbacks}};
    char why[200];
    for (size_t i = 0; i < sizeof enums / sizeof *enums; i++) {
        json_t *v = json_object_get(set, enums[i].key);
        bool ok = !v || json_is_null(v);
        for (const char *const *e = enums[i].values; !ok && json_is_string(v) && *e; e++)
            ok = strcmp(json_string_value(v), *e) == 0;
        if (!ok) {
            snprintf(why, sizeof why, "settings.%s must be one of:", enums[i].key);
            for (const char *const *e = enums[i].values; *e; e++)
                snprintf(why + strlen(why), sizeof why - strlen(why), " %s", *e);
            sb_http_respond_error(req, 400, "bad_request", why);
            return false;
        }
    }
    static const struct {
        const char *key, *a, *b;
    } urls[] = {{"media_url", "ws://", "wss://"}, {"twiml_url", "http://", "https://"}};
    for (size_t i = 0; i < sizeof urls / sizeof *urls; i++) {
        json_t *v = json_object_get(set, urls[i].key);
        const char *u = json_string_value(v);
        bool ok = !v || json_is_null(v) ||
                  (u && json_string_length(v) <= 2048 && (!strncmp(u, urls[i].a, strlen(urls[i].a)) ||
                                                          !strncmp(u, urls[i].b, strlen(urls[i].b))));
        for (size_t k = 0; ok && u && u[k]; k++)
            ok = (unsigned char)u[k] > 0x20 && u[k] != 0x7f;
        if (!ok) {
            snprintf(why, sizeof why, "settings.%s must be an absolute %s or %s URL", urls[i].key, urls[i].a,
                     urls[i].b);
            sb_http_respond_error(req, 400, "bad_request", why);
            return false;
        }
    }
    json_t *fwd = json_object_get(set, "forward_to");
    if (fwd && !json_is_null(fwd) && (!json_is_string(fwd) || json_string_length(fwd) < 2 ||
                                      json_string_length(fwd) > 64)) {
        sb_http_respond_error(req, 400, "bad_request", "settings.forward_to must be a number to dial");
        return false;
    }
    static const char *const twimls[] = {"fallback_twiml", "at_capacity_twiml"};
    for (size_t i = 0; i < 2; i++) {
        json_t *v = json_object_get(set, twimls[i]);
        char err[120];
        if (v && !json_is_null(v) &&
            (!json_is_string(v) ||
             sb_twiml_check(sb_str(json_string_value(v), json_string_length(v)), err, sizeof err) < 0)) {
            snprintf(why, sizeof why, "settings.%s must be a TwiML document: %s", twimls[i],
                     json_is_string(v) ? err : "not a string");
            sb_http_respond_error(req, 400, "bad_request", why);
            return false;
        }
    }
    json_t *max = json_object_get(set, "max_concurrent_calls"), *cps = json_object_get(set, "calls_per_second");
    if (max && !json_is_null(max) && (!json_is_integer(max) || json_integer_value(max) < 0)) {
        sb_http_respond_error(req, 400, "bad_request", "settings.max_concurrent_calls must be an integer >= 0");
        return false;
    }
    if (cps && !json_is_null(cps) && (!json_is_number(cps) || !(json_number_value(cps) > 0) ||
                                      json_number_value(cps) > 1000)) {
        sb_http_respond_error(req, 400, "bad_request", "settings.calls_per_second must be a number in (0, 1000]");
        return false;
    }
    return true;
}

/* A channel's pace and cap (README "Lanes, pace and caps"): refused with a clear message, never clamped. */
static bool valid_send_settings(sb_http_req_t *req, json_t *set)
{
    char why[160];
    json_t *rate = json_object_get(set, "rate_per_second"), *max = json_object_get(set, "max_concurrent_sends");
    if (rate && !json_is_null(rate) &&
        (!json_is_number(rate) || !(json_number_value(rate) > 0) || json_number_value(rate) > SB_SESSION_MAX_RATE)) {
        snprintf(why, sizeof why, "settings.rate_per_second must be a number of sends per second in (0, %d], or null "
                 "for the provider's default", SB_SESSION_MAX_RATE);
        sb_http_respond_error(req, 400, "bad_request", why);
        return false;
    }
    if (max && !json_is_null(max) &&
        (!json_is_integer(max) || json_integer_value(max) < 1 || json_integer_value(max) > SB_SESSION_MAX_CHANNEL_CAP)) {
        snprintf(why, sizeof why, "settings.max_concurrent_sends must be an integer 1..%d, or null for the default "
                 "(%d)", SB_SESSION_MAX_CHANNEL_CAP, SB_SESSION_MAX_SENDING);
        sb_http_respond_error(req, 400, "bad_request", why);
        return false;
    }
    return true;
}

static void create_channel(sb_shard_t *s, sb_http_req_t *req, const char *tenant)
{
    json_t *j = json_body(req);
    if (!j)
        return;
    const char *type_s, *addr, *app = NULL;
    sb_channel_type_t type = SB_CH_NONE;
    json_t *creds = json_object_get(j, "credentials"), *settings = json_object_get(j, "settings");
    sb_buf_t sealed;
    sb_buf_init(&sealed);
    char *creds_text = NULL, *settings_text = NULL;

    if (!(type_s = want_string(req, j, "type", 32)))
        goto out;
    if ((type = sb_channel_type_parse(type_s)) == SB_CH_NONE) {
        sb_http_respond_error(req, 400, "bad_request",
                              "'type' must be one of twilio_sms, twilio_whatsapp, twilio_voice, meta_whatsapp, "
                              "meta_messenger, meta_instagram, linked");
        goto out;
    }
    if (!(addr = want_string(req, j, "address", 128)) || !valid_address(req, type, addr) ||
        !valid_credentials(req, type, creds))
        goto out;
    if (settings && !json_is_object(settings)) {
        sb_http_respond_error(req, 400, "bad_request", "'settings' must be an object");
        goto out;
    }
    if (settings && type == SB_CH_TWILIO_VOICE && !valid_voice_settings(req, settings))
        goto out;
    if (settings && !valid_send_settings(req, settings))
        goto out;
    if (json_object_get(j, "meta_app_id") && !(app = want_string(req, j, "meta_app_id", 64)))
        goto out;
    if (!cfg->has_master_key) {
        sb_http_respond_error(req, 503, "unavailable", "no master_key is configured: credentials cannot be stored");
        goto out;
    }
    creds_text = json_dumps(creds, JSON_COMPACT | JSON_SORT_KEYS);
    settings_text = settings ? json_dumps(settings, JSON_COMPACT) : sb_strdup("{}");
    char ad[48];
    snprintf(ad, sizeof ad, "tenant:%s", tenant);
    if (sb_crypto_seal(cfg->master_key, sb_str_cstr(creds_text), sb_str_cstr(ad), &sealed) < 0) {
        sb_http_respond_error(req, 503, "unavailable", "credentials could not be sealed");
        goto out;
    }
    channel_op_t *op = sb_calloc(1, sizeof *op);
    op->req = req;
    op->type = type;
    op->meta_app_id = app ? sb_strdup(app) : NULL;
    sb_query_channel_new_t c = {.tenant = strtoll(tenant, NULL, 10),
                                .type = type,
                                .address = addr,
                                .credentials_sealed = sb_buf_cstr(&sealed),
                                .settings_json = settings_text,
                                .meta_app_id = app};
    if (sb_query_channel_create(sb_domain_store(s), &c, channel_created, op) < 0) {
        free(op->meta_app_id);
        free(op);
        sb_answer_db_error(req, SB_EUNAVAIL, "", "");
    }
out:
    if (creds_text) {
        sb_crypto_wipe(creds_text, strlen(creds_text));
        free(creds_text);
    }
    free(settings_text);
    sb_crypto_buf_wipe(&sealed);
    json_decref(j);
}

static void channels_listed(void *arg, int err, const char *detail, const sb_rows_t *rows)
{
    (void)detail;
    sb_answer_rows(arg, err, "channels", rows, "");
}

static void list_channels(sb_shard_t *s, sb_http_req_t *req, const char *tenant)
{
    if (sb_query_channel_list(sb_domain_store(s), strtoll(tenant, NULL, 10), channels_listed, req) < 0)
        sb_answer_db_error(req, SB_EUNAVAIL, "", "");
}

/* ---- Meta apps ------------------------------------------------------------------------------------------------ */

typedef struct app_op {
    sb_http_req_t *req;
    char app_id[65];
} app_op_t;

static void app_created(void *arg, int err)
{
    app_op_t *op = arg;
    if (err) {
        sb_answer_db_error(op->req, err, "", "this Meta app is registered already");
    } else {
        sb_buf_t url;
        sb_buf_init(&url);
        base_url(op->req, &url);
        sb_buf_printf(&url, "/webhooks/meta/%s", op->app_id);
        sb_answer_json(op->req, 201, json_pack("{s:s,s:s}", "app_id", op->app_id, "webhook_url", sb_buf_cstr(&url)));
        sb_buf_cleanup(&url);
    }
    free(op);
}

static void create_meta_app(sb_shard_t *s, sb_http_req_t *req, const char *tenant)
{
    (void)tenant; /* no tenant in its path */
    json_t *j = json_body(req);
    if (!j)
        return;
    sb_buf_t sealed;
    sb_buf_init(&sealed);
    const char *app, *secret, *verify;
    if (!(app = want_string(req, j, "app_id", 64)) || !(secret = want_string(req, j, "app_secret", 256)) ||
        !(verify = want_string(req, j, "verify_token", 256)))
        goto out;
    if (!is_digits(app, 64)) {
        sb_http_respond_error(req, 400, "bad_request", "'app_id' must be the numeric id of the Meta app");
        goto out;
    }
    if (!cfg->has_master_key) {
        sb_http_respond_error(req, 503, "unavailable", "no master_key is configured: the app secret cannot be stored");
        goto out;
    }
    char ad[80], verify_hash[SB_CRYPTO_KEY_HASH_LEN + 1];
    snprintf(ad, sizeof ad, "meta_app:%s", app);
    if (sb_crypto_seal(cfg->master_key, sb_str_cstr(secret), sb_str_cstr(ad), &sealed) < 0) {
        sb_http_respond_error(req, 503, "unavailable", "the app secret could not be sealed");
        goto out;
    }
    sb_crypto_key_hash(sb_str_cstr(verify), verify_hash);
    app_op_t *op = sb_calloc(1, sizeof *op);
    op->req = req;
    snprintf(op->app_id, sizeof op->app_id, "%s", app);
    if (sb_query_meta_app_create(sb_domain_store(s), app, sb_buf_cstr(&sealed), verify_hash, app_created, op) < 0) {
        free(op);
        sb_answer_db_error(req, SB_EUNAVAIL, "", "");
    }
out:
    sb_crypto_buf_wipe(&sealed);
    json_decref(j);
}

/* ---- a channel's settings: its pace and caps --------------------------------------------------------------------- */

typedef struct settings_note {
    int64_t tenant, channel; /* channel 0: every channel of the tenant */
} settings_note_t;

static void settings_note_run(sb_shard_t *s, void *arg)
{
    settings_note_t *n = arg;
    sb_session_settings_changed(sb_shard_rt(s), n->tenant, n->channel);
    free(n);
}

/* Tells the sessions concerned (on the tenant's shard) that their pace or caps changed: they read them again, so a
 * change takes effect within a round trip to PostgreSQL, also for messages already queued. */
static void settings_changed(int64_t tenant, int64_t channel)
{
    if (!sb_cluster_owns(tenant)) { /* another node's tenant: its sessions are there */
        sb_cluster_settings_changed(tenant, channel);
        return;
    }
    settings_note_t *n = sb_malloc(sizeof *n);
    *n = (settings_note_t){tenant, channel};
    if (sb_shard_exec(sb_domain_owner(tenant), settings_note_run, n) < 0)
        free(n); /* stopping: the sessions read their settings again when activated */
}

typedef struct chset_op {
    sb_http_req_t *req;
    int64_t tenant;
    bool patched;
} chset_op_t;

static void channel_settings_done(void *arg, int err, const sb_query_channel_settings_t *cs)
{
    chset_op_t *op = arg;
    if (err) {
        sb_answer_db_error(op->req, err, "no such channel", "");
        free(op);
        return;
    }
    json_t *set = json_loads(cs->settings_json, 0, NULL);
    if (!json_is_object(set)) {
        json_decref(set);
        set = json_object();
    }
    json_t *rate = json_object_get(set, "rate_per_second"), *max = json_object_get(set, "max_concurrent_sends");
    double def_rate = sb_session_default_rate(cs->type);
    json_t *limits = json_pack(
        "{s:f,s:f,s:I,s:i,s:I,s:i}", "rate_per_second", json_is_number(rate) ? json_number_value(rate) : def_rate,
        "rate_per_second_default", def_rate, "max_concurrent_sends",
        (json_int_t)(json_is_integer(max) ? json_integer_value(max) : SB_SESSION_MAX_SENDING),
        "max_concurrent_sends_default", SB_SESSION_MAX_SENDING, "tenant_max_concurrent_sends",
        (json_int_t)(cs->tenant_max_sends > 0 ? cs->tenant_max_sends : SB_SESSION_TENANT_MAX_SENDING),
        "tenant_max_concurrent_sends_default", SB_SESSION_TENANT_MAX_SENDING);
    sb_answer_json(op->req, 200, json_pack("{s:o,s:s,s:o,s:o}", "id", sb_answer_id(cs->channel), "type",
                                           sb_channel_type_name(cs->type), "settings", set, "limits", limits));
    if (op->patched)
        settings_changed(op->tenant, cs->channel);
    free(op);
}

/* GET /v1/admin/tenants/{id}/channels/{channel_id}: the channel's settings and the pace and caps in force (each
 * with its default). PATCH with {"settings": {...}}: each member replaces that setting, null removes it (back to
 * the default); answered like GET, and the channel's session reads its pace and caps again at once. */
static void channel_settings(sb_shard_t *s, sb_http_req_t *req, const char *tenant)
{
    int64_t channel = (int64_t)(intptr_t)sb_http_req_user(req);
    char *patch = NULL;
    if (sb_http_req_method(req) == SB_HTTP_PATCH) {
        json_t *j = json_body(req);
        if (!j)
            return;
        json_t *set = json_object_get(j, "settings");
        if (json_object_size(j) != 1 || !json_is_object(set)) {
            sb_http_respond_error(req, 400, "bad_request", "the body must be {\"settings\": {...}}: each member "
                                                           "replaces that setting, null removes it");
            json_decref(j);
            return;
        }
        if (!valid_voice_settings(req, set) || !valid_send_settings(req, set)) {
            json_decref(j);
            return;
        }
        patch = json_dumps(set, JSON_COMPACT);
        json_decref(j);
    }
    chset_op_t *op = sb_calloc(1, sizeof *op);
    op->req = req;
    op->tenant = strtoll(tenant, NULL, 10);
    op->patched = patch != NULL;
    if (sb_query_channel_settings(sb_domain_store(s), op->tenant, channel, patch, channel_settings_done, op) < 0) {
        free(op);
        sb_answer_db_error(req, SB_EUNAVAIL, "", "");
    }
    free(patch);
}

/* ---- routing -------------------------------------------------------------------------------------------------- */

/* Splits "/a/b/c" into segments; returns their number, or -1 if there are more than max or an empty one. */
static int split_path(sb_str_t path, sb_str_t *seg, int max)
{
    int n = 0;
    size_t i = 0;
    if (!path.len || path.p[0] != '/')
        return -1;
    while (i < path.len) {
        size_t start = ++i;
        while (i < path.len && path.p[i] != '/')
            i++;
        if (i == start || n == max)
            return -1;
        seg[n++] = sb_str(path.p + start, i - start);
    }
    return n;
}

static void method_not_allowed(sb_http_req_t *req)
{
    sb_http_respond_error(req, 405, "method_not_allowed", "this route does not take that method");
}

/* ---- a tenant's outgoing webhook ----------------------------------------------------------------------------- */

typedef struct hook_op {
    sb_http_req_t *req;
    int64_t tenant;
    char *url;    /* NULL: switched off */
    char secret[72];
} hook_op_t;

static void hook_set(void *arg, int err)
{
    hook_op_t *op = arg;
    if (err) {
        sb_answer_db_error(op->req, err, "no such tenant", "");
    } else {
        json_t *j = op->url ? json_pack("{s:s, s:s}", "url", op->url, "secret", op->secret)
                            : json_pack("{s:n}", "url");
        sb_answer_json(op->req, 200, j);
        sb_shard_t *self = sb_shard_self(); /* the tenant actor loads the setting again */
        if (self)
            sb_rt_send_key(sb_shard_rt(self), sb_domain_owner(op->tenant), &sb_tenant_kind, (uint64_t)op->tenant,
                           SB_TENANT_HOOKS, NULL, 0);
    }
    sb_crypto_wipe(op->secret, sizeof op->secret);
    free(op->url);
    free(op);
}

/* POST /v1/admin/tenants/{id}/webhook {"url"}: where the tenant's events go (null: nowhere). Answers the signing
 * secret, made anew each time (shown once; stored sealed). Delivery starts with the next event. */
static void set_webhook(sb_shard_t *s, sb_http_req_t *req, const char *tenant)
{
    json_t *j = json_body(req);
    if (!j)
        return;
    json_t *u = json_object_get(j, "url");
    const char *url = json_is_string(u) ? json_string_value(u) : NULL;
    size_t n = url ? json_string_length(u) : 0;
    bool ok = json_is_null(u) || (url && n <= 2048 && (strncmp(url, "https://", 8) == 0 ||
                                                      strncmp(url, "http://", 7) == 0));
    for (size_t i = 0; ok && url && i < n; i++)
        ok = (unsigned char)url[i] > 0x20 && url[i] != 0x7f;
    if (!ok) {
        json_decref(j);
        sb_http_respond_error(req, 400, "bad_request", "'url' must be an absolute http(s) URL (or null to stop)");
        return;
    }
    hook_op_t *op = sb_calloc(1, sizeof *op);
    op->req = req;
    op->tenant = strtoll(tenant, NULL, 10);
    op->url = url ? sb_strndup(url, n) : NULL;
    json_decref(j);
    sb_buf_t sealed;
    sb_buf_init(&sealed);
    if (op->url) {
        unsigned char raw[32];
        char ad[48];
        snprintf(ad, sizeof ad, "tenant:%s:webhook", tenant);
        memcpy(op->secret, "whsec_", 6);
        if (!cfg->has_master_key || sb_crypto_random(raw, sizeof raw) < 0) {
            sb_http_respond_error(req, 503, "unavailable", "webhook secrets need a master_key and randomness");
            free(op->url);
            free(op);
            return;
        }
        sb_codec_hex_encode(op->secret + 6, raw, sizeof raw);
        sb_crypto_wipe(raw, sizeof raw);
        sb_crypto_seal(cfg->master_key, sb_str_cstr(op->secret), sb_str_cstr(ad), &sealed);
    }
    if (sb_query_tenant_webhook_set(sb_domain_store(s), op->tenant, op->url, op->url ? sb_buf_cstr(&sealed) : NULL,
                                    hook_set, op) < 0)
        hook_set(op, SB_EUNAVAIL);
    sb_buf_cleanup(&sealed);
}

/* ---- a tenant's settings ---------------------------------------------------------------------------------------- */

typedef struct tenant_op {
    sb_http_req_t *req;
    int64_t tenant;
    bool sends; /* max_concurrent_sends changed: the tenant's sessions read their caps again */
} tenant_op_t;

static void tenant_patched(void *arg, int err, const char *rate_limits, int64_t max_sends)
{
    tenant_op_t *op = arg;
    if (err) {
        sb_answer_db_error(op->req, err, "no such tenant", "");
        free(op);
        return;
    }
    sb_rl_limits_t l;
    sb_ratelimit_parse(rate_limits, &l);
    sb_answer_json(op->req, 200,
                   json_pack("{s:b,s:o,s:I}", "ok", 1, "rate_limits", sb_ratelimit_json(&l), "max_concurrent_sends",
                             (json_int_t)(max_sends > 0 ? max_sends : SB_SESSION_TENANT_MAX_SENDING)));
    if (op->sends)
        settings_changed(op->tenant, 0);
    free(op);
}

/* PATCH /v1/admin/tenants/{id} {"max_concurrent_calls": N or null, "rate_limits": {...} or null,
 * "max_concurrent_sends": N or null} (any of them): the tenant's cap on live calls (null: none), seen by calls
 * admitted from the next minute on (the front doors' channel cache); its rate limits (gateway/ratelimit.h: each
 * member replaces that limit, null puts a limit back to its default, "rate_limits": null puts them all back), seen
 * by the next request; and its cap on provider requests in flight across its channels (null: the default, 256),
 * which its active sessions read again at once. Answers {"ok":true, "rate_limits", "max_concurrent_sends"} with
 * every limit in force. */
static void patch_tenant(sb_shard_t *s, sb_http_req_t *req, const char *tenant)
{
    json_t *j = json_body(req);
    if (!j)
        return;
    json_t *max = json_object_get(j, "max_concurrent_calls"), *rl = json_object_get(j, "rate_limits"),
           *sends = json_object_get(j, "max_concurrent_sends");
    bool ok = json_object_size(j) >= 1 &&
              json_object_size(j) == (size_t)(max != NULL) + (rl != NULL) + (sends != NULL) &&
              (!max || json_is_null(max) || (json_is_integer(max) && json_integer_value(max) >= 0 &&
                                             json_integer_value(max) <= 10000000));
    bool sends_ok = !sends || json_is_null(sends) ||
                    (json_is_integer(sends) && json_integer_value(sends) >= 1 &&
                     json_integer_value(sends) <= SB_SESSION_MAX_TENANT_CAP);
    const char *why = ok && rl ? sb_ratelimit_check(rl) : NULL;
    int64_t v = ok && json_is_integer(max) ? json_integer_value(max) : -1;
    int64_t ns = sends_ok && json_is_integer(sends) ? json_integer_value(sends) : -1;
    char *limits = ok && sends_ok && rl && !why ? json_dumps(rl, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(j);
    if (ok && !why && !sends_ok) {
        char msg[160];
        snprintf(msg, sizeof msg, "max_concurrent_sends must be an integer 1..%d, or null for the default (%d)",
                 SB_SESSION_MAX_TENANT_CAP, SB_SESSION_TENANT_MAX_SENDING);
        sb_http_respond_error(req, 400, "bad_request", msg);
        return;
    }
    if (!ok || why) {
        sb_http_respond_error(req, 400, "bad_request",
                              why ? why
                                  : "the body must be {\"max_concurrent_calls\": an integer 0..10000000 or null, "
                                    "\"rate_limits\": {...} or null, \"max_concurrent_sends\": an integer or "
                                    "null}, any of them");
        return;
    }
    tenant_op_t *op = sb_calloc(1, sizeof *op);
    op->req = req;
    op->tenant = strtoll(tenant, NULL, 10);
    op->sends = sends != NULL;
    if (sb_query_tenant_patch(sb_domain_store(s), op->tenant, max != NULL, v, limits, sends != NULL, ns,
                              tenant_patched, op) < 0) {
        free(op);
        sb_answer_db_error(req, SB_EUNAVAIL, "", "");
    }
    free(limits);
}

bool sb_admin_handle(sb_shard_t *s, sb_http_req_t *req)
{
    sb_str_t seg[MAX_SEGMENTS];
    int n = split_path(sb_http_req_path(req), seg, MAX_SEGMENTS);
    if (n < 3 || !sb_str_eq_cstr(seg[0], "v1") || !sb_str_eq_cstr(seg[1], "admin"))
        return false;
    sb_http_method_t m = sb_http_req_method(req);
    bool get = m == SB_HTTP_GET || m == SB_HTTP_HEAD;

    if (n == 3 && sb_str_eq_cstr(seg[2], "tenants")) {
        if (m != SB_HTTP_POST && !get)
            method_not_allowed(req);
        else
            authorized(s, req, m == SB_HTTP_POST ? create_tenant : list_tenants, "");
        return true;
    }
    if (n == 3 && sb_str_eq_cstr(seg[2], "meta-apps")) {
        if (m != SB_HTTP_POST)
            method_not_allowed(req);
        else
            authorized(s, req, create_meta_app, "");
        return true;
    }
    bool keys = n >= 5 && n <= 7 && sb_str_eq_cstr(seg[2], "tenants") && sb_str_eq_cstr(seg[4], "keys");
    bool one_channel = n == 6 && sb_str_eq_cstr(seg[4], "channels");
    if (((n != 4 && n != 5) && !keys && !one_channel) || !sb_str_eq_cstr(seg[2], "tenants"))
        return false;
    bool webhook = n == 5 && sb_str_eq_cstr(seg[4], "webhook");
    if (n == 5 && !webhook && !keys && !sb_str_eq_cstr(seg[4], "channels"))
        return false;
    long long tid;
    char tenant[24];
    if (!parse_id(seg[3], &tid)) {
        sb_http_respond_error(req, 404, "not_found", "no such tenant");
        return true;
    }
    snprintf(tenant, sizeof tenant, "%lld", tid);
    if (n == 4) { /* the tenant itself: PATCH its settings */
        if (m != SB_HTTP_PATCH)
            method_not_allowed(req);
        else
            authorized(s, req, patch_tenant, tenant);
        return true;
    }
    if (keys) { /* every method of the keys' routes is gateway/keys's to judge */
        authorized(s, req, keys_route, tenant);
        return true;
    }
    if (one_channel) { /* a channel's settings */
        long long cid;
        if (!parse_id(seg[5], &cid)) {
            sb_http_respond_error(req, 404, "not_found", "no such channel");
        } else if (m != SB_HTTP_PATCH && !get) {
            method_not_allowed(req);
        } else {
            sb_http_req_set_user(req, (void *)(intptr_t)cid);
            authorized(s, req, channel_settings, tenant);
        }
        return true;
    }
    admin_fn fn = webhook ? set_webhook : m == SB_HTTP_POST ? create_channel : list_channels;
    if (m != SB_HTTP_POST && (webhook || !get))
        method_not_allowed(req);
    else
        authorized(s, req, fn, tenant);
    return true;
}
