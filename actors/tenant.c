/* The tenant actor; see tenant.h for what it owns.
 *
 * The port's completions come back as messages (the actor handles them in its own turn, like everything else), each
 * naming the request it answers, so a stale one (after a restart) is recognised and ignored. Messages with payloads
 * that own memory carry a drop hook, so nothing leaks when one is thrown away unhandled. */
#include "actors/tenant.h"

#include "gateway/log.h"
#include "proto/err.h"
#include "proto/mem.h"
#include "proto/retry.h"
#include "proto/str.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#define MAX_SHARDS 256           /* subscribed shards tracked: as many as a node may run */
#define WRITE_MAX_EVENTS 4096    /* events of one write, at most (one page of the log) */
#define HOOK_PAGE 50
#define LOAD_RETRY_MS 1000

enum { T_LOADED = SB_TENANT_INTERNAL, T_WRITTEN, T_HOOK_PAGE, T_HOOK_POSTED, T_HOOK_SAVED };
enum { TIMER_LOAD = 1, TIMER_HOOK = 2 };

typedef struct hook_ev {
    int64_t cursor;
    char *type, *data;
    size_t len;
    uint64_t expires_at; /* runtime ms at which it reaches webhook_max_age */
} hook_ev_t;

typedef struct stashed_sub {
    sb_list_t link;
    sb_tenant_sub_t sub;
} stashed_sub_t;

typedef struct tenant {
    const sb_ports_t *ports;
    sb_rt_t *rt;
    sb_actor_id_t self;
    int64_t id;
    bool ready, loading;
    int64_t committed;        /* the newest committed cursor */
    sb_list_t queue;          /* works waiting for their write */
    sb_list_t inflight;       /* the works of the write in flight */
    bool writing;
    uint64_t epoch;           /* this incarnation's: a completion of another one (before a restart) is stale */
    uint32_t shards[MAX_SHARDS / 32];
    unsigned nshards;
    sb_list_t stash;          /* subscriptions that came while it loaded */
    char *hook_url, *hook_secret;
    int64_t hook_acked;
    bool hook_busy, hook_waiting, hook_again;
    unsigned hook_attempt;
    hook_ev_t page[HOOK_PAGE];
    int npage, at;
} tenant_t;

/* ---- work items --------------------------------------------------------------------------------------------------- */

typedef struct work_ext {
    sb_tenant_work_t w;
    bool alone; /* put back after a failed write of several: written on its own */
} work_ext_t;

sb_tenant_work_t *sb_tenant_work_new(sb_actor_id_t from, uint32_t reply_type, uint64_t token)
{
    work_ext_t *x = sb_calloc(1, sizeof *x);
    sb_list_init(&x->w.link);
    x->w.from = from;
    x->w.reply_type = reply_type;
    x->w.token = token;
    sb_buf_init(&x->w.ev_data);
    sb_arena_init(&x->w.strings);
    return &x->w;
}

void sb_tenant_work_free(sb_tenant_work_t *w)
{
    if (!w)
        return;
    sb_arena_cleanup(&w->strings);
    free(w->messages);
    free(w->calls);
    free(w->changes);
    free(w->receipts);
    free(w->ev_types);
    free(w->ev_off);
    free(w->ev_len);
    sb_buf_cleanup(&w->ev_data);
    free(sb_container_of(w, work_ext_t, w));
}

#define GROW(arr, n, cap)                                                                                            \
    do {                                                                                                             \
        if ((n) == (cap)) {                                                                                          \
            (cap) = (cap) ? (cap)*2 : 8;                                                                             \
            (arr) = sb_realloc((arr), (cap) * sizeof *(arr));                                                        \
        }                                                                                                            \
    } while (0)

const char *sb_tenant_work_str(sb_tenant_work_t *w, const char *s)
{
    return s ? sb_arena_strdup(&w->strings, s) : NULL;
}

sb_new_message_t *sb_tenant_work_message(sb_tenant_work_t *w)
{
    GROW(w->messages, w->nmessages, w->cap_messages);
    sb_new_message_t *m = &w->messages[w->nmessages++];
    memset(m, 0, sizeof *m);
    return m;
}

