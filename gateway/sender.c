/* Sending outbound messages; see sender.h. */
#include "gateway/sender.h"

#include "adapters/counters.h"
#include "adapters/crypto.h"
#include "adapters/http_client.h"
#include "adapters/outbound.h"
#include "adapters/pg.h"
#include "gateway/inbound.h"
#include "gateway/live.h"
#include "gateway/log.h"
#include "proto/breaker.h"
#include "proto/err.h"
#include "proto/event.h"
#include "proto/mem.h"
#include "proto/str.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DB_RETRY_MS 2000     /* the database or Redis did not answer: try the message again after this */
#define OUTCOME_KEEP_MS 300000 /* an outcome the database did not take is offered again for this long */
#define CHANNEL_CACHE 4096   /* per shard: channel id -> what its counters need (type, rate, caps) */
#define CHANNEL_MAX_INFLIGHT 16
#define TENANT_MAX_INFLIGHT 256
#define SWEEP_FIRST_MS 1500
#define SWEEP_EVERY_MS 5000

static const sb_config_t *cfg;
static sb_http_client_t *clients[SB_MAX_SHARDS]; /* each used only by its own shard's thread */
static uv_timer_t *sweeper;                       /* shard 0's */
static unsigned inflight[SB_MAX_SHARDS];          /* jobs per shard, between the actor's call and its answer */
/* Per shard, one circuit breaker per provider endpoint: [0] Twilio's API, [1] Meta's Graph API. */
static sb_breaker_t breakers[SB_MAX_SHARDS][2];
#define BREAKER_FAULTS 5
#define BREAKER_MIN_MS 2000
#define BREAKER_MAX_MS 60000
static bool draining[SB_MAX_SHARDS];

void sb_sender_init(const sb_config_t *c)
{
    cfg = c;
}

/* ---- one send ------------------------------------------------------------------------------------------------- */

typedef struct job {
    sb_shard_t *s;
    int64_t tenant, channel, id;
    unsigned attempt;
    sb_session_sent_fn sent;
    void *arg;
    sb_channel_type_t type;
    char tenant_s[24], id_s[24], channel_s[24];
    sb_counters_lease_t lease; /* held from the grant until the outcome is known */
    bool leased;
    sb_counters_limits_t lim;
    uv_timer_t *wait;          /* while the counters say wait */
    struct job *wprev, *wnext; /* on the shard's list of waiting jobs, while the timer runs */
    bool waiting;
    sb_outbound_request_t req; /* built, waiting for a token */
    /* its outcome, while it is being stored (again, when the database was away) */
    const char *out_status;    /* static */
    char *out_provider_id, *out_code, *out_message;
    bool out_again, out_logged;
    uint64_t out_retry_ms, out_since;
} job_t;

static job_t *waiting_jobs[SB_MAX_SHARDS]; /* so a stopping shard can end them: their timers would keep it alive */
static bool stopping[SB_MAX_SHARDS];

static void unlist_waiting(job_t *j)
{
    if (!j->waiting)
        return;
    j->waiting = false;
    if (j->wprev)
        j->wprev->wnext = j->wnext;
    else
        waiting_jobs[sb_shard_index(j->s)] = j->wnext;
    if (j->wnext)
        j->wnext->wprev = j->wprev;
    j->wprev = j->wnext = NULL;
}

static void wait_closed(uv_handle_t *h)
{
    free(h);
}

static sb_breaker_t *breaker_of(job_t *j)
{
    return &breakers[sb_shard_index(j->s)][j->type == SB_CH_META_WHATSAPP];
}

static void job_done(job_t *j, bool again, uint64_t retry_ms)
{
    sb_session_outcome_t o = {.message_id = j->id, .again = again, .retry_ms = retry_ms};
    inflight[sb_shard_index(j->s)]--;
    unlist_waiting(j);
    if (j->leased) /* fire and forget: the lease expires anyway */
        sb_counters_release(sb_shard_redis(j->s), &j->lease, NULL, NULL);
    j->sent(j->arg, &o);
    if (j->wait)
        uv_close((uv_handle_t *)j->wait, wait_closed);
    sb_outbound_request_cleanup(&j->req);
    free(j->out_provider_id);
    free(j->out_code);
    free(j->out_message);
    free(j);
}

/* ---- what the counters need of a channel: its type and limits, cached per shard ------------------------------- */

typedef struct chinfo {
    int64_t channel; /* 0: empty slot */
    sb_channel_type_t type;
    sb_counters_limits_t lim;
} chinfo_t;

static chinfo_t *caches[SB_MAX_SHARDS];

