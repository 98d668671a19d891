/* The call actor; see call.h for what it owns and promises.
 *
 * State: the call as stored (its row's fields), where it stands (phase), the request being worked and those
 * waiting, whether it holds its slot, the TwiML it answered (a retried webhook gets it again) and its timers. Every
 * port's answer comes back as a message of the actor's own, tagged with its incarnation, so an answer to an
 * incarnation before a restart is recognised and ignored. */
#include "actors/call.h"

#include "actors/tenant.h"
#include "gateway/log.h"
#include "gateway/metrics.h"
#include "proto/err.h"
#include "proto/htable.h"
#include "proto/list.h"
#include "proto/mem.h"
#include "proto/twiml.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FETCH_TIMEOUT_MS 2000 /* a twiml_url has this long to answer */
#define ID_WAIT_MS 10         /* the store's next id block is on its way: ask again after this ... */
#define ID_TRIES 300          /* ... this many times (3 s) */

static const char default_at_capacity[] = "All our lines are busy. Please call again later.";
static const char default_fallback[] = "We cannot take your call right now. Please call again later.";

enum { C_GRANT = SB_CALL_INTERNAL, C_FOUND, C_FETCHED, C_PROVIDER, C_RENEWED, C_RETAKEN };
enum { TIMER_RENEW = 1, TIMER_MAX, TIMER_DIAL, TIMER_ID };

typedef enum phase {
    P_NEW,     /* nothing known yet */
    P_LOADING, /* asking the store */
    P_OPENING, /* admitted or refused, being stored, the answer not given yet */
    P_LIVE,    /* holds its slot (placed calls: dialled or waiting for their dial time) */
    P_ENDED    /* over: the row says how */
} phase_t;

typedef struct pending {
    sb_list_t link;
    sb_call_req_t *req;
} pending_t;

typedef struct call {
    sb_actor_t *a;
    sb_rt_t *rt;
    sb_actor_id_t self;
    const sb_ports_t *ports;
    uint64_t epoch;
    phase_t phase;
    sb_call_req_t *cur; /* the request being worked */
    sb_list_t waiting;  /* pending_t, in arrival order */
    bool slot;          /* holds its lease */
    bool writing;
    bool dial_now; /* placing: due at once when the row is stored */
    bool granted;  /* the admission's verdict, while an id is found */
    int64_t dial_in_us;
    unsigned id_tries;
    uint64_t token;
    int64_t last_seq; /* the newest status callback applied */
    uint64_t renew_timer, max_timer;
    const char *ending; /* why we end it ourselves: "hangup", "max_duration", "app_unavailable" */
    /* the row */
    int64_t id, tenant, channel, duration_s;
    char *call_key, *call_sid, *direction, *from, *to, *status, *voice_mode, *rejected_cap, *ended_by, *end_reason;
    char *idempotency_key;
    /* what a later turn needs of the request that opened it */
    sb_voice_settings_t v;
    char *channel_address, *credentials_sealed, *stream_url, *status_url;
    sb_buf_t twiml; /* the answer given to the voice webhook */
} call_t;

static _Atomic uint64_t incarnations;

/* ---- requests ------------------------------------------------------------------------------------------------- */

sb_call_req_t *sb_call_req_new(sb_call_op_t op)
{
    sb_call_req_t *r = sb_calloc(1, sizeof *r);
    r->op = op;
    r->duration = r->sequence = -1;
    sb_buf_init(&r->body);
    return r;
}

void sb_voice_settings_cleanup(sb_voice_settings_t *v)
{
    free(v->mode);
    free(v->forward_to);
    free(v->twiml_url);
    free(v->fallback_twiml);
    free(v->at_capacity_twiml);
    free(v->media_url);
    free(v->media_fallback);
    memset(v, 0, sizeof *v);
}

void sb_call_req_free(sb_call_req_t *r)
{
    if (!r)
        return;
    free(r->call_key);
    free(r->call_sid);
    free(r->from);
    free(r->to);
    free(r->form);
    free(r->stream_url);
    free(r->status_url);
    free(r->idempotency_key);
    free(r->channel_address);
    free(r->credentials_sealed);
    sb_free_secret(r->secret);
    sb_voice_settings_cleanup(&r->v);
    sb_buf_cleanup(&r->body);
    free(r);
}

static void answer(sb_call_req_t *r, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void answer(sb_call_req_t *r, int status, const char *code, const char *fmt, ...)
{
    r->http_status = status;
    r->code = code;
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->message, sizeof r->message, fmt, ap);
        va_end(ap);
    }
    r->answer(r);
}

static void drop_req(sb_msg_t *m)
{
    sb_call_req_t *r;
    memcpy(&r, m->data, sizeof r);
    answer(r, 503, "unavailable", "the call could not be reached now; retry");
}

uint64_t sb_call_key_hash(const char *call_key)
{
    return sb_hash_bytes(call_key, strlen(call_key));
}

