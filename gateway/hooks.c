/* Outgoing webhooks; see hooks.h.
 *
 * Per shard, a registry of deliverers by tenant. A deliverer is loaded (URL, opened secret, cursor) on its first
 * kick, then pumps: read a page of events after its cursor, deliver them one by one (POST, then commit the cursor),
 * read the next page. A failure ends the page: after the backoff the deliverer reads again from its cursor. Anything
 * in flight holds a reference, so a deliverer outlives the shard's stop until its last callback came back. */
#include "gateway/hooks.h"

#include "adapters/crypto.h"
#include "adapters/http_client.h"
#include "adapters/outbound.h"
#include "adapters/pg.h"
#include "gateway/inbound.h"
#include "gateway/log.h"
#include "gateway/sender.h"
#include "proto/codec.h"
#include "proto/digest.h"
#include "proto/err.h"
#include "proto/mem.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BUCKETS 256
#define PAGE 50
#define POST_TIMEOUT_MS 10000
#define SWEEP_EVERY_MS 10000

static const sb_config_t *cfg;

typedef struct event {
    int64_t cursor;
    char *type, *data;
    bool expired;
    uint64_t expires_ms; /* loop time at which it reaches webhook_max_age */
} event_t;

typedef enum { H_UNLOADED, H_LOADING, H_NONE, H_READY } hook_state_t;

typedef struct hook {
    struct hook *next;
    sb_shard_t *s;
    int64_t tenant;
    char tenant_s[24];
    hook_state_t st;
    char *url, *secret;
    int64_t cursor;       /* the last event the application acknowledged */
    int refs;             /* the registry's, plus each query, request or timer under way */
    bool busy, again, waiting, gone, reload;
    unsigned attempt;     /* failures of the event at the head */
    uv_timer_t *timer;
    event_t page[PAGE];
    int npage, at;
} hook_t;

typedef struct registry {
    hook_t *buckets[BUCKETS];
    uv_timer_t *sweeper;
} registry_t;

static registry_t *registries[SB_MAX_SHARDS];

static void pump(hook_t *h);
static void deliver_next(hook_t *h);

void sb_hooks_init(const sb_config_t *c)
{
    cfg = c;
}

/* ---- deliverers ----------------------------------------------------------------------------------------------- */

static void page_clear(hook_t *h)
{
    for (int i = 0; i < h->npage; i++) {
        free(h->page[i].type);
        free(h->page[i].data);
    }
    h->npage = h->at = 0;
}

static void forget_settings(hook_t *h)
{
    free(h->url);
    h->url = NULL;
    if (h->secret)
        sb_crypto_wipe(h->secret, strlen(h->secret));
    free(h->secret);
    h->secret = NULL;
    h->st = H_UNLOADED;
}

static void timer_closed(uv_handle_t *t)
{
    free(t);
}

static void hook_unref(hook_t *h)
{
    if (--h->refs > 0)
        return;
    page_clear(h);
    forget_settings(h);
    free(h);
}

static hook_t *hook_get(sb_shard_t *s, int64_t tenant, bool create)
{
    registry_t *reg = registries[sb_shard_index(s)];
    if (!reg)
        return NULL;
    hook_t **slot = &reg->buckets[(uint64_t)tenant % BUCKETS], *h;
    for (h = *slot; h; h = h->next)
        if (h->tenant == tenant)
            return h;
    if (!create)
        return NULL;
    h = sb_calloc(1, sizeof *h);
    h->s = s;
    h->tenant = tenant;
    snprintf(h->tenant_s, sizeof h->tenant_s, "%lld", (long long)tenant);
    h->refs = 1;
    h->next = *slot;
    *slot = h;
    return h;
}

/* ---- loading the tenant's setting ----------------------------------------------------------------------------- */

static void loaded(void *arg, int err, const char *detail, const PGresult *res)
{
    hook_t *h = arg;
    if (h->gone) {
        hook_unref(h);
        return;
    }
    h->st = H_NONE;
    if (h->reload) { /* changed while it loaded: load again */
        h->reload = false;
        h->st = H_UNLOADED;
        pump(h);
        hook_unref(h);
        return;
    }
    if (err) {
        sb_log_warn("hooks: tenant %s: cannot load its webhook: %s", h->tenant_s, detail);
        h->st = H_UNLOADED; /* the next kick (or the sweeper) tries again */
    } else if (PQntuples(res) == 1 && !PQgetisnull(res, 0, 0)) {
        sb_buf_t plain;
        sb_buf_init(&plain);
        char ad[48];
        snprintf(ad, sizeof ad, "tenant:%s:webhook", h->tenant_s);
        if (cfg->has_master_key &&
            sb_crypto_open(cfg->master_key, sb_str_cstr(PQgetvalue(res, 0, 1)), sb_str_cstr(ad), &plain) == 0) {
            h->url = sb_strdup(PQgetvalue(res, 0, 0));
            h->secret = sb_strndup(plain.p, plain.len);
            h->cursor = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
            h->st = H_READY;
        } else {
            sb_log_error("hooks: tenant %s: the webhook secret cannot be opened (master_key changed?)", h->tenant_s);
        }
        sb_crypto_buf_wipe(&plain);
    }
    pump(h);
    hook_unref(h);
}

