/* The live inbox; see live.h for the contract.
 *
 * Per shard, a hub (the live module's state): the shard's clients by tenant, and for each such tenant its
 * subscription at the tenant actor (actors/tenant.h), which sends this shard every batch of events the tenant
 * commits from then on. One timer enforces the hello deadline, resumes replays that waited for a slow client's
 * socket to drain, and renews the subscriptions every few seconds (a tenant actor restarted by its supervisor starts
 * with none; the renewal's answer also tells a client that missed events to catch up from the store).
 *
 * A client's life:
 *   HELLO   upgraded; waiting for the hello frame (10 s)
 *   AUTH    the credential is being checked; reading paused
 *   SUB     waiting for the tenant's subscription to be answered (its newest cursor)
 *   REPLAY  paging the event log from the store after `sent`; live events wait in `pending`
 *   LIVE    live events are written as they come
 *   CLOSING a close frame went out; everything else is ignored
 * A client's memory is freed when its connection has closed and no query of its is in flight (`refs`). */
#include "gateway/live.h"

#include "actors/tenant.h"
#include "adapters/net/wsconn.h"
#include "adapters/redis.h"
#include "adapters/store/store.h"
#include "gateway/api.h"
#include "gateway/log.h"
#include "gateway/metrics.h"
#include "gateway/sends.h"
#include "proto/err.h"
#include "proto/htable.h"
#include "proto/inbox.h"
#include "proto/list.h"
#include "proto/mem.h"
#include "proto/slab.h"
#include "shards/cluster.h"
#include "shards/domain.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#define HELLO_TIMEOUT_MS 10000
#define TICK_MS 100
#define RENEW_MS 5000
#define MAX_MSG (64 * 1024) /* largest client message: a hello or a send */
#define REPLAY_PAGE 500
#define MAX_PENDING 4096    /* live events held per replaying client; beyond this it reads them from the store */

#define CLOSE_BAD_REQUEST 4400
#define CLOSE_UNAUTHORIZED 4401
#define CLOSE_TOO_SLOW 4408
#define CLOSE_TRY_LATER 1013

static const sb_config_t *cfg;

/* ---- clients, tenants, hubs ------------------------------------------------------------------------------------- */

enum client_state { S_HELLO, S_AUTH, S_SUB, S_REPLAY, S_LIVE, S_CLOSING };

typedef struct hub hub_t;
typedef struct tsub tsub_t;

typedef struct pending {
    sb_inbox_batch_t *b; /* a reference */
    size_t i;
} pending_t;

typedef struct client {
    hub_t *hub;
    sb_wsconn_t *ws;           /* NULL once closed */
    sb_list_t link;            /* the hub's hello list, then its tenant's clients */
    tsub_t *t;                 /* once authenticated */
    sb_inbox_fmt_t fmt;
    enum client_state state;
    int refs;                  /* the connection, plus each request in flight */
    int64_t tenant;
    char tenant_s[24];
    int64_t key_id;            /* the API key it signed in with, or its token's key */
    int64_t key_expires;       /* unix seconds when that key stops (a rotation's end); 0 never */
    sb_role_t role;
    sb_rl_limits_t *limits;    /* the tenant's rate limits, as of hello; NULL before */
    sb_guard_addr_t addr;      /* the client's address */
    int64_t sent;              /* the last cursor written (or skipped over: the welcome cursor) */
    bool has_resume;
    int64_t resume_after;
    bool querying, overflowed, waiting_drain;
    pending_t *pending;        /* live events that arrived while replaying, in arrival (= cursor) order */
    size_t npending, cap_pending;
    uint64_t hello_deadline;
} client_t;

/* A tenant with clients on this shard, and its subscription at the tenant actor. */
struct tsub {
    sb_hnode_t node;
    hub_t *hub;
    int64_t tenant;
    sb_list_t clients;
    unsigned nclients;
    bool on;                   /* the tenant actor answered: this shard gets its events */
    bool asking;               /* an answer is on its way */
    bool channel;              /* several nodes: its Pub/Sub channel is subscribed (sb_cluster_live_channel) */
    int64_t newest;            /* the newest cursor this shard knows of */
};

/* A key revoked or given an end lately: remembered for a while, for the clients whose hello was being checked when
 * the news came (their lookup may have read the key before it ended). */
typedef struct ended {
    sb_list_t link;
    int64_t tenant, key, at; /* at: unix seconds; 0 at once */
    uint64_t forget_ms;
} ended_t;

struct hub {
    sb_shard_t *shard;
    sb_list_t ended;           /* ended_t, oldest first */
    unsigned expiring;         /* clients whose key has an end: the tick looks for those past it */
    sb_htable_t tenants;       /* tsub_t by tenant */
    sb_list_t hello;           /* clients before their tenant is known */
    uv_timer_t *tick;
    sb_redis_sub_t *sub;       /* several nodes: the tenants' events from every node (NULL: a node alone) */
    uint64_t next_renew, next_keys;
    sb_buf_t frame;            /* an event's MessagePack frame, built once per delivery */
    sb_buf_t out;              /* scratch for single frames */
};

/* The clients of this shard, packed in a slab: an idle one costs its own size. */
static _Thread_local sb_slab_t client_slab;