sb_call_row_t *sb_tenant_work_call(sb_tenant_work_t *w)
{
    GROW(w->calls, w->ncalls, w->cap_calls);
    sb_call_row_t *c = &w->calls[w->ncalls++];
    memset(c, 0, sizeof *c);
    c->duration_s = -1;
    return c;
}

sb_status_change_t *sb_tenant_work_change(sb_tenant_work_t *w)
{
    GROW(w->changes, w->nchanges, w->cap_changes);
    sb_status_change_t *c = &w->changes[w->nchanges++];
    memset(c, 0, sizeof *c);
    return c;
}

void sb_tenant_work_receipt(sb_tenant_work_t *w, int64_t receipt_id)
{
    GROW(w->receipts, w->nreceipts, w->cap_receipts);
    w->receipts[w->nreceipts++] = receipt_id;
}

void sb_tenant_work_event(sb_tenant_work_t *w, const char *type, sb_str_t data)
{
    if (w->nevents == w->cap_events) {
        w->cap_events = w->cap_events ? w->cap_events * 2 : 8;
        w->ev_types = sb_realloc(w->ev_types, w->cap_events * sizeof *w->ev_types);
        w->ev_off = sb_realloc(w->ev_off, w->cap_events * sizeof *w->ev_off);
        w->ev_len = sb_realloc(w->ev_len, w->cap_events * sizeof *w->ev_len);
    }
    w->ev_types[w->nevents] = type;
    w->ev_off[w->nevents] = w->ev_data.len;
    w->ev_len[w->nevents] = data.len;
    sb_buf_append_str(&w->ev_data, data);
    w->nevents++;
}

static void drop_work(sb_msg_t *m)
{
    sb_tenant_work_t *w;
    memcpy(&w, m->data, sizeof w);
    sb_tenant_work_free(w);
}

static void drop_sub(sb_msg_t *m)
{
    sb_tenant_sub_t sub;
    memcpy(&sub, m->data, sizeof sub);
    sub.answer(sub.arg, 0, SB_ECANCELED);
}

void sb_tenant_subscribe(sb_rt_t *rt, unsigned owner, int64_t tenant, const sb_tenant_sub_t *sub, bool on)
{
    sb_msg_t *m;
    if (on) {
        m = sb_msg_new(SB_TENANT_SUBSCRIBE, sizeof *sub);
        memcpy(m->data, sub, sizeof *sub);
        m->drop = drop_sub;
    } else {
        m = sb_msg_new(SB_TENANT_UNSUBSCRIBE, sizeof sub->shard);
        memcpy(m->data, &sub->shard, sizeof sub->shard);
    }
    sb_rt_post_key(rt, owner, &sb_tenant_kind, (uint64_t)tenant, m); /* a refused one is dropped: answered */
}

int sb_tenant_write(sb_rt_t *rt, int64_t tenant, sb_tenant_work_t *w)
{
    sb_msg_t *m = sb_msg_new(SB_TENANT_WRITE, sizeof w);
    memcpy(m->data, &w, sizeof w);
    m->drop = drop_work;
    return sb_rt_post_key(rt, sb_rt_shard(rt), &sb_tenant_kind, (uint64_t)tenant, m);
}

/* ---- completions: a port's callback becomes a message to the actor ---------------------------------------------- */

typedef struct comp {
    sb_rt_t *rt;
    sb_actor_id_t id;
    uint64_t seq;
} comp_t;

static _Atomic uint64_t incarnations; /* epochs, process-wide: each incarnation of each tenant actor its own */

static comp_t *comp_new(tenant_t *t)
{
    comp_t *c = sb_malloc(sizeof *c);
    *c = (comp_t){t->rt, t->self, t->epoch};
    return c;
}

typedef struct done_msg {
    uint64_t seq;
    int err;
    int64_t a, b;
} done_msg_t;