static chinfo_t *cache_slot(sb_shard_t *s, int64_t channel)
{
    unsigned i = sb_shard_index(s);
    if (!caches[i])
        caches[i] = sb_calloc(CHANNEL_CACHE, sizeof *caches[i]);
    return &caches[i][((uint64_t)channel * 0x9E3779B97F4A7C15ull >> 40) % CHANNEL_CACHE];
}

/* The provider's default rate for the type, unless the channel's settings say "rate_per_second". */
static void limits_of(chinfo_t *c, sb_channel_type_t type, const char *settings)
{
    double rate = type == SB_CH_TWILIO_WHATSAPP ? SB_COUNTERS_RATE_TWILIO_WHATSAPP
                  : type == SB_CH_META_WHATSAPP ? SB_COUNTERS_RATE_META_WHATSAPP
                                                : SB_COUNTERS_RATE_TWILIO_LONG_CODE;
    json_t *j = json_loads(settings, 0, NULL), *r = json_object_get(j, "rate_per_second");
    if (json_is_number(r) && json_number_value(r) > 0)
        rate = json_number_value(r);
    json_decref(j);
    c->type = type;
    /* 5% slower than the rate: grants exactly 1/rate apart put rate + 1 sends into a closed one-second window, and
     * the provider's clock sees them with the jitter of the way there (a busy loop, a new connection): rate grants
     * then span 1.05 s, so 50 ms of it cannot bring rate + 1 into one second. 1% (10 ms) was seen to fail once
     * under a loaded test run (6 in a second at 5/s). */
    c->lim = (sb_counters_limits_t){.interval_us = sb_counters_interval_us(rate / 1.05),
                                    .burst = SB_COUNTERS_DEFAULT_BURST,
                                    .channel_max = CHANNEL_MAX_INFLIGHT,
                                    .tenant_max = TENANT_MAX_INFLIGHT,
                                    .lease_ms = SB_COUNTERS_DEFAULT_LEASE_MS};
}

/* A batch of claims as parallel arrays, in arrival order: $1 tenant, $2 message. Each message still queued or
 * retrying becomes sending, committed before the provider is asked. Rows: one per message claimed (a message named
 * twice in a batch is claimed once), with what its request needs and its ord.
 *
 * No "direction = 'out'" (only outbound messages are ever queued or retrying, and only their ids come here): with
 * it the statement matches messages_outbox's predicate, and the generic plan of a prepared statement, which
 * believes the outbox nearly empty, scanned the whole outbox for every batch — under load, thousands of rows a
 * claim, and the sends collapsed. Without it the plan is a primary-key probe per message (once the planner has
 * statistics: a plan made on tables it believes empty may still pick another index; see tests/bench/run.sh). */
static const char claim_sql[] =
    "UPDATE messages m SET status = 'sending', attempts = m.attempts + 1, updated_at = now()"
    " FROM unnest($1::bigint[], $2::bigint[]) WITH ORDINALITY AS u(tenant_id, id, ord), channels c"
    " WHERE m.tenant_id = u.tenant_id AND m.id = u.id AND m.status IN ('queued', 'retrying')"
    " AND c.tenant_id = m.tenant_id AND c.id = m.channel_id"
    " RETURNING m.recipient, m.body, m.media::text, coalesce(m.template::text, ''), c.type, c.address,"
    " coalesce(c.credentials_sealed, ''), m.attempts, u.ord";

/* ---- outcomes: what a loop turn's sends of all the shard's tenants came to, stored in one statement ----------- */

/* A batch of outcomes as parallel arrays, in arrival order: $1 tenant, $2 message, $3 status, $4 provider id, $5
 * error code, $6 error message ('' = none), $7 retry delay (ms), $8 how long (ms) the message must have been sending
 * (0: a send's own outcome; the sweeper's "unknown" asks for minutes). Only a message still sending changes (the
 * first of the batch's outcomes for it); its new status goes to the history and, as message.status, to its
 * tenant's inbox, numbered in arrival order. Each tenant's cursor row is written once, however many of its
 * messages the batch holds: written once per outcome, its versions piled up in the segment's transaction and every
 * update walked them all. Rows: the events, grouped by tenant in cursor order. */
