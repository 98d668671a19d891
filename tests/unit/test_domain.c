/* Unit tests of the domain actors (actors/tenant.c, actors/session.c) with fake ports: an in-memory store that
 * checks what a database would (dense cursors, one message per (conversation, seq) and per provider id), a
 * provider, counters, webhooks and a publish port that record what they are asked, all answering later, from the
 * test's own loop, as real adapters do. The runtime runs on a fake clock.
 *
 * What is checked: inbound messages numbered per conversation from memory, events numbered densely by the tenant, a
 * receipt applied once; a failed write leaves its receipts to the sweeper and the conversation is loaded again
 * (no seq is lost or repeated); sends accepted with idempotency, sent in order per conversation and concurrently
 * across conversations, a retrying message holding up only its own conversation; status callbacks moving a status
 * forward only; activation from stored state (after passivation, and a message left sending by a crash becoming
 * unknown); fallback channels (a message that failed for good, or was not delivered in time, accepted again by the
 * next channel's session under its fallback key, linked both ways, each once, a delivered one left alone); the
 * tenant's subscriptions and publishing; outgoing webhooks retried, then dead-lettered by age; scheduled sends
 * (stored scheduled, out of their lanes until due, by time then id, kept across a passivation and woken) and
 * cancels (scheduled, queued, refused once claimed or finished, reaching a passivated session). */
#include "actors/ports.h"
#include "actors/session.h"
#include "actors/tenant.h"
#include "proto/err.h"
#include "proto/list.h"
#include "proto/mem.h"
#include "proto/rfc3339.h"
#include "tests/tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- deferred callbacks: what the fake ports answer runs later, in order, from drive() ------------------------- */

typedef struct job {
    sb_list_t link;
    void (*run)(struct job *j);
    void *cb, *arg;
    int err;
    int64_t a, b;
    char *s1, *s2;
    void *data;
    size_t n;
} job_t;

static sb_list_t jobs;

static job_t *job_new(void (*run)(job_t *), void *cb, void *arg)
{
    job_t *j = sb_calloc(1, sizeof *j);
    j->run = run;
    j->cb = cb;
    j->arg = arg;
    sb_list_push_back(&jobs, &j->link);
    return j;
}

/* ---- the fake store --------------------------------------------------------------------------------------------- */

typedef struct fmsg {
    int64_t id, tenant, conv, channel, seq, receipt;
    bool out;
    char status[16], provider_id[64], key[64], to[32], body[256], created_at[SB_TIME_LEN];
    unsigned attempts;
    bool in_outbox;
    int64_t at_ms;       /* when it was written (the fake clock): the store's created_at */
    int64_t fallback_of, fallback_to;
    bool watched;        /* fallback_due_at is set */
    char history_last[24]; /* the last history entry */
    int64_t send_at_ms;  /* 0: none */
} fmsg_t;

typedef struct fconv {
    int64_t id, contact_id, tenant, channel;
    char address[32], profile_name[64];
    int asked;           /* times a session asked the store about it */
} fconv_t;

typedef struct fevent {
    int64_t tenant, cursor;
    char type[32];
    char *data;
    uint64_t born_ms;    /* the test clock when it was written */
} fevent_t;

static uint64_t now_ms = 1000; /* the runtime's clock */
static int64_t clock_us = 1767225600000000; /* the wall clock (the now_us port): 2026-01-01 */

static struct {
    fmsg_t msgs[4096];
    size_t nmsgs;
    fconv_t convs[2048];
    size_t nconvs;
    fevent_t events[16384];
    size_t nevents;
    int64_t processed[4096];
    size_t nprocessed;
    int64_t next_id;
    int fail_writes;     /* the next n writes fail */
    char poison[32];     /* a write holding a message with this body fails (a constraint) */
    int writes, statements_with_several;
    char hook_url[64];
    int64_t hook_acked;
    int dead;
    int64_t event_age_ms; /* what events_after says of every event's age */
    int set_aside;        /* receipts marked processed unapplied (receipt_done) */
} db;

static int64_t last_cursor(int64_t tenant)
{
    int64_t c = 0;
    for (size_t i = 0; i < db.nevents; i++)
        if (db.events[i].tenant == tenant && db.events[i].cursor > c)
            c = db.events[i].cursor;
    return c;
}

static void run_load_tenant(job_t *j)
{
    sb_tenant_info_t t = {.found = true, .last_cursor = last_cursor(j->a), .webhook_cursor = db.hook_acked};
    if (db.hook_url[0]) {
        t.webhook_url = db.hook_url;
        t.webhook_secret = "secret";
    }
    ((void (*)(void *, int, const sb_tenant_info_t *))j->cb)(j->arg, 0, &t);
}

static int f_load_tenant(void *ctx, int64_t tenant, void (*cb)(void *, int, const sb_tenant_info_t *), void *arg)
{
    (void)ctx;
    job_new(run_load_tenant, (void *)cb, arg)->a = tenant;
    return 0;
}

static void run_load_channel(job_t *j)
{
    sb_channel_info_t ci = {.tenant = 1, .channel = j->a, .type = SB_CH_TWILIO_SMS, .address = "+15550001111",
                            .rate_per_second = 100, .credentials_sealed = "sealed"};
    sb_pending_send_t p[64];
    size_t n = 0;
    for (size_t i = 0; i < db.nmsgs && n < 64; i++) {
        fmsg_t *m = &db.msgs[i];
        if (m->channel != j->a || !m->in_outbox)
            continue;
        p[n++] = (sb_pending_send_t){.id = m->id, .conversation_id = m->conv, .to = m->to, .body = m->body,
                                     .media_json = "[]", .status = m->status, .attempts = m->attempts,
                                     .sending_for_ms = 200000,
                                     .send_in_ms = m->send_at_ms ? m->send_at_ms - clock_us / 1000 : 0};
    }
    ((void (*)(void *, int, const sb_channel_info_t *, const sb_pending_send_t *, size_t))j->cb)(j->arg, 0, &ci, p,
                                                                                                   n);
}

static int f_load_channel(void *ctx, int64_t channel,
                          void (*cb)(void *, int, const sb_channel_info_t *, const sb_pending_send_t *, size_t),
                          void *arg)
{
    (void)ctx;
    job_new(run_load_channel, (void *)cb, arg)->a = channel;
    return 0;
}

static int64_t conv_seq(int64_t conv)
{
    int64_t s = 0;
    for (size_t i = 0; i < db.nmsgs; i++)
        if (db.msgs[i].conv == conv && db.msgs[i].seq > s)
            s = db.msgs[i].seq;
    return s;
}

static void run_ensure(job_t *j)
{
    char **addrs = j->data;
    sb_conv_info_t *out = sb_calloc(j->n, sizeof *out);
    for (size_t k = 0; k < j->n; k++) {
        fconv_t *c = NULL;
        for (size_t i = 0; i < db.nconvs; i++)
            if (db.convs[i].channel == j->b && strcmp(db.convs[i].address, addrs[k]) == 0)
                c = &db.convs[i];
        if (!c) {
            c = &db.convs[db.nconvs++];
            c->id = 100 + (int64_t)db.nconvs;
            c->contact_id = 500 + (int64_t)db.nconvs;
            c->tenant = j->a;
            c->channel = j->b;
            snprintf(c->address, sizeof c->address, "%s", addrs[k]);
        }
        c->asked++;
        int64_t last_in = 0;
        for (size_t i = 0; i < db.nmsgs; i++)
            if (db.msgs[i].conv == c->id && !db.msgs[i].out && db.msgs[i].at_ms > last_in)
                last_in = db.msgs[i].at_ms;
        out[k] = (sb_conv_info_t){.id = c->id, .contact_id = c->contact_id, .last_seq = conv_seq(c->id),
                                  .address = c->address, .created_at = "2026-01-01T00:00:00.000000+00:00",
                                  .last_inbound_ms = last_in};
    }
    ((void (*)(void *, int, const sb_conv_info_t *, size_t))j->cb)(j->arg, 0, out, j->n);
    for (size_t k = 0; k < j->n; k++)
        free(addrs[k]);
    free(addrs);
    free(out);
}

static int f_ensure(void *ctx, int64_t tenant, int64_t channel, const char *const *addresses,
                    const char *const *names, size_t n, void (*cb)(void *, int, const sb_conv_info_t *, size_t),
                    void *arg)
{
    (void)ctx, (void)names;
    job_t *j = job_new(run_ensure, (void *)cb, arg);
    j->a = tenant;
    j->b = channel;
    char **copy = sb_malloc(n * sizeof *copy);
    for (size_t i = 0; i < n; i++)
        copy[i] = sb_strdup(addresses[i]);
    j->data = copy;
    j->n = n;
    return 0;
}

static fmsg_t *msg_by_id(int64_t id)
{
    for (size_t i = 0; i < db.nmsgs; i++)
        if (db.msgs[i].id == id)
            return &db.msgs[i];
    return NULL;
}