/* Opens a completion: false (ignore it) when it is too short or belongs to another incarnation. */
static bool done_open(const tenant_t *t, const sb_msg_t *m, done_msg_t *d)
{
    if (m->len < sizeof *d)
        return false;
    memcpy(d, m->data, sizeof *d);
    return d->seq == t->epoch;
}

static void post_done(comp_t *c, uint32_t type, int err, int64_t a, int64_t b)
{
    done_msg_t d = {c->seq, err, a, b};
    sb_rt_send(c->rt, 0, c->id, type, &d, sizeof d);
    free(c);
}

/* ---- replies ---------------------------------------------------------------------------------------------------- */

static void reply(tenant_t *t, sb_tenant_work_t *w, int err)
{
    sb_tenant_written_t r = {w->token, err, err ? 0 : w->first_cursor};
    sb_rt_send(t->rt, t->self, w->from, w->reply_type, &r, sizeof r);
}

/* ---- the log: numbering and writing ------------------------------------------------------------------------------ */

static void hooks_kick(tenant_t *t);

static void written_cb(void *arg, int err)
{
    comp_t *c = arg;
    post_done(c, T_WRITTEN, err, 0, 0);
}

/* Writes what waits: every queued work (a work put back after a failed write goes alone), numbered from the
 * committed cursor on, as one write. One at a time. */
static void flush(tenant_t *t)
{
    if (!t->ready || t->writing || sb_list_empty(&t->queue))
        return;
    size_t nmsg = 0, ncall = 0, nchg = 0, nrcp = 0, nev = 0;
    int64_t cursor = t->committed + 1;
    sb_buf_t json;
    sb_buf_init(&json);
    sb_buf_puts(&json, "[");
    for (sb_list_t *l; (l = sb_list_first(&t->queue));) {
        sb_tenant_work_t *w = sb_container_of(l, sb_tenant_work_t, link);
        bool alone = sb_container_of(w, work_ext_t, w)->alone;
        if (!sb_list_empty(&t->inflight) && (alone || nev + w->nevents > WRITE_MAX_EVENTS))
            break;
        sb_list_remove(l);
        sb_list_push_back(&t->inflight, l);
        w->first_cursor = cursor;
        for (size_t i = 0; i < w->nevents; i++) {
            sb_buf_puts(&json, nev + i ? ",{\"type\":\"" : "{\"type\":\"");
            sb_buf_puts(&json, w->ev_types[i]);
            sb_buf_puts(&json, "\",\"data\":");
            sb_buf_append(&json, w->ev_data.p + w->ev_off[i], w->ev_len[i]);
            sb_buf_puts(&json, "}");
        }
        cursor += (int64_t)w->nevents;
        nev += w->nevents;
        nmsg += w->nmessages;
        ncall += w->ncalls;
        nchg += w->nchanges;
        nrcp += w->nreceipts;
        if (alone)
            break;
    }
    sb_buf_puts(&json, "]");
    sb_new_message_t *msgs = sb_malloc((nmsg ? nmsg : 1) * sizeof *msgs);
    sb_call_row_t *calls = sb_malloc((ncall ? ncall : 1) * sizeof *calls);
    sb_status_change_t *chgs = sb_malloc((nchg ? nchg : 1) * sizeof *chgs);
    int64_t *rcps = sb_malloc((nrcp ? nrcp : 1) * sizeof *rcps);
    nmsg = ncall = nchg = nrcp = 0;
    sb_list_foreach(it, &t->inflight)
    {
        sb_tenant_work_t *w = sb_container_of(it, sb_tenant_work_t, link);
        if (w->nmessages)
            memcpy(msgs + nmsg, w->messages, w->nmessages * sizeof *msgs);
        if (w->ncalls)
            memcpy(calls + ncall, w->calls, w->ncalls * sizeof *calls);
        if (w->nchanges)
            memcpy(chgs + nchg, w->changes, w->nchanges * sizeof *chgs);
        if (w->nreceipts)
            memcpy(rcps + nrcp, w->receipts, w->nreceipts * sizeof *rcps);
        nmsg += w->nmessages;
        ncall += w->ncalls;
        nchg += w->nchanges;
        nrcp += w->nreceipts;
    }
    sb_tenant_write_t tw = {.tenant = t->id,
                            .messages = msgs,
                            .nmessages = nmsg,
                            .calls = calls,
                            .ncalls = ncall,
                            .changes = chgs,
                            .nchanges = nchg,
                            .receipts = rcps,
                            .nreceipts = nrcp,
                            .first_cursor = t->committed + 1,
                            .nevents = nev,
                            .events_json = nev ? sb_str(json.p, json.len) : sb_str("", 0)};
    t->writing = true;
    comp_t *c = comp_new(t);
    if (t->ports->store.write(t->ports->store.ctx, &tw, written_cb, c) < 0)
        post_done(c, T_WRITTEN, SB_EUNAVAIL, 0, 0); /* handled like a failed write, in a later turn */
    free(msgs);
    free(calls);
    free(chgs);
    free(rcps);
    sb_buf_cleanup(&json);
}