static const char finish_sql[] =
    "WITH u AS ("
    "  SELECT DISTINCT ON (tenant_id, id) * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[],"
    "       $5::text[], $6::text[], $7::bigint[], $8::bigint[])"
    "       WITH ORDINALITY AS u(tenant_id, id, status, provider_id, error_code, error_message, retry_ms, age_ms, ord)"
    "  ORDER BY tenant_id, id, ord),"
    " m AS ("
    "  UPDATE messages x SET status = u.status, provider_id = coalesce(nullif(u.provider_id, ''), x.provider_id),"
    "         error_code = nullif(u.error_code, ''), error_message = nullif(u.error_message, ''),"
    "         next_attempt_at = CASE WHEN u.status = 'retrying' THEN now() + u.retry_ms * interval '1 millisecond' END,"
    "         updated_at = now()"
    "  FROM u WHERE x.tenant_id = u.tenant_id AND x.id = u.id AND x.status = 'sending'"
    "  AND x.updated_at <= now() - u.age_ms * interval '1 millisecond'"
    "  RETURNING u.ord, x.tenant_id, x.id, x.status, x.error_code, x.error_message),"
    " sh AS (INSERT INTO message_status_history (tenant_id, message_id, status, error_code, error_message)"
    "        SELECT tenant_id, id, status, error_code, error_message FROM m),"
    " cur AS ("
    "  UPDATE tenants t SET inbox_cursor = t.inbox_cursor + g.n"
    "  FROM (SELECT tenant_id, count(*) AS n FROM m GROUP BY tenant_id) g WHERE t.id = g.tenant_id"
    "  RETURNING t.id, t.inbox_cursor - g.n AS base),"
    " ins AS ("
    "  INSERT INTO inbox_events (tenant_id, cursor, type, data)"
    "  SELECT m.tenant_id, cur.base + row_number() OVER (PARTITION BY m.tenant_id ORDER BY m.ord), 'message.status',"
    "         jsonb_strip_nulls(jsonb_build_object('id', m.id::text, 'status', m.status, 'error',"
    "         CASE WHEN m.error_code IS NULL THEN NULL"
    "         ELSE jsonb_build_object('code', m.error_code, 'message', m.error_message) END))"
    "  FROM m JOIN cur ON cur.id = m.tenant_id"
    "  RETURNING tenant_id, cursor, type, data)"
    " SELECT tenant_id, cursor, type, data::text FROM ins ORDER BY tenant_id, cursor";

typedef void (*outcome_fn)(void *arg, int err, const char *detail); /* after COMMIT (err 0) or failure */

typedef struct outcome {
    outcome_fn done;
    void *arg;
    char tenant[24], id[24], retry_ms[24], age_ms[24];
    const char *status;                         /* static */
    char *provider_id, *code, *message;         /* into text */
    char text[];
} outcome_t;

static void outcome_row(const void *item, size_t k, const char **v, char (*num)[24])
{
    const outcome_t *o = item;
    (void)k;
    (void)num;
    const char *w[8] = {o->tenant, o->id, o->status, o->provider_id, o->code, o->message, o->retry_ms, o->age_ms};
    memcpy(v, w, sizeof w);
}

static void outcomes_stored(void **items, size_t n, int err, const char *detail, const PGresult *res)
{
    if (!err) {
        int rows = PQntuples(res);
        for (int i = 0, j; i < rows; i = j) { /* grouped by tenant */
            for (j = i + 1; j < rows && !strcmp(PQgetvalue(res, j, 0), PQgetvalue(res, i, 0)); j++)
                ;
            sb_live_publish_rows(strtoll(PQgetvalue(res, i, 0), NULL, 10), res, i, j - i);
        }
    }
    for (size_t i = 0; i < n; i++) {
        outcome_t *o = items[i];
        o->done(o->arg, err, detail);
        free(o);
    }
}

/* A loop turn's outcomes of the shard, one statement: a batch of its connection. */
static const sb_pg_batch_def_t outcomes_def = {
    .what = "outcomes",
    .sql = finish_sql,
    .ncols = 8,
    .max = 512,
    .row = outcome_row,
    .done = outcomes_stored,
};

/* Stores on shard s (the message's tenant's, which alone writes the tenant's cursor) that message id of tenant ended
 * with status (static storage), provider id, error code and message (copied; NULL: none) unless it has left sending
 * meanwhile, or (age_ms > 0) has been sending for less than age_ms; then calls done once, after COMMIT or failure. */
static void store_outcome(sb_shard_t *s, int64_t tenant, int64_t id, const char *status, const char *provider_id,
                          const char *code, const char *message, uint64_t retry_ms, uint64_t age_ms, outcome_fn done,
                          void *arg)
{
    const char *t[3] = {provider_id ? provider_id : "", code ? code : "", message ? message : ""};
    size_t l[3], total = 0;
    for (int i = 0; i < 3; i++)
        total += (l[i] = strlen(t[i])) + 1;
    outcome_t *o = sb_malloc(sizeof *o + total);
    o->done = done;
    o->arg = arg;
    snprintf(o->tenant, sizeof o->tenant, "%lld", (long long)tenant);
    snprintf(o->id, sizeof o->id, "%lld", (long long)id);
    snprintf(o->retry_ms, sizeof o->retry_ms, "%llu", (unsigned long long)retry_ms);
    snprintf(o->age_ms, sizeof o->age_ms, "%llu", (unsigned long long)age_ms);
    o->status = status;
    char *w = o->text, **dst[3] = {&o->provider_id, &o->code, &o->message};
    for (int i = 0; i < 3; i++) {
        memcpy(w, t[i], l[i] + 1);
        *dst[i] = w;
        w += l[i] + 1;
    }
    if (sb_pg_batch_add(sb_shard_pg(s), &outcomes_def, o) < 0) {
        free(o);
        done(arg, SB_EUNAVAIL, "not connected");
    }
}