/* Applies a write the way the database would, or refuses it whole. */
static int apply_write(const sb_tenant_write_t *w)
{
    if (db.fail_writes > 0) {
        db.fail_writes--;
        return SB_EINVAL;
    }
    for (size_t i = 0; db.poison[0] && i < w->nmessages; i++)
        if (w->messages[i].body && strcmp(w->messages[i].body, db.poison) == 0)
            return SB_EINVAL;
    if (w->nevents && w->first_cursor != last_cursor(w->tenant) + 1)
        return SB_EINVAL; /* cursors must be dense */
    for (size_t i = 0; i < w->nmessages; i++)
        for (size_t k = 0; k < db.nmsgs; k++)
            if (db.msgs[k].id == w->messages[i].id ||
                (db.msgs[k].conv == w->messages[i].conversation_id && db.msgs[k].seq == w->messages[i].seq) ||
                (w->messages[i].provider_id && strcmp(db.msgs[k].provider_id, w->messages[i].provider_id) == 0))
                return SB_EINVAL; /* unique violations */
    for (size_t i = 0; i < w->nmessages; i++) {
        const sb_new_message_t *m = &w->messages[i];
        fmsg_t *f = &db.msgs[db.nmsgs++];
        memset(f, 0, sizeof *f);
        *f = (fmsg_t){.id = m->id, .tenant = w->tenant, .conv = m->conversation_id, .channel = m->channel_id,
                      .seq = m->seq, .receipt = m->receipt_id, .out = m->out, .in_outbox = m->out,
                      .at_ms = clock_us / 1000};
        snprintf(f->status, sizeof f->status, "%s", m->status);
        snprintf(f->provider_id, sizeof f->provider_id, "%s", m->provider_id ? m->provider_id : "");
        snprintf(f->key, sizeof f->key, "%s", m->idempotency_key ? m->idempotency_key : "");
        snprintf(f->to, sizeof f->to, "%s", m->recipient);
        snprintf(f->body, sizeof f->body, "%s", m->body);
        snprintf(f->created_at, sizeof f->created_at, "%s", m->created_at);
        f->fallback_of = m->fallback_of;
        if (m->send_at && sb_rfc3339_parse(sb_str_cstr(m->send_at), &f->send_at_ms) < 0)
            return SB_EINVAL; /* the database would refuse a bad timestamptz */
        if (m->receipt_id)
            db.processed[db.nprocessed++] = m->receipt_id;
    }
    for (size_t i = 0; i < w->nchanges; i++) {
        const sb_status_change_t *c = &w->changes[i];
        fmsg_t *f = msg_by_id(c->message_id);
        if (f) {
            if (!c->counts_attempt)
                snprintf(f->history_last, sizeof f->history_last, "%s", c->status);
            if (c->fallback == SB_FALLBACK_WATCH)
                f->watched = true;
            else if (c->fallback || !strcmp(c->status, "delivered") || !strcmp(c->status, "read"))
                f->watched = false;
            if (c->fallback == SB_FALLBACK_LINK)
                f->fallback_to = c->fallback_to;
        }
        if (f && !c->history_only) {
            snprintf(f->status, sizeof f->status, "%s", c->status);
            if (c->provider_id)
                snprintf(f->provider_id, sizeof f->provider_id, "%s", c->provider_id);
            if (c->counts_attempt)
                f->attempts++;
            if (c->finished)
                f->in_outbox = false;
        }
        if (c->receipt_id)
            db.processed[db.nprocessed++] = c->receipt_id;
    }
    for (size_t i = 0; i < w->nreceipts; i++)
        db.processed[db.nprocessed++] = w->receipts[i];
    if (w->nevents) { /* the page: [{"type":"...","data":{...}}, ...] split naively (our own JSON) */
        const char *p = w->events_json.p;
        for (size_t i = 0; i < w->nevents; i++) {
            const char *t = strstr(p, "{\"type\":\"") + 9, *te = strchr(t, '"');
            const char *d = strstr(te, "\"data\":") + 7;
            int depth = 0;
            const char *e = d;
            bool in_str = false;
            for (; *e; e++) {
                if (in_str) {
                    if (*e == '\\')
                        e++;
                    else if (*e == '"')
                        in_str = false;
                } else if (*e == '"') {
                    in_str = true;
                } else if (*e == '{') {
                    depth++;
                } else if (*e == '}' && --depth == 0) {
                    e++;
                    break;
                }
            }
            fevent_t *ev = &db.events[db.nevents++];
            ev->tenant = w->tenant;
            ev->cursor = w->first_cursor + (int64_t)i;
            ev->born_ms = now_ms;
            snprintf(ev->type, sizeof ev->type, "%.*s", (int)(te - t), t);
            ev->data = sb_strndup(d, (size_t)(e - d));
            p = e;
        }
    }
    db.writes++;
    return 0;
}

static void run_write(job_t *j)
{
    ((sb_done_cb)j->cb)(j->arg, j->err);
}

static int f_write(void *ctx, const sb_tenant_write_t *w, sb_done_cb cb, void *arg)
{
    (void)ctx;
    job_new(run_write, (void *)cb, arg)->err = apply_write(w); /* applied now, answered later */
    return 0;
}

static void run_find_provider(job_t *j)
{
    char **pids = j->data;
    const char *outp[64], *st[64];
    int64_t ids[64];
    size_t k = 0;
    for (size_t i = 0; i < j->n; i++) {
        for (size_t m = 0; m < db.nmsgs; m++) {
            if (db.msgs[m].channel == j->b && strcmp(db.msgs[m].provider_id, pids[i]) == 0 && k < 64) {
                outp[k] = pids[i];
                ids[k] = db.msgs[m].id;
                st[k++] = db.msgs[m].status;
            }
        }
    }
    ((void (*)(void *, int, const char *const *, const int64_t *, const char *const *, size_t))j->cb)(j->arg, 0, outp,
                                                                                                      ids, st, k);
    for (size_t i = 0; i < j->n; i++)
        free(pids[i]);
    free(pids);
}

static int f_find_provider(void *ctx, int64_t tenant, int64_t channel, const char *const *pids, size_t n,
                           void (*cb)(void *, int, const char *const *, const int64_t *, const char *const *, size_t),
                           void *arg)
{
    (void)ctx, (void)tenant;
    job_t *j = job_new(run_find_provider, (void *)cb, arg);
    j->b = channel;
    char **copy = sb_malloc(n * sizeof *copy);
    for (size_t i = 0; i < n; i++)
        copy[i] = sb_strdup(pids[i]);
    j->data = copy;
    j->n = n;
    return 0;
}

static void run_find_key(job_t *j)
{
    int64_t id = 0, channel = 0;
    for (size_t i = 0; i < db.nmsgs; i++)
        if (db.msgs[i].tenant == j->a && strcmp(db.msgs[i].key, j->s1) == 0)
            id = db.msgs[i].id, channel = db.msgs[i].channel;
    ((void (*)(void *, int, int64_t, int64_t))j->cb)(j->arg, 0, id, channel);
    free(j->s1);
}

static int f_find_key(void *ctx, int64_t tenant, const char *key, void (*cb)(void *, int, int64_t, int64_t),
                      void *arg)
{
    (void)ctx;
    job_t *j = job_new(run_find_key, (void *)cb, arg);
    j->a = tenant;
    j->s1 = sb_strdup(key);
    return 0;
}

static void run_events_after(job_t *j)
{
    sb_event_rec_t out[64];
    size_t k = 0;
    for (size_t i = 0; i < db.nevents && k < (size_t)j->n && k < 64; i++) {
        fevent_t *e = &db.events[i];
        if (e->tenant == j->a && e->cursor > j->b)
            out[k++] = (sb_event_rec_t){e->cursor, e->type, sb_str_cstr(e->data),
                                        (int64_t)(now_ms - e->born_ms) + db.event_age_ms};
    }
    ((void (*)(void *, int, const sb_event_rec_t *, size_t))j->cb)(j->arg, 0, out, k);
}

static int f_events_after(void *ctx, int64_t tenant, int64_t after, size_t limit,
                          void (*cb)(void *, int, const sb_event_rec_t *, size_t), void *arg)
{
    (void)ctx;
    job_t *j = job_new(run_events_after, (void *)cb, arg);
    j->a = tenant;
    j->b = after;
    j->n = limit;
    return 0;
}

static void run_done(job_t *j)
{
    ((sb_done_cb)j->cb)(j->arg, 0);
}

static int f_hook_acked(void *ctx, int64_t tenant, int64_t cursor, sb_done_cb cb, void *arg)
{
    (void)ctx, (void)tenant;
    db.hook_acked = cursor;
    job_new(run_done, (void *)cb, arg);
    return 0;
}

static int f_hook_dead(void *ctx, int64_t tenant, const sb_event_rec_t *ev, const char *error, sb_done_cb cb,
                       void *arg)
{
    (void)ctx, (void)tenant, (void)error;
    db.hook_acked = ev->cursor;
    db.dead++;
    job_new(run_done, (void *)cb, arg);
    return 0;
}