/* The committed works' events, as one batch, to every subscribed shard (and, with several nodes, to all of them). */
static void publish(tenant_t *t, int64_t prev, size_t nev)
{
    if ((!t->nshards && !t->ports->publish.everywhere) || !nev)
        return;
    const char **types = sb_malloc(nev * sizeof *types);
    sb_str_t *data = sb_malloc(nev * sizeof *data);
    size_t k = 0;
    sb_list_foreach(it, &t->inflight)
    {
        sb_tenant_work_t *w = sb_container_of(it, sb_tenant_work_t, link);
        for (size_t i = 0; i < w->nevents; i++, k++) {
            types[k] = w->ev_types[i];
            data[k] = sb_str(w->ev_data.p + w->ev_off[i], w->ev_len[i]);
        }
    }
    if (t->ports->publish.everywhere)
        t->ports->publish.everywhere(t->ports->publish.ctx, t->id, prev, nev, types, data);
    if (t->nshards) {
        sb_inbox_batch_t *b = sb_inbox_batch_new(t->id, prev, prev + 1, nev, types, data);
        for (unsigned s = 0; s < MAX_SHARDS; s++)
            if (t->shards[s / 32] & (1u << (s % 32)))
                t->ports->publish.publish(t->ports->publish.ctx, s, b);
        sb_inbox_batch_unref(b);
    }
    free(types);
    free(data);
}

static int on_written(tenant_t *t, const done_msg_t *d)
{
    if (!t->writing)
        return 0;
    t->writing = false;
    size_t nworks = 0, nev = 0;
    sb_list_foreach(it, &t->inflight)
    {
        nworks++;
        nev += sb_container_of(it, sb_tenant_work_t, link)->nevents;
    }
    if (d->err == 0) {
        int64_t prev = t->committed;
        t->committed += (int64_t)nev;
        publish(t, prev, nev);
        for (sb_list_t *l; (l = sb_list_pop_front(&t->inflight));) {
            sb_tenant_work_t *w = sb_container_of(l, sb_tenant_work_t, link);
            reply(t, w, 0);
            sb_tenant_work_free(w);
        }
        hooks_kick(t);
    } else if (nworks == 1) { /* it failed alone: refused (its session knows what that means for the rest) */
        sb_tenant_work_t *w = sb_container_of(sb_list_pop_front(&t->inflight), sb_tenant_work_t, link);
        reply(t, w, d->err);
        sb_tenant_work_free(w);
    } else { /* one of several failed: each goes again alone, in order, to find which */
        sb_log_warn("tenant %lld: a write of %zu items was refused (%s); each is written alone", (long long)t->id,
                    nworks, sb_strerror(d->err));
        for (sb_list_t *l; (l = sb_list_pop_back(&t->inflight));) {
            sb_container_of(sb_container_of(l, sb_tenant_work_t, link), work_ext_t, w)->alone = true;
            sb_list_push_front(&t->queue, l);
        }
    }
    flush(t);
    return 0;
}