void sb_call_request(sb_rt_t *rt, unsigned owner, sb_call_req_t *req)
{
    sb_msg_t *m = sb_msg_new(SB_CALL_REQUEST, sizeof req);
    memcpy(m->data, &req, sizeof req);
    m->drop = drop_req;
    sb_rt_post_key(rt, owner, &sb_call_kind, sb_call_key_hash(req->call_key), m); /* refused: dropped, answered */
}

void sb_call_stream(sb_rt_t *rt, unsigned owner, const char *call_key, const sb_call_stream_t *news)
{
    sb_rt_send_key(rt, owner, &sb_call_kind, sb_call_key_hash(call_key), SB_CALL_STREAM, news, sizeof *news);
}

/* ---- completions ---------------------------------------------------------------------------------------------- */

typedef struct comp {
    sb_rt_t *rt;
    sb_actor_id_t id;
    uint64_t epoch;
} comp_t;

static comp_t *comp_new(call_t *c)
{
    comp_t *k = sb_malloc(sizeof *k);
    *k = (comp_t){c->rt, c->self, c->epoch};
    return k;
}

/* A completion's payload: the incarnation, an error, two numbers and a string (a call sid, a body). */
typedef struct done {
    uint64_t epoch;
    int err;
    int64_t a, b;
    uint32_t len;
    char text[];
} done_t;

static void post(comp_t *k, uint32_t type, int err, int64_t a, int64_t b, sb_str_t text)
{
    sb_msg_t *m = sb_msg_new(type, sizeof(done_t) + text.len + 1);
    done_t *d = (done_t *)m->data;
    d->epoch = k->epoch;
    d->err = err;
    d->a = a;
    d->b = b;
    d->len = (uint32_t)text.len;
    if (text.len)
        memcpy(d->text, text.p, text.len);
    d->text[text.len] = 0;
    sb_rt_post(k->rt, 0, k->id, m);
    free(k);
}

static const done_t *opened(const call_t *c, const sb_msg_t *m)
{
    if (m->len < sizeof(done_t))
        return NULL;
    const done_t *d = (const done_t *)m->data;
    return d->epoch == c->epoch ? d : NULL;
}

/* ---- the row, its events -------------------------------------------------------------------------------------- */

static void set(char **field, const char *v)
{
    if (*field == v)
        return;
    free(*field);
    *field = v ? sb_strdup(v) : NULL;
}

/* ,"name":"v" (or null) */
static void json_field(sb_buf_t *b, const char *name, const char *v)
{
    sb_buf_printf(b, ",\"%s\":", name);
    sb_buf_json_cstr(b, v);
}

/* The event's data: every event names the call; started and rejected say who called whom. */
static void event_data(const call_t *c, const char *type, sb_buf_t *b)
{
    sb_buf_printf(b, "{\"id\":%" PRId64 ",\"channel_id\":%" PRId64, c->id, c->channel);
    json_field(b, "call_sid", c->call_sid);
    json_field(b, "direction", c->direction);
    json_field(b, "status", c->status);
    if (!strcmp(type, "call.started") || !strcmp(type, "call.rejected")) {
        json_field(b, "from", c->from);
        json_field(b, "to", c->to);
        json_field(b, "voice_mode", c->voice_mode);
    }
    if (!strcmp(type, "call.rejected"))
        json_field(b, "cap", c->rejected_cap);
    if (!strcmp(type, "call.ended")) {
        if (c->duration_s >= 0)
            sb_buf_printf(b, ",\"duration_s\":%" PRId64, c->duration_s);
        else
            sb_buf_puts(b, ",\"duration_s\":null");
        json_field(b, "ended_by", c->ended_by);
        json_field(b, "reason", c->end_reason);
    }
    sb_buf_puts(b, "}");
}

/* Writes the row, and the event type unless NULL, through the tenant actor; SB_CALL_WRITTEN answers. */
static int write_row(call_t *c, const char *type)
{
    sb_tenant_work_t *w = sb_tenant_work_new(c->self, SB_CALL_WRITTEN, ++c->token);
    sb_call_row_t *k = sb_tenant_work_call(w);
    *k = (sb_call_row_t){.id = c->id,
                         .tenant = c->tenant,
                         .channel = c->channel,
                         .call_key = sb_tenant_work_str(w, c->call_key),
                         .call_sid = sb_tenant_work_str(w, c->call_sid),
                         .direction = sb_tenant_work_str(w, c->direction),
                         .from = sb_tenant_work_str(w, c->from),
                         .to = sb_tenant_work_str(w, c->to),
                         .status = sb_tenant_work_str(w, c->status),
                         .voice_mode = sb_tenant_work_str(w, c->voice_mode),
                         .rejected_cap = sb_tenant_work_str(w, c->rejected_cap),
                         .ended_by = sb_tenant_work_str(w, c->ended_by),
                         .end_reason = sb_tenant_work_str(w, c->end_reason),
                         .idempotency_key = sb_tenant_work_str(w, c->idempotency_key),
                         .duration_s = c->duration_s};
    if (type) {
        sb_buf_t data;
        sb_buf_init(&data);
        event_data(c, type, &data);
        sb_tenant_work_event(w, type, sb_str(data.p, data.len));
        sb_buf_cleanup(&data);
    }
    c->writing = true;
    int rc = sb_tenant_write(c->rt, c->tenant, w);
    if (rc < 0)
        c->writing = false;
    return rc;
}