static int64_t f_message_id(void *ctx)
{
    (void)ctx;
    return ++db.next_id;
}

static void f_receipt_done(void *ctx, int64_t tenant, int64_t receipt_id)
{
    (void)ctx, (void)tenant;
    db.processed[db.nprocessed++] = receipt_id;
    db.set_aside++;
}

/* ---- the fake provider, counters, webhooks, publisher ------------------------------------------------------------ */

static struct {
    int64_t sent[256];     /* message ids, in the order the provider was asked */
    int64_t sent_channel[256]; /* and their channels */
    size_t nsent;
    int retry_for;         /* message id the provider answers RETRY (while > 0) */
    int64_t fail_channel;  /* the provider refuses every message of this channel for good */
    int retries_left;
    bool hold;             /* keep answers back (concurrency) */
    bool hold_grants;      /* keep the counters' grants back until grant_one() (lanes) */
    sb_list_t grants;
    sb_list_t held;
    int held_n;
    int hook_status;       /* what the webhook receiver answers */
    int posts;
    int64_t posted[256];
    sb_inbox_batch_t *published[64];
    unsigned published_shard[64];
    size_t npublished;
} fx;

static void run_outcome(job_t *j)
{
    char pid[32];
    snprintf(pid, sizeof pid, "P%lld", (long long)j->a);
    sb_send_outcome_t o = {.result = (sb_send_result_t)j->b, .retry_after_s = -1, .provider_id = pid,
                           .error_code = j->b == SB_SEND_RETRY ? "20429" : "", .error_message = ""};
    ((void (*)(void *, const sb_send_outcome_t *))j->cb)(j->arg, &o);
}

static int f_send(void *ctx, const sb_send_request_t *req, void (*cb)(void *, const sb_send_outcome_t *), void *arg)
{
    (void)ctx;
    fx.sent[fx.nsent++] = req->message_id;
    fx.sent_channel[fx.nsent - 1] = req->channel->channel;
    job_t *j;
    if (fx.hold) {
        j = sb_calloc(1, sizeof *j);
        j->run = run_outcome;
        j->cb = (void *)cb;
        j->arg = arg;
        sb_list_push_back(&fx.held, &j->link);
        fx.held_n++;
    } else {
        j = job_new(run_outcome, (void *)cb, arg);
    }
    j->a = req->message_id;
    j->b = SB_SEND_SENT;
    if (req->channel->channel == fx.fail_channel)
        j->b = SB_SEND_FAILED;
    if (req->message_id == fx.retry_for && fx.retries_left > 0) {
        fx.retries_left--;
        j->b = SB_SEND_RETRY;
    }
    return 0;
}

/* The channel's rules, as the provider port checks them: a body of "REFUSE" is refused; the recipient is stored without
 * a "whatsapp:" prefix. */
static int f_check(void *ctx, sb_channel_type_t type, const sb_send_request_t *req, char *to, size_t to_cap,
                   const char **code, char *message, size_t message_cap)
{
    (void)ctx, (void)type;
    if (req->body && strcmp(req->body, "REFUSE") == 0) {
        *code = "body_too_long";
        snprintf(message, message_cap, "body: too long for this channel");
        return SB_EINVAL;
    }
    snprintf(to, to_cap, "%s", strncmp(req->to, "whatsapp:", 9) == 0 ? req->to + 9 : req->to);
    return 0;
}

static uint64_t f_held(void *ctx, sb_channel_type_t type)
{
    (void)ctx, (void)type;
    return 0;
}

static void run_grant(job_t *j)
{
    sb_grant_t g = {.granted = true, .tokens = -1}; /* no limits: every request granted, at once */
    snprintf(g.lease, sizeof g.lease, "lease");
    ((void (*)(void *, int, const sb_grant_t *))j->cb)(j->arg, 0, &g);
}

static void run_grant_held(job_t *j)
{
    sb_grant_t g = {.granted = true, .tokens = 1}; /* paced, a token to spare: the session keeps two requests out */
    snprintf(g.lease, sizeof g.lease, "lease");
    ((void (*)(void *, int, const sb_grant_t *))j->cb)(j->arg, 0, &g);
}

static int f_acquire(void *ctx, int64_t tenant, int64_t channel, const sb_send_limits_t *lim,
                     void (*cb)(void *, int, const sb_grant_t *), void *arg)
{
    (void)ctx, (void)tenant, (void)channel, (void)lim;
    if (fx.hold_grants) {
        job_t *j = sb_calloc(1, sizeof *j);
        *j = (job_t){.run = run_grant_held, .cb = (void *)cb, .arg = arg};
        sb_list_push_back(&fx.grants, &j->link);
        return 0;
    }
    job_new(run_grant, (void *)cb, arg);
    return 0;
}

static void f_release(void *ctx, int64_t tenant, int64_t channel, const char *lease)
{
    (void)ctx, (void)tenant, (void)channel, (void)lease;
}

static void run_posted(job_t *j)
{
    ((void (*)(void *, int, int, int))j->cb)(j->arg, (int)j->a, -1, 0);
}

static int f_post(void *ctx, const sb_hook_post_t *p, void (*cb)(void *, int, int, int), void *arg)
{
    (void)ctx;
    fx.posted[fx.posts++ % 256] = p->cursor;
    job_new(run_posted, (void *)cb, arg)->a = fx.hook_status;
    return 0;
}

static void f_publish(void *ctx, unsigned shard, sb_inbox_batch_t *b)
{
    (void)ctx;
    sb_inbox_batch_ref(b);
    fx.published[fx.npublished] = b;
    fx.published_shard[fx.npublished++] = shard;
}

static int64_t f_now(void *ctx)
{
    (void)ctx;
    return clock_us;
}

static uint64_t f_random(void *ctx)
{
    (void)ctx;
    return 999; /* backoffs of 999 ms (the first retry's ceiling is 1000) */
}

static unsigned f_owner(void *ctx, int64_t tenant)
{
    (void)ctx, (void)tenant;
    return 0;
}

static const sb_domain_config_t config = {.webhook_max_age_s = 60};

static sb_ports_t ports = {
    .store = {.load_tenant = f_load_tenant, .load_channel = f_load_channel, .ensure_conversations = f_ensure,
              .write = f_write, .find_by_provider = f_find_provider, .find_idempotent = f_find_key,
              .events_after = f_events_after, .hook_acked = f_hook_acked, .hook_dead = f_hook_dead,
              .message_id = f_message_id, .receipt_done = f_receipt_done},
    .counters = {.acquire = f_acquire, .release = f_release},
    .provider = {.check = f_check, .send = f_send, .held_ms = f_held},
    .hooks = {.post = f_post},
    .publish = {.publish = f_publish},
    .shard = 0,
    .owner = f_owner,
    .now_us = f_now,
    .random = f_random,
    .config = &config,
};

/* ---- driving -------------------------------------------------------------------------------------------------------- */

static sb_rt_t *rt;

/* Runs actors and the ports' answers until nothing moves. */
static void drive(void)
{
    for (int rounds = 0; rounds < 10000; rounds++) {
        bool moved = sb_rt_run(rt, 100000) > 0;
        sb_rt_fire_timers(rt);
        moved |= sb_rt_run(rt, 100000) > 0;
        job_t *j = sb_list_empty(&jobs) ? NULL : sb_container_of(sb_list_pop_front(&jobs), job_t, link);
        if (j) {
            j->run(j);
            free(j);
            moved = true;
        }
        if (!moved)
            return;
    }
}

/* Moves the clock on, firing what falls due on the way. */
static void advance(uint64_t ms)
{
    for (uint64_t step = 0; step < ms; step += 100) {
        now_ms += 100;
        clock_us += 100000;
        sb_rt_set_time(rt, now_ms);
        drive();
    }
}

static void setup(void)
{
    memset(&db, 0, sizeof db);
    sb_list_init(&jobs);
    for (size_t i = 0; i < fx.npublished; i++)
        sb_inbox_batch_unref(fx.published[i]);
    memset(&fx, 0, sizeof fx);
    sb_list_init(&fx.held);
    sb_list_init(&fx.grants);
    fx.hook_status = 200;
    rt = sb_rt_create(0, NULL);
    sb_rt_set_env(rt, &ports);
    sb_rt_set_time(rt, now_ms);
}

static void teardown(void)
{
    drive();
    sb_rt_destroy(rt);
    for (sb_list_t *l; (l = sb_list_pop_front(&jobs));)
        free(sb_container_of(l, job_t, link));
    for (size_t i = 0; i < db.nevents; i++)
        free(db.events[i].data);
}