static void load(hook_t *h)
{
    const char *p[1] = {h->tenant_s};
    h->st = H_LOADING;
    h->refs++;
    if (sb_pg_query(sb_shard_pg(h->s),
                    "SELECT webhook_url, coalesce(webhook_secret_sealed, ''), webhook_cursor FROM tenants WHERE id = $1",
                    1, p, SB_PG_PREPARED, loaded, h) < 0) {
        h->st = H_UNLOADED;
        h->refs--;
    }
}

/* ---- the pump: a page of events, one at a time ---------------------------------------------------------------- */

static void on_timer(uv_timer_t *t)
{
    hook_t *h = t->data;
    h->waiting = false;
    pump(h);
    hook_unref(h);
}

/* The head event failed: wait (backoff with jitter, Retry-After honoured, but never past the moment the event
 * reaches webhook_max_age), then read again from the cursor. */
static void fail_and_wait(hook_t *h, int retry_after_s, const char *why)
{
    uint64_t r = 0;
    if (sb_crypto_random(&r, sizeof r) < 0)
        r = uv_hrtime();
    h->attempt++;
    uint64_t ms = sb_retry_backoff_ms(h->attempt, retry_after_s, r);
    if (h->at < h->npage) { /* not past the head event's max age: then it goes to the dead letters, on time */
        uint64_t now = uv_now(sb_shard_loop(h->s)), expires = h->page[h->at].expires_ms;
        uint64_t left = expires > now ? expires - now : 0;
        if (ms > left)
            ms = left;
    }
    if (ms < 100)
        ms = 100;
    sb_log_info("hooks: tenant %s: event %lld not delivered (%s): again in %llu ms", h->tenant_s,
                (long long)(h->npage ? h->page[h->at].cursor : h->cursor + 1), why, (unsigned long long)ms);
    page_clear(h);
    h->busy = false;
    h->waiting = true;
    if (!h->timer) {
        h->timer = sb_malloc(sizeof *h->timer);
        uv_timer_init(sb_shard_loop(h->s), h->timer);
        h->timer->data = h;
    }
    h->refs++;
    uv_timer_start(h->timer, on_timer, ms, 0);
}

static void cursor_saved(void *arg, int err, const char *detail, const PGresult *res)
{
    hook_t *h = arg;
    (void)res;
    if (h->gone) {
        hook_unref(h);
        return;
    }
    if (err) {
        fail_and_wait(h, -1, detail);
    } else {
        h->cursor = h->page[h->at].cursor;
        h->attempt = 0;
        h->at++;
        deliver_next(h);
    }
    hook_unref(h);
}

/* Commits the head event as handled: delivered, or dead-lettered (then it is kept in webhook_dead_letters). */
static void save_cursor(hook_t *h, const char *dead_error)
{
    const event_t *e = &h->page[h->at];
    char c[24];
    snprintf(c, sizeof c, "%lld", (long long)e->cursor);
    h->refs++;
    int rc;
    if (dead_error) {
        const char *p[5] = {h->tenant_s, c, e->type, e->data, dead_error};
        rc = sb_pg_query(sb_shard_pg(h->s),
                         "WITH d AS (INSERT INTO webhook_dead_letters (tenant_id, cursor, type, data, error)"
                         " VALUES ($1, $2, $3, $4::jsonb, $5) ON CONFLICT DO NOTHING)"
                         " UPDATE tenants SET webhook_cursor = $2 WHERE id = $1 AND webhook_cursor < $2",
                         5, p, SB_PG_PREPARED, cursor_saved, h);
    } else {
        const char *p[2] = {h->tenant_s, c};
        rc = sb_pg_query(sb_shard_pg(h->s),
                         "UPDATE tenants SET webhook_cursor = $2 WHERE id = $1 AND webhook_cursor < $2", 2, p,
                         SB_PG_PREPARED, cursor_saved, h);
    }
    if (rc < 0) {
        h->refs--;
        fail_and_wait(h, -1, "database not reachable");
    }
}