static void pending_clear(client_t *c)
{
    for (size_t i = 0; i < c->npending; i++)
        sb_inbox_batch_unref(c->pending[i].b);
    c->npending = 0;
}

static void client_unref(client_t *c)
{
    if (--c->refs > 0)
        return;
    pending_clear(c);
    free(c->pending);
    free(c->limits);
    sb_slab_free(&client_slab, c);
}

static bool tsub_eq(const sb_hnode_t *n, const void *key)
{
    return sb_container_of(n, tsub_t, node)->tenant == *(const int64_t *)key;
}

static tsub_t *tsub_find(hub_t *h, int64_t tenant)
{
    sb_hnode_t *n = sb_htable_find(&h->tenants, sb_hash_u64((uint64_t)tenant), tsub_eq, &tenant);
    return n ? sb_container_of(n, tsub_t, node) : NULL;
}

/* ---- writing frames --------------------------------------------------------------------------------------------- */

static sb_ws_op_t data_op(const client_t *c)
{
    return c->fmt == SB_INBOX_JSON ? SB_WS_OP_TEXT : SB_WS_OP_BINARY;
}

static bool client_open(const client_t *c)
{
    return c->ws && c->state != S_CLOSING && sb_wsconn_is_open(c->ws);
}

static void client_close(client_t *c, uint16_t code, const char *reason)
{
    if (!c->ws || c->state == S_CLOSING)
        return;
    c->state = S_CLOSING;
    sb_wsconn_close(c->ws, code, reason);
}

/* Writes the frame in the hub's scratch buffer. */
static void write_out(client_t *c)
{
    if (client_open(c))
        sb_wsconn_send(c->ws, data_op(c), sb_str(c->hub->out.p, c->hub->out.len));
    if (c->ws && !sb_wsconn_is_open(c->ws))
        c->state = S_CLOSING;
}

static void send_error(client_t *c, const char *code, const char *message)
{
    sb_buf_t *b = &c->hub->out;
    b->len = 0;
    if (sb_inbox_encode_error(c->fmt, sb_str_cstr(code), sb_str_cstr(message), b) == 0)
        write_out(c);
}

/* Writes one event to c in c's format. JSON clients get json when it was encoded once for all of them (a live
 * batch); MessagePack is encoded here, at most once per delivery (`cached` names the event the hub's frame holds). */
static void write_event(client_t *c, int64_t cursor, sb_str_t type, sb_str_t data, sb_str_t json, const void *ev,
                        const void **cached)
{
    hub_t *h = c->hub;
    c->sent = cursor;
    if (!client_open(c))
        return;
    sb_buf_t *b = &h->frame;
    if (c->fmt == SB_INBOX_JSON && json.len) {
        sb_wsconn_send(c->ws, SB_WS_OP_TEXT, json);
    } else {
        if (!ev || *cached != ev || c->fmt == SB_INBOX_JSON) {
            b->len = 0;
            if (sb_inbox_encode_event(c->fmt, cursor, type, data, b) < 0) {
                sb_log_error("inbox: tenant %s: event %lld cannot be encoded; skipped", c->tenant_s, (long long)cursor);
                b->len = 0;
            }
            if (cached)
                *cached = c->fmt == SB_INBOX_JSON ? NULL : ev;
        }
        if (b->len == 0)
            return;
        sb_wsconn_send(c->ws, data_op(c), sb_str(b->p, b->len));
    }
    if (!sb_wsconn_is_open(c->ws))
        c->state = S_CLOSING;
    sb_metric_add(&sb_metrics_shard(sb_shard_index(h->shard))->inbox_events, 1);
}

static void write_batch_event(client_t *c, const sb_inbox_event_t *e, const void **cached)
{
    write_event(c, e->cursor, e->type, e->data, e->json, e, cached);
}

/* ---- replay ----------------------------------------------------------------------------------------------------- */

static void replay_next(client_t *c);

/* The replay reached the end of the log: write what was published meanwhile, and go live. A hole in it (an event
 * neither the replay nor the publishes brought) sends the client back to the store, which has it. */
static void go_live(client_t *c)
{
    const void *cached = NULL;
    bool hole = false;
    c->state = S_LIVE;
    for (size_t k = 0; k < c->npending && c->state == S_LIVE; k++) {
        const sb_inbox_event_t *e = &c->pending[k].b->ev[c->pending[k].i];
        if (e->cursor <= c->sent)
            continue;
        if (e->cursor != c->sent + 1) {
            hole = true;
            break;
        }
        write_batch_event(c, e, &cached);
    }
    pending_clear(c);
    free(c->pending); /* a live client holds none */
    c->pending = NULL;
    c->cap_pending = 0;
    if (hole && c->state == S_LIVE)
        replay_next(c);
}

static void replay_read(void *arg, int err, const sb_event_rec_t *ev, size_t n)
{
    client_t *c = arg;
    c->querying = false;
    if (!client_open(c) || c->state != S_REPLAY) {
        client_unref(c);
        return;
    }
    if (err) {
        sb_log_warn("inbox: tenant %s: replay failed: %s", c->tenant_s, sb_strerror(err));
        send_error(c, "unavailable", "the database is not reachable; reconnect and resume");
        client_close(c, CLOSE_TRY_LATER, "database unavailable");
        client_unref(c);
        return;
    }
    for (size_t i = 0; i < n && c->state == S_REPLAY; i++)
        if (ev[i].cursor > c->sent)
            write_event(c, ev[i].cursor, sb_str_cstr(ev[i].type), ev[i].data, sb_str(NULL, 0), NULL, NULL);
    if (c->state == S_REPLAY) {
        if (n == REPLAY_PAGE || c->overflowed) {
            c->overflowed = false;
            replay_next(c);
        } else {
            go_live(c);
        }
    }
    client_unref(c);
}