static void receipt(int64_t id, const char *from, const char *body)
{
    sb_event_t ev = {.kind = SB_EV_MESSAGE, .channel = SB_CH_TWILIO_SMS};
    char pid[32];
    snprintf(pid, sizeof pid, "SM%lld", (long long)id);
    ev.provider_id = pid;
    ev.from = (char *)from;
    ev.to = "+15550001111";
    ev.body = (char *)body;
    sb_session_receipt_t r = {.receipt_id = id, .tenant = 1, .age_ms = 0};
    sb_session_receipt(rt, 0, 7, &r, &ev);
}

static void status_receipt(int64_t id, const char *pid, const char *status, int64_t age_ms)
{
    sb_event_t ev = {.kind = SB_EV_STATUS, .channel = SB_CH_TWILIO_SMS};
    ev.provider_id = (char *)pid;
    ev.status = (char *)status;
    sb_session_receipt_t r = {.receipt_id = id, .tenant = 1, .age_ms = age_ms};
    sb_session_receipt(rt, 0, 7, &r, &ev);
}

static bool processed(int64_t receipt)
{
    for (size_t i = 0; i < db.nprocessed; i++)
        if (db.processed[i] == receipt)
            return true;
    return false;
}

static int count_events(const char *type)
{
    int n = 0;
    for (size_t i = 0; i < db.nevents; i++)
        n += strcmp(db.events[i].type, type) == 0;
    return n;
}

static bool cursors_dense(void)
{
    for (size_t i = 0; i < db.nevents; i++)
        if (db.events[i].cursor != (int64_t)i + 1)
            return false;
    return true;
}

/* ---- sends from a "front door": answered into a small table ------------------------------------------------------- */

static struct {
    int status;
    int64_t id;
    bool created;
    bool answered;
    char code[32];
    char accepted[16];
} answers[64];

static void on_answer(sb_session_send_t *req)
{
    size_t i = (size_t)(uintptr_t)req->arg;
    answers[i].status = req->status;
    answers[i].id = req->id;
    answers[i].created = req->created;
    answers[i].answered = true;
    snprintf(answers[i].code, sizeof answers[i].code, "%s", req->code ? req->code : "");
    snprintf(answers[i].accepted, sizeof answers[i].accepted, "%s", req->accepted ? req->accepted : "");
    sb_session_send_cleanup(req);
    free(req);
}

static int64_t send_tenant = 1; /* the tenant the next sends claim to be */
static sb_priority_t send_priority = SB_PRIORITY_INTERACTIVE; /* the next sends' */

static void send_at(size_t slot, const char *to, const char *body, int64_t send_at_ms);

static void send_msg(size_t slot, const char *to, const char *body, const char *key)
{
    sb_session_send_t *req = sb_calloc(1, sizeof *req);
    req->tenant = send_tenant;
    req->channel = 7;
    req->to = sb_strdup(to);
    req->body = sb_strdup(body);
    req->media_json = sb_strdup("[]");
    req->idempotency_key = key ? sb_strdup(key) : NULL;
    req->answer = on_answer;
    req->arg = (void *)(uintptr_t)slot;
    req->priority = send_priority;
    answers[slot].answered = false;
    sb_session_send(rt, 0, req);
}

static void send_fallback(size_t slot, const char *body, const char *list)
{
    sb_session_send_t *req = sb_calloc(1, sizeof *req);
    req->tenant = 1;
    req->channel = 7;
    req->to = sb_strdup("+14155550009");
    req->body = sb_strdup(body);
    req->media_json = sb_strdup("[]");
    req->fallback_json = sb_strdup(list);
    req->answer = on_answer;
    req->arg = (void *)(uintptr_t)slot;
    answers[slot].answered = false;
    sb_session_send(rt, 0, req);
}

/* A send with send_at (Unix ms of the wall clock; 0: none). */
static void send_at(size_t slot, const char *to, const char *body, int64_t send_at_ms)
{
    sb_session_send_t *req = sb_calloc(1, sizeof *req);
    req->tenant = send_tenant;
    req->channel = 7;
    req->to = sb_strdup(to);
    req->body = sb_strdup(body);
    req->media_json = sb_strdup("[]");
    req->send_at_ms = send_at_ms;
    req->answer = on_answer;
    req->arg = (void *)(uintptr_t)slot;
    answers[slot].answered = false;
    sb_session_send(rt, 0, req);
}

/* The message that is the fallback of message id, or NULL. */
static fmsg_t *fallback_of(int64_t id)
{
    for (size_t i = 0; i < db.nmsgs; i++)
        if (db.msgs[i].fallback_of == id)
            return &db.msgs[i];
    return NULL;
}

/* The data of message id's message.status "fallback" event, or "". */
static const char *fallback_event(int64_t id)
{
    char needle[64];
    snprintf(needle, sizeof needle, "{\"id\":\"%lld\",\"status\":\"fallback\"", (long long)id);
    for (size_t i = 0; i < db.nevents; i++)
        if (!strcmp(db.events[i].type, "message.status") && !strncmp(db.events[i].data, needle, strlen(needle)))
            return db.events[i].data;
    return "";
}

static int count_status_events(const char *status)
{
    char needle[48];
    snprintf(needle, sizeof needle, "\"status\":\"%s\"", status);
    int n = 0;
    for (size_t i = 0; i < db.nevents; i++)
        n += !strcmp(db.events[i].type, "message.status") && strstr(db.events[i].data, needle) != NULL;
    return n;
}

static void send_prio(size_t slot, const char *to, const char *body, sb_priority_t p)
{
    send_priority = p;
    send_msg(slot, to, body, NULL);
    send_priority = SB_PRIORITY_INTERACTIVE;
}

/* Lets one token the session asked for be granted (false: none was asked for). */
static bool grant_one(void)
{
    sb_list_t *l = sb_list_pop_front(&fx.grants);
    if (!l)
        return false;
    sb_list_push_back(&jobs, l);
    drive();
    return true;
}

static struct {
    int status;
    bool answered;
    char code[32];
} cancels[16];

static void on_cancel(sb_session_cancel_t *req)
{
    size_t i = (size_t)(uintptr_t)req->arg;
    cancels[i].status = req->status;
    cancels[i].answered = true;
    snprintf(cancels[i].code, sizeof cancels[i].code, "%s", req->code ? req->code : "");
    free(req);
}

static void cancel_of(size_t slot, int64_t tenant, int64_t id, bool intake)
{
    sb_session_cancel_t *req = sb_calloc(1, sizeof *req);
    *req = (sb_session_cancel_t){.tenant = tenant, .channel = 7, .id = id, .intake = intake, .answer = on_cancel,
                                 .arg = (void *)(uintptr_t)slot};
    cancels[slot].answered = false;
    sb_session_cancel(rt, 0, req);
}

static void cancel_msg(size_t slot, int64_t tenant, int64_t id)
{
    cancel_of(slot, tenant, id, false);
}

/* A send another node took (gateway/sends with cluster = on): its receipt, of kind send, under message id. */
static void send_receipt(int64_t receipt, int64_t id, const char *to, const char *body, const char *key,
                         int64_t send_at_ms)
{
    sb_event_t ev = {.kind = SB_EV_SEND, .channel = SB_CH_TWILIO_SMS, .provider_id = "send", .message_id = id,
                     .send_at_ms = send_at_ms, .to = (char *)to, .body = (char *)body, .media_json = "[]",
                     .idempotency_key = (char *)key, .priority = "normal"};
    sb_session_receipt_t r = {.receipt_id = receipt, .tenant = 1};
    sb_session_receipt(rt, 0, 7, &r, &ev);
}

/* The events of type about message id with this status. */
static int status_events(int64_t id, const char *status)
{
    char want[96];
    snprintf(want, sizeof want, "{\"id\":\"%lld\",\"status\":\"%s\"", (long long)id, status);
    int n = 0;
    for (size_t i = 0; i < db.nevents; i++)
        n += strcmp(db.events[i].type, "message.status") == 0 && strncmp(db.events[i].data, want, strlen(want)) == 0;
    return n;
}

/* ---- tests -------------------------------------------------------------------------------------------------------- */

TEST(inbound_numbering)
{
    setup();
    receipt(1, "+14155550001", "hello");
    receipt(2, "+14155550002", "hi");
    receipt(3, "+14155550001", "again");
    receipt(3, "+14155550001", "again"); /* the same receipt twice: applied once */
    drive();
    is_int((long long)db.nmsgs, 3, "three messages stored (the twin receipt once)");
    ok(db.nmsgs == 3 && db.msgs[0].seq == 1 && db.msgs[1].seq == 1 && db.msgs[2].seq == 2 &&
           db.msgs[0].conv == db.msgs[2].conv && db.msgs[0].conv != db.msgs[1].conv,
       "numbered per conversation from memory: 1, 1, 2");
    ok(processed(1) && processed(2) && processed(3), "their receipts are processed in the same writes");
    ok(db.set_aside == 0, "none set aside");
    is_int(count_events("message.created"), 3, "a message.created each");
    is_int(count_events("conversation.updated"), 3, "and a conversation.updated each");
    ok(cursors_dense(), "cursors are dense from 1 (%zu events)", db.nevents);
    ok(db.nevents >= 6 && strstr(db.events[5].data, "\"last_seq\":2"), "the conversation event carries its seq");
    receipt(4, "+14155550001", "third");
    drive();
    ok(db.nmsgs == 4 && db.msgs[3].seq == 3, "a later message continues from memory (seq 3)");

    sb_event_t ev = {.kind = SB_EV_MESSAGE, .channel = SB_CH_TWILIO_SMS, .provider_id = "SMx", .from = "+1415"};
    sb_session_receipt_t other = {.receipt_id = 50, .tenant = 2, .age_ms = 0};
    sb_session_receipt(rt, 0, 7, &other, &ev);
    drive();
    ok(db.nmsgs == 4 && processed(50) && db.set_aside == 1,
       "a receipt naming another tenant is set aside (marked processed, nothing stored)");
    teardown();
}