static void job_wait(job_t *j, uint64_t ms, uv_timer_cb cb);
static void store_job_outcome(job_t *j);

static void on_store_again(uv_timer_t *t)
{
    job_t *j = t->data;
    unlist_waiting(j);
    store_job_outcome(j);
}

/* The outcome is stored, or given up on: the actor hears whether to send again. An outcome the database did not take
 * (it was away) is offered again every DB_RETRY_MS for OUTCOME_KEEP_MS: the provider has answered, and what it said
 * (the provider id above all, which status callbacks are matched by) would otherwise be lost, the message left in
 * sending for the sweeper to call unknown. A stopping shard gives up at once (the sweeper reconciles it). */
static void job_outcome_stored(void *arg, int err, const char *detail)
{
    job_t *j = arg;
    uint64_t now = uv_now(sb_shard_loop(j->s));
    if (err && err != SB_ECANCELED && !stopping[sb_shard_index(j->s)] && now - j->out_since < OUTCOME_KEEP_MS) {
        if (!j->out_logged)
            sb_log_warn("sender: message %s: outcome %s not stored yet, offered again every %d ms: %s", j->id_s,
                        j->out_status, DB_RETRY_MS, detail);
        j->out_logged = true;
        job_wait(j, DB_RETRY_MS, on_store_again);
        return;
    }
    if (err)
        sb_log_warn("sender: message %s: outcome %s not stored (the sweeper will reconcile it): %s", j->id_s,
                    j->out_status, detail);
    job_done(j, j->out_again, j->out_retry_ms);
}

static void store_job_outcome(job_t *j)
{
    store_outcome(j->s, j->tenant, j->id, j->out_status, j->out_provider_id, j->out_code, j->out_message,
                  j->out_retry_ms, 0, job_outcome_stored, j);
}

static char *dup_or_null(const char *s)
{
    return s ? sb_strdup(s) : NULL;
}

/* Stores the outcome (status, provider id, error) and then tells the actor whether to send again. */
static void finish(job_t *j, const char *status, const char *provider_id, const char *code, const char *message,
                   bool again, uint64_t retry_ms)
{
    j->out_status = status;
    j->out_provider_id = dup_or_null(provider_id);
    j->out_code = dup_or_null(code);
    j->out_message = dup_or_null(message);
    j->out_again = again;
    j->out_retry_ms = retry_ms;
    j->out_since = uv_now(sb_shard_loop(j->s));
    store_job_outcome(j);
}

static uint64_t random_u64(void)
{
    uint64_t r = 0;
    if (sb_crypto_random(&r, sizeof r) < 0)
        r = uv_hrtime();
    return r;
}

static void answered(void *arg, const sb_http_client_res_t *res)
{
    job_t *j = arg;
    sb_outbound_result_t r;
    sb_outbound_classify(j->type, res, &r);
    sb_breaker_t *b = breaker_of(j);
    if (sb_breaker_report(b, r.endpoint_fault, uv_now(sb_shard_loop(j->s)))) {
        if (b->state == SB_BREAKER_OPEN)
            sb_log_warn("sender: %s endpoint failing (%s): circuit open for %llu ms",
                        j->type == SB_CH_META_WHATSAPP ? "Meta" : "Twilio", r.error_code,
                        (unsigned long long)b->cooldown_ms);
        else
            sb_log_info("sender: %s endpoint answers again: circuit closed",
                        j->type == SB_CH_META_WHATSAPP ? "Meta" : "Twilio");
    }
    switch (r.outcome) {
    case SB_OUTBOUND_SENT:
        finish(j, "sent", r.provider_id, NULL, NULL, false, 0);
        break;
    case SB_OUTBOUND_FAILED:
        finish(j, "failed", r.provider_id, r.error_code, r.error_message, false, 0);
        break;
    case SB_OUTBOUND_RETRY:
        if (sb_retry_may(j->attempt)) {
            uint64_t ms = sb_retry_backoff_ms(j->attempt, r.retry_after_s, random_u64());
            finish(j, "retrying", NULL, r.error_code, r.error_message, true, ms);
        } else {
            finish(j, "dead", NULL, r.error_code, r.error_message, false, 0);
        }
        break;
    default:
        finish(j, "unknown", NULL, r.error_code, r.error_message, false, 0);
        break;
    }
}