/* Reads the next page after c->sent, unless the client's socket is still full of the last one (then the tick
 * resumes it once it drained). */
static void replay_next(client_t *c)
{
    c->state = S_REPLAY;
    if (c->querying)
        return;
    if (sb_wsconn_queued(c->ws) > (size_t)cfg->inbox_send_buffer / 2) {
        c->waiting_drain = true;
        return;
    }
    c->waiting_drain = false;
    c->refs++;
    c->querying = true;
    sb_store_t *st = sb_domain_store(c->hub->shard);
    if (!st || sb_store_events(st, c->tenant, c->sent, REPLAY_PAGE, replay_read, c) < 0) {
        c->querying = false;
        c->refs--;
        send_error(c, "unavailable", "the database is not reachable; reconnect and resume");
        client_close(c, CLOSE_TRY_LATER, "database unavailable");
    }
}

/* ---- subscriptions ---------------------------------------------------------------------------------------------- */

typedef struct answer {
    unsigned shard;
    int64_t tenant, cursor;
    int err;
} answer_t;

static void subscribed_here(sb_shard_t *s, void *arg);

/* On the tenant's shard: back to the hub's. */
static void sub_answer(void *arg, int64_t cursor, int err)
{
    answer_t *a = arg;
    a->cursor = cursor;
    a->err = err;
    if (sb_shard_exec(a->shard, subscribed_here, a) < 0)
        free(a);
}

/* Several nodes: the tenant's newest committed cursor, read from the store, stands for the tenant actor's answer. */
static void newest_read(void *arg, int err, bool found, int64_t cursor)
{
    answer_t *a = arg;
    a->cursor = cursor;
    a->err = err ? err : found ? 0 : SB_ENOENT;
    sb_shard_t *s = sb_shard_get(a->shard);
    subscribed_here(s, a);
}

/* Several nodes: the tenant's actor may live on any node (and move), so this shard follows the tenant's Pub/Sub
 * channel, where every batch of every node is published, and takes its newest cursor from the store; a hole in
 * what arrives, or a renewal that finds the store ahead, sends the clients back to the store for the rest. */
static void subscribe_everywhere(tsub_t *t, bool on)
{
    hub_t *h = t->hub;
    char chan[64];
    size_t clen = sb_cluster_live_channel(t->tenant, chan);
    if (!on) {
        if (t->channel && h->sub)
            sb_redis_unsubscribe(h->sub, chan, clen);
        t->channel = false;
        return;
    }
    if (!t->channel && h->sub && sb_redis_subscribe(h->sub, chan, clen) == 0)
        t->channel = true;
    answer_t *a = sb_calloc(1, sizeof *a);
    a->shard = sb_shard_index(h->shard);
    a->tenant = t->tenant;
    t->asking = true;
    sb_store_t *st = sb_domain_store(h->shard);
    if (!st || sb_store_cursor(st, t->tenant, newest_read, a) < 0) {
        a->err = SB_EUNAVAIL;
        subscribed_here(h->shard, a);
    }
}

static void subscribe(tsub_t *t, bool on)
{
    hub_t *h = t->hub;
    answer_t *a = NULL;
    if (sb_cluster_enabled()) {
        subscribe_everywhere(t, on);
        return;
    }
    if (on) {
        a = sb_calloc(1, sizeof *a);
        a->shard = sb_shard_index(h->shard);
        a->tenant = t->tenant;
        t->asking = true;
    }
    sb_tenant_sub_t sub = {.shard = sb_shard_index(h->shard), .answer = sub_answer, .arg = a};
    sb_tenant_subscribe(sb_shard_rt(h->shard), sb_domain_owner(t->tenant), t->tenant, &sub, on);
}

static void tsub_release(tsub_t *t)
{
    if (t->nclients || t->asking)
        return;
    if (t->on || t->channel)
        subscribe(t, false);
    sb_htable_remove(&t->hub->tenants, &t->node);
    free(t);
}

static void welcome(client_t *c, int64_t newest)
{
    sb_buf_t *b = &c->hub->out;
    b->len = 0;
    sb_inbox_encode_welcome(c->fmt, sb_str_cstr(c->tenant_s), newest, b);
    write_out(c);
    if (c->has_resume && c->resume_after > newest) {
        send_error(c, "bad_cursor", "resume_after is ahead of the newest cursor");
        client_close(c, CLOSE_BAD_REQUEST, "bad resume_after");
    } else if (c->state == S_SUB) {
        c->sent = c->has_resume ? c->resume_after : newest;
        sb_wsconn_set_reading(c->ws, true);
        replay_next(c);
    }
}