/* ---- the slot ------------------------------------------------------------------------------------------------- */

static void live_gauge(call_t *c, int64_t d)
{
    sb_gauge_add(&sb_metrics_shard(sb_rt_shard(c->rt))->calls_live, d);
}

static void release(call_t *c)
{
    if (!c->slot)
        return;
    c->slot = false;
    live_gauge(c, -1);
    c->ports->counters.call_release(c->ports->counters.ctx, c->tenant, c->channel, c->call_key);
    if (c->renew_timer)
        sb_actor_timer_stop(c->a, c->renew_timer);
    if (c->max_timer)
        sb_actor_timer_stop(c->a, c->max_timer);
    c->renew_timer = c->max_timer = 0;
}

static void hold(call_t *c)
{
    const sb_domain_config_t *cfg = c->ports->config;
    if (!c->slot)
        live_gauge(c, 1);
    c->slot = true;
    uint64_t every = (uint64_t)cfg->call_lease_ttl_ms / 3;
    c->renew_timer = sb_actor_timer_start(c->a, every ? every : 1, every ? every : 1, TIMER_RENEW);
    if (cfg->max_call_duration_ms > 0)
        c->max_timer = sb_actor_timer_start(c->a, (uint64_t)cfg->max_call_duration_ms, 0, TIMER_MAX);
}

static void granted_cb(void *arg, int err, const sb_call_grant_t *g)
{
    sb_str_t cap = err || g->admitted ? sb_str("", 0) : sb_str_cstr(g->full);
    post(arg, C_GRANT, err, err ? 0 : g->admitted, err ? 0 : (int64_t)g->dial_in_us, cap);
}

static void renewed_cb(void *arg, int err)
{
    post(arg, C_RENEWED, err, 0, 0, sb_str("", 0));
}

static void retaken_cb(void *arg, int err, const sb_call_grant_t *g)
{
    sb_str_t cap = err || g->admitted ? sb_str("", 0) : sb_str_cstr(g->full);
    post(arg, C_RETAKEN, err, err ? 0 : g->admitted, 0, cap);
}

/* The lease ran out under a live call (Redis lost it in a restart, or this node stalled past it): the call is
 * admitted again under its key, so it counts against the caps while it lasts. */
static void retake(call_t *c)
{
    sb_log_warn("call %" PRId64 ": its slot's lease had run out (Redis restarted, or the node stalled): taken again",
                c->id);
    sb_call_limits_t lim = {.tenant_max = c->v.tenant_max, .channel_max = c->v.channel_max};
    comp_t *k = comp_new(c);
    if (c->ports->counters.call_admit(c->ports->counters.ctx, c->tenant, c->channel, c->call_key, &lim, retaken_cb,
                                      k) < 0)
        free(k); /* Redis away: the next renewal finds the lease gone again and tries again */
}

static void renew(call_t *c)
{
    comp_t *k = comp_new(c);
    if (c->ports->counters.call_renew(c->ports->counters.ctx, c->tenant, c->channel, c->call_key, renewed_cb, k) < 0)
        free(k); /* Redis away: the next tick tries again, well within the lease */
}

/* ---- the provider --------------------------------------------------------------------------------------------- */

static void provider_cb(void *arg, const sb_call_outcome_t *o)
{
    sb_buf_t t;
    sb_buf_init(&t);
    if (o->ok)
        sb_buf_puts(&t, o->call_sid ? o->call_sid : "");
    else
        sb_buf_printf(&t, "%s: %s", o->error_code ? o->error_code : "", o->error_message ? o->error_message : "");
    post(arg, C_PROVIDER, o->ok ? 0 : SB_EUNAVAIL, 0, 0, sb_str(t.p, t.len));
    sb_buf_cleanup(&t);
}

/* Asks the provider to place the call (placing), to hang it up, or to run twiml instead. */
static int provider_call(call_t *c, bool placing, bool hangup, const char *twiml)
{
    sb_channel_info_t ch = {.tenant = c->tenant,
                            .channel = c->channel,
                            .type = SB_CH_TWILIO_VOICE,
                            .address = c->channel_address,
                            .credentials_sealed = c->credentials_sealed};
    sb_call_request_t r = {.channel = &ch,
                           .call_sid = placing ? NULL : c->call_sid,
                           .to = c->to,
                           .from = c->channel_address,
                           .twiml = twiml,
                           .status_callback = placing ? c->status_url : NULL,
                           .hangup = hangup};
    if (!c->credentials_sealed || !c->channel_address || (!placing && !c->call_sid))
        return SB_EINVAL;
    comp_t *k = comp_new(c);
    int rc = c->ports->provider.call(c->ports->provider.ctx, &r, provider_cb, k);
    if (rc < 0)
        free(k);
    return rc;
}