static int on_write(sb_actor_t *a, void *state, sb_msg_t *m)
{
    tenant_t *t = state;
    (void)a;
    sb_tenant_work_t *w;
    if (m->len != sizeof w)
        return SB_EPARSE; /* not what a session sends: start again from the store */
    memcpy(&w, m->data, sizeof w);
    m->drop = NULL; /* ours now */
    sb_list_push_back(&t->queue, &w->link);
    flush(t);
    return 0;
}

/* ---- subscriptions ---------------------------------------------------------------------------------------------- */

static void subscribe(tenant_t *t, const sb_tenant_sub_t *sub)
{
    if (sub->shard >= MAX_SHARDS) {
        sub->answer(sub->arg, 0, SB_ERANGE);
        return;
    }
    if (!(t->shards[sub->shard / 32] & (1u << (sub->shard % 32)))) {
        t->shards[sub->shard / 32] |= 1u << (sub->shard % 32);
        t->nshards++;
    }
    sub->answer(sub->arg, t->committed, 0);
}

static int on_subscribe(sb_actor_t *a, void *state, sb_msg_t *m)
{
    tenant_t *t = state;
    (void)a;
    sb_tenant_sub_t sub;
    if (m->len != sizeof sub)
        return 0;
    memcpy(&sub, m->data, sizeof sub);
    m->drop = NULL; /* answered here */
    if (t->ready) {
        subscribe(t, &sub);
        return 0;
    }
    stashed_sub_t *s = sb_malloc(sizeof *s);
    s->sub = sub;
    sb_list_push_back(&t->stash, &s->link);
    return 0;
}

static int on_unsubscribe(sb_actor_t *a, void *state, sb_msg_t *m)
{
    tenant_t *t = state;
    (void)a;
    unsigned shard;
    if (m->len != sizeof shard)
        return 0;
    memcpy(&shard, m->data, sizeof shard);
    if (shard < MAX_SHARDS && (t->shards[shard / 32] & (1u << (shard % 32)))) {
        t->shards[shard / 32] &= ~(1u << (shard % 32));
        t->nshards--;
    }
    return 0;
}

/* ---- loading ------------------------------------------------------------------------------------------------------ */

static void loaded_cb(void *arg, int err, const sb_tenant_info_t *info)
{
    comp_t *c = arg;
    sb_buf_t b;
    sb_buf_init(&b);
    done_msg_t d = {c->seq, err, 0, 0};
    if (!err) {
        d.a = info->last_cursor;
        d.b = info->webhook_cursor;
    }
    sb_buf_append(&b, &d, sizeof d);
    if (!err && info->webhook_url && info->webhook_secret) { /* "url\0secret\0" */
        sb_buf_append(&b, info->webhook_url, strlen(info->webhook_url) + 1);
        sb_buf_append(&b, info->webhook_secret, strlen(info->webhook_secret) + 1);
    }
    sb_rt_send(c->rt, 0, c->id, T_LOADED, b.p, b.len);
    sb_buf_cleanup(&b);
    free(c);
}

/* Asks for the tenant's state; false when it could not be asked (the caller tries again later). */
static bool load(tenant_t *t)
{
    comp_t *c = comp_new(t);
    if (t->ports->store.load_tenant(t->ports->store.ctx, t->id, loaded_cb, c) < 0) {
        free(c);
        return false;
    }
    t->loading = true;
    return true;
}

static void forget_hook(tenant_t *t)
{
    free(t->hook_url);
    sb_free_secret(t->hook_secret);
    t->hook_url = t->hook_secret = NULL;
}

static int on_loaded(sb_actor_t *a, void *state, sb_msg_t *m)
{
    tenant_t *t = state;
    done_msg_t d;
    if (!done_open(t, m, &d))
        return 0;
    t->loading = false;
    if (d.err) {
        if (!t->ready)
            sb_actor_timer_start(a, LOAD_RETRY_MS, 0, TIMER_LOAD);
        return 0;
    }
    forget_hook(t);
    const char *url = (const char *)m->data + sizeof d, *end = (const char *)m->data + m->len;
    if (url < end) {
        const char *secret = url + strlen(url) + 1;
        if (secret < end) {
            t->hook_url = sb_strdup(url);
            t->hook_secret = sb_strdup(secret);
        }
    }
    t->hook_acked = d.b;
    if (!t->ready) {
        t->ready = true;
        t->committed = d.a;
        for (sb_list_t *l; (l = sb_list_pop_front(&t->stash));) {
            stashed_sub_t *s = sb_container_of(l, stashed_sub_t, link);
            subscribe(t, &s->sub);
            free(s);
        }
        flush(t);
    }
    hooks_kick(t);
    return 0;
}