static void subscribed_here(sb_shard_t *s, void *arg)
{
    answer_t *a = arg;
    hub_t *h = sb_shard_state(s, &sb_live_module);
    tsub_t *t = h ? tsub_find(h, a->tenant) : NULL;
    if (!t) {
        free(a);
        return;
    }
    t->asking = false;
    if (a->err) {
        sb_log_warn("inbox: tenant %lld: no subscription: %s", (long long)a->tenant, sb_strerror(a->err));
        sb_list_foreach_safe(it, nx, &t->clients)
        {
            client_t *c = sb_container_of(it, client_t, link);
            if (c->state == S_SUB) {
                send_error(c, "unavailable", "the tenant's events cannot be followed now; reconnect and resume");
                client_close(c, CLOSE_TRY_LATER, "unavailable");
            }
        }
    } else {
        t->on = true;
        if (a->cursor > t->newest)
            t->newest = a->cursor;
        sb_list_foreach_safe(it, nx, &t->clients)
        {
            client_t *c = sb_container_of(it, client_t, link);
            if (c->state == S_SUB)
                welcome(c, t->newest);
            else if (c->state == S_LIVE && c->sent < t->newest) /* it missed some (a restarted tenant actor) */
                replay_next(c);
        }
    }
    free(a);
    tsub_release(t);
}

/* ---- hello -------------------------------------------------------------------------------------------------------- */

typedef struct hello_op {
    client_t *c;
} hello_op_t;

static void key_end_apply(client_t *c, int64_t at, int64_t now);

static void authed(void *arg, int status, const char *code, const char *message, const sb_principal_t *p)
{
    hello_op_t *op = arg;
    client_t *c = op->c;
    free(op);
    if (!client_open(c) || c->state != S_AUTH) {
        client_unref(c);
        return;
    }
    if (status) {
        send_error(c, code, message);
        client_close(c, status == 503 ? CLOSE_TRY_LATER : CLOSE_UNAUTHORIZED,
                     status == 503 ? "database unavailable" : "unauthorized");
        client_unref(c);
        return;
    }
    hub_t *h = c->hub;
    c->tenant = p->tenant;
    snprintf(c->tenant_s, sizeof c->tenant_s, "%lld", (long long)c->tenant);
    c->key_id = p->key_id;
    c->role = p->role;
    c->limits = sb_malloc(sizeof *c->limits);
    *c->limits = p->limits;
    int64_t now = (int64_t)time(NULL);
    if (p->key_expires)
        key_end_apply(c, p->key_expires, now);
    sb_list_foreach(it, &h->ended)
    {
        const ended_t *e = sb_container_of(it, ended_t, link);
        if (e->tenant == c->tenant && e->key == c->key_id)
            key_end_apply(c, e->at, now);
    }
    if (c->state != S_AUTH) { /* its key ended meanwhile */
        client_unref(c);
        return;
    }
    tsub_t *t = tsub_find(h, c->tenant);
    if (!t) {
        t = sb_calloc(1, sizeof *t);
        t->hub = h;
        t->tenant = c->tenant;
        sb_list_init(&t->clients);
        t->node.hash = sb_hash_u64((uint64_t)c->tenant);
        sb_htable_insert(&h->tenants, &t->node);
    }
    sb_list_remove(&c->link);
    sb_list_push_back(&t->clients, &c->link);
    t->nclients++;
    c->t = t;
    c->state = S_SUB;
    if (t->on)
        welcome(c, t->newest);
    else if (!t->asking)
        subscribe(t, true);
    client_unref(c);
}

static void on_hello(client_t *c, const sb_inbox_op_t *op)
{
    hello_op_t *h = sb_calloc(1, sizeof *h);
    h->c = c;
    c->has_resume = op->has_resume_after;
    c->resume_after = op->resume_after;
    c->state = S_AUTH;
    c->refs++;
    sb_wsconn_set_reading(c->ws, false); /* one thing at a time until welcome */
    sb_api_auth(c->hub->shard, op->token, false, &c->addr, authed, h);
}

/* ---- send ----------------------------------------------------------------------------------------------------------- */

typedef struct send_op {
    client_t *c;
    char *key; /* the client's idempotency key, echoed in accepted; NULL when it gave none */
} send_op_t;

static void sent(void *arg, int status, const char *code, const char *message, const char *id, bool created)
{
    send_op_t *op = arg;
    client_t *c = op->c;
    (void)created;
    if (client_open(c)) {
        if (status != 202) {
            send_error(c, code, message);
        } else {
            sb_buf_t *b = &c->hub->out;
            b->len = 0;
            sb_inbox_encode_accepted(c->fmt, op->key ? sb_str_cstr(op->key) : sb_str(NULL, 0), sb_str_cstr(id), b);
            write_out(c);
        }
    }
    free(op->key);
    free(op);
    client_unref(c);
}

/* A send waiting for its rate limits' verdict: the op's fields, copied. */
typedef struct send_wait {
    client_t *c;
    int64_t channel;
    char *to, *body, *media_url, *key, *tag;
    int priority;            /* the send's lane (sb_priority_t; interactive unless the op said otherwise) */
    int64_t send_at_ms;
} send_wait_t;

static char *dup_opt(sb_str_t v)
{
    return v.p ? sb_strndup(v.p, v.len) : NULL;
}

static sb_str_t opt_str(const char *v)
{
    return v ? sb_str_cstr(v) : sb_str(NULL, 0);
}