/* ---- TwiML ---------------------------------------------------------------------------------------------------- */

/* The TwiML of an admitted call by its voice mode (twiml_url is fetched: see fetch()). */
static void connect_twiml(call_t *c, sb_buf_t *out)
{
    const sb_voice_settings_t *v = &c->v;
    if (v->mode && !strcmp(v->mode, "forward") && v->forward_to) {
        sb_twiml_dial(out, v->forward_to);
        return;
    }
    char id[24];
    snprintf(id, sizeof id, "%" PRId64, c->id);
    const sb_twiml_param_t params[] = {{"call_id", id}, {"call_key", c->call_key}};
    sb_twiml_stream(out, c->stream_url ? c->stream_url : "", params, sizeof params / sizeof *params);
}

static void fallback_twiml(call_t *c, sb_buf_t *out)
{
    if (c->v.fallback_twiml)
        sb_buf_puts(out, c->v.fallback_twiml);
    else
        sb_twiml_say_hangup(out, default_fallback);
}

static void fetched_cb(void *arg, int status, sb_str_t body)
{
    post(arg, C_FETCHED, 0, status, 0, body);
}

static bool fetch(call_t *c)
{
    comp_t *k = comp_new(c);
    sb_str_t form = c->cur && c->cur->form ? sb_str_cstr(c->cur->form) : sb_str("", 0);
    if (c->ports->hooks.fetch(c->ports->hooks.ctx, c->v.twiml_url, c->cur ? c->cur->secret : NULL, form,
                              FETCH_TIMEOUT_MS, fetched_cb, k) < 0) {
        free(k);
        return false;
    }
    return true;
}

/* ---- working the requests ------------------------------------------------------------------------------------- */

static void next(call_t *c);

static void finish(call_t *c)
{
    c->cur = NULL;
    next(c);
}

static void answer_twiml(call_t *c)
{
    sb_call_req_t *r = c->cur;
    sb_buf_append(&r->body, c->twiml.p, c->twiml.len);
    answer(r, 200, NULL, NULL);
    finish(c);
}

static void answer_call(call_t *c, int status)
{
    sb_call_req_t *r = c->cur;
    r->id = c->id;
    r->call_status = "queued";
    answer(r, status, NULL, NULL);
    finish(c);
}

/* Takes what the request that opens the call knows. */
static void adopt(call_t *c, sb_call_req_t *r, const char *direction)
{
    c->tenant = r->tenant;
    c->channel = r->channel;
    set(&c->call_key, r->call_key);
    set(&c->call_sid, r->call_sid);
    set(&c->direction, direction);
    set(&c->from, r->from);
    set(&c->to, r->to);
    set(&c->idempotency_key, r->idempotency_key);
    set(&c->channel_address, r->channel_address);
    set(&c->credentials_sealed, r->credentials_sealed);
    set(&c->stream_url, r->stream_url);
    set(&c->status_url, r->status_url);
    sb_voice_settings_cleanup(&c->v);
    c->v = r->v;
    memset(&r->v, 0, sizeof r->v);
    set(&c->voice_mode, c->v.mode ? c->v.mode : "stream");
}

static void admit(call_t *c, bool placing)
{
    sb_call_limits_t lim = {.tenant_max = c->v.tenant_max, .channel_max = c->v.channel_max};
    if (placing) {
        double cps = c->v.calls_per_second > 0 ? c->v.calls_per_second : 1;
        lim.interval_us = (int64_t)(1e6 / cps);
    }
    comp_t *k = comp_new(c);
    if (c->ports->counters.call_admit(c->ports->counters.ctx, c->tenant, c->channel, c->call_key, &lim, granted_cb,
                                      k) < 0) {
        free(k);
        c->phase = P_NEW;
        answer(c->cur, 503, "unavailable", "the call counters (Redis) are not reachable; retry");
        c->cur = NULL;
        sb_actor_stop(c->a);
    }
}

/* The call ends: its row and call.ended, its slot given back. */
static void end(call_t *c, const char *status, const char *ended_by, const char *reason)
{
    set(&c->status, status);
    if (!c->ended_by)
        set(&c->ended_by, ended_by);
    if (!c->end_reason)
        set(&c->end_reason, reason);
    release(c);
    c->phase = P_ENDED;
    if (write_row(c, "call.ended") < 0)
        sb_log_warn("call %" PRId64 ": its end could not be stored now", c->id);
}

static void found_cb(void *arg, int err, bool found, const sb_call_row_t *row);

static void start_incoming(call_t *c)
{
    sb_call_req_t *r = c->cur;
    adopt(c, r, "in");
    set(&c->status, "ringing");
    c->phase = P_OPENING;
    admit(c, false);
}