/* ---- outgoing webhooks ----------------------------------------------------------------------------------------- */

static void page_clear(tenant_t *t)
{
    for (int i = 0; i < t->npage; i++) {
        free(t->page[i].type);
        free(t->page[i].data);
    }
    t->npage = t->at = 0;
}

static void page_cb(void *arg, int err, const sb_event_rec_t *ev, size_t n)
{
    comp_t *c = arg;
    sb_buf_t b;
    sb_buf_init(&b);
    done_msg_t d = {c->seq, err, (int64_t)(err ? 0 : n), 0};
    sb_buf_append(&b, &d, sizeof d);
    for (size_t i = 0; !err && i < n; i++) { /* cursor, age, type\0, data length, data */
        uint64_t len = ev[i].data.len;
        sb_buf_append(&b, &ev[i].cursor, sizeof ev[i].cursor);
        sb_buf_append(&b, &ev[i].age_ms, sizeof ev[i].age_ms);
        sb_buf_append(&b, ev[i].type, strlen(ev[i].type) + 1);
        sb_buf_append(&b, &len, sizeof len);
        sb_buf_append(&b, ev[i].data.p, ev[i].data.len);
    }
    sb_rt_send(c->rt, 0, c->id, T_HOOK_PAGE, b.p, b.len);
    sb_buf_cleanup(&b);
    free(c);
}

/* The head event failed: wait (backoff with jitter, Retry-After honoured, never past the moment the event reaches
 * webhook_max_age), then read again from the acknowledged cursor. */
static void hook_fail(sb_actor_t *a, tenant_t *t, int retry_after_s)
{
    t->hook_attempt++;
    uint64_t ms = sb_retry_backoff_ms(t->hook_attempt, retry_after_s, t->ports->random(t->ports->ctx));
    if (t->at < t->npage) {
        uint64_t now = sb_rt_time(t->rt), expires = t->page[t->at].expires_at;
        uint64_t left = expires > now ? expires - now : 0;
        if (ms > left)
            ms = left;
    }
    if (ms < 100)
        ms = 100;
    page_clear(t);
    t->hook_busy = false;
    t->hook_waiting = true;
    sb_actor_timer_start(a, ms, 0, TIMER_HOOK);
}

static void saved_cb(void *arg, int err)
{
    post_done(arg, T_HOOK_SAVED, err, 0, 0);
}

static void posted_cb(void *arg, int status, int retry_after_s, int err)
{
    post_done(arg, T_HOOK_POSTED, err, status, retry_after_s);
}

static void hook_next(sb_actor_t *a, tenant_t *t)
{
    if (!t->hook_url) { /* the setting went away meanwhile */
        page_clear(t);
        t->hook_busy = false;
        return;
    }
    if (t->at >= t->npage) { /* the page is done: read on if there may be more */
        bool more = t->npage == HOOK_PAGE || t->hook_again;
        page_clear(t);
        t->hook_busy = false;
        t->hook_again = false;
        if (more)
            hooks_kick(t);
        return;
    }
    hook_ev_t *e = &t->page[t->at];
    comp_t *c = comp_new(t);
    int rc;
    if (sb_rt_time(t->rt) >= e->expires_at) {
        sb_event_rec_t rec = {.cursor = e->cursor, .type = e->type, .data = sb_str(e->data, e->len)};
        rc = t->ports->store.hook_dead(t->ports->store.ctx, t->id, &rec, "not delivered within webhook_max_age",
                                       saved_cb, c);
    } else {
        sb_hook_post_t p = {.url = t->hook_url, .secret = t->hook_secret, .tenant = t->id, .cursor = e->cursor,
                            .type = e->type, .data = sb_str(e->data, e->len)};
        rc = t->ports->hooks.post(t->ports->hooks.ctx, &p, posted_cb, c);
    }
    if (rc < 0) {
        free(c);
        hook_fail(a, t, -1);
    }
}