static void send_wait_free(send_wait_t *w)
{
    free(w->to);
    free(w->body);
    free(w->media_url);
    free(w->tag);
    free(w->key);
    free(w);
}

static void send_limited(void *arg, const char *limit, uint64_t retry_ms)
{
    send_wait_t *w = arg;
    client_t *c = w->c;
    if (retry_ms && client_open(c)) {
        char msg[160];
        snprintf(msg, sizeof msg, "rate limit %s exceeded; retry after %llu s", limit,
                 (unsigned long long)(retry_ms + 999) / 1000);
        send_error(c, "rate_limited", msg);
    } else if (!retry_ms && client_open(c)) {
        send_op_t *s = sb_calloc(1, sizeof *s);
        s->c = c;
        s->key = w->key;
        w->key = NULL;
        c->refs++;
        sb_send_t send = {.tenant = c->tenant,
                          .channel = w->channel,
                          .to = opt_str(w->to),
                          .body = opt_str(w->body),
                          .media_url = opt_str(w->media_url),
                          .tag = opt_str(w->tag),
                          .idempotency_key = opt_str(s->key),
                          .priority = (sb_priority_t)w->priority,
                          .send_at_ms = w->send_at_ms};
        sb_sends_accept(&send, sent, s);
    }
    send_wait_free(w);
    client_unref(c);
}

/* The inbox's send op: an agent's or owner's, within the send limits of its key and address; then the same
 * acceptance as POST /v1/messages, answered with accepted (or an error frame). */
static void on_send(client_t *c, const sb_inbox_op_t *op)
{
    if (c->role < SB_ROLE_AGENT) {
        send_error(c, "forbidden", "a readonly key or token may not send");
        return;
    }
    if (op->send_at_ms) { /* scheduled: the same bounds as POST /v1/messages */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
        if (op->send_at_ms - now > SB_SESSION_SCHEDULE_MAX_MS) {
            send_error(c, "bad_field", "send_at must be at most 30 days ahead");
            return;
        }
    }
    send_wait_t *w = sb_calloc(1, sizeof *w);
    *w = (send_wait_t){.c = c,
                       .channel = op->channel_id,
                       .to = dup_opt(op->to),
                       .body = dup_opt(op->body),
                       .media_url = dup_opt(op->media_url),
                       .tag = dup_opt(op->tag),
                       .key = dup_opt(op->idempotency_key),
                       .priority = op->priority,
                       .send_at_ms = op->send_at_ms};
    sb_rl_ask_t ask = {.tenant = c->tenant, .key_id = c->key_id, .addr = c->addr, .families = SB_RL_SEND,
                       .limits = *c->limits};
    c->refs++;
    if (sb_ratelimit_take(c->hub->shard, &ask, send_limited, w) < 0) {
        c->refs--;
        send_wait_free(w);
        send_error(c, "unavailable", "the gateway is stopping");
    }
}

/* ---- the connection --------------------------------------------------------------------------------------------- */

static void on_message(void *arg, sb_wsconn_t *ws, sb_ws_op_t wop, sb_str_t payload)
{
    client_t *c = arg;
    (void)ws;
    if (c->state == S_CLOSING || c->state == S_AUTH)
        return;
    if ((wop == SB_WS_OP_TEXT) != (c->fmt == SB_INBOX_JSON)) {
        client_close(c, SB_WS_CLOSE_UNSUPPORTED,
                     c->fmt == SB_INBOX_JSON ? "switchboard.v1.json takes text frames"
                                             : "switchboard.v1.msgpack takes binary frames");
        return;
    }
    sb_inbox_op_t op;
    sb_inbox_err_t err;
    if (sb_inbox_decode(c->fmt, payload, &op, &err) < 0) {
        send_error(c, err.code, err.message);
        if (c->state == S_HELLO)
            client_close(c, CLOSE_BAD_REQUEST, "expected a hello");
        return;
    }
    if (c->state == S_HELLO && op.kind != SB_INBOX_HELLO) {
        send_error(c, "hello_required", "the first frame must be a hello");
        client_close(c, CLOSE_UNAUTHORIZED, "hello required");
    } else if (op.kind == SB_INBOX_HELLO && c->state == S_HELLO) {
        on_hello(c, &op);
    } else if (op.kind == SB_INBOX_HELLO) {
        send_error(c, "already_authenticated", "hello was already accepted on this connection");
    } else if (op.kind == SB_INBOX_PING) {
        sb_buf_t *b = &c->hub->out;
        b->len = 0;
        sb_inbox_encode_pong(c->fmt, b);
        write_out(c);
    } else if (op.kind == SB_INBOX_SEND) {
        on_send(c, &op);
    }
    sb_inbox_op_cleanup(&op);
}

static void on_slow(void *arg, sb_wsconn_t *ws)
{
    client_t *c = arg;
    (void)ws;
    sb_log_info("inbox: tenant %s: client too slow, closing with 4408", c->tenant_s);
    sb_metric_add(&sb_metrics_shard(sb_shard_index(c->hub->shard))->inbox_too_slow, 1);
    c->state = S_CLOSING;
}