static void acquire(job_t *j);

/* The claimed message (row r of the claim's result): opens the credentials, builds the provider request, then
 * takes the counters and sends it. */
static void claimed(job_t *j, const PGresult *res, int r)
{
    j->attempt = (unsigned)strtoul(PQgetvalue(res, r, 7), NULL, 10);

    sb_buf_t plain, callback;
    sb_buf_init(&plain);
    sb_buf_init(&callback);
    json_t *creds = NULL, *media = json_loads(PQgetvalue(res, r, 2), 0, NULL), *tpl = NULL;
    const char *tpl_text = PQgetvalue(res, r, 3);
    char ad[48];
    snprintf(ad, sizeof ad, "tenant:%s", j->tenant_s);
    if (!cfg->has_master_key ||
        sb_crypto_open(cfg->master_key, sb_str_cstr(PQgetvalue(res, r, 6)), sb_str_cstr(ad), &plain) < 0 ||
        !(creds = json_loadb(plain.p, plain.len, 0, NULL))) {
        sb_log_error("sender: channel %lld: credentials cannot be opened (master_key changed?)", (long long)j->channel);
        sb_crypto_buf_wipe(&plain);
        json_decref(media);
        finish(j, "failed", NULL, "credentials_unavailable", "the channel's credentials cannot be opened", false, 0);
        return;
    }
    sb_str_t urls[SB_OUTBOUND_MAX_MEDIA];
    size_t nurls = 0;
    for (size_t i = 0; json_is_array(media) && i < json_array_size(media) && nurls < SB_OUTBOUND_MAX_MEDIA; i++) {
        json_t *u = json_object_get(json_array_get(media, i), "url");
        if (json_is_string(u))
            urls[nurls++] = sb_str(json_string_value(u), json_string_length(u));
    }
    if (*tpl_text)
        tpl = json_loads(tpl_text, 0, NULL);
    json_t *lang = json_object_get(tpl, "language"), *comps = json_object_get(tpl, "components");
    char *comps_text = comps ? json_dumps(comps, JSON_COMPACT) : NULL;
    if (cfg->public_url && (j->type == SB_CH_TWILIO_SMS || j->type == SB_CH_TWILIO_WHATSAPP))
        sb_buf_printf(&callback, "%s/webhooks/twilio/%lld/status", cfg->public_url, (long long)j->channel);

    const char *s;
    sb_outbound_msg_t m = {
        .channel = j->type,
        .address = sb_str_cstr(PQgetvalue(res, r, 5)),
        .account_sid = sb_str_cstr((s = json_string_value(json_object_get(creds, "account_sid"))) ? s : ""),
        .auth_token = sb_str_cstr((s = json_string_value(json_object_get(creds, "auth_token"))) ? s : ""),
        .access_token = sb_str_cstr((s = json_string_value(json_object_get(creds, "access_token"))) ? s : ""),
        .to = sb_str_cstr(PQgetvalue(res, r, 0)),
        .body = sb_str_cstr(PQgetvalue(res, r, 1)),
        .media = urls,
        .nmedia = nurls,
        .template_name = sb_str_cstr((s = json_string_value(json_object_get(tpl, "name"))) ? s : ""),
        .template_language = sb_str_cstr((s = json_is_string(lang) ? json_string_value(lang)
                                                                   : json_string_value(json_object_get(lang, "code")))
                                             ? s
                                             : (tpl ? "en_US" : "")),
        .template_components = sb_str_cstr(comps_text ? comps_text : ""),
        .status_callback = sb_str(callback.p ? callback.p : "", callback.len),
    };
    sb_outbound_endpoints_t ep = {.twilio_api_base = cfg->twilio_api_base, .meta_graph_base = cfg->meta_graph_base};
    sb_outbound_error_t berr;
    int rc = sb_outbound_build(&m, &ep, &j->req, &berr);
    json_decref(creds); /* jansson does not wipe; the plaintext buffer is wiped below */
    sb_crypto_buf_wipe(&plain);
    json_decref(media);
    json_decref(tpl);
    free(comps_text);
    sb_buf_cleanup(&callback);
    if (rc < 0) { /* the message cannot become a request for this channel: a permanent failure */
        finish(j, "failed", NULL, berr.code, berr.message, false, 0);
        return;
    }
    acquire(j);
}

/* ---- the counters: a token of the sender's rate and the in-flight slots, taken last, right before the request -- */

static void on_wait(uv_timer_t *t)
{
    job_t *j = t->data;
    unlist_waiting(j);
    acquire(j);
}

