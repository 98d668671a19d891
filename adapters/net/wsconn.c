/* WebSocket connections; see wsconn.h. */
#include "adapters/net/wsconn.h"

#include "proto/mem.h"
#include "proto/slab.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct sb_wsconn {
    sb_http_stream_t *st;   /* NULL once closed */
    const sb_wsconn_ops_t *ops;
    void *arg;
    size_t max_queued;
    uint16_t slow_code;
    const char *slow_reason;
    bool closing;
    sb_ws_reader_t rd;
};

/* The connections of this thread (a shard's loop): packed in a slab, an idle one costs its own size. */
static _Thread_local sb_slab_t ws_slab;

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

/* ---- frames out ------------------------------------------------------------------------------------------------- */

static void write_frame(sb_wsconn_t *c, sb_ws_op_t op, sb_str_t payload)
{
    uint8_t head[SB_WS_HEAD_MAX];
    uv_buf_t f[2] = {uv_buf_init((char *)head, (unsigned)sb_ws_frame_head(head, op, true, payload.len)),
                     uv_buf_init((char *)(payload.p ? payload.p : ""), (unsigned)payload.len)};
    sb_http_stream_write(c->st, f, payload.len ? 2 : 1);
}

void sb_wsconn_close(sb_wsconn_t *c, uint16_t code, const char *reason)
{
    if (!c->st || c->closing)
        return;
    uint8_t payload[SB_WS_CONTROL_MAX];
    size_t n = sb_ws_close_payload(payload, code, sb_str_cstr(reason ? reason : ""));
    write_frame(c, SB_WS_OP_CLOSE, sb_str((const char *)payload, n));
    c->closing = true;
    sb_http_stream_close(c->st);
}

void sb_wsconn_send(sb_wsconn_t *c, sb_ws_op_t op, sb_str_t payload)
{
    if (!c->st || c->closing)
        return;
    write_frame(c, op, payload);
    if (sb_http_stream_queued(c->st) > c->max_queued) {
        if (c->ops->on_slow)
            c->ops->on_slow(c->arg, c);
        sb_wsconn_close(c, c->slow_code, c->slow_reason);
    }
}

size_t sb_wsconn_queued(const sb_wsconn_t *c)
{
    return c->st ? sb_http_stream_queued(c->st) : 0;
}

void sb_wsconn_set_reading(sb_wsconn_t *c, bool on)
{
    if (c->st && !c->closing)
        sb_http_stream_set_reading(c->st, on);
}

bool sb_wsconn_is_open(const sb_wsconn_t *c)
{
    return c->st && !c->closing;
}

void sb_wsconn_peer(const sb_wsconn_t *c, char *out, size_t len)
{
    if (c->st)
        sb_http_stream_peer(c->st, out, len);
    else
        snprintf(out, len, "-");
}

/* ---- frames in -------------------------------------------------------------------------------------------------- */

static size_t on_data(void *arg, sb_http_stream_t *st, char *p, size_t len)
{
    sb_wsconn_t *c = arg;
    size_t off = 0;
    (void)st;
    while (c->st && !c->closing) {
        size_t used = 0;
        sb_ws_event_t ev;
        int rc = sb_ws_feed(&c->rd, p + off, len - off, &used, &ev);
        off += used;
        if (rc == 0)
            break;
        if (rc < 0) {
            sb_wsconn_close(c, sb_ws_close_code(rc), "bad frame");
            break;
        }
        if (ev.op == SB_WS_OP_PING)
            write_frame(c, SB_WS_OP_PONG, ev.payload);
        else if (ev.op == SB_WS_OP_CLOSE)
            sb_wsconn_close(c, ev.code == SB_WS_CLOSE_NO_STATUS ? SB_WS_CLOSE_NORMAL : ev.code, "");
        else if (ev.op == SB_WS_OP_TEXT || ev.op == SB_WS_OP_BINARY)
            c->ops->on_message(c->arg, c, ev.op, ev.payload);
    }
    return c->closing || !c->st ? len : off; /* after a close, the rest is discarded */
}

static void on_drain(void *arg, sb_http_stream_t *st)
{
    sb_wsconn_t *c = arg;
    (void)st;
    if (c->ops->on_drain)
        c->ops->on_drain(c->arg, c);
    else
        sb_wsconn_close(c, SB_WS_CLOSE_GOING_AWAY, "server shutting down");
}