static fconv_t *conv_at(const char *address)
{
    for (size_t i = 0; i < db.nconvs; i++)
        if (strcmp(db.convs[i].address, address) == 0)
            return &db.convs[i];
    return NULL;
}

/* A session keeps the conversations it uses and at most CONV_KEEP (1024) others: the least recently used are
 * forgotten, and asked of the store again when a message comes for them. */
TEST(forgets_idle_conversations)
{
    setup();
    char from[32];
    for (int i = 0; i < 1100; i++) {
        snprintf(from, sizeof from, "+1415600%04d", i);
        receipt(1 + i, from, "hi");
        if (i % 100 == 99)
            drive();
    }
    drive();
    is_int((long long)db.nmsgs, 1100, "1100 messages from 1100 contacts stored");
    fconv_t *first = conv_at("+14156000000"), *recent = conv_at("+14156001099");
    ok(first && recent && first->asked == 1 && recent->asked == 1, "each conversation asked of the store once");
    receipt(2000, "+14156000000", "again");
    receipt(2001, "+14156001099", "again");
    drive();
    ok(first && first->asked == 2, "the least recently used one was forgotten: asked again for its next message");
    ok(recent && recent->asked == 1, "a recently used one was kept");
    fmsg_t *again = db.nmsgs == 1102 ? &db.msgs[1100] : NULL;
    ok(again && first && again->conv == first->id && again->seq == 2,
       "the forgotten conversation's next message is numbered on from the store (seq 2)");
    ok(cursors_dense(), "cursors stay dense (%zu events)", db.nevents);
    teardown();
}

TEST(failed_write)
{
    setup();
    receipt(1, "+14155550001", "one");
    drive();
    db.fail_writes = 1;
    receipt(2, "+14155550001", "two");
    drive();
    ok(!processed(2) && db.nmsgs == 1, "a refused write stores nothing and leaves its receipt unprocessed");
    receipt(2, "+14155550001", "two"); /* the sweeper hands it back */
    drive();
    ok(processed(2) && db.nmsgs == 2 && db.msgs[1].seq == 2,
       "handed back, it is applied with the next seq (2): the conversation was loaded again");
    ok(cursors_dense(), "cursors stay dense: the refused write's numbers were not used");
    teardown();
}

TEST(refused_alone)
{
    setup();
    fx.hold = true; /* (nothing is sent: this is about storing) */
    snprintf(db.poison, sizeof db.poison, "poison");
    const char *bodies[] = {"one", "two", "poison", "four", "five"};
    for (size_t i = 0; i < 5; i++)
        send_msg(i, "+14155550001", bodies[i], NULL);
    drive();
    ok(answers[0].status == 202 && answers[1].status == 202 && answers[2].status == 503 && answers[3].status == 202 &&
           answers[4].status == 202,
       "one turn's sends are written together; the one the store refuses is refused alone (503), the rest 202");
    ok(db.nmsgs == 4 && db.msgs[0].seq == 1 && db.msgs[1].seq == 2 && db.msgs[2].seq == 4 && db.msgs[3].seq == 5,
       "each stored once; the refused one leaves a gap in its conversation (1, 2, 4, 5)");
    ok(cursors_dense(), "the tenant's cursors stay dense: the refused one made no event");
    db.poison[0] = '\0';
    send_msg(5, "+14155550001", "six", NULL);
    drive();
    ok(answers[5].status == 202 && db.nmsgs == 5 && db.msgs[4].seq == 6,
       "the conversation, loaded again after the refusal, goes on at 6");
    fx.hold = false;
    for (sb_list_t *l; (l = sb_list_pop_front(&fx.held));)
        sb_list_push_back(&jobs, l);
    teardown();
}

static int64_t sent_index(int64_t id)
{
    for (size_t i = 0; i < fx.nsent; i++)
        if (fx.sent[i] == id)
            return (int64_t)i;
    return -1;
}

TEST(sends)
{
    setup();
    send_msg(0, "+14155550001", "first", "k1");
    send_msg(1, "+14155550001", "second", NULL);
    send_msg(2, "+14155550001", "first again", "k1");
    drive();
    ok(answers[0].answered && answers[0].status == 202 && answers[0].created, "accepted: 202");
    ok(answers[2].answered && answers[2].status == 200 && answers[2].id == answers[0].id && !answers[2].created,
       "the same idempotency key: 200 with the same id");
    fmsg_t *a = msg_by_id(answers[0].id), *b = msg_by_id(answers[1].id);
    ok(a && b && a->seq == 1 && b->seq == 2 && a->conv == b->conv, "numbered in their conversation");
    ok(sent_index(answers[0].id) == 0 && sent_index(answers[1].id) == 1, "sent to the provider in order");
    char want[32];
    snprintf(want, sizeof want, "P%lld", (long long)answers[0].id);
    ok(a && !strcmp(a->status, "sent") && !strcmp(a->provider_id, want) && a->attempts == 1,
       "sent with the provider's id, claimed once");
    ok(a && !a->in_outbox && b && !b->in_outbox, "and out of the outbox");
    is_int(count_events("message.status"), 2, "a message.status each (sent)");

    /* the provider's callbacks: forward only */
    char pid[32];
    snprintf(pid, sizeof pid, "P%lld", (long long)answers[0].id);
    status_receipt(10, pid, "delivered", 0);
    status_receipt(11, pid, "sent", 0); /* late: changes nothing */
    drive();
    ok(a && !strcmp(a->status, "delivered"), "delivered moves it forward");
    ok(processed(10) && processed(11), "both callbacks processed");
    is_int(count_events("message.status"), 3, "one more message.status (the late sent makes none)");
    status_receipt(12, "P-unknown", "delivered", 0);
    drive();
    ok(!processed(12), "a status of a message not known yet waits (unprocessed) for the sweeper");
    status_receipt(12, "P-unknown", "delivered", 61000 /* past the minute a status waits for its message */);
    drive();
    ok(processed(12), "a minute later it is taken as a status of no message of ours");

    /* refusals: the channel's rules, another tenant's channel */
    size_t before = db.nmsgs;
    send_msg(20, "+14155550001", "REFUSE", NULL);
    send_tenant = 2;
    send_msg(21, "+14155550001", "not yours", NULL);
    send_tenant = 1;
    send_msg(22, "whatsapp:+14155550001", "canonical", NULL);
    drive();
    ok(answers[20].answered && answers[20].status == 400 && !strcmp(answers[20].code, "body_too_long"),
       "a message the channel cannot send: 400 with the provider port's code");
    ok(answers[21].answered && answers[21].status == 404 && !strcmp(answers[21].code, "not_found"),
       "another tenant's channel: 404");
    fmsg_t *c = msg_by_id(answers[22].id);
    ok(db.nmsgs == before + 1 && c && !strcmp(c->to, "+14155550001") && c->conv == a->conv,
       "only the good one is stored, its recipient in the stored form (the same conversation)");
    teardown();
}