static void hooks_kick(tenant_t *t)
{
    if (!t->ready || !t->hook_url || t->hook_waiting)
        return;
    if (t->hook_busy) {
        t->hook_again = true;
        return;
    }
    if (t->hook_acked >= t->committed)
        return;
    comp_t *c = comp_new(t);
    t->hook_busy = true;
    if (t->ports->store.events_after(t->ports->store.ctx, t->id, t->hook_acked, HOOK_PAGE, page_cb, c) < 0) {
        free(c);
        t->hook_busy = false;
    }
}

static int on_hook_page(sb_actor_t *a, void *state, sb_msg_t *m)
{
    tenant_t *t = state;
    done_msg_t d;
    if (!done_open(t, m, &d) || !t->hook_busy)
        return 0;
    if (d.err) {
        hook_fail(a, t, -1);
        return 0;
    }
    page_clear(t);
    const char *p = (const char *)m->data + sizeof d, *end = (const char *)m->data + m->len;
    uint64_t max_age_ms = (uint64_t)t->ports->config->webhook_max_age_s * 1000;
    for (int64_t i = 0; i < d.a && t->npage < HOOK_PAGE; i++) {
        hook_ev_t *e = &t->page[t->npage];
        int64_t age;
        uint64_t len;
        if ((size_t)(end - p) < 16)
            break;
        memcpy(&e->cursor, p, 8);
        memcpy(&age, p + 8, 8);
        p += 16;
        size_t tl = strnlen(p, (size_t)(end - p));
        if (p + tl + 1 + 8 > end)
            break;
        e->type = sb_strndup(p, tl);
        p += tl + 1;
        memcpy(&len, p, 8);
        p += 8;
        if ((uint64_t)(end - p) < len) {
            free(e->type);
            break;
        }
        e->data = sb_strndup(p, (size_t)len);
        e->len = (size_t)len;
        p += len;
        uint64_t left = (uint64_t)age < max_age_ms ? max_age_ms - (uint64_t)age : 0;
        e->expires_at = sb_rt_time(t->rt) + left;
        t->npage++;
    }
    hook_next(a, t);
    return 0;
}

static int on_hook_posted(sb_actor_t *a, void *state, sb_msg_t *m)
{
    tenant_t *t = state;
    done_msg_t d;
    if (!done_open(t, m, &d) || !t->hook_busy || t->at >= t->npage)
        return 0;
    if (d.err == 0 && d.a >= 200 && d.a < 300) {
        comp_t *c = comp_new(t);
        if (t->ports->store.hook_acked(t->ports->store.ctx, t->id, t->page[t->at].cursor, saved_cb, c) < 0) {
            free(c);
            hook_fail(a, t, -1);
        }
        return 0;
    }
    hook_fail(a, t, d.err ? -1 : (int)d.b);
    return 0;
}

static int on_hook_saved(sb_actor_t *a, void *state, sb_msg_t *m)
{
    tenant_t *t = state;
    done_msg_t d;
    if (!done_open(t, m, &d) || !t->hook_busy || t->at >= t->npage)
        return 0;
    if (d.err) {
        hook_fail(a, t, -1);
        return 0;
    }
    t->hook_acked = t->page[t->at].cursor;
    t->hook_attempt = 0;
    t->at++;
    hook_next(a, t);
    return 0;
}

static int on_hooks(sb_actor_t *a, void *state, sb_msg_t *m)
{
    tenant_t *t = state;
    (void)a, (void)m;
    if (!t->loading) /* the setting may have changed: load it again (the cursor in memory stays) */
        load(t);
    return 0;
}

/* ---- life ---------------------------------------------------------------------------------------------------------- */