static void on_close(void *arg, sb_wsconn_t *ws)
{
    client_t *c = arg;
    hub_t *h = c->hub;
    unsigned idx = sb_shard_index(h->shard);
    (void)ws;
    c->ws = NULL;
    c->state = S_CLOSING;
    if (c->key_expires)
        h->expiring--;
    c->key_expires = 0;
    sb_list_remove(&c->link);
    if (c->t) {
        c->t->nclients--;
        tsub_release(c->t);
        c->t = NULL;
    }
    sb_gauge_add(&sb_metrics_shard(idx)->inbox_clients, -1);
    client_unref(c);
}

static const sb_wsconn_ops_t ws_ops = {.on_message = on_message, .on_slow = on_slow, .on_close = on_close};

/* ---- the handshake ---------------------------------------------------------------------------------------------- */

/* A browser's Origin is allowed when inbox_origins is "*" or lists it, or when it is the gateway's own origin
 * (public_url's, or the request's Host under http or https). Without an Origin, the client is no browser. */
static bool origin_allowed(sb_http_req_t *req)
{
    sb_str_t origin, host;
    if (!sb_http_req_header(req, "origin", &origin))
        return true;
    if (cfg->inbox_origins && strcmp(cfg->inbox_origins, "*") == 0)
        return true;
    if (cfg->inbox_origins) { /* stored lower case, without blanks */
        size_t start = 0, n = strlen(cfg->inbox_origins);
        for (size_t i = 0; i <= n; i++) {
            if (i < n && cfg->inbox_origins[i] != ',')
                continue;
            if (i - start == origin.len && strncasecmp(cfg->inbox_origins + start, origin.p, origin.len) == 0)
                return true;
            start = i + 1;
        }
    }
    if (cfg->public_url) {
        const char *rest = strstr(cfg->public_url, "://");
        size_t n = rest ? (size_t)(strchrnul(rest + 3, '/') - cfg->public_url) : 0;
        if (n && n == origin.len && strncasecmp(cfg->public_url, origin.p, n) == 0)
            return true;
    } else if (sb_http_req_header(req, "host", &host)) {
        for (int https = 0; https <= 1; https++) {
            size_t sl = https ? 8 : 7;
            if (origin.len == sl + host.len && strncasecmp(origin.p, https ? "https://" : "http://", sl) == 0 &&
                strncasecmp(origin.p + sl, host.p, host.len) == 0)
                return true;
        }
    }
    return false;
}

static const char *const subprotocols[] = {"switchboard.v1.json", "switchboard.v1.msgpack", NULL};

bool sb_live_handle(sb_shard_t *s, sb_http_req_t *req)
{
    if (!sb_str_eq_cstr(sb_http_req_path(req), "/v1/inbox"))
        return false;
    hub_t *h = sb_shard_state(s, &sb_live_module);
    if (!h) {
        sb_http_respond_error(req, 503, "unavailable", "the live inbox is not running");
        return true;
    }
    sb_wsconn_opts_t o = {.subprotocols = subprotocols,
                          .max_message = MAX_MSG,
                          .max_queued = (size_t)cfg->inbox_send_buffer,
                          .slow_code = CLOSE_TOO_SLOW,
                          .slow_reason = "too slow: resume from your last cursor",
                          .origin_allowed = origin_allowed,
                          .what = "the live inbox"};
    struct sockaddr_storage ss;
    if (sb_http_req_peer(req, &ss) < 0) { /* gone already */
        sb_http_respond_error(req, 400, "bad_request", "the client is gone");
        return true;
    }
    client_t *c = sb_slab_alloc(&client_slab, sizeof *c);
    c->hub = h;
    sb_guard_addr_from(&c->addr, (const struct sockaddr *)&ss);
    c->state = S_HELLO;
    c->refs = 1;
    strcpy(c->tenant_s, "-");
    sb_list_init(&c->link);
    c->hello_deadline = uv_now(sb_shard_loop(s)) + HELLO_TIMEOUT_MS;
    int proto;
    c->ws = sb_wsconn_accept(req, &o, &ws_ops, c, &proto);
    if (!c->ws) {
        client_unref(c);
        return true;
    }
    c->fmt = proto == 1 ? SB_INBOX_MSGPACK : SB_INBOX_JSON;
    sb_list_push_back(&h->hello, &c->link);
    sb_gauge_add(&sb_metrics_shard(sb_shard_index(s))->inbox_clients, 1);
    return true;
}

/* ---- delivering ----------------------------------------------------------------------------------------------------- */

static void pend(client_t *c, sb_inbox_batch_t *b, size_t i)
{
    if (c->npending == MAX_PENDING) { /* the store has them: forget, and read on after this page */
        pending_clear(c);
        c->overflowed = true;
    }
    if (c->npending == c->cap_pending) {
        c->cap_pending = c->cap_pending ? 2 * c->cap_pending : 16;
        c->pending = sb_realloc(c->pending, c->cap_pending * sizeof *c->pending);
    }
    sb_inbox_batch_ref(b);
    c->pending[c->npending++] = (pending_t){b, i};
}