static void posted(void *arg, const sb_http_client_res_t *res)
{
    hook_t *h = arg;
    if (h->gone) {
        hook_unref(h);
        return;
    }
    if (res->err == 0 && res->status >= 200 && res->status < 300) {
        save_cursor(h, NULL);
    } else {
        char why[64];
        if (res->err)
            snprintf(why, sizeof why, "%s", sb_strerror(res->err));
        else
            snprintf(why, sizeof why, "HTTP %d", res->status);
        fail_and_wait(h, res->err ? -1 : res->retry_after_s, why);
    }
    hook_unref(h);
}

static void post_event(hook_t *h)
{
    const event_t *e = &h->page[h->at];
    sb_buf_t body, sig, head_sig, head_event;
    sb_buf_init(&body);
    sb_buf_init(&sig);
    sb_buf_init(&head_sig);
    sb_buf_init(&head_event);
    sb_buf_printf(&body, "{\"tenant_id\":\"%s\",\"cursor\":%lld,\"type\":\"", h->tenant_s, (long long)e->cursor);
    sb_buf_json_escape(&body, sb_str_cstr(e->type));
    sb_buf_printf(&body, "\",\"data\":%s}", e->data);
    long long t = (long long)time(NULL);
    sb_buf_printf(&sig, "%lld.", t);
    sb_buf_append(&sig, body.p, body.len);
    unsigned char mac[SB_DIGEST_SHA256_LEN];
    sb_digest_hmac_sha256(sb_str_cstr(h->secret), sb_str(sig.p, sig.len), mac);
    sb_buf_printf(&head_sig, "X-Switchboard-Signature: t=%lld,v1=", t);
    sb_codec_hex_append(&head_sig, mac, sizeof mac);
    sb_buf_printf(&head_event, "X-Switchboard-Event: %s:%lld", h->tenant_s, (long long)e->cursor);
    const char *headers[] = {"Content-Type: application/json", sb_buf_cstr(&head_sig), sb_buf_cstr(&head_event),
                             NULL};
    sb_http_client_req_t req = {.method = "POST",
                                .url = h->url,
                                .headers = headers,
                                .body = sb_str(body.p, body.len),
                                .timeout_ms = POST_TIMEOUT_MS};
    h->refs++;
    sb_http_client_t *client = sb_sender_client(h->s);
    if (!client || sb_http_client_request(client, &req, posted, h) < 0) {
        h->refs--;
        fail_and_wait(h, -1, "the request could not be made");
    }
    sb_buf_cleanup(&body);
    sb_buf_cleanup(&sig);
    sb_buf_cleanup(&head_sig);
    sb_buf_cleanup(&head_event);
}

static void deliver_next(hook_t *h)
{
    if (h->reload) { /* the setting changed during this page: load it, then read again from the cursor */
        page_clear(h);
        h->busy = false;
        h->reload = false;
        forget_settings(h);
        pump(h);
        return;
    }
    if (h->at >= h->npage) { /* the page is done: read on if there may be more */
        bool more = h->npage == PAGE || h->again;
        page_clear(h);
        h->busy = false;
        h->again = false;
        if (more)
            pump(h);
        return;
    }
    if (h->page[h->at].expired)
        save_cursor(h, "not delivered within webhook_max_age");
    else
        post_event(h);
}

static void page_read(void *arg, int err, const char *detail, const PGresult *res)
{
    hook_t *h = arg;
    if (h->gone) {
        hook_unref(h);
        return;
    }
    if (err) {
        fail_and_wait(h, -1, detail);
        hook_unref(h);
        return;
    }
    h->npage = PQntuples(res) < PAGE ? PQntuples(res) : PAGE;
    h->at = 0;
    for (int i = 0; i < h->npage; i++) {
        h->page[i].cursor = strtoll(PQgetvalue(res, i, 0), NULL, 10);
        h->page[i].type = sb_strdup(PQgetvalue(res, i, 1));
        h->page[i].data = sb_strdup(PQgetvalue(res, i, 2));
        double left_ms = strtod(PQgetvalue(res, i, 3), NULL); /* to its max age; negative: past it */
        h->page[i].expired = left_ms < 0;
        h->page[i].expires_ms = uv_now(sb_shard_loop(h->s)) + (uint64_t)(left_ms > 0 ? ceil(left_ms) : 0);
    }
    deliver_next(h);
    hook_unref(h);
}

