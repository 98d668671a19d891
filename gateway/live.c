/* The live inbox; see live.h for the contract.
 *
 * Per shard, a hub: the shard's clients by tenant (a hash of doubly linked lists) and one timer that enforces the
 * hello deadline and resumes replays that waited for a slow client's socket to drain.
 *
 * A client's life:
 *   HELLO   upgraded; waiting for the hello frame (10 s)
 *   AUTH    the credential is being checked; reading paused
 *   REPLAY  subscribed; paging inbox_events from PostgreSQL after `sent`; live events wait in `pending`
 *   LIVE    live events are written as they come
 *   CLOSING a close frame went out; everything else is ignored
 * A client's memory is freed when its stream has closed and no query of its is in flight (`refs`). */
#include "gateway/live.h"

#include "gateway/api.h"
#include "gateway/hooks.h"
#include "gateway/log.h"
#include "gateway/metrics.h"
#include "gateway/sends.h"
#include "proto/err.h"
#include "proto/inbox.h"
#include "proto/mem.h"
#include "proto/ws.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define HUB_BUCKETS 1024
#define HELLO_TIMEOUT_MS 10000
#define TICK_MS 100
#define MAX_MSG (64 * 1024) /* largest client message: a hello or a send */
#define REPLAY_PAGE 500
#define MAX_PENDING 4096    /* live events held per replaying client; beyond this it re-reads them from PostgreSQL */

#define CLOSE_BAD_REQUEST 4400
#define CLOSE_UNAUTHORIZED 4401
#define CLOSE_TOO_SLOW 4408
#define CLOSE_TRY_LATER 1013

static const sb_config_t *cfg;

/* ---- events and batches: immutable, shared by every shard that delivers them ---------------------------------- */

typedef struct ev {
    _Atomic int refs;
    int64_t cursor;
    sb_str_t type, data; /* into text */
    sb_str_t json;       /* into text: the payload of the event's frame for JSON clients, encoded once for all of
                          * them; empty when the data cannot be encoded */
    char text[];
} ev_t;

typedef struct batch {
    _Atomic int refs;
    int64_t tenant;
    size_t n;
    ev_t *ev[]; /* by cursor */
} batch_t;

static ev_t *ev_new(int64_t cursor, const char *type, const char *data)
{
    size_t tl = strlen(type), dl = strlen(data);
    sb_buf_t json;
    sb_buf_init(&json);
    if (sb_inbox_encode_event(SB_INBOX_JSON, cursor, sb_str(type, tl), sb_str(data, dl), &json) < 0) {
        sb_log_error("inbox: event %lld (%s) cannot be encoded; skipped", (long long)cursor, type);
        json.len = 0;
    }
    ev_t *e = sb_malloc(sizeof *e + tl + dl + json.len + 2);
    atomic_init(&e->refs, 1);
    e->cursor = cursor;
    memcpy(e->text, type, tl + 1);
    memcpy(e->text + tl + 1, data, dl + 1);
    if (json.len)
        memcpy(e->text + tl + dl + 2, json.p, json.len);
    e->type = sb_str(e->text, tl);
    e->data = sb_str(e->text + tl + 1, dl);
    e->json = sb_str(e->text + tl + dl + 2, json.len);
    sb_buf_cleanup(&json);
    return e;
}

static void ev_ref(ev_t *e)
{
    atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed);
}

static void ev_unref(ev_t *e)
{
    if (atomic_fetch_sub_explicit(&e->refs, 1, memory_order_acq_rel) == 1)
        free(e);
}