/* Calls cb(j's timer) ms from now, the job listed as waiting so that a stopping shard can end it. */
static void job_wait(job_t *j, uint64_t ms, uv_timer_cb cb)
{
    unsigned i = sb_shard_index(j->s);
    if (!j->waiting) {
        j->waiting = true;
        j->wnext = waiting_jobs[i];
        if (j->wnext)
            j->wnext->wprev = j;
        waiting_jobs[i] = j;
    }
    if (!j->wait) {
        j->wait = sb_malloc(sizeof *j->wait);
        uv_timer_init(sb_shard_loop(j->s), j->wait);
        j->wait->data = j;
    }
    uv_timer_start(j->wait, cb, ms, 0);
}

static void wait_then_acquire(job_t *j, uint64_t ms)
{
    if (stopping[sb_shard_index(j->s)]) { /* never sent: it stays claimed, and the sweeper will call it unknown */
        job_done(j, false, 0);
        return;
    }
    job_wait(j, ms, on_wait);
}

/* Granted: the request goes out now. Told to wait: the job waits (holding its claim), then asks again, so the
 * token is taken as close to the request as possible and the provider sees the pace the counters keep. */
static void granted(void *arg, int err, const sb_counters_grant_t *g)
{
    job_t *j = arg;
    if (err) { /* limits must hold: without Redis nothing is sent */
        sb_log_warn("sender: message %s waits: the counters are not reachable", j->id_s);
        wait_then_acquire(j, DB_RETRY_MS);
        return;
    }
    if (g->verdict != SB_COUNTERS_OK) {
        wait_then_acquire(j, (uint64_t)(g->wait_us + 999) / 1000);
        return;
    }
    j->lease = g->lease;
    j->leased = true;
    int rc = sb_http_client_request(clients[sb_shard_index(j->s)], &j->req.http, answered, j);
    sb_outbound_request_cleanup(&j->req);
    if (rc < 0)
        finish(j, "failed", NULL, "invalid_request", "the provider request could not be made", false, 0);
}

static void acquire(job_t *j)
{
    if (sb_counters_acquire(sb_shard_redis(j->s), j->tenant, j->channel, &j->lim, granted, j) < 0)
        granted(j, SB_EUNAVAIL, NULL);
}

/* ---- claims: a loop turn's messages of the shard, queued -> sending in one statement -------------------------- */

/* The database is away: the message is still queued; the actor tries again later. */
static void not_claimed(job_t *j, const char *detail)
{
    sb_log_warn("sender: message %s: cannot claim it: %s", j->id_s, detail);
    job_done(j, true, DB_RETRY_MS);
}

static void claim_row(const void *item, size_t k, const char **v, char (*num)[24])
{
    const job_t *j = item;
    (void)k;
    (void)num;
    v[0] = j->tenant_s;
    v[1] = j->id_s;
}

static void claims_done(void **jobs, size_t n, int err, const char *detail, const PGresult *res)
{
    if (err == SB_ECANCELED) { /* never claimed: they stay queued, and the next start's sweeper hands them over */
        for (size_t i = 0; i < n; i++)
            job_done(jobs[i], false, 0);
        return;
    }
    if (err) {
        for (size_t i = 0; i < n; i++)
            not_claimed(jobs[i], detail);
        return;
    }
    for (int r = 0; r < PQntuples(res); r++) {
        long long ord = strtoll(PQgetvalue(res, r, 8), NULL, 10);
        SB_BUG_ON(ord < 1 || (size_t)ord > n || !jobs[ord - 1]);
        job_t *j = jobs[ord - 1];
        jobs[ord - 1] = NULL;
        claimed(j, res, r);
    }
    for (size_t i = 0; i < n; i++) /* sent, failed or being sent elsewhere: nothing to do */
        if (jobs[i])
            job_done(jobs[i], false, 0);
}

/* A loop turn's claims of the shard, one statement: a batch of its connection. */
static const sb_pg_batch_def_t claims_def = {
    .what = "claims",
    .sql = claim_sql,
    .ncols = 2,
    .max = 512,
    .row = claim_row,
    .done = claims_done,
};

static void claim(job_t *j, const chinfo_t *c)
{
    j->type = c->type;
    j->lim = c->lim;
    uint64_t wait = sb_breaker_allow(breaker_of(j), uv_now(sb_shard_loop(j->s)));
    if (wait) { /* the provider is down: no attempt is spent, nothing is claimed; the actor waits */
        job_done(j, true, wait);
        return;
    }
    if (sb_pg_batch_add(sb_shard_pg(j->s), &claims_def, j) < 0)
        not_claimed(j, "not connected");
}