void sb_live_deliver(sb_shard_t *s, sb_inbox_batch_t *b)
{
    hub_t *h = sb_shard_state(s, &sb_live_module);
    tsub_t *t = h ? tsub_find(h, b->tenant) : NULL;
    if (!t || !b->n)
        return;
    if (b->ev[b->n - 1].cursor > t->newest)
        t->newest = b->ev[b->n - 1].cursor;
    const void *cached = NULL;
    sb_list_foreach_safe(it, nx, &t->clients)
    {
        client_t *c = sb_container_of(it, client_t, link);
        if (c->state != S_LIVE && c->state != S_REPLAY)
            continue;
        for (size_t i = 0; i < b->n; i++) {
            const sb_inbox_event_t *e = &b->ev[i];
            if (e->cursor <= c->sent)
                continue;
            if (c->state == S_LIVE && e->cursor == c->sent + 1) {
                write_batch_event(c, e, &cached);
            } else if (c->state == S_LIVE || c->state == S_REPLAY) {
                pend(c, b, i);
                if (c->state == S_LIVE) /* a hole: something was missed; catch up from the store */
                    replay_next(c);
            }
        }
    }
}

/* ---- keys that end: revoked, or rotated with an overlap -------------------------------------------------------- */

#define ENDED_KEEP_MS 30000 /* how long a shard remembers an ended key for the hellos being checked */

/* Applies a key's end (unix seconds; 0: now) to c: closed with 4401 when it has come, else remembered. */
static void key_end_apply(client_t *c, int64_t at, int64_t now)
{
    if (at && at > now) {
        if (!c->key_expires)
            c->hub->expiring++;
        if (!c->key_expires || at < c->key_expires)
            c->key_expires = at;
        return;
    }
    if (c->state == S_CLOSING || !c->ws)
        return;
    send_error(c, "key_revoked", at ? "the API key of this connection has expired (rotated)"
                                    : "the API key of this connection was revoked");
    client_close(c, CLOSE_UNAUTHORIZED, "unauthorized");
}

typedef struct key_end {
    int64_t tenant, key, at;
} key_end_t;

/* On each shard: the clients of the key now, and the ones whose hello is being checked when their answer comes. */
static void key_ended_here(sb_shard_t *s, void *arg)
{
    key_end_t *k = arg;
    hub_t *h = sb_shard_state(s, &sb_live_module);
    if (h) {
        int64_t now = (int64_t)time(NULL);
        ended_t *e = sb_calloc(1, sizeof *e);
        *e = (ended_t){.tenant = k->tenant, .key = k->key, .at = k->at,
                       .forget_ms = uv_now(sb_shard_loop(s)) + ENDED_KEEP_MS};
        sb_list_push_back(&h->ended, &e->link);
        tsub_t *t = tsub_find(h, k->tenant);
        if (t) {
            sb_list_foreach_safe(it, nx, &t->clients)
            {
                client_t *c = sb_container_of(it, client_t, link);
                if (c->key_id == k->key)
                    key_end_apply(c, k->at, now);
            }
        }
    }
    free(k);
}

#define KEYS_CHANNEL "sb:keys" /* several nodes: keys that ended, for every node's live inbox clients */

void sb_live_key_ended(int64_t tenant, int64_t key, int64_t at)
{
    sb_shard_t *self = sb_shard_self();
    sb_redis_t *rd = self && sb_cluster_enabled() ? sb_shard_redis(self) : NULL;
    if (rd) { /* the other nodes' clients of the key too (this node's get it twice: harmless) */
        char msg[80];
        int n = snprintf(msg, sizeof msg, "%lld %lld %lld", (long long)tenant, (long long)key, (long long)at);
        const char *argv[3] = {"PUBLISH", KEYS_CHANNEL, msg};
        size_t lens[3] = {7, strlen(KEYS_CHANNEL), (size_t)n};
        sb_redis_command_argv(rd, 3, argv, lens, NULL, NULL);
    }
    for (unsigned i = 0; i < sb_shards_count(); i++) {
        key_end_t *k = sb_malloc(sizeof *k);
        *k = (key_end_t){tenant, key, at};
        if (sb_shard_exec(i, key_ended_here, k) < 0)
            free(k);
    }
}

/* Once a second: clients whose key's end has come are closed; ended keys old enough are forgotten. */
static void keys_tick(hub_t *h, uint64_t now_ms)
{
    while (!sb_list_empty(&h->ended)) {
        ended_t *e = sb_container_of(sb_list_first(&h->ended), ended_t, link);
        if (e->forget_ms > now_ms)
            break;
        sb_list_remove(&e->link);
        free(e);
    }
    if (!h->expiring)
        return;
    int64_t now = (int64_t)time(NULL);
    size_t pos = 0;
    for (sb_hnode_t *n; (n = sb_htable_next(&h->tenants, &pos));) {
        tsub_t *t = sb_container_of(n, tsub_t, node);
        sb_list_foreach_safe(it, nx, &t->clients)
        {
            client_t *c = sb_container_of(it, client_t, link);
            if (c->key_expires && c->key_expires <= now)
                key_end_apply(c, c->key_expires, now);
        }
    }
}

/* ---- the module ------------------------------------------------------------------------------------------------- */