static int on_timer(sb_actor_t *a, void *state, sb_msg_t *m)
{
    tenant_t *t = state;
    uint64_t tag;
    memcpy(&tag, m->data, sizeof tag);
    if (tag == TIMER_LOAD && !t->ready && !t->loading) {
        if (!load(t))
            sb_actor_timer_start(a, LOAD_RETRY_MS, 0, TIMER_LOAD);
    } else if (tag == TIMER_HOOK) {
        t->hook_waiting = false;
        hooks_kick(t);
    }
    return 0;
}

static int tenant_init(sb_actor_t *a, void *state, const void *arg)
{
    tenant_t *t = state;
    (void)arg;
    t->ports = sb_rt_env(sb_actor_rt(a));
    t->rt = sb_actor_rt(a);
    t->self = sb_actor_self(a);
    t->id = (int64_t)sb_actor_key(a);
    sb_list_init(&t->queue);
    sb_list_init(&t->inflight);
    sb_list_init(&t->stash);
    if (!t->ports)
        return SB_EINVAL;
    t->epoch = atomic_fetch_add(&incarnations, 1) + 1;
    if (!load(t))
        sb_actor_timer_start(a, LOAD_RETRY_MS, 0, TIMER_LOAD);
    return 0;
}

static void tenant_stop(sb_actor_t *a, void *state)
{
    tenant_t *t = state;
    (void)a;
    for (sb_list_t *l; (l = sb_list_pop_front(&t->inflight));) {
        sb_tenant_work_t *w = sb_container_of(l, sb_tenant_work_t, link);
        reply(t, w, SB_ECANCELED);
        sb_tenant_work_free(w);
    }
    for (sb_list_t *l; (l = sb_list_pop_front(&t->queue));) {
        sb_tenant_work_t *w = sb_container_of(l, sb_tenant_work_t, link);
        reply(t, w, SB_ECANCELED);
        sb_tenant_work_free(w);
    }
    for (sb_list_t *l; (l = sb_list_pop_front(&t->stash));) {
        stashed_sub_t *x = sb_container_of(l, stashed_sub_t, link);
        x->sub.answer(x->sub.arg, 0, SB_ECANCELED);
        free(x);
    }
    page_clear(t);
    forget_hook(t);
}

static bool tenant_can_passivate(sb_actor_t *a, void *state)
{
    tenant_t *t = state;
    (void)a;
    return t->ready && !t->writing && sb_list_empty(&t->queue) && !t->nshards && !t->hook_busy &&
           !t->hook_waiting && (!t->hook_url || t->hook_acked >= t->committed);
}

static int on_written_msg(sb_actor_t *a, void *state, sb_msg_t *m)
{
    done_msg_t d;
    (void)a;
    if (!done_open(state, m, &d))
        return 0; /* stale */
    return on_written(state, &d);
}

static const sb_actor_handler_fn handlers[] = {
    [SB_MSG_TIMER] = on_timer,
    [SB_TENANT_WRITE] = on_write,
    [SB_TENANT_SUBSCRIBE] = on_subscribe,
    [SB_TENANT_UNSUBSCRIBE] = on_unsubscribe,
    [SB_TENANT_HOOKS] = on_hooks,
    [T_LOADED] = on_loaded,
    [T_WRITTEN] = on_written_msg,
    [T_HOOK_PAGE] = on_hook_page,
    [T_HOOK_POSTED] = on_hook_posted,
    [T_HOOK_SAVED] = on_hook_saved,
};

/* Whose work this actor does (sb_rt_evict). */
static int64_t tenant_tenant(sb_actor_t *a, void *state)
{
    (void)state;
    return (int64_t)sb_actor_key(a);
}

const sb_actor_kind_t sb_tenant_kind = {
    .name = "tenant",
    .state_size = sizeof(tenant_t),
    .init = tenant_init,
    .handlers = handlers,
    .nhandlers = sizeof handlers / sizeof handlers[0],
    .stop = tenant_stop,
    .can_passivate = tenant_can_passivate,
    .tenant = tenant_tenant,
};