static void on_close(void *arg, sb_http_stream_t *st)
{
    sb_wsconn_t *c = arg;
    (void)st;
    c->st = NULL;
    c->ops->on_close(c->arg, c);
    sb_ws_reader_cleanup(&c->rd);
    sb_slab_free(&ws_slab, c);
}

static const sb_http_stream_ops_t stream_ops = {.on_data = on_data, .on_drain = on_drain, .on_close = on_close};

/* ---- the handshake ---------------------------------------------------------------------------------------------- */

sb_wsconn_t *sb_wsconn_accept(sb_http_req_t *req, const sb_wsconn_opts_t *o, const sb_wsconn_ops_t *ops, void *arg,
                              int *subprotocol)
{
    sb_str_t upgrade, version, key, protocols;
    char msg[160];
    *subprotocol = -1;
    if (sb_http_req_method(req) != SB_HTTP_GET) {
        snprintf(msg, sizeof msg, "%s is a WebSocket: GET with Upgrade", o->what);
        sb_http_respond_error(req, 405, "method_not_allowed", msg);
        return NULL;
    }
    if (!sb_http_req_upgrade(req) || !sb_http_req_header(req, "upgrade", &upgrade) ||
        !has_token(upgrade, "websocket")) {
        snprintf(msg, sizeof msg, "%s is a WebSocket: send HTTP/1.1 with Connection: Upgrade and Upgrade: websocket",
                 o->what);
        sb_http_respond_error(req, 426, "upgrade_required", msg);
        return NULL;
    }
    if (!sb_http_req_header(req, "sec-websocket-version", &version) || !sb_str_eq_cstr(version, "13")) {
        sb_http_respond_error(req, 426, "upgrade_required", "Sec-WebSocket-Version must be 13");
        return NULL;
    }
    char accept[SB_WS_ACCEPT_LEN + 1];
    if (!sb_http_req_header(req, "sec-websocket-key", &key) || sb_ws_accept_key(key, accept) < 0) {
        sb_http_respond_error(req, 400, "bad_request", "missing or malformed Sec-WebSocket-Key");
        return NULL;
    }
    if (sb_str_trim(sb_http_req_body(req)).len) {
        sb_http_respond_error(req, 400, "bad_request", "a WebSocket handshake has no body");
        return NULL;
    }
    if (o->origin_allowed && !o->origin_allowed(req)) {
        snprintf(msg, sizeof msg, "this Origin may not open %s", o->what);
        sb_http_respond_error(req, 403, "origin_not_allowed", msg);
        return NULL;
    }
    const char *chosen = NULL;
    if (sb_http_req_header(req, "sec-websocket-protocol", &protocols)) {
        size_t start = 0; /* the client's order is its preference */
        for (size_t i = 0; i <= protocols.len && !chosen; i++) {
            if (i < protocols.len && protocols.p[i] != ',')
                continue;
            sb_str_t t = sb_str_trim(sb_str(protocols.p + start, i - start));
            start = i + 1;
            for (int k = 0; o->subprotocols && o->subprotocols[k] && !chosen; k++)
                if (sb_str_eq_cstr(t, o->subprotocols[k])) {
                    chosen = o->subprotocols[k];
                    *subprotocol = k;
                }
        }
        if (!chosen) {
            sb_buf_t b;
            sb_buf_init(&b);
            sb_buf_puts(&b, "Sec-WebSocket-Protocol must offer ");
            for (int k = 0; o->subprotocols && o->subprotocols[k]; k++)
                sb_buf_printf(&b, "%s%s", k ? " or " : "", o->subprotocols[k]);
            sb_http_respond_error(req, 400, "unsupported_subprotocol", sb_buf_cstr(&b));
            sb_buf_cleanup(&b);
            return NULL;
        }
    }
    char head[256];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
                     "sec-websocket-accept: %s\r\n%s%s%s\r\n",
                     accept, chosen ? "sec-websocket-protocol: " : "", chosen ? chosen : "", chosen ? "\r\n" : "");
    sb_wsconn_t *c = sb_slab_alloc(&ws_slab, sizeof *c);
    c->ops = ops;
    c->arg = arg;
    c->max_queued = o->max_queued;
    c->slow_code = o->slow_code;
    c->slow_reason = o->slow_reason;
    sb_ws_reader_init(&c->rd, o->max_message);
    c->st = sb_http_upgrade(req, head, (size_t)n, &stream_ops, c);
    if (!c->st) {
        sb_ws_reader_cleanup(&c->rd);
        sb_slab_free(&ws_slab, c);
        return NULL;
    }
    return c;
}