TEST(sends_taken_elsewhere)
{
    setup();
    send_msg(0, "+14155550001", "direct", NULL);
    drive();
    send_receipt(30, 900001 * 1024LL, "+14155550001", "taken by another node", "kx", 0);
    drive();
    fmsg_t *a = msg_by_id(answers[0].id), *x = msg_by_id(900001 * 1024LL);
    ok(x && a && x->conv == a->conv && x->seq == 2 && processed(30),
       "a send's receipt: stored under its id, next in its conversation, its receipt processed with it");
    ok(x && !strcmp(x->key, "kx") && sent_index(x->id) == 1, "with its key, and sent after the one before");
    size_t n = db.nmsgs;
    send_receipt(30, 900001 * 1024LL, "+14155550001", "taken by another node", "kx", 0);
    send_receipt(31, 900001 * 1024LL, "+14155550001", "taken by another node", NULL, 0);
    drive();
    is_int((long long)db.nmsgs, (long long)n,
           "delivered again (the same receipt, or another naming its id): nothing new");
    send_msg(1, "+14155550001", "direct, the same key", "kx");
    drive();
    ok(answers[1].status == 200 && answers[1].id == 900001 * 1024LL, "its key on this node: 200, its id");

    /* a cancel that comes before its send: waits for it; one whose send never comes: 503 after 10 s */
    int64_t wall = clock_us / 1000;
    cancel_of(0, 1, 900002 * 1024LL, true);
    cancel_of(1, 1, 900003 * 1024LL, true);
    drive();
    ok(!cancels[0].answered && !cancels[1].answered, "cancels of sends not arrived yet wait");
    send_receipt(32, 900002 * 1024LL, "+14155550002", "later", NULL, wall + 60000);
    drive();
    fmsg_t *y = msg_by_id(900002 * 1024LL);
    ok(cancels[0].answered && cancels[0].status == 200 && y && !strcmp(y->status, "canceled") && processed(32),
       "its send arrived: stored, then canceled (200)");
    advance(10500);
    ok(cancels[1].answered && cancels[1].status == 503, "the other waited 10 s: 503");
    cancel_of(2, 1, 900001 * 1024LL, true);
    drive();
    ok(cancels[2].answered && cancels[2].status == 409, "a cancel of one taken and sent already: 409 at once");

    /* one its channel refuses now: set aside */
    int aside = db.set_aside;
    send_receipt(33, 900004 * 1024LL, "+14155550003", "REFUSE", NULL, 0);
    drive();
    ok(!msg_by_id(900004 * 1024LL) && processed(33) && db.set_aside == aside + 1,
       "a send its channel refuses: set aside (processed, nothing stored)");
    teardown();
}

TEST(concurrency_and_retry)
{
    setup();
    fx.hold = true;
    send_msg(0, "+14155550001", "a1", NULL);
    send_msg(1, "+14155550002", "b1", NULL);
    send_msg(2, "+14155550001", "a2", NULL);
    drive();
    is_int((long long)fx.nsent, 2, "two conversations: their first messages are with the provider at once");
    ok(sent_index(answers[2].id) < 0, "the second of a conversation waits for the first");
    fx.hold = false;
    for (sb_list_t *l; (l = sb_list_pop_front(&fx.held));)
        sb_list_push_back(&jobs, l);
    drive();
    ok(sent_index(answers[2].id) == 2, "then it goes");

    fx.retry_for = (int)(db.next_id + 1); /* the next message: the provider answers RETRY once */
    fx.retries_left = 1;
    send_msg(3, "+14155550001", "a3 (will be retried)", NULL);
    drive();
    send_msg(4, "+14155550001", "a4 (after a3)", NULL);
    send_msg(5, "+14155550002", "b2 (another conversation)", NULL);
    drive();
    fmsg_t *a3 = msg_by_id(answers[3].id);
    ok(a3 && !strcmp(a3->status, "retrying"), "a3 is retrying");
    ok(sent_index(answers[5].id) >= 0, "b2, of another conversation, went meanwhile");
    ok(sent_index(answers[4].id) < 0, "a4 waits behind a3 in its conversation");
    advance(1200);
    ok(a3 && !strcmp(a3->status, "sent") && a3->attempts == 2, "after its backoff a3 is sent (second attempt)");
    ok(sent_index(answers[4].id) > sent_index(answers[3].id), "then a4");
    teardown();
}

TEST(fallback)
{
    setup();
    /* failed for good: the next channel's session takes it at once */
    fx.fail_channel = 7;
    send_fallback(0, "code 1234", "{\"channels\":[8,9],\"after_s\":5}");
    drive();
    fmsg_t *a = msg_by_id(answers[0].id), *b = a ? fallback_of(a->id) : NULL;
    ok(a && !strcmp(a->status, "failed") && b && b->channel == 8 && !strcmp(b->body, "code 1234") &&
       !strcmp(b->to, "+14155550009"), "failed: the same content to the same recipient on channel 8");
    ok(b && a->fallback_to == b->id && !a->watched && !strcmp(a->history_last, "fallback"),
       "linked both ways, the first keeps its status (failed) and its history says fallback");
    char key[48];
    snprintf(key, sizeof key, "sb-fallback:%lld", a ? (long long)a->id : 0LL);
    ok(b && !strcmp(b->key, key) && !strcmp(b->status, "sent") && b->watched,
       "under the key sb-fallback:{id}, sent, and watched in turn (channel 9 left)");
    is_int(count_status_events("fallback"), 1, "one message.status fallback");
    ok(a && strstr(fallback_event(a->id), "\"reason\":\"failed\"") && strstr(fallback_event(a->id),
       "\"fallback_channel_id\":\"8\""), "naming the reason (failed) and the channel");

    /* not delivered in time: fires after after_s; delivered in time: nothing */
    fx.fail_channel = 0;
    send_fallback(1, "late", "{\"channels\":[8],\"after_s\":5}");
    send_fallback(2, "on time", "{\"channels\":[8],\"after_s\":5}");
    drive();
    fmsg_t *l = msg_by_id(answers[1].id), *t = msg_by_id(answers[2].id);
    ok(l && l->watched && t && t->watched && !strcmp(l->status, "sent"), "both sent and watched");
    char pid[32];
    snprintf(pid, sizeof pid, "P%lld", t ? (long long)t->id : 0LL);
    status_receipt(30, pid, "delivered", 0);
    advance(4000);
    ok(t && !t->watched && !fallback_of(t->id), "delivered in time: no longer watched, nothing sent again");
    ok(l && !fallback_of(l->id), "not delivered yet, 4 s in: nothing yet");
    advance(1500);
    fmsg_t *lb = l ? fallback_of(l->id) : NULL;
    ok(lb && lb->channel == 8 && l->fallback_to == lb->id && !l->watched, "5 s after it was sent: on channel 8");
    ok(l && strstr(fallback_event(l->id), "\"reason\":\"not_delivered\""), "reason not_delivered");
    /* the first one's fallback (channel 8, never delivered) had channel 9 left: it went there at its deadline */
    fmsg_t *c = b ? fallback_of(b->id) : NULL;
    ok(c && c->channel == 9 && !c->watched && b->fallback_to == c->id, "a chain: channel 8's, not delivered, "
       "went on to channel 9, the last of the list");
    advance(8000);
    is_int(count_status_events("fallback"), 3, "three fallbacks in all, each once");
    int from8 = 0;
    for (size_t i = 0; i < fx.nsent; i++)
        from8 += fx.sent_channel[i] == 8;
    is_int(from8, 2, "channel 8 was asked twice (once for each message that fell back to it)");
    teardown();
}

/* The position in fx.sent of the message sent in answer slot i. */
static int64_t sent_at(size_t i)
{
    return sent_index(answers[i].id);
}

TEST(lanes)
{
    setup();
    fx.hold_grants = true;
    send_prio(0, "+14155550001", "a1 bulk", SB_PRIORITY_BULK);
    send_prio(1, "+14155550001", "a2 bulk", SB_PRIORITY_BULK);
    send_prio(2, "+14155550002", "b1 bulk", SB_PRIORITY_BULK);
    send_prio(3, "+14155550003", "n1 normal", SB_PRIORITY_NORMAL);
    send_prio(4, "+14155550004", "i1 interactive", SB_PRIORITY_INTERACTIVE);
    drive();
    is_int((long long)fx.nsent, 0, "nothing goes before a token is granted (no claim waits for one)");
    fmsg_t *a1 = msg_by_id(answers[0].id);
    ok(a1 && !strcmp(a1->status, "queued"), "a bulk message waiting for the pace is still queued");
    for (int k = 0; k < 5; k++)
        grant_one();
    ok(fx.nsent == 5 && sent_at(4) == 0 && sent_at(3) == 1 && sent_at(0) == 2 && sent_at(2) == 3 && sent_at(1) == 4,
       "each token to the best head: interactive, normal, then bulk conversations oldest first (a2 after a1)");

    /* a reply behind bulk messages of its own conversation lifts them, never overtakes them */
    size_t base = fx.nsent;
    send_prio(10, "+14155550010", "g1 bulk", SB_PRIORITY_BULK);
    send_prio(11, "+14155550011", "g2 bulk", SB_PRIORITY_BULK);
    send_prio(12, "+14155550005", "c1 bulk", SB_PRIORITY_BULK);
    send_prio(13, "+14155550005", "c2 bulk", SB_PRIORITY_BULK);
    send_prio(14, "+14155550005", "e3 reply", SB_PRIORITY_INTERACTIVE);
    send_prio(15, "+14155550006", "f1 reply", SB_PRIORITY_INTERACTIVE);
    drive();
    for (int k = 0; k < 4; k++)
        grant_one();
    ok(fx.nsent == base + 4 && sent_at(10) < 0 && sent_at(11) < 0,
       "the lifted conversation and the other reply go before the older bulk conversations");
    ok(sent_at(12) >= 0 && sent_at(12) < sent_at(13) && sent_at(13) < sent_at(14) && sent_at(15) >= 0,
       "within the conversation, its order holds (c1, c2, then the reply)");
    while (grant_one())
        ;
    ok(sent_at(10) >= 0 && sent_at(11) >= 0, "then the bulk backlog");

    /* normal traffic beyond the pace: bulk keeps its share */
    base = fx.nsent;
    for (size_t k = 0; k < 3; k++)
        send_prio(20 + k, k == 0 ? "+14155550020" : k == 1 ? "+14155550021" : "+14155550022", "bulk share",
                  SB_PRIORITY_BULK);
    char to[16];
    for (size_t k = 0; k < 24; k++) {
        snprintf(to, sizeof to, "+141555510%02zu", k);
        send_prio(30 + k, to, "normal flood", SB_PRIORITY_NORMAL);
    }
    drive();
    for (int k = 0; k < 24; k++)
        grant_one();
    int first_bulk = -1, bulk = 0;
    for (size_t k = base; k < fx.nsent; k++)
        for (size_t b = 0; b < 3; b++)
            if (fx.sent[k] == answers[20 + b].id) {
                bulk++;
                if (first_bulk < 0)
                    first_bulk = (int)(k - base);
            }
    ok(first_bulk == 10 && bulk == 2, "with normal work always ready, bulk takes one start in eleven (first "
                                      "at %d, %d in 24)", first_bulk, bulk);
    while (grant_one())
        ;
    teardown();
}