static void start_place(call_t *c)
{
    sb_call_req_t *r = c->cur;
    adopt(c, r, "out");
    set(&c->status, "queued");
    if (!r->idempotency_key) {
        c->phase = P_OPENING;
        admit(c, true);
        return;
    }
    c->phase = P_LOADING; /* the key may name a call placed before */
    comp_t *k = comp_new(c);
    if (c->ports->store.find_call(c->ports->store.ctx, r->tenant, 0, NULL, r->idempotency_key, found_cb, k) < 0) {
        free(k);
        c->phase = P_NEW;
        answer(r, 503, "unavailable", "the database is not reachable; retry");
        c->cur = NULL;
        sb_actor_stop(c->a);
    }
}

static void found_cb(void *arg, int err, bool found, const sb_call_row_t *row)
{
    sb_buf_t t;
    sb_buf_init(&t);
    if (found) { /* the fields that restore a call, each NUL-terminated, in the order on_found reads them */
        const char *f[] = {row->call_key, row->call_sid,   row->direction, row->from,      row->to,
                           row->status,   row->voice_mode, row->ended_by,  row->end_reason};
        for (size_t i = 0; i < sizeof f / sizeof *f; i++)
            sb_buf_append(&t, f[i] ? f[i] : "", strlen(f[i] ? f[i] : "") + 1);
        sb_buf_printf(&t, "%" PRId64, row->duration_s);
    }
    post(arg, C_FOUND, err, found ? row->id : 0, found ? row->tenant : 0, sb_str(t.p, t.len));
    sb_buf_cleanup(&t);
}

static bool is_final(const char *status)
{
    static const char *const fin[] = {"completed", "busy", "no-answer", "failed", "canceled", "rejected"};
    for (size_t i = 0; status && i < sizeof fin / sizeof *fin; i++)
        if (!strcmp(status, fin[i]))
            return true;
    return false;
}

/* A status callback for a live or ended call. */
static void apply_status(call_t *c)
{
    sb_call_req_t *r = c->cur;
    if (c->phase == P_ENDED || (r->sequence >= 0 && r->sequence <= c->last_seq)) {
        answer(r, 200, NULL, NULL); /* old news, or news of a call already over: nothing changes */
        finish(c);
        return;
    }
    if (r->sequence >= 0)
        c->last_seq = r->sequence;
    if (r->call_sid && !c->call_sid)
        set(&c->call_sid, r->call_sid);
    if (r->duration >= 0)
        c->duration_s = r->duration;
    if (r->final) {
        const char *by = c->ending                         ? "switchboard"
                         : !strcmp(r->status, "completed") ? (!strcmp(c->direction, "in") ? "caller" : "callee")
                                                           : "provider";
        end(c, r->status, by, c->ending ? c->ending : r->status);
    } else {
        set(&c->status, r->status);
        if (write_row(c, "call.updated") < 0) {
            answer(r, 503, "unavailable", "the call's status could not be stored now; retry");
            finish(c);
        }
        return;
    }
    if (!c->writing) {
        answer(r, 503, "unavailable", "the call's status could not be stored now; retry");
        finish(c);
    }
}

static void start_status(call_t *c)
{
    if (c->phase != P_NEW) {
        apply_status(c);
        return;
    }
    sb_call_req_t *r = c->cur;
    c->phase = P_LOADING;
    c->tenant = r->tenant;
    c->channel = r->channel;
    set(&c->call_key, r->call_key);
    comp_t *k = comp_new(c);
    if (c->ports->store.find_call(c->ports->store.ctx, r->tenant, r->channel, r->call_key, NULL, found_cb, k) < 0) {
        free(k);
        c->phase = P_NEW;
        answer(r, 503, "unavailable", "the database is not reachable; retry");
        finish(c);
    }
}

static void start_hangup(call_t *c)
{
    sb_call_req_t *r = c->cur;
    if (c->phase == P_NEW) { /* this actor never knew the call: the store may */
        start_status(c);
        return;
    }
    if (c->phase != P_LIVE || !c->call_sid) {
        answer(r, 409, "not_live", "the call is not live");
        finish(c);
        return;
    }
    if (!c->credentials_sealed) {
        set(&c->credentials_sealed, r->credentials_sealed);
        set(&c->channel_address, r->channel_address);
    }
    c->ending = "hangup";
    if (provider_call(c, false, true, NULL) < 0) {
        answer(r, 503, "unavailable", "the provider cannot be reached now; retry");
        finish(c);
        return;
    }
    r->id = c->id;
    answer(r, 202, NULL, NULL);
    finish(c);
}

static void next(call_t *c)
{
    while (!c->cur && !c->writing && !sb_list_empty(&c->waiting)) {
        pending_t *p = sb_container_of(sb_list_pop_front(&c->waiting), pending_t, link);
        c->cur = p->req;
        free(p);
        switch (c->cur->op) {
        case SB_CALL_OP_INCOMING:
            if (c->phase == P_NEW)
                start_incoming(c);
            else if (c->twiml.len)
                answer_twiml(c); /* a retried webhook: the same answer */
            else {
                answer(c->cur, 503, "unavailable", "the call is being set up; retry");
                finish(c);
            }
            break;
        case SB_CALL_OP_PLACE: /* keys are random: a second placing under one is a bug of the front door */
            if (c->phase == P_NEW)
                start_place(c);
            else
                answer_call(c, 200);
            break;
        case SB_CALL_OP_STATUS:
            start_status(c);
            break;
        case SB_CALL_OP_HANGUP:
            start_hangup(c);
            break;
        }
    }
}