static void pump(hook_t *h)
{
    if (h->gone || h->waiting)
        return;
    if (h->busy) {
        h->again = true;
        return;
    }
    if (h->st == H_UNLOADED) {
        load(h);
        return;
    }
    if (h->st != H_READY)
        return;
    char c[24], age[24], limit[8];
    snprintf(c, sizeof c, "%lld", (long long)h->cursor);
    snprintf(age, sizeof age, "%d", cfg->webhook_max_age_s);
    snprintf(limit, sizeof limit, "%d", PAGE);
    const char *p[4] = {h->tenant_s, c, age, limit};
    h->busy = true;
    h->refs++;
    if (sb_pg_query(sb_shard_pg(h->s),
                    "SELECT cursor, type, data::text,"
                    " extract(epoch FROM created_at + $3::int * interval '1 second' - now()) * 1000"
                    " FROM inbox_events WHERE tenant_id = $1 AND cursor > $2 ORDER BY cursor LIMIT $4",
                    4, p, SB_PG_PREPARED, page_read, h) < 0) {
        h->busy = false;
        h->refs--;
    }
}

/* ---- kicks ---------------------------------------------------------------------------------------------------- */

static void kick_on_owner(sb_shard_t *s, void *arg)
{
    int64_t *tenant = arg;
    hook_t *h = hook_get(s, *tenant, true);
    if (h)
        pump(h);
    free(tenant);
}

void sb_hooks_kick(int64_t tenant)
{
    sb_shard_t *self = sb_shard_self();
    unsigned owner = sb_inbound_owner(tenant);
    if (self && sb_shard_index(self) == owner) {
        hook_t *h = hook_get(self, tenant, true);
        if (h && h->st != H_NONE)
            pump(h);
        return;
    }
    int64_t *t = sb_malloc(sizeof *t);
    *t = tenant;
    if (sb_shard_exec(owner, kick_on_owner, t) < 0)
        free(t);
}

static void reset_on_owner(sb_shard_t *s, void *arg)
{
    int64_t *tenant = arg;
    hook_t *h = hook_get(s, *tenant, true);
    if (h && (h->busy || h->st == H_LOADING)) {
        h->reload = true; /* the page or the load under way finishes first */
    } else if (h) {
        forget_settings(h);
        pump(h); /* loads the new setting */
    }
    free(tenant);
}

void sb_hooks_reset(int64_t tenant)
{
    int64_t *t = sb_malloc(sizeof *t);
    *t = tenant;
    if (sb_shard_exec(sb_inbound_owner(tenant), reset_on_owner, t) < 0)
        free(t);
}

/* ---- the sweeper: after a restart, wake the deliverers with events waiting ------------------------------------ */

static void swept(void *arg, int err, const char *detail, const PGresult *res)
{
    (void)arg;
    if (err) {
        sb_log_debug("hooks: sweep skipped: %s", detail);
        return;
    }
    for (int i = 0; i < PQntuples(res); i++)
        sb_hooks_kick(strtoll(PQgetvalue(res, i, 0), NULL, 10));
}

static void on_sweep(uv_timer_t *t)
{
    sb_shard_t *s = t->data;
    if (sb_pg_connected(sb_shard_pg(s)))
        sb_pg_query(sb_shard_pg(s),
                    "SELECT id FROM tenants WHERE webhook_url IS NOT NULL AND webhook_cursor < inbox_cursor LIMIT 10000",
                    0, NULL, 0, swept, NULL);
}

void sb_hooks_shard_start(sb_shard_t *s)
{
    registry_t *reg = sb_calloc(1, sizeof *reg);
    registries[sb_shard_index(s)] = reg;
    if (sb_shard_index(s) == 0) {
        reg->sweeper = sb_malloc(sizeof *reg->sweeper);
        uv_timer_init(sb_shard_loop(s), reg->sweeper);
        reg->sweeper->data = s;
        uv_timer_start(reg->sweeper, on_sweep, 1000, SWEEP_EVERY_MS);
    }
}

/* After the sender's HTTP client is gone (its requests were called back canceled): the deliverers still waiting on
 * a query are freed when it comes back; the others now. */
void sb_hooks_shard_stop(sb_shard_t *s)
{
    registry_t *reg = registries[sb_shard_index(s)];
    if (!reg)
        return;
    registries[sb_shard_index(s)] = NULL;
    if (reg->sweeper)
        uv_close((uv_handle_t *)reg->sweeper, timer_closed);
    for (int b = 0; b < BUCKETS; b++) {
        while (reg->buckets[b]) {
            hook_t *h = reg->buckets[b];
            reg->buckets[b] = h->next;
            h->gone = true;
            if (h->timer) {
                if (h->waiting) { /* the timer's reference: it will never fire now */
                    h->waiting = false;
                    h->refs--;
                }
                uv_close((uv_handle_t *)h->timer, timer_closed);
                h->timer = NULL;
            }
            hook_unref(h);
        }
    }
    free(reg);
}