static void channel_loaded(void *arg, int err, const char *detail, const PGresult *res)
{
    job_t *j = arg;
    if (err || PQntuples(res) != 1) {
        if (err)
            sb_log_warn("sender: channel %s: cannot load it: %s", j->channel_s, detail);
        job_done(j, err != 0, DB_RETRY_MS); /* a channel that is gone: its messages stay queued */
        return;
    }
    chinfo_t *c = cache_slot(j->s, j->channel);
    c->channel = j->channel;
    limits_of(c, sb_channel_type_parse(PQgetvalue(res, 0, 0)), PQgetvalue(res, 0, 1));
    claim(j, c);
}

/* ---- the channel's type, for the accept path's checks ---------------------------------------------------------- */

typedef struct type_q {
    sb_shard_t *s;
    int64_t channel;
    sb_sender_type_fn cb;
    void *arg;
} type_q_t;

static void type_loaded(void *arg, int err, const char *detail, const PGresult *res)
{
    type_q_t *q = arg;
    (void)detail;
    if (err) {
        q->cb(q->arg, -1);
    } else if (PQntuples(res) != 1) {
        q->cb(q->arg, SB_CH_NONE);
    } else {
        chinfo_t *c = cache_slot(q->s, q->channel);
        c->channel = q->channel;
        limits_of(c, sb_channel_type_parse(PQgetvalue(res, 0, 0)), PQgetvalue(res, 0, 1));
        q->cb(q->arg, (int)c->type);
    }
    free(q);
}

void sb_sender_channel_type(sb_shard_t *s, int64_t tenant, int64_t channel, sb_sender_type_fn cb, void *arg)
{
    chinfo_t *c = cache_slot(s, channel);
    if (c->channel == channel) {
        cb(arg, (int)c->type);
        return;
    }
    type_q_t *q = sb_malloc(sizeof *q);
    *q = (type_q_t){.s = s, .channel = channel, .cb = cb, .arg = arg};
    char t[24], ch[24];
    snprintf(t, sizeof t, "%lld", (long long)tenant);
    snprintf(ch, sizeof ch, "%lld", (long long)channel);
    const char *p[2] = {t, ch};
    if (sb_pg_query(sb_shard_pg(s), "SELECT type, settings::text FROM channels WHERE tenant_id = $1 AND id = $2", 2, p,
                    SB_PG_PREPARED, type_loaded, q) < 0)
        type_loaded(q, SB_EUNAVAIL, "not connected", NULL);
}

int sb_sender_send(void *ctx, int64_t tenant, int64_t channel, int64_t message_id, unsigned attempt,
                   sb_session_sent_fn sent, void *arg)
{
    (void)ctx;
    (void)attempt; /* the database counts attempts: it survives restarts */
    sb_shard_t *s = sb_shard_self();
    if (!s || !clients[sb_shard_index(s)] || draining[sb_shard_index(s)])
        return SB_EUNAVAIL; /* stays queued: the next start's sweeper hands it over */
    job_t *j = sb_calloc(1, sizeof *j);
    inflight[sb_shard_index(s)]++;
    j->s = s;
    j->tenant = tenant;
    j->channel = channel;
    j->id = message_id;
    j->sent = sent;
    j->arg = arg;
    snprintf(j->tenant_s, sizeof j->tenant_s, "%lld", (long long)tenant);
    snprintf(j->id_s, sizeof j->id_s, "%lld", (long long)message_id);
    snprintf(j->channel_s, sizeof j->channel_s, "%lld", (long long)channel);
    chinfo_t *c = cache_slot(s, channel);
    if (c->channel == channel) {
        claim(j, c);
        return 0;
    }
    const char *p[2] = {j->tenant_s, j->channel_s};
    int rc = sb_pg_query(sb_shard_pg(s), "SELECT type, settings::text FROM channels WHERE tenant_id = $1 AND id = $2",
                         2, p, SB_PG_PREPARED, channel_loaded, j);
    if (rc < 0) {
        inflight[sb_shard_index(s)]--;
        free(j);
    }
    return rc;
}

/* ---- the outbox sweeper --------------------------------------------------------------------------------------- */

#define STUCK_MS 120000 /* no request lives this long (the client's timeout is 30 s): whoever sent it is gone */

typedef struct stuck {
    int64_t tenant, id;
} stuck_t;

static void unknown_stored(void *arg, int err, const char *detail)
{
    stuck_t *k = arg;
    if (err)
        sb_log_debug("sender: message %lld stays sending for now: %s", (long long)k->id, detail);
    free(k);
}

/* On the tenant's shard, like every status change of its messages (the tenant row's cursor is only written there). */
static void unknown_on_owner(sb_shard_t *s, void *arg)
{
    stuck_t *k = arg;
    store_outcome(s, k->tenant, k->id, "unknown", NULL, "interrupted",
                  "the gateway stopped while the provider was being asked", 0, STUCK_MS, unknown_stored, k);
}