/* ---- handlers ------------------------------------------------------------------------------------------------- */

static int on_request(sb_actor_t *a, void *state, sb_msg_t *m)
{
    call_t *c = state;
    (void)a;
    sb_call_req_t *r;
    memcpy(&r, m->data, sizeof r);
    pending_t *p = sb_malloc(sizeof *p);
    p->req = r;
    sb_list_push_back(&c->waiting, &p->link);
    next(c);
    return 0;
}

static void dial(call_t *c)
{
    sb_buf_t t;
    sb_buf_init(&t);
    connect_twiml(c, &t);
    if (provider_call(c, true, false, sb_buf_cstr(&t)) < 0)
        end(c, "failed", "switchboard", "provider_unavailable");
    sb_buf_cleanup(&t);
}

/* The grant's outcome is kept while an id is found for the call (the store's next block may be on its way). */
static void opened_with_id(call_t *c);

static int on_grant(call_t *c, const done_t *d)
{
    sb_call_req_t *r = c->cur;
    if (d->err) {
        answer(r, 503, "unavailable", "the call counters (Redis) are not reachable; retry");
        c->cur = NULL;
        sb_actor_stop(c->a); /* nothing was taken: the next attempt starts afresh */
        return 0;
    }
    c->granted = d->a;
    c->dial_in_us = d->b;
    if (!d->a)
        set(&c->rejected_cap, d->text);
    c->id_tries = 0;
    opened_with_id(c);
    return 0;
}

static void opened_with_id(call_t *c)
{
    sb_call_req_t *r = c->cur;
    bool placing = r->op == SB_CALL_OP_PLACE;
    if (!c->id)
        c->id = c->ports->store.message_id(c->ports->store.ctx);
    if (!c->id && ++c->id_tries < ID_TRIES) {
        sb_actor_timer_start(c->a, ID_WAIT_MS, 0, TIMER_ID);
        return;
    }
    if (!c->id) { /* no id at hand: the slot (if taken) waits out its lease */
        if (c->granted)
            c->ports->counters.call_release(c->ports->counters.ctx, c->tenant, c->channel, c->call_key);
        answer(r, 503, "unavailable", "the database is not reachable; retry");
        c->cur = NULL;
        sb_actor_stop(c->a);
        return;
    }
    sb_metrics_t *mx = sb_metrics_shard(sb_rt_shard(c->rt));
    sb_metric_add(c->granted ? &mx->calls_admitted : &mx->calls_rejected, 1);
    if (!c->granted) {
        if (placing) {
            answer(r, 429, "at_capacity", "the %s's concurrent calls are at their cap", c->rejected_cap);
            c->cur = NULL;
            sb_actor_stop(c->a);
            return;
        }
        set(&c->status, "rejected");
        set(&c->end_reason, "at_capacity");
        c->phase = P_ENDED;
        if (c->v.at_capacity_twiml)
            sb_buf_puts(&c->twiml, c->v.at_capacity_twiml);
        else
            sb_twiml_say_hangup(&c->twiml, default_at_capacity);
        if (write_row(c, "call.rejected") < 0) {
            answer(r, 503, "unavailable", "the call could not be stored now; retry");
            c->cur = NULL;
            sb_actor_stop(c->a);
        }
        return;
    }
    hold(c);
    c->dial_now = placing && c->dial_in_us <= 0;
    if (placing && c->dial_in_us > 0)
        sb_actor_timer_start(c->a, ((uint64_t)c->dial_in_us + 999) / 1000, 0, TIMER_DIAL);
    if (write_row(c, "call.started") < 0) {
        release(c);
        answer(r, 503, "unavailable", "the call could not be stored now; retry");
        c->cur = NULL;
        sb_actor_stop(c->a);
    }
}

/* The write of the row came back: the request that made it is answered. */
static int on_written(call_t *c, const sb_msg_t *m)
{
    sb_tenant_written_t w;
    if (m->len < sizeof w)
        return 0;
    memcpy(&w, m->data, sizeof w);
    if (w.token != c->token)
        return 0;
    c->writing = false;
    sb_call_req_t *r = c->cur;
    if (w.err) {
        sb_log_warn("call %" PRId64 ": not stored: %s", c->id, sb_strerror(w.err));
        if (c->phase == P_OPENING) { /* nothing answered yet: the provider retries, starting afresh */
            release(c);
            if (r)
                answer(r, 503, "unavailable", "the call could not be stored now; retry");
            c->cur = NULL;
            sb_actor_stop(c->a);
            return 0;
        }
        if (r) {
            answer(r, 503, "unavailable", "the call could not be stored now; retry");
            finish(c);
        }
        return 0;
    }
    if (!r) {
        next(c);
        return 0;
    }
    if (c->phase == P_ENDED && r->op == SB_CALL_OP_INCOMING) { /* refused at capacity */
        answer_twiml(c);
        return 0;
    }
    if (c->phase == P_OPENING) {
        c->phase = P_LIVE;
        if (r->op == SB_CALL_OP_PLACE) {
            answer_call(c, 202);
            if (c->dial_now) /* else its dial time is ahead, and its timer dials */
                dial(c);
            return 0;
        }
        if (c->v.mode && !strcmp(c->v.mode, "twiml_url") && c->v.twiml_url) {
            if (!fetch(c)) {
                fallback_twiml(c, &c->twiml);
                answer_twiml(c);
            }
            return 0;
        }
        connect_twiml(c, &c->twiml);
        answer_twiml(c);
        return 0;
    }
    answer(r, 200, NULL, NULL); /* a status applied */
    finish(c);
    return 0;
}