TEST(activation)
{
    setup();
    sb_rt_set_idle_timeout(rt, 5000);
    receipt(1, "+14155550001", "one");
    receipt(2, "+14155550001", "two");
    drive();
    advance(6000);
    sb_rt_passivate(rt);
    sb_rt_stats_t st;
    sb_rt_get_stats(rt, &st);
    ok(st.actors == 0 && st.passivations == 2, "idle: the session and the tenant are passivated");
    receipt(3, "+14155550001", "three");
    drive();
    ok(db.nmsgs == 3 && db.msgs[2].seq == 3, "activated again: the seq is loaded (3)");
    ok(cursors_dense(), "and the cursor (dense)");

    /* a message left sending by a crash: unknown when activation finds it (sending for over two minutes) */
    fmsg_t *m = &db.msgs[db.nmsgs++];
    *m = (fmsg_t){.id = 9000, .tenant = 1, .conv = db.msgs[0].conv, .channel = 7, .seq = 4, .out = true,
                  .in_outbox = true};
    snprintf(m->status, sizeof m->status, "sending");
    snprintf(m->to, sizeof m->to, "+14155550001");
    advance(6000);
    sb_rt_passivate(rt);
    receipt(4, "+14155550001", "four");
    drive();
    fmsg_t *left = msg_by_id(9000);
    ok(left && !strcmp(left->status, "unknown") && !left->in_outbox,
       "the message left sending is unknown, never sent again");
    ok(sent_index(9000) < 0, "the provider was not asked");
    teardown();
}

TEST(restart)
{
    setup();
    receipt(1, "+14155550001", "one");
    receipt(2, "+14155550001", "two");
    drive();
    sb_rt_send_key(rt, 0, &sb_session_kind, 7, SB_SESSION_WRITTEN, "?", 1); /* nothing a tenant would send */
    drive();
    sb_rt_stats_t st;
    sb_rt_get_stats(rt, &st);
    is_int((long long)st.restarts, 1, "a message the session cannot read fails it: the supervisor restarts it");
    receipt(3, "+14155550001", "three");
    drive();
    ok(db.nmsgs == 3 && db.msgs[2].seq == 3, "restarted from the store: the conversation goes on at seq 3");
    ok(cursors_dense(), "and the tenant's cursors stay dense");
    send_msg(0, "+14155550002", "after the restart", NULL);
    drive();
    ok(answers[0].status == 202 && sent_index(answers[0].id) == 0, "it accepts and sends as before");

    sb_rt_send_key(rt, 0, &sb_tenant_kind, 1, SB_TENANT_WRITE, "?", 1); /* nothing a session would send */
    drive();
    sb_rt_get_stats(rt, &st);
    is_int((long long)st.restarts, 2, "the tenant actor fails the same way and is restarted");
    receipt(4, "+14155550001", "four");
    drive();
    ok(db.nmsgs == 5 && processed(4) && cursors_dense(),
       "restarted from the store: its cursor loaded again, the log stays dense (%zu events)", db.nevents);
    teardown();
}

TEST(scheduled)
{
    setup();
    int64_t wall = clock_us / 1000;
    send_at(0, "+14155550001", "A at +3 s", wall + 3000);
    send_at(1, "+14155550001", "B at +1 s", wall + 1000);
    send_at(2, "+14155550001", "C now", 0);
    send_at(3, "+14155550002", "D at +1 s (another conversation, a higher id)", wall + 1000);
    send_at(4, "+14155550003", "E in the past: at once", wall - 5000);
    drive();
    ok(answers[0].status == 202 && !strcmp(answers[0].accepted, "scheduled") && !strcmp(answers[1].accepted,
       "scheduled") && !strcmp(answers[3].accepted, "scheduled"), "scheduled ones answered 202 scheduled");
    ok(!strcmp(answers[2].accepted, "queued") && !strcmp(answers[4].accepted, "queued"),
       "no send_at, or one in the past: queued");
    fmsg_t *a = msg_by_id(answers[0].id), *b = msg_by_id(answers[1].id), *d = msg_by_id(answers[3].id);
    ok(a && !strcmp(a->status, "scheduled") && a->send_at_ms == wall + 3000 && a->in_outbox,
       "stored scheduled, with its send_at, in the outbox");
    ok(status_events(answers[0].id, "scheduled") == 1 && status_events(answers[2].id, "scheduled") == 0,
       "a message.status scheduled for each scheduled one only");
    ok(sent_index(answers[2].id) >= 0 && sent_index(answers[4].id) >= 0,
       "the queued ones went at once: C is not held back by A and B before it in its conversation");
    ok(sent_index(answers[0].id) < 0 && sent_index(answers[1].id) < 0 && sent_index(answers[3].id) < 0,
       "the scheduled ones not");
    advance(900);
    ok(sent_index(answers[1].id) < 0 && sent_index(answers[3].id) < 0, "not before their time (0.9 s)");
    advance(200);
    ok(sent_index(answers[1].id) >= 0 && sent_index(answers[3].id) > sent_index(answers[1].id),
       "at their time (1 s), B then D: the same time, by id");
    ok(b && !strcmp(b->status, "sent") && d && !strcmp(d->status, "sent") && sent_index(answers[0].id) < 0,
       "both sent; A still waits");

    /* cancels: a scheduled one, one sent, one unknown, another tenant's */
    cancel_msg(0, 1, answers[0].id);
    cancel_msg(1, 1, answers[2].id);
    cancel_msg(2, 1, 999999);
    cancel_msg(3, 2, answers[0].id);
    drive();
    ok(cancels[0].answered && cancels[0].status == 200, "a scheduled message is canceled: 200");
    ok(a && !strcmp(a->status, "canceled") && !a->in_outbox && status_events(answers[0].id, "canceled") == 1,
       "stored canceled, out of the outbox, with its message.status event");
    ok(cancels[1].status == 409 && !strcmp(cancels[1].code, "conflict"), "one sent already: 409");
    ok(cancels[2].status == 409, "one the outbox does not hold: 409 (the front door answered 404 for no message)");
    ok(cancels[3].status == 404, "another tenant's: 404");
    advance(3000);
    ok(sent_index(answers[0].id) < 0, "the canceled one never goes");

    /* a queued one behind its conversation's message with the provider */
    fx.hold = true;
    send_at(5, "+14155550004", "F1 held by the provider", 0);
    send_at(6, "+14155550004", "F2 queued behind it", 0);
    drive();
    cancel_msg(4, 1, answers[5].id);
    cancel_msg(5, 1, answers[6].id);
    drive();
    ok(cancels[4].status == 409, "the one with the provider: 409");
    ok(cancels[5].status == 200 && !strcmp(msg_by_id(answers[6].id)->status, "canceled"), "the queued one: 200");
    fx.hold = false;
    for (sb_list_t *l; (l = sb_list_pop_front(&fx.held));)
        sb_list_push_back(&jobs, l);
    drive();
    ok(sent_index(answers[6].id) < 0 && !strcmp(msg_by_id(answers[5].id)->status, "sent"),
       "it never goes; the first is sent");

    /* one waiting its retry's backoff; two DELETEs of one scheduled message at once */
    fx.retry_for = (int)(db.next_id + 1);
    fx.retries_left = 1;
    send_at(8, "+14155550006", "H retried", 0);
    drive();
    ok(!strcmp(msg_by_id(answers[8].id)->status, "retrying"), "H is retrying (its backoff: 999 ms)");
    cancel_msg(7, 1, answers[8].id);
    drive();
    ok(cancels[7].status == 200 && !strcmp(msg_by_id(answers[8].id)->status, "canceled"),
       "a message waiting its retry's backoff is canceled: 200");
    size_t tries = fx.nsent;
    advance(1500);
    ok(fx.nsent == tries, "and not tried again");
    wall = clock_us / 1000;
    send_at(9, "+14155550007", "I at +5 s", wall + 5000);
    drive();
    cancel_msg(8, 1, answers[9].id);
    cancel_msg(9, 1, answers[9].id);
    drive();
    ok(cancels[8].status == 200 && cancels[9].status == 200 && status_events(answers[9].id, "canceled") == 1,
       "two cancels of one message at once: both 200, canceled once");

    /* a cancel whose write fails: the message stays scheduled and still goes at its time */
    wall = clock_us / 1000;
    send_at(7, "+14155550005", "G at +2 s", wall + 2000);
    drive();
    db.fail_writes = 1;
    cancel_msg(6, 1, answers[7].id);
    drive();
    ok(cancels[6].status == 503 && !strcmp(msg_by_id(answers[7].id)->status, "scheduled"),
       "a cancel not stored: 503, still scheduled");
    advance(2100);
    ok(sent_index(answers[7].id) >= 0, "and it goes at its time");
    teardown();
}