static void swept_stuck(void *arg, int err, const char *detail, const PGresult *res)
{
    (void)arg;
    if (err) {
        sb_log_debug("sender: sweep skipped: %s", detail);
        return;
    }
    if (PQntuples(res))
        sb_log_warn("sender: %d message(s) left in sending by a crash become unknown", PQntuples(res));
    for (int i = 0; i < PQntuples(res); i++) {
        stuck_t *k = sb_malloc(sizeof *k);
        k->tenant = strtoll(PQgetvalue(res, i, 0), NULL, 10);
        k->id = strtoll(PQgetvalue(res, i, 1), NULL, 10);
        if (sb_shard_exec(sb_inbound_owner(k->tenant), unknown_on_owner, k) < 0)
            free(k); /* stopping: the next sweep */
    }
}

static void swept_queued(void *arg, int err, const char *detail, const PGresult *res)
{
    (void)arg;
    if (err) {
        sb_log_debug("sender: sweep skipped: %s", detail);
        return;
    }
    for (int i = 0; i < PQntuples(res); i++)
        sb_inbound_send(strtoll(PQgetvalue(res, i, 0), NULL, 10), strtoll(PQgetvalue(res, i, 1), NULL, 10),
                        strtoll(PQgetvalue(res, i, 2), NULL, 10));
}

static void on_sweep(uv_timer_t *t)
{
    sb_shard_t *s = t->data;
    if (!sb_pg_connected(sb_shard_pg(s)))
        return;
    /* Messages left sending: each becomes unknown on its tenant's shard, with its live event (never a blind resend). */
    sb_pg_query(sb_shard_pg(s),
                "SELECT tenant_id, id FROM messages WHERE direction = 'out' AND status = 'sending'"
                " AND updated_at < now() - interval '" SB_STRINGIFY(STUCK_MS) " milliseconds' ORDER BY id LIMIT 1000",
                0, NULL, 0, swept_stuck, NULL);
    sb_pg_query(sb_shard_pg(s),
                "SELECT tenant_id, channel_id, id FROM messages WHERE direction = 'out'"
                " AND status IN ('queued', 'retrying') AND coalesce(next_attempt_at, updated_at) < now() - interval"
                " '5 seconds' ORDER BY id LIMIT 1000",
                0, NULL, 0, swept_queued, NULL);
}

/* ---- per shard ------------------------------------------------------------------------------------------------ */

void sb_sender_shard_start(sb_shard_t *s)
{
    sb_http_client_opts_t o = {.max_host_connections = 32, .timeout_ms = 30000};
    sb_breaker_init(&breakers[sb_shard_index(s)][0], BREAKER_FAULTS, BREAKER_MIN_MS, BREAKER_MAX_MS);
    sb_breaker_init(&breakers[sb_shard_index(s)][1], BREAKER_FAULTS, BREAKER_MIN_MS, BREAKER_MAX_MS);
    if (sb_http_client_create(sb_shard_loop(s), &o, &clients[sb_shard_index(s)]) < 0)
        sb_log_error("sender: no HTTP client on this shard: outbound messages wait");
    if (sb_shard_index(s) == 0) {
        sweeper = sb_malloc(sizeof *sweeper);
        uv_timer_init(sb_shard_loop(s), sweeper);
        sweeper->data = s;
        uv_timer_start(sweeper, on_sweep, SWEEP_FIRST_MS, SWEEP_EVERY_MS);
    }
}

sb_http_client_t *sb_sender_client(sb_shard_t *s)
{
    return clients[sb_shard_index(s)];
}

void sb_sender_shard_drain(sb_shard_t *s)
{
    draining[sb_shard_index(s)] = true;
}

unsigned sb_sender_inflight(sb_shard_t *s)
{
    return inflight[sb_shard_index(s)];
}

static void sweeper_closed(uv_handle_t *h)
{
    free(h);
}

void sb_sender_shard_stop(sb_shard_t *s)
{
    unsigned i = sb_shard_index(s);
    stopping[i] = true;
    while (waiting_jobs[i]) /* after the drain: what still waits for a token ends here (job_done unlists it) */
        job_done(waiting_jobs[i], false, 0);
    sb_pg_batch_cancel(sb_shard_pg(s), &claims_def);
    sb_http_client_destroy(clients[i]); /* requests in flight end as unknown, or stay sending for the sweeper */
    clients[i] = NULL;
    /* what those ended in, while the connection is still there (or each gets its error) */
    sb_pg_batch_flush(sb_shard_pg(s), &outcomes_def);
    sb_free(caches[i]);
    if (i == 0 && sweeper) {
        uv_close((uv_handle_t *)sweeper, sweeper_closed);
        sweeper = NULL;
    }
}