static int on_found(call_t *c, const done_t *d)
{
    sb_call_req_t *r = c->cur;
    if (r && r->op == SB_CALL_OP_PLACE && !d->err) {
        if (!d->a) { /* a new key */
            c->phase = P_OPENING;
            admit(c, true);
            return 0;
        }
        r->id = d->a; /* the call this key placed before; this actor is not its own */
        answer(r, 200, NULL, NULL);
        c->cur = NULL;
        c->phase = P_NEW;
        sb_actor_stop(c->a);
        return 0;
    }
    if (d->err) {
        c->phase = P_NEW;
        answer(r, 503, "unavailable", "the database is not reachable; retry");
        finish(c);
        return 0;
    }
    if (!d->a) {
        c->phase = P_NEW;
        if (r->op == SB_CALL_OP_HANGUP)
            answer(r, 404, "not_found", "no such call");
        else
            answer(r, 200, NULL, NULL); /* a status of a call we never had: nothing to record */
        c->cur = NULL;
        sb_actor_stop(c->a);
        return 0;
    }
    c->id = d->a;
    char **f[] = {&c->call_key, &c->call_sid,   &c->direction, &c->from,      &c->to,
                  &c->status,   &c->voice_mode, &c->ended_by,  &c->end_reason};
    const char *p = d->text, *end_of = d->text + d->len;
    for (size_t i = 0; i < sizeof f / sizeof *f && p < end_of; i++) {
        set(f[i], *p ? p : NULL);
        p += strlen(p) + 1;
    }
    c->duration_s = p < end_of ? strtoll(p, NULL, 10) : -1;
    if (is_final(c->status)) {
        c->phase = P_ENDED;
    } else {
        c->phase = P_LIVE; /* found live: its slot is renewed again if the lease still holds */
        hold(c);
        renew(c);
    }
    if (r->op == SB_CALL_OP_HANGUP)
        start_hangup(c);
    else
        apply_status(c);
    return 0;
}

static int on_fetched(call_t *c, const done_t *d)
{
    char err[160];
    sb_str_t body = sb_str(d->text, d->len);
    if (d->a >= 200 && d->a < 300 && sb_twiml_check(body, err, sizeof err) == 0) {
        sb_buf_append(&c->twiml, body.p, body.len);
    } else {
        sb_log_warn("call %" PRId64 ": the tenant's twiml_url %s: the fallback TwiML answers", c->id,
                    d->a == 0                   ? "did not answer in time"
                    : d->a < 200 || d->a >= 300 ? "refused"
                                                : err);
        fallback_twiml(c, &c->twiml);
    }
    if (c->cur)
        answer_twiml(c);
    return 0;
}

static int on_provider(call_t *c, const done_t *d)
{
    if (!strcmp(c->direction ? c->direction : "", "out") && !c->call_sid) { /* placing */
        if (d->err) {
            sb_log_warn("call %" PRId64 ": the provider did not place it: %s", c->id, d->text);
            end(c, "failed", "provider", "provider_error");
            return 0;
        }
        set(&c->call_sid, d->text);
        if (!c->writing && write_row(c, NULL) < 0)
            sb_log_warn("call %" PRId64 ": its CallSid could not be stored now", c->id);
        return 0;
    }
    if (d->err)
        sb_log_warn("call %" PRId64 ": the provider refused the update: %s", c->id, d->text);
    return 0;
}

static int on_timer(call_t *c, const sb_msg_t *m)
{
    uint64_t tag;
    memcpy(&tag, m->data, sizeof tag);
    switch (tag) {
    case TIMER_RENEW:
        if (c->slot)
            renew(c);
        break;
    case TIMER_MAX:
        c->max_timer = 0;
        if (c->phase != P_LIVE)
            break;
        sb_log_info("call %" PRId64 ": max_call_duration reached: hung up", c->id);
        c->ending = "max_duration";
        if (c->call_sid)
            provider_call(c, false, true, NULL);
        end(c, "completed", "switchboard", "max_duration");
        break;
    case TIMER_DIAL:
        if (c->phase == P_LIVE && !c->call_sid)
            dial(c);
        break;
    case TIMER_ID:
        if (c->cur && c->phase == P_OPENING && !c->id)
            opened_with_id(c);
        break;
    }
    return 0;
}