static void batch_unref(batch_t *b)
{
    if (atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (size_t i = 0; i < b->n; i++)
        ev_unref(b->ev[i]);
    free(b);
}

/* ---- clients and hubs ----------------------------------------------------------------------------------------- */

enum client_state { S_HELLO, S_AUTH, S_REPLAY, S_LIVE, S_CLOSING };

typedef struct hub hub_t;

typedef struct client {
    hub_t *hub;
    sb_http_stream_t *st;      /* NULL once closed */
    struct client *prev, *next; /* in the hub: all clients until subscribed, then the tenant's bucket */
    sb_inbox_fmt_t fmt;
    enum client_state state;
    sb_ws_reader_t rd;
    int refs;                  /* the stream, plus each query in flight */
    int64_t tenant;
    char tenant_s[24];
    int64_t sent;              /* the last cursor written (or skipped over: the welcome cursor) */
    bool subscribed, querying, overflowed, waiting_drain;
    ev_t **pending;            /* live events that arrived while replaying, in arrival (= cursor) order */
    size_t npending, cap_pending;
    uint64_t hello_deadline;
} client_t;

struct hub {
    sb_shard_t *shard;
    client_t *buckets[HUB_BUCKETS]; /* subscribed clients by tenant */
    client_t *unsubscribed;         /* HELLO and AUTH */
    uv_timer_t *tick;
    sb_buf_t frame;                 /* an event's MessagePack frame, built once per delivery */
    sb_buf_t out;                   /* scratch for single frames */
};

static hub_t *hubs[SB_MAX_SHARDS];              /* each touched only by its own shard's thread */
static _Atomic unsigned subscribed[SB_MAX_SHARDS]; /* per shard: clients subscribed (publish skips shards at 0) */
static _Atomic unsigned connected[SB_MAX_SHARDS];

static client_t **bucket_of(hub_t *h, int64_t tenant)
{
    return &h->buckets[((uint64_t)tenant * 0x9E3779B97F4A7C15ull >> 32) % HUB_BUCKETS];
}

static void list_remove(client_t **head, client_t *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        *head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

static void list_push(client_t **head, client_t *c)
{
    c->prev = NULL;
    c->next = *head;
    if (*head)
        (*head)->prev = c;
    *head = c;
}

static void pending_clear(client_t *c)
{
    for (size_t i = 0; i < c->npending; i++)
        ev_unref(c->pending[i]);
    c->npending = 0;
}

static void client_unref(client_t *c)
{
    if (--c->refs > 0)
        return;
    pending_clear(c);
    free(c->pending);
    sb_ws_reader_cleanup(&c->rd);
    free(c);
}

/* ---- writing frames ------------------------------------------------------------------------------------------- */

/* Starts a frame in b: room for the longest head, then the payload is appended after it. */
static void frame_begin(sb_buf_t *b)
{
    b->len = 0;
    sb_buf_reserve(b, SB_WS_HEAD_MAX);
    b->len = SB_WS_HEAD_MAX;
}

/* Puts the head right before the payload; returns the whole frame as a view into b. */
static uv_buf_t frame_end(sb_buf_t *b, sb_ws_op_t op)
{
    uint8_t head[SB_WS_HEAD_MAX];
    size_t plen = b->len - SB_WS_HEAD_MAX, hl = sb_ws_frame_head(head, op, true, plen);
    char *start = b->p + SB_WS_HEAD_MAX - hl;
    memcpy(start, head, hl);
    return uv_buf_init(start, (unsigned)(hl + plen));
}

static sb_ws_op_t data_op(const client_t *c)
{
    return c->fmt == SB_INBOX_JSON ? SB_WS_OP_TEXT : SB_WS_OP_BINARY;
}

static void client_close(client_t *c, uint16_t code, const char *reason);

/* Writes a whole frame; a client that falls more than inbox_send_buffer bytes behind is closed with 4408. */
static void client_writev(client_t *c, const uv_buf_t *bufs, unsigned n)
{
    if (!c->st || c->state == S_CLOSING)
        return;
    if (sb_http_stream_write(c->st, bufs, n) < 0)
        return;
    if (sb_http_stream_queued(c->st) > (size_t)cfg->inbox_send_buffer) {
        sb_log_info("inbox: tenant %s: client too slow, closing with 4408", c->tenant_s);
        sb_metric_add(&sb_metrics_shard(sb_shard_index(c->hub->shard))->inbox_too_slow, 1);
        client_close(c, CLOSE_TOO_SLOW, "too slow: resume from your last cursor");
    }
}

static void client_write(client_t *c, uv_buf_t frame)
{
    client_writev(c, &frame, 1);
}

static void send_error(client_t *c, const char *code, const char *message)
{
    sb_buf_t *b = &c->hub->out;
    frame_begin(b);
    if (sb_inbox_encode_error(c->fmt, sb_str_cstr(code), sb_str_cstr(message), b) == 0)
        client_write(c, frame_end(b, data_op(c)));
}

/* Sends a close frame and closes the stream gracefully (queued frames go out first). */
static void client_close(client_t *c, uint16_t code, const char *reason)
{
    if (!c->st || c->state == S_CLOSING)
        return;
    uint8_t payload[SB_WS_CONTROL_MAX];
    size_t n = sb_ws_close_payload(payload, code, sb_str_cstr(reason));
    sb_buf_t *b = &c->hub->out;
    frame_begin(b);
    sb_buf_append(b, payload, n);
    uv_buf_t f = frame_end(b, SB_WS_OP_CLOSE);
    sb_http_stream_write(c->st, &f, 1);
    c->state = S_CLOSING;
    sb_http_stream_close(c->st);
}

/* Writes event e to c in c's format. JSON clients get e->json, encoded when e was made; MessagePack is encoded
 * here, at most once per delivery (frame caches it for as long as the caller keeps `cached` pointing at e). */
static void write_event(client_t *c, const ev_t *e, const ev_t **cached)
{
    hub_t *h = c->hub;
    c->sent = e->cursor;
    if (c->fmt == SB_INBOX_JSON) {
        if (!e->json.len)
            return;
        uint8_t head[SB_WS_HEAD_MAX];
        uv_buf_t f[2] = {uv_buf_init((char *)head, (unsigned)sb_ws_frame_head(head, SB_WS_OP_TEXT, true, e->json.len)),
                         uv_buf_init((char *)e->json.p, (unsigned)e->json.len)};
        client_writev(c, f, 2);
    } else {
        sb_buf_t *b = &h->frame;
        if (*cached != e) {
            frame_begin(b);
            if (sb_inbox_encode_event(c->fmt, e->cursor, e->type, e->data, b) < 0) {
                sb_log_error("inbox: tenant %s: event %lld cannot be encoded; skipped", c->tenant_s,
                             (long long)e->cursor);
                b->len = 0;
            }
            *cached = e;
        }
        if (b->len == 0)
            return;
        /* frame_end writes the head into the buffer, the same bytes each time: harmless to repeat */
        client_write(c, frame_end(b, data_op(c)));
    }
    sb_metric_add(&sb_metrics_shard(sb_shard_index(h->shard))->inbox_events, 1);
}

/* ---- replay --------------------------------------------------------------------------------------------------- */

static void replay_next(client_t *c);

/* The replay reached the end of the log: write what was published meanwhile, and go live. A hole in it (an event
 * neither the replay nor the publishes brought) sends the client back to PostgreSQL, which has it. */
static void go_live(client_t *c)
{
    const ev_t *cached = NULL;
    bool hole = false;
    c->state = S_LIVE;
    for (size_t k = 0; k < c->npending && c->state == S_LIVE; k++) {
        const ev_t *e = c->pending[k];
        if (e->cursor <= c->sent)
            continue;
        if (e->cursor != c->sent + 1) {
            hole = true;
            break;
        }
        write_event(c, e, &cached);
    }
    pending_clear(c);
    if (hole && c->state == S_LIVE)
        replay_next(c);
}

static void replay_read(void *arg, int err, const char *detail, const PGresult *res)
{
    client_t *c = arg;
    c->querying = false;
    if (!c->st || c->state != S_REPLAY) {
        client_unref(c);
        return;
    }
    if (err) {
        sb_log_warn("inbox: tenant %s: replay failed: %s", c->tenant_s, detail);
        send_error(c, "unavailable", "the database is not reachable; reconnect and resume");
        client_close(c, CLOSE_TRY_LATER, "database unavailable");
        client_unref(c);
        return;
    }
    const ev_t *cached = NULL;
    int n = PQntuples(res);
    for (int i = 0; i < n && c->state == S_REPLAY; i++) {
        int64_t cursor = strtoll(PQgetvalue(res, i, 0), NULL, 10);
        if (cursor <= c->sent)
            continue;
        ev_t *e = ev_new(cursor, PQgetvalue(res, i, 1), PQgetvalue(res, i, 2));
        write_event(c, e, &cached);
        cached = NULL;
        ev_unref(e);
    }
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
    if (sb_http_stream_queued(c->st) > (size_t)cfg->inbox_send_buffer / 2) {
        c->waiting_drain = true;
        return;
    }
    c->waiting_drain = false;
    char after[24], limit[24];
    snprintf(after, sizeof after, "%lld", (long long)c->sent);
    snprintf(limit, sizeof limit, "%d", REPLAY_PAGE);
    const char *p[3] = {c->tenant_s, after, limit};
    c->refs++;
    c->querying = true;
    if (sb_pg_query(sb_shard_pg(c->hub->shard),
                    "SELECT cursor, type, data::text FROM inbox_events WHERE tenant_id = $1 AND cursor > $2"
                    " ORDER BY cursor LIMIT $3",
                    3, p, SB_PG_PREPARED, replay_read, c) < 0) {
        c->querying = false;
        c->refs--;
        send_error(c, "unavailable", "the database is not reachable; reconnect and resume");
        client_close(c, CLOSE_TRY_LATER, "database unavailable");
    }
}

/* ---- hello ---------------------------------------------------------------------------------------------------- */

static void subscribe(client_t *c)
{
    hub_t *h = c->hub;
    list_remove(&h->unsubscribed, c);
    list_push(bucket_of(h, c->tenant), c);
    c->subscribed = true;
    atomic_fetch_add(&subscribed[sb_shard_index(h->shard)], 1); /* before the first query: see live.h */
}

typedef struct hello_op {
    client_t *c;
    bool has_resume;
    int64_t resume_after;
} hello_op_t;

static void welcomed(void *arg, int err, const char *detail, const PGresult *res)
{
    hello_op_t *op = arg;
    client_t *c = op->c;
    c->querying = false;
    if (c->st && c->state == S_AUTH) {
        if (err || PQntuples(res) != 1) {
            sb_log_warn("inbox: tenant %s: welcome failed: %s", c->tenant_s, err ? detail : "no such tenant");
            send_error(c, "unavailable", "the database is not reachable; reconnect and resume");
            client_close(c, CLOSE_TRY_LATER, "database unavailable");
        } else {
            int64_t newest = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
            sb_buf_t *b = &c->hub->out;
            frame_begin(b);
            sb_inbox_encode_welcome(c->fmt, sb_str_cstr(c->tenant_s), newest, b);
            client_write(c, frame_end(b, data_op(c)));
            if (op->has_resume && op->resume_after > newest) {
                send_error(c, "bad_cursor", "resume_after is ahead of the newest cursor");
                client_close(c, CLOSE_BAD_REQUEST, "bad resume_after");
            } else if (c->state == S_AUTH) {
                c->sent = op->has_resume ? op->resume_after : newest;
                sb_http_stream_set_reading(c->st, true);
                replay_next(c);
            }
        }
    }
    client_unref(c);
    free(op);
}

static void authed(void *arg, int status, const char *code, const char *message, const char *tenant)
{
    hello_op_t *op = arg;
    client_t *c = op->c;
    if (!c->st || c->state != S_AUTH) {
        client_unref(c);
        free(op);
        return;
    }
    if (status) {
        send_error(c, code, message);
        client_close(c, status == 401 ? CLOSE_UNAUTHORIZED : CLOSE_TRY_LATER,
                     status == 401 ? "unauthorized" : "database unavailable");
        client_unref(c);
        free(op);
        return;
    }
    c->tenant = strtoll(tenant, NULL, 10);
    snprintf(c->tenant_s, sizeof c->tenant_s, "%lld", (long long)c->tenant);
    subscribe(c);
    const char *p[1] = {c->tenant_s};
    c->querying = true; /* the ref taken for the credential check carries over to this query */
    if (sb_pg_query(sb_shard_pg(c->hub->shard), "SELECT inbox_cursor FROM tenants WHERE id = $1", 1, p, SB_PG_PREPARED,
                    welcomed, op) < 0)
        welcomed(op, SB_EUNAVAIL, "not connected", NULL);
}

static void on_hello(client_t *c, const sb_inbox_op_t *op)
{
    hello_op_t *h = sb_calloc(1, sizeof *h);
    h->c = c;
    h->has_resume = op->has_resume_after;
    h->resume_after = op->resume_after;
    c->state = S_AUTH;
    c->refs++;
    sb_http_stream_set_reading(c->st, false); /* one thing at a time until welcome */
    sb_api_auth(c->hub->shard, op->token, false, authed, h);
}

/* ---- send ----------------------------------------------------------------------------------------------------- */

typedef struct send_op {
    client_t *c;
    char *key; /* the client's idempotency key, echoed in accepted; NULL when it gave none */
} send_op_t;

static void sent(void *arg, int status, const char *code, const char *message, const char *id, bool created)
{
    send_op_t *op = arg;
    client_t *c = op->c;
    (void)created;
    if (c->st && c->state != S_CLOSING) {
        if (status != 202) {
            send_error(c, code, message);
        } else {
            sb_buf_t *b = &c->hub->out;
            frame_begin(b);
            sb_inbox_encode_accepted(c->fmt, op->key ? sb_str_cstr(op->key) : sb_str(NULL, 0), sb_str_cstr(id), b);
            client_write(c, frame_end(b, data_op(c)));
        }
    }
    free(op->key);
    free(op);
    client_unref(c);
}

/* The inbox's send op: the same acceptance as POST /v1/messages, answered with accepted (or an error frame). */
static void on_send(client_t *c, const sb_inbox_op_t *op)
{
    send_op_t *s = sb_calloc(1, sizeof *s);
    s->c = c;
    s->key = op->idempotency_key.p ? sb_strndup(op->idempotency_key.p, op->idempotency_key.len) : NULL;
    c->refs++;
    sb_send_t send = {.tenant = c->tenant,
                      .channel = op->channel_id,
                      .to = op->to,
                      .body = op->body,
                      .media_url = op->media_url,
                      .idempotency_key = op->idempotency_key};
    sb_sends_accept(&send, sent, s);
}

/* ---- frames from the client ----------------------------------------------------------------------------------- */

static void on_message(client_t *c, const sb_ws_event_t *ev)
{
    if ((ev->op == SB_WS_OP_TEXT) != (c->fmt == SB_INBOX_JSON)) {
        client_close(c, SB_WS_CLOSE_UNSUPPORTED,
                     c->fmt == SB_INBOX_JSON ? "switchboard.v1.json takes text frames"
                                             : "switchboard.v1.msgpack takes binary frames");
        return;
    }
    sb_inbox_op_t op;
    sb_inbox_err_t err;
    if (sb_inbox_decode(c->fmt, ev->payload, &op, &err) < 0) {
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
        frame_begin(b);
        sb_inbox_encode_pong(c->fmt, b);
        client_write(c, frame_end(b, data_op(c)));
    } else if (op.kind == SB_INBOX_SEND) {
        on_send(c, &op);
    }
    sb_inbox_op_cleanup(&op);
}

static size_t on_data(void *arg, sb_http_stream_t *st, char *p, size_t len)
{
    client_t *c = arg;
    size_t off = 0;
    (void)st;
    while (c->st && c->state != S_CLOSING && c->state != S_AUTH) {
        size_t used = 0;
        sb_ws_event_t ev;
        int rc = sb_ws_feed(&c->rd, p + off, len - off, &used, &ev);
        off += used;
        if (rc == 0)
            break;
        if (rc < 0) {
            client_close(c, sb_ws_close_code(rc), "bad frame");
            break;
        }
        if (ev.op == SB_WS_OP_PING) {
            sb_buf_t *b = &c->hub->out;
            frame_begin(b);
            sb_buf_append_str(b, ev.payload);
            client_write(c, frame_end(b, SB_WS_OP_PONG));
        } else if (ev.op == SB_WS_OP_CLOSE) {
            client_close(c, ev.code == SB_WS_CLOSE_NO_STATUS ? SB_WS_CLOSE_NORMAL : ev.code, "");
        } else if (ev.op == SB_WS_OP_TEXT || ev.op == SB_WS_OP_BINARY) {
            on_message(c, &ev);
        }
    }
    return c->state == S_CLOSING ? len : off; /* after a close, the rest is discarded */
}

static void on_drain(void *arg, sb_http_stream_t *st)
{
    (void)st;
    client_close(arg, SB_WS_CLOSE_GOING_AWAY, "server shutting down");
}

static void on_close(void *arg, sb_http_stream_t *st)
{
    client_t *c = arg;
    hub_t *h = c->hub;
    unsigned idx = sb_shard_index(h->shard);
    (void)st;
    c->st = NULL;
    if (c->subscribed) {
        list_remove(bucket_of(h, c->tenant), c);
        atomic_fetch_sub(&subscribed[idx], 1);
    } else {
        list_remove(&h->unsubscribed, c);
    }
    atomic_fetch_sub(&connected[idx], 1);
    sb_gauge_add(&sb_metrics_shard(idx)->inbox_clients, -1);
    client_unref(c);
}

static const sb_http_stream_ops_t stream_ops = {.on_data = on_data, .on_drain = on_drain, .on_close = on_close};

/* ---- the handshake -------------------------------------------------------------------------------------------- */

/* Does the comma-separated header value list contain token (case-insensitively)? */
static bool has_token(sb_str_t list, const char *token)
{
    size_t tl = strlen(token), start = 0;
    for (size_t i = 0; i <= list.len; i++) {
        if (i < list.len && list.p[i] != ',')
            continue;
        sb_str_t t = sb_str_trim(sb_str(list.p + start, i - start));
        start = i + 1;
        if (t.len == tl && strncasecmp(t.p, token, tl) == 0)
            return true;
    }
    return false;
}

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

bool sb_live_handle(sb_shard_t *s, sb_http_req_t *req)
{
    if (!sb_str_eq_cstr(sb_http_req_path(req), "/v1/inbox"))
        return false;
    sb_str_t upgrade, version, key, protocols;
    if (sb_http_req_method(req) != SB_HTTP_GET) {
        sb_http_respond_error(req, 405, "method_not_allowed", "the live inbox is a WebSocket: GET with Upgrade");
        return true;
    }
    if (!sb_http_req_upgrade(req) || !sb_http_req_header(req, "upgrade", &upgrade) ||
        !has_token(upgrade, "websocket")) {
        sb_http_respond_error(req, 426, "upgrade_required",
                              "the live inbox is a WebSocket: send HTTP/1.1 with Connection: Upgrade and "
                              "Upgrade: websocket");
        return true;
    }
    if (!sb_http_req_header(req, "sec-websocket-version", &version) || !sb_str_eq_cstr(version, "13")) {
        sb_http_respond_error(req, 426, "upgrade_required", "Sec-WebSocket-Version must be 13");
        return true;
    }
    char accept[SB_WS_ACCEPT_LEN + 1];
    if (!sb_http_req_header(req, "sec-websocket-key", &key) || sb_ws_accept_key(key, accept) < 0) {
        sb_http_respond_error(req, 400, "bad_request", "missing or malformed Sec-WebSocket-Key");
        return true;
    }
    if (sb_str_trim(sb_http_req_body(req)).len) {
        sb_http_respond_error(req, 400, "bad_request", "a WebSocket handshake has no body");
        return true;
    }
    if (!origin_allowed(req)) {
        sb_http_respond_error(req, 403, "origin_not_allowed", "this Origin may not open the inbox (inbox_origins)");
        return true;
    }
    sb_inbox_fmt_t fmt = SB_INBOX_JSON;
    const char *chosen = NULL;
    if (sb_http_req_header(req, "sec-websocket-protocol", &protocols)) {
        /* the client's order is its preference */
        size_t start = 0;
        for (size_t i = 0; i <= protocols.len && !chosen; i++) {
            if (i < protocols.len && protocols.p[i] != ',')
                continue;
            sb_str_t t = sb_str_trim(sb_str(protocols.p + start, i - start));
            start = i + 1;
            if (sb_str_eq_cstr(t, "switchboard.v1.json"))
                chosen = "switchboard.v1.json";
            else if (sb_str_eq_cstr(t, "switchboard.v1.msgpack"))
                chosen = "switchboard.v1.msgpack", fmt = SB_INBOX_MSGPACK;
        }
        if (!chosen) {
            sb_http_respond_error(req, 400, "unsupported_subprotocol",
                                  "Sec-WebSocket-Protocol must offer switchboard.v1.json or switchboard.v1.msgpack");
            return true;
        }
    }
    char head[256];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
                     "sec-websocket-accept: %s\r\n%s%s%s\r\n",
                     accept, chosen ? "sec-websocket-protocol: " : "", chosen ? chosen : "", chosen ? "\r\n" : "");
    hub_t *h = hubs[sb_shard_index(s)];
    client_t *c = sb_calloc(1, sizeof *c);
    c->hub = h;
    c->fmt = fmt;
    c->state = S_HELLO;
    c->refs = 1;
    strcpy(c->tenant_s, "-");
    c->hello_deadline = uv_now(sb_shard_loop(s)) + HELLO_TIMEOUT_MS;
    sb_ws_reader_init(&c->rd, MAX_MSG);
    c->st = sb_http_upgrade(req, head, (size_t)n, &stream_ops, c);
    if (!c->st) {
        client_unref(c);
        return true;
    }
    list_push(&h->unsubscribed, c);
    atomic_fetch_add(&connected[sb_shard_index(s)], 1);
    sb_gauge_add(&sb_metrics_shard(sb_shard_index(s))->inbox_clients, 1);
    return true;
}

/* ---- publishing ----------------------------------------------------------------------------------------------- */

static int by_cursor(const void *a, const void *b)
{
    int64_t x = (*(ev_t *const *)a)->cursor, y = (*(ev_t *const *)b)->cursor;
    return (x > y) - (x < y);
}

/* On each shard with subscribers: writes the batch to the tenant's live clients, queues it for replaying ones. */
static void deliver(sb_shard_t *s, void *arg)
{
    batch_t *b = arg;
    hub_t *h = hubs[sb_shard_index(s)];
    const ev_t *cached = NULL;
    for (client_t *c = h ? *bucket_of(h, b->tenant) : NULL, *next; c; c = next) {
        next = c->next;
        if (c->tenant != b->tenant || !c->st)
            continue;
        for (size_t i = 0; i < b->n; i++) {
            ev_t *e = b->ev[i];
            if (e->cursor <= c->sent)
                continue;
            if (c->state == S_LIVE && e->cursor == c->sent + 1) {
                write_event(c, e, &cached);
            } else if (c->state == S_LIVE || c->state == S_REPLAY) {
                if (c->npending == MAX_PENDING) { /* PostgreSQL has them: forget, and read on after this page */
                    pending_clear(c);
                    c->overflowed = true;
                }
                if (c->npending == c->cap_pending) {
                    c->cap_pending = c->cap_pending ? 2 * c->cap_pending : 16;
                    c->pending = sb_realloc(c->pending, c->cap_pending * sizeof *c->pending);
                }
                ev_ref(e);
                c->pending[c->npending++] = e;
                if (c->state == S_LIVE) /* a hole: something was missed; catch up from PostgreSQL */
                    replay_next(c);
            }
        }
    }
    batch_unref(b);
}

void sb_live_publish(int64_t tenant, const PGresult *res)
{
    sb_live_publish_rows(tenant, res, 0, res ? PQntuples(res) : 0);
}

void sb_live_publish_rows(int64_t tenant, const PGresult *res, int first, int count)
{
    int n = res ? first + count : 0, fc = n ? PQfnumber(res, "cursor") : -1, ft = n ? PQfnumber(res, "type") : -1,
        fd = n ? PQfnumber(res, "data") : -1, events = 0;
    if (fc < 0 || ft < 0 || fd < 0 || first < 0 || n > PQntuples(res))
        return;
    for (int i = first; i < n; i++)
        events += !PQgetisnull(res, i, fc);
    if (events)
        sb_hooks_kick(tenant); /* the tenant's own application hears of them too */
    unsigned shards = sb_shards_count(), targets = 0;
    for (unsigned i = 0; i < shards; i++)
        targets += atomic_load(&subscribed[i]) > 0;
    if (!targets || !events)
        return;
    batch_t *b = sb_malloc(sizeof *b + (size_t)events * sizeof b->ev[0]);
    b->tenant = tenant;
    b->n = 0;
    for (int i = first; i < n; i++)
        if (!PQgetisnull(res, i, fc))
            b->ev[b->n++] = ev_new(strtoll(PQgetvalue(res, i, fc), NULL, 10), PQgetvalue(res, i, ft),
                                   PQgetvalue(res, i, fd));
    qsort(b->ev, b->n, sizeof b->ev[0], by_cursor);
    atomic_init(&b->refs, (int)targets);
    sb_shard_t *self = sb_shard_self();
    for (unsigned i = 0; i < shards; i++) {
        if (atomic_load(&subscribed[i]) == 0) /* it subscribes before it queries: that query sees these events */
            continue;
        if (self && sb_shard_index(self) == i)
            deliver(self, b);
        else if (sb_shard_exec(i, deliver, b) < 0)
            batch_unref(b);
    }
}

/* ---- per shard ------------------------------------------------------------------------------------------------ */

/* Hello deadlines, and replays that waited for a slow client's socket to drain. */
static void on_tick(uv_timer_t *t)
{
    hub_t *h = t->data;
    uint64_t now = uv_now(t->loop);
    for (client_t *c = h->unsubscribed, *next; c; c = next) {
        next = c->next;
        if (c->state == S_HELLO && now >= c->hello_deadline) {
            send_error(c, "hello_timeout", "no hello within 10 seconds");
            client_close(c, CLOSE_UNAUTHORIZED, "hello timeout");
        }
    }
    for (size_t b = 0; b < HUB_BUCKETS; b++)
        for (client_t *c = h->buckets[b], *next; c; c = next) {
            next = c->next;
            if (c->waiting_drain && c->st && c->state == S_REPLAY)
                replay_next(c);
        }
}

void sb_live_init(const sb_config_t *c)
{
    cfg = c;
}

void sb_live_shard_start(sb_shard_t *s)
{
    hub_t *h = sb_calloc(1, sizeof *h);
    h->shard = s;
    sb_buf_init(&h->frame);
    sb_buf_init(&h->out);
    h->tick = sb_malloc(sizeof *h->tick);
    uv_timer_init(sb_shard_loop(s), h->tick);
    h->tick->data = h;
    uv_timer_start(h->tick, on_tick, TICK_MS, TICK_MS);
    hubs[sb_shard_index(s)] = h;
}

static void tick_closed(uv_handle_t *t)
{
    free(t);
}

/* The HTTP server closes its connections from the same stop hook; their on_close runs as their handles close,
 * and needs the hub, which is therefore freed only at finish, once the loop has no handles left. */
void sb_live_shard_stop(sb_shard_t *s)
{
    hub_t *h = hubs[sb_shard_index(s)];
    if (h && h->tick) {
        uv_close((uv_handle_t *)h->tick, tick_closed);
        h->tick = NULL;
    }
}

void sb_live_shard_finish(sb_shard_t *s)
{
    hub_t *h = hubs[sb_shard_index(s)];
    if (!h)
        return;
    hubs[sb_shard_index(s)] = NULL;
    sb_buf_cleanup(&h->frame);
    sb_buf_cleanup(&h->out);
    free(h);
}

unsigned sb_live_clients(unsigned idx)
{
    return idx < SB_MAX_SHARDS ? atomic_load_explicit(&connected[idx], memory_order_relaxed) : 0;
}