/* Hello deadlines, replays that waited for a slow client's socket to drain, and the subscriptions' renewal. */
static void on_tick(uv_timer_t *tm)
{
    hub_t *h = tm->data;
    uint64_t now = uv_now(tm->loop);
    sb_list_foreach_safe(it, nx, &h->hello)
    {
        client_t *c = sb_container_of(it, client_t, link);
        if (c->state == S_HELLO && now >= c->hello_deadline) {
            send_error(c, "hello_timeout", "no hello within 10 seconds");
            client_close(c, CLOSE_UNAUTHORIZED, "hello timeout");
        }
    }
    bool renew = now >= h->next_renew;
    if (renew)
        h->next_renew = now + RENEW_MS;
    if (now >= h->next_keys) {
        h->next_keys = now + 1000;
        keys_tick(h, now);
    }
    size_t pos = 0;
    for (sb_hnode_t *n; (n = sb_htable_next(&h->tenants, &pos));) {
        tsub_t *t = sb_container_of(n, tsub_t, node);
        sb_list_foreach(it, &t->clients)
        {
            client_t *c = sb_container_of(it, client_t, link);
            if (c->waiting_drain && client_open(c) && c->state == S_REPLAY)
                replay_next(c);
        }
        if (renew && t->on && !t->asking)
            subscribe(t, true);
    }
}

void sb_live_init(const sb_config_t *c)
{
    cfg = c;
}

/* Several nodes: a batch some node published on a tenant's channel. */
static void channel_message(void *arg, const char *chan, size_t clen, const char *payload, size_t len)
{
    hub_t *h = arg;
    sb_inbox_batch_t *b;
    if (clen == strlen(KEYS_CHANNEL) && !memcmp(chan, KEYS_CHANNEL, clen)) { /* a key ended on some node */
        char text[80];
        long long tenant, key, at;
        snprintf(text, sizeof text, "%.*s", (int)(len < sizeof text ? len : sizeof text - 1), payload);
        if (sscanf(text, "%lld %lld %lld", &tenant, &key, &at) == 3 && tenant > 0 && key > 0 && at >= 0) {
            key_end_t *k = sb_malloc(sizeof *k);
            *k = (key_end_t){tenant, key, at};
            key_ended_here(h->shard, k);
        }
        return;
    }
    if (sb_inbox_batch_unpack(payload, len, &b) < 0) {
        sb_log_warn("inbox: a batch from another node could not be read; skipped (the store has it)");
        return;
    }
    sb_live_deliver(h->shard, b);
    sb_inbox_batch_unref(b);
}

/* The subscriber is back: whatever was published while it was away is only in the store; each tenant asks. */
static void channel_state(void *arg, bool up)
{
    hub_t *h = arg;
    if (!up)
        return;
    size_t pos = 0;
    for (sb_hnode_t *n; (n = sb_htable_next(&h->tenants, &pos));) {
        tsub_t *t = sb_container_of(n, tsub_t, node);
        if (t->on && !t->asking)
            subscribe(t, true);
    }
}

static int live_start(sb_shard_t *s, void **state)
{
    hub_t *h = sb_calloc(1, sizeof *h);
    h->shard = s;
    sb_htable_init(&h->tenants);
    sb_list_init(&h->hello);
    sb_list_init(&h->ended);
    sb_buf_init(&h->frame);
    sb_buf_init(&h->out);
    h->tick = sb_malloc(sizeof *h->tick);
    uv_timer_init(sb_shard_loop(s), h->tick);
    h->tick->data = h;
    uv_timer_start(h->tick, on_tick, TICK_MS, TICK_MS);
    h->next_renew = uv_now(sb_shard_loop(s)) + RENEW_MS;
    if (sb_cluster_enabled()) {
        h->sub = sb_redis_sub_create(sb_shard_loop(s), cfg->redis.host, cfg->redis.port, channel_message,
                                     channel_state, h);
        sb_redis_subscribe(h->sub, KEYS_CHANNEL, strlen(KEYS_CHANNEL));
    }
    *state = h;
    return 0;
}

static void tick_closed(uv_handle_t *t)
{
    free(t);
}

/* The HTTP server closes its connections from its own stop (after this one: it started first); their on_close runs
 * as their handles close and needs the hub, which is therefore freed only at finish. */
static void live_stop(sb_shard_t *s, void *state)
{
    hub_t *h = state;
    (void)s;
    uv_close((uv_handle_t *)h->tick, tick_closed);
    h->tick = NULL;
    sb_redis_sub_close(h->sub);
    h->sub = NULL;
}

static void live_finish(sb_shard_t *s, void *state)
{
    hub_t *h = state;
    (void)s;
    size_t pos = 0;
    for (sb_hnode_t *n; (n = sb_htable_next(&h->tenants, &pos));) {
        sb_htable_remove_at(&h->tenants, &pos);
        free(sb_container_of(n, tsub_t, node));
    }
    sb_htable_cleanup(&h->tenants);
    while (!sb_list_empty(&h->ended))
        free(sb_container_of(sb_list_pop_front(&h->ended), ended_t, link));
    sb_buf_cleanup(&h->frame);
    sb_buf_cleanup(&h->out);
    free(h);
}

const sb_shard_module_t sb_live_module = {
    .name = "live inbox",
    .start = live_start,
    .stop = live_stop,
    .finish = live_finish,
};

unsigned sb_live_clients(unsigned idx)
{
    return idx < SB_METRICS_MAX_SHARDS ? (unsigned)sb_gauge_get(&sb_metrics_shard(idx)->inbox_clients) : 0;
}