static int on_stream(call_t *c, const sb_msg_t *m)
{
    sb_call_stream_t s;
    if (m->len < sizeof s || c->phase != P_LIVE)
        return 0;
    memcpy(&s, m->data, sizeof s);
    if (s.news != SB_CALL_STREAM_APP_FAILED || c->ending) /* already being ended: its own reason stands */
        return 0;
    if (c->v.media_fallback && !strcmp(c->v.media_fallback, "forward") && c->v.forward_to) {
        sb_buf_t t;
        sb_buf_init(&t);
        sb_twiml_dial(&t, c->v.forward_to);
        sb_log_info("call %" PRId64 ": the voice app cannot be reached: forwarded", c->id);
        provider_call(c, false, false, sb_buf_cstr(&t));
        sb_buf_cleanup(&t);
    } else {
        sb_log_info("call %" PRId64 ": the voice app cannot be reached: hung up", c->id);
        c->ending = "app_unavailable";
        provider_call(c, false, true, NULL);
    }
    return 0;
}

static int on_internal(sb_actor_t *a, void *state, sb_msg_t *m)
{
    call_t *c = state;
    (void)a;
    if (m->type == SB_MSG_TIMER)
        return on_timer(c, m);
    if (m->type == SB_CALL_STREAM)
        return on_stream(c, m);
    if (m->type == SB_CALL_WRITTEN) {
        int rc = on_written(c, m);
        next(c);
        return rc;
    }
    const done_t *d = opened(c, m);
    if (!d)
        return 0;
    switch (m->type) {
    case C_GRANT:
        return on_grant(c, d);
    case C_FOUND:
        return on_found(c, d);
    case C_FETCHED:
        return on_fetched(c, d);
    case C_PROVIDER:
        return on_provider(c, d);
    case C_RENEWED:
        if (d->err == SB_ENOENT && c->slot)
            retake(c);
        return 0;
    case C_RETAKEN:
        if (!d->err && !d->a && c->slot)
            sb_log_warn("call %" PRId64 ": its slot's lease was lost and the %s's cap is full now: the call goes on, "
                        "counted over the cap until it ends",
                        c->id, d->text);
        return 0;
    }
    return 0;
}

/* ---- the kind ------------------------------------------------------------------------------------------------- */

static int call_init(sb_actor_t *a, void *state, const void *arg)
{
    call_t *c = state;
    (void)arg;
    c->a = a;
    c->rt = sb_actor_rt(a);
    c->self = sb_actor_self(a);
    c->ports = sb_rt_env(c->rt);
    c->epoch = atomic_fetch_add(&incarnations, 1) + 1;
    c->last_seq = -1;
    c->duration_s = -1;
    sb_list_init(&c->waiting);
    sb_buf_init(&c->twiml);
    return c->ports ? 0 : SB_EINVAL;
}

static void call_stop(sb_actor_t *a, void *state)
{
    call_t *c = state;
    (void)a;
    if (c->slot) /* its lease runs on in Redis (call.h): this node no longer holds it */
        live_gauge(c, -1);
    if (c->cur)
        answer(c->cur, 503, "unavailable", "the call's actor stopped; retry");
    while (!sb_list_empty(&c->waiting)) {
        pending_t *p = sb_container_of(sb_list_pop_front(&c->waiting), pending_t, link);
        answer(p->req, 503, "unavailable", "the call's actor stopped; retry");
        free(p);
    }
    char **f[] = {&c->call_key,        &c->call_sid,        &c->direction,    &c->from,       &c->to,
                  &c->status,          &c->voice_mode,      &c->rejected_cap, &c->ended_by,   &c->end_reason,
                  &c->idempotency_key, &c->channel_address, &c->stream_url,   &c->status_url, &c->credentials_sealed};
    for (size_t i = 0; i < sizeof f / sizeof *f; i++)
        set(f[i], NULL);
    sb_voice_settings_cleanup(&c->v);
    sb_buf_cleanup(&c->twiml);
}

static bool call_can_passivate(sb_actor_t *a, void *state)
{
    const call_t *c = state;
    (void)a;
    return (c->phase == P_NEW || c->phase == P_ENDED) && !c->cur && !c->writing && sb_list_empty(&c->waiting);
}

static const sb_actor_handler_fn handlers[] = {[SB_CALL_REQUEST] = on_request};

/* Whose work this actor does (sb_rt_evict). */
static int64_t call_tenant(sb_actor_t *a, void *state)
{
    (void)a;
    return ((call_t *)state)->tenant;
}

const sb_actor_kind_t sb_call_kind = {
    .name = "call",
    .state_size = sizeof(call_t),
    .init = call_init,
    .handlers = handlers,
    .nhandlers = sizeof handlers / sizeof *handlers,
    .unhandled = on_internal,
    .stop = call_stop,
    .can_passivate = call_can_passivate,
    .tenant = call_tenant,
};