TEST(scheduled_passivated)
{
    setup();
    sb_rt_set_idle_timeout(rt, 5000);
    int64_t wall = clock_us / 1000;
    send_at(0, "+14155550001", "due in 2 min", wall + 120000);
    send_at(1, "+14155550002", "due in 10 min, canceled while passivated", wall + 600000);
    send_at(2, "+14155550003", "due in 5 min", wall + 300000);
    drive();
    advance(6000);
    sb_rt_passivate(rt);
    sb_rt_stats_t st;
    sb_rt_get_stats(rt, &st);
    ok(st.actors == 0, "only messages due beyond the horizon: the session may be passivated");
    cancel_msg(0, 1, answers[1].id);
    drive();
    ok(cancels[0].status == 200 && !strcmp(msg_by_id(answers[1].id)->status, "canceled"),
       "a cancel activates it; it loads its outbox and cancels");
    advance(6000);
    sb_rt_passivate(rt);
    sb_rt_get_stats(rt, &st);
    ok(st.actors == 0, "passivated again");

    advance(120000 - 12000 - SB_SESSION_SCHEDULE_HORIZON_MS + 1000); /* 59 s before the first is due */
    sb_rt_send_key(rt, 0, &sb_session_kind, 7, SB_SESSION_WAKE, NULL, 0); /* what shard 0's scan sends */
    drive();
    advance(6000);
    sb_rt_passivate(rt);
    sb_rt_get_stats(rt, &st);
    ok(st.actors >= 1, "woken: with a message due within the horizon it is not passivated");
    advance((uint64_t)(wall + 120000 - clock_us / 1000) - 100);
    ok(sent_index(answers[0].id) < 0, "not before its time");
    advance(200);
    ok(sent_index(answers[0].id) >= 0, "loaded from the store, sent at its time");
    ok(sent_index(answers[1].id) < 0 && sent_index(answers[2].id) < 0, "the canceled one and the later one not");
    teardown();
}

static int64_t sub_cursor;
static int sub_answers, sub_err;

static void sub_answer(void *arg, int64_t cursor, int err)
{
    (void)arg;
    sub_cursor = cursor;
    sub_err = err;
    sub_answers++;
}

TEST(subscriptions)
{
    setup();
    receipt(1, "+14155550001", "before");
    drive();
    sb_tenant_sub_t sub = {.shard = 3, .answer = sub_answer};
    sb_tenant_subscribe(rt, 0, 1, &sub, true);
    drive();
    ok(sub_answers == 1 && sub_err == 0 && sub_cursor == 2, "subscribed: told the newest cursor (2)");
    receipt(2, "+14155550002", "after");
    drive();
    ok(fx.npublished == 1 && fx.published_shard[0] == 3 && fx.published[0]->prev == 2 && fx.published[0]->n == 2 &&
           fx.published[0]->ev[0].cursor == 3,
       "the next write's events go to shard 3 as one batch (cursors 3, 4 after 2)");
    ok(fx.npublished == 1 && fx.published[0]->ev[0].json.len > 0 &&
           strstr(fx.published[0]->ev[0].json.p, "\"op\":\"event\""),
       "with each event's frame made once");
    sb_tenant_subscribe(rt, 0, 1, &sub, false);
    receipt(3, "+14155550002", "unheard");
    drive();
    is_int((long long)fx.npublished, 1, "unsubscribed: nothing more published there");
    teardown();
}

TEST(webhooks)
{
    setup();
    snprintf(db.hook_url, sizeof db.hook_url, "http://app.example/hooks");
    receipt(1, "+14155550001", "one");
    drive();
    ok(fx.posts == 2 && fx.posted[0] == 1 && fx.posted[1] == 2 && db.hook_acked == 2,
       "both events posted in order, acknowledged durably");
    fx.hook_status = 500;
    receipt(2, "+14155550001", "two");
    drive();
    ok(fx.posts == 3 && db.hook_acked == 2, "a 500: not acknowledged");
    fx.hook_status = 200;
    advance(2000);
    ok(db.hook_acked == 4 && fx.posted[3] == 3, "after the backoff it is posted again, and the next follows");
    fx.hook_status = 503;
    db.event_age_ms = 59000; /* a second before webhook_max_age */
    receipt(3, "+14155550001", "three");
    drive();
    advance(3000);
    ok(db.dead >= 1 && db.hook_acked == 6, "an event that reaches webhook_max_age is dead-lettered, the next too");
    teardown();
}

/* Meta's 24-hour window (the provider port's rule, faked: a template goes at any time, anything else only within
 * 24 hours of the customer's last message): refused 422 with nothing stored or sent; opened by an inbound message;
 * loaded with the conversation after a passivation; closed again 24 hours later. */
static int f_window(void *ctx, sb_channel_type_t type, const sb_send_request_t *req, int64_t since, const char **code,
                    char *message, size_t cap)
{
    (void)ctx, (void)type;
    if (req->template_json || (since >= 0 && since < 24 * 3600 * 1000LL))
        return 0;
    *code = "outside_window";
    snprintf(message, cap, "outside the 24-hour window");
    return SB_EACCES;
}

TEST(window)
{
    setup();
    ports.provider.window = f_window;
    sb_rt_set_idle_timeout(rt, 5000);
    send_msg(0, "+14155550077", "hi", NULL);
    drive();
    ok(answers[0].answered && answers[0].status == 422 && !strcmp(answers[0].code, "outside_window"),
       "a customer who never wrote: 422 outside_window");
    ok(db.nmsgs == 0 && fx.nsent == 0 && count_events("message.created") == 0, "nothing stored, nothing sent");

    receipt(1, "+14155550077", "hello?");
    drive();
    send_msg(1, "+14155550077", "hello! how can we help?", NULL);
    drive();
    ok(answers[1].answered && answers[1].status == 202, "after the customer's message: 202");
    ok(db.nmsgs == 2 && fx.nsent == 1, "stored and sent");

    advance(6000);
    sb_rt_passivate(rt);
    sb_rt_stats_t st;
    sb_rt_get_stats(rt, &st);
    ok(st.actors == 0, "passivated: the session's memory is gone");
    send_msg(2, "+14155550077", "still within the day", NULL);
    drive();
    ok(answers[2].answered && answers[2].status == 202, "activated again: the window is loaded with the conversation");

    clock_us += 25LL * 3600 * 1000000;
    send_msg(3, "+14155550077", "a day later", NULL);
    drive();
    ok(answers[3].answered && answers[3].status == 422, "25 hours after the customer's message: 422");
    sb_session_send_t *req = sb_calloc(1, sizeof *req);
    *req = (sb_session_send_t){.tenant = 1, .channel = 7, .to = sb_strdup("+14155550077"), .body = sb_strdup(""),
                               .media_json = sb_strdup("[]"), .template_json = sb_strdup("{\"name\":\"x\"}"),
                               .answer = on_answer, .arg = (void *)(uintptr_t)4};
    answers[4].answered = false;
    sb_session_send(rt, 0, req);
    drive();
    ok(answers[4].answered && answers[4].status == 202, "a template goes");
    receipt(2, "+14155550077", "I'm back");
    drive();
    send_msg(5, "+14155550077", "welcome back", NULL);
    drive();
    ok(answers[5].answered && answers[5].status == 202, "the customer's new message opens it again");
    ports.provider.window = NULL;
    teardown();
}

int main(void)
{
    RUN(inbound_numbering);
    RUN(forgets_idle_conversations);
    RUN(failed_write);
    RUN(refused_alone);
    RUN(sends);
    RUN(sends_taken_elsewhere);
    RUN(concurrency_and_retry);
    RUN(fallback);
    RUN(lanes);
    RUN(activation);
    RUN(restart);
    RUN(scheduled);
    RUN(scheduled_passivated);
    RUN(subscriptions);
    RUN(webhooks);
    RUN(window);
    return tap_done();
}
