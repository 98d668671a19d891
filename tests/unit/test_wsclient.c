/* Tests of the outgoing WebSocket client (adapters/net/wsclient.c) on a private libuv loop, against our own server
 * (adapters/net/http_server + adapters/net/wsconn) on 127.0.0.1 on the same loop: 10,000 text and binary messages
 * echoed in order, by address and by name; the extra upgrade headers and the subprotocol as the server sees them;
 * a refused upgrade (403), a closed port, a server that never answers (the connect timeout); the output bound
 * before the connection opens (exact eviction) and against a server that stops reading (droppable messages evicted,
 * a control message delivered in order once it reads again); an incoming message over max_message (1009); a close
 * from our side and from the peer's; abandoning a connection before it opens; argument errors; freeing the context
 * with connections open and connecting (each on_close once, SB_ECANCELED), also from inside an on_close. Every
 * callback is counted: on_open at most once, on_close exactly once, last, never inside sb_wsclient_connect. The
 * loop must end with no handle open (lws's context fully gone). ws:// goes through our own client; a raw server
 * here (canned answers, client frames read with proto/ws's server reader, which requires them masked) tests what
 * our server never does: a 101 with a wrong accept key or a missing header, an over-long answer head, frames in the
 * same segment as the 101 (a message, a ping answered with a pong, a close 1012 echoed), a masked frame from the
 * server (closed 1002). wss:// (libwebsockets) is not tested here beyond the context's life (our server speaks no
 * TLS): a wss:// connection to the closed port ends SB_EUNAVAIL. */
#include "adapters/net/http_server.h"
#include "adapters/net/wsclient.h"
#include "adapters/net/wsconn.h"
#include "proto/err.h"
#include "proto/ws.h"
#include "tests/tap.h"
#include "tests/unit/port.h"

#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static uv_loop_t loop;
static sb_http_server_t *srv;
static int port, silent_port, closed_port, silent_fd, closed_fd;
static sb_wsclient_ctx_t *ctx;
static bool in_connect; /* on_close must never come from inside sb_wsclient_connect */

/* ---- the server side ------------------------------------------------------------------------------------------ */

static char seen_signature[128], seen_protocol[64];
static int seen_subprotocol = -2;
static sb_wsconn_t *srv_slow;
static int srv_closed;
/* what the slow endpoint received after its filler */
static size_t slow_filler;
static char slow_tail[12][32];
static int slow_ntail;

static void srv_on_message(void *arg, sb_wsconn_t *c, sb_ws_op_t op, sb_str_t p)
{
    (void)arg;
    if (op == SB_WS_OP_TEXT && sb_str_has_prefix(p, SB_STR("close:"))) {
        sb_wsconn_close(c, (uint16_t)atoi(p.p + 6), "the peer says bye");
        return;
    }
    if (op == SB_WS_OP_TEXT && sb_str_has_prefix(p, SB_STR("big:"))) {
        size_t n = (size_t)atoi(p.p + 4);
        char *b = calloc(1, n);
        sb_wsconn_send(c, SB_WS_OP_BINARY, sb_str(b, n));
        free(b);
        return;
    }
    if (c == srv_slow) {
        if (p.len >= 1000) {
            slow_filler++;
        } else if (slow_ntail < 12) {
            snprintf(slow_tail[slow_ntail++], sizeof slow_tail[0], "%.*s", (int)p.len, p.p);
        }
        return;
    }
    sb_wsconn_send(c, op, p); /* echo */
}

static void srv_on_close(void *arg, sb_wsconn_t *c)
{
    (void)arg;
    if (c == srv_slow)
        srv_slow = NULL;
    srv_closed++;
}

static const sb_wsconn_ops_t srv_ops = {.on_message = srv_on_message, .on_close = srv_on_close};
static const char *const srv_protocols[] = {"audio.v1", NULL};
static const sb_wsconn_opts_t srv_opts = {.subprotocols = srv_protocols, .max_message = 1 << 20,
                                          .max_queued = 64 << 20, .slow_code = 1008, .slow_reason = "slow",
                                          .what = "the test endpoint"};

static void copy_header(sb_http_req_t *req, const char *name, char *dst, size_t cap)
{
    sb_str_t v;
    if (sb_http_req_header(req, name, &v))
        snprintf(dst, cap, "%.*s", (int)v.len, v.p);
    else
        dst[0] = '\0';
}

static void handler(void *arg, sb_http_req_t *req)
{
    (void)arg;
    sb_str_t path = sb_http_req_path(req);
    if (sb_str_eq_cstr(path, "/403")) {
        sb_http_respond_error(req, 403, "forbidden", "not you");
        return;
    }
    if (sb_str_eq_cstr(path, "/echo") || sb_str_eq_cstr(path, "/slow")) {
        copy_header(req, "x-switchboard-signature", seen_signature, sizeof seen_signature);
        copy_header(req, "sec-websocket-protocol", seen_protocol, sizeof seen_protocol);
        sb_wsconn_t *c = sb_wsconn_accept(req, &srv_opts, &srv_ops, NULL, &seen_subprotocol);
        if (c && sb_str_eq_cstr(path, "/slow")) {
            srv_slow = c;
            sb_wsconn_set_reading(c, false);
        }
        return;
    }
    sb_http_respond_error(req, 404, "not_found", "no");
}

/* ---- a raw server: canned upgrade answers, then frames -------------------------------------------------------- */

static uv_tcp_t raw_listener;
static int raw_port;
static struct raw {
    uv_tcp_t tcp;
    bool open, answered;
    char in[16384];
    size_t len;
    sb_ws_reader_t rd;
    int pongs, closes, bad; /* client frames seen: pongs, closes; bad: a reader error (e.g. unmasked) */
    uint16_t close_code;
} raw;

static void raw_alloc(uv_handle_t *h, size_t n, uv_buf_t *b)
{
    (void)h;
    (void)n;
    *b = uv_buf_init(raw.in + raw.len, (unsigned)(sizeof raw.in - raw.len));
}

static void raw_closed(uv_handle_t *h)
{
    (void)h;
    raw.open = false;
}

static void raw_send(const void *p, size_t n)
{
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
    uv_try_write((uv_stream_t *)&raw.tcp, &b, 1); /* small, into an empty socket: all of it */
}

/* The answer for path; key is the client's Sec-WebSocket-Key. */
static void raw_answer(const char *path, sb_str_t key)
{
    char accept[SB_WS_ACCEPT_LEN + 1] = "";
    sb_ws_accept_key(key, accept);
    sb_buf_t b;
    sb_buf_init(&b);
    if (strcmp(path, "/badkey") == 0) {
        sb_buf_puts(&b, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        "Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n");
    } else if (strcmp(path, "/noupgrade") == 0) {
        sb_buf_printf(&b, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                          "Sec-WebSocket-Accept: %s\r\n\r\n", accept);
    } else if (strcmp(path, "/longhead") == 0) {
        sb_buf_puts(&b, "HTTP/1.1 101 Switching Protocols\r\nX-Pad: ");
        for (int i = 0; i < 9000; i++)
            sb_buf_append(&b, "a", 1);
        sb_buf_printf(&b, "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                      accept);
    } else {
        sb_buf_printf(&b, "HTTP/1.1 101 Switching Protocols\r\nupgrade: WebSocket\r\nConnection: keep-alive, upgrade"
                          "\r\nSec-WebSocket-Accept: %s\r\n\r\n", accept);
        if (strcmp(path, "/hello") == 0) { /* in the same segment: a message, a ping, a close 1012 */
            sb_ws_frame_append(&b, SB_WS_OP_TEXT, true, SB_STR("m0"));
            sb_ws_frame_append(&b, SB_WS_OP_PING, true, SB_STR("p"));
            uint8_t cp[SB_WS_CONTROL_MAX];
            size_t cn = sb_ws_close_payload(cp, 1012, SB_STR("restart"));
            sb_ws_frame_append(&b, SB_WS_OP_CLOSE, true, sb_str((const char *)cp, cn));
        } else if (strcmp(path, "/masked") == 0) { /* a client's frame: a server must not mask */
            static const uint8_t f[] = {0x81, 0x82, 1, 2, 3, 4, 'h' ^ 1, 'i' ^ 2};
            sb_buf_append(&b, f, sizeof f);
        }
    }
    raw_send(b.p, b.len);
    sb_buf_cleanup(&b);
}

static void raw_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    (void)buf;
    if (n < 0) {
        if (!uv_is_closing((uv_handle_t *)s))
            uv_close((uv_handle_t *)s, raw_closed);
        return;
    }
    raw.len += (size_t)n;
    if (!raw.answered) {
        raw.in[raw.len < sizeof raw.in ? raw.len : sizeof raw.in - 1] = '\0';
        char *end = strstr(raw.in, "\r\n\r\n");
        if (!end)
            return;
        char path[64] = "", *k = strstr(raw.in, "Sec-WebSocket-Key: ");
        sscanf(raw.in, "GET %63s", path);
        raw.answered = true;
        raw_answer(path, k ? sb_str(k + 19, 24) : SB_STR(""));
        size_t head = (size_t)(end + 4 - raw.in);
        memmove(raw.in, raw.in + head, raw.len - head);
        raw.len -= head;
    }
    for (size_t off = 0; off < raw.len && !raw.bad;) {
        size_t used;
        sb_ws_event_t ev;
        int rc = sb_ws_feed(&raw.rd, raw.in + off, raw.len - off, &used, &ev);
        off += used;
        if (rc == 1 && ev.op == SB_WS_OP_PONG && sb_str_eq_cstr(ev.payload, "p"))
            raw.pongs++;
        if (rc == 1 && ev.op == SB_WS_OP_CLOSE) {
            raw.closes++;
            raw.close_code = ev.code;
        }
        if (rc < 0 && rc != SB_ECLOSED)
            raw.bad = rc;
        if (rc <= 0)
            break;
    }
    raw.len = 0; /* the reader keeps what it needs */
}

static void raw_accept(uv_stream_t *l, int status)
{
    if (status < 0 || raw.open)
        return;
    sb_ws_reader_cleanup(&raw.rd);
    memset(&raw, 0, sizeof raw);
    sb_ws_reader_init(&raw.rd, 1 << 20);
    uv_tcp_init(l->loop, &raw.tcp);
    raw.open = true;
    if (uv_accept(l, (uv_stream_t *)&raw.tcp) == 0)
        uv_read_start((uv_stream_t *)&raw.tcp, raw_alloc, raw_read);
}

/* ---- the client side ------------------------------------------------------------------------------------------ */

typedef struct rec {
    sb_wsclient_t *c;
    int opens, closes, msgs, after_close, bad_order;
    int err, status;
    uint16_t code;
    bool close_in_connect;
    sb_wsclient_ctx_t *free_ctx_on_close; /* sb_wsclient_ctx_free from inside on_close */
    bool binary_last;
    size_t last_len;
    char last[64];
} rec_t;

static void cl_on_open(void *arg, sb_wsclient_t *c)
{
    rec_t *r = arg;
    (void)c;
    if (r->closes)
        r->after_close++;
    r->opens++;
}

static void cl_on_message(void *arg, sb_wsclient_t *c, bool binary, sb_str_t p)
{
    rec_t *r = arg;
    (void)c;
    if (r->closes)
        r->after_close++;
    char want[32];
    int n = snprintf(want, sizeof want, "m%d", r->msgs);
    if (p.len < 1000 && (p.len != (size_t)n || memcmp(p.p, want, p.len) != 0 || binary != (r->msgs % 2 == 1)))
        r->bad_order++;
    r->msgs++;
    r->binary_last = binary;
    r->last_len = p.len;
    snprintf(r->last, sizeof r->last, "%.*s", (int)(p.len < 63 ? p.len : 63), p.p);
}

static void cl_on_close(void *arg, sb_wsclient_t *c, int err, uint16_t code, int status)
{
    rec_t *r = arg;
    (void)c;
    if (in_connect)
        r->close_in_connect = true;
    r->closes++;
    r->err = err;
    r->code = code;
    r->status = status;
    r->c = NULL;
    if (r->free_ctx_on_close)
        sb_wsclient_ctx_free(r->free_ctx_on_close);
}

static const sb_wsclient_ops_t cl_ops = {cl_on_open, cl_on_message, cl_on_close};

static int dial(sb_wsclient_ctx_t *x, rec_t *r, const char *url, const sb_wsclient_opts_t *extra)
{
    sb_wsclient_opts_t o = extra ? *extra : (sb_wsclient_opts_t){0};
    o.url = url;
    memset(r, 0, sizeof *r);
    in_connect = true;
    int rc = sb_wsclient_connect(x, &o, &cl_ops, r, &r->c);
    in_connect = false;
    return rc;
}

static void run_until_cb(bool (*done)(void *), void *arg, unsigned ms)
{
    uint64_t end = uv_hrtime() + (uint64_t)ms * 1000000;
    while (!done(arg) && uv_hrtime() < end)
        uv_run(&loop, UV_RUN_ONCE);
}

static bool is_open(void *arg)
{
    return ((rec_t *)arg)->opens > 0 || ((rec_t *)arg)->closes > 0;
}

static bool is_closed(void *arg)
{
    return ((rec_t *)arg)->closes > 0;
}

static int want_msgs;
static bool has_msgs(void *arg)
{
    return ((rec_t *)arg)->msgs >= want_msgs || ((rec_t *)arg)->closes > 0;
}

static void url(char *out, size_t n, const char *host, int p, const char *path)
{
    snprintf(out, n, "ws://%s:%d%s", host, p, path);
}

/* A timer that wakes the loop now and then, so run_until_cb's deadlines are checked even when nothing happens. */
static uv_timer_t ticker;
static void tick(uv_timer_t *t)
{
    (void)t;
}

/* ---- tests ---------------------------------------------------------------------------------------------------- */

TEST(setup)
{
    uv_loop_init(&loop);
    port = pick_port(NULL);
    sb_http_server_opts_t so = {.host = "127.0.0.1", .port = port, .max_header_bytes = 8192,
                                .max_body_bytes = 1 << 20, .header_timeout_s = 10, .idle_timeout_s = 10,
                                .handler = handler};
    is_int(sb_http_server_create(&loop, &so, &srv), 0, "server listening on port %d", port);
    /* a port that is bound and listens, but nobody accepts or answers: the kernel completes the handshake */
    silent_port = pick_port(&silent_fd);
    ok(listen(silent_fd, 16) == 0, "a silent listener on port %d", silent_port);
    closed_port = pick_port(&closed_fd); /* bound, not listening: refused */
    raw_port = pick_port(NULL);
    struct sockaddr_in ra;
    uv_ip4_addr("127.0.0.1", raw_port, &ra);
    uv_tcp_init(&loop, &raw_listener);
    ok(uv_tcp_bind(&raw_listener, (const struct sockaddr *)&ra, 0) == 0 &&
       uv_listen((uv_stream_t *)&raw_listener, 16, raw_accept) == 0, "a raw server on port %d", raw_port);
    ctx = sb_wsclient_ctx_new(&loop);
    ok(ctx != NULL, "a context on the loop");
    uv_timer_init(&loop, &ticker);
    uv_timer_start(&ticker, tick, 20, 20);
}

TEST(arguments)
{
    rec_t r;
    is_int(dial(ctx, &r, "http://127.0.0.1/x", NULL), SB_EINVAL, "http:// is refused");
    is_int(dial(ctx, &r, "ws://", NULL), SB_EINVAL, "no host");
    is_int(dial(ctx, &r, "ws://user@127.0.0.1/x", NULL), SB_EINVAL, "user info");
    is_int(dial(ctx, &r, "ws://127.0.0.1:99999/x", NULL), SB_EINVAL, "a port out of range");
    is_int(dial(ctx, &r, "ws://127.0.0.1/x#frag", NULL), SB_EINVAL, "a fragment");
    const char *bad[] = {"X-Evil: a\r\nX-Injected: b", NULL};
    sb_wsclient_opts_t o = {.headers = bad};
    is_int(dial(ctx, &r, "ws://127.0.0.1/x", &o), SB_EINVAL, "a header line with CR LF");
    const char *noname[] = {": v", NULL};
    o.headers = noname;
    is_int(dial(ctx, &r, "ws://127.0.0.1/x", &o), SB_EINVAL, "a header line without a name");
    uv_run(&loop, UV_RUN_NOWAIT);
    is_int(r.closes, 0, "no callback after an error return");
}

TEST(echo_in_order)
{
    char u[128];
    url(u, sizeof u, "127.0.0.1", port, "/echo?call=CA1");
    const char *headers[] = {"X-Switchboard-Signature: v1=deadbeef", "X-Other: 1", NULL};
    sb_wsclient_opts_t o = {.headers = headers, .subprotocol = "audio.v1", .max_queued = 1 << 20,
                           .max_message = 1 << 20};
    rec_t r;
    is_int(dial(ctx, &r, u, &o), 0, "connecting");
    ok(!sb_wsclient_is_open(r.c), "not open yet");
    run_until_cb(is_open, &r, 3000);
    is_int(r.opens, 1, "opened once");
    ok(r.c && sb_wsclient_is_open(r.c), "open");
    is_str(seen_signature, "v1=deadbeef", "the server saw X-Switchboard-Signature");
    is_str(seen_protocol, "audio.v1", "the server was offered the subprotocol");
    is_int(seen_subprotocol, 0, "and chose it");
    enum { N = 10000 };
    for (int i = 0; i < N && r.c; i++) {
        char m[32];
        int n = snprintf(m, sizeof m, "m%d", i);
        if (sb_wsclient_send(r.c, i % 2 == 1, sb_str(m, (size_t)n), false) != 0)
            break;
    }
    want_msgs = N;
    run_until_cb(has_msgs, &r, 10000);
    is_int(r.msgs, N, "%d messages echoed", N);
    is_int(r.bad_order, 0, "in order, text and binary as sent");
    is_int(r.c ? (long long)sb_wsclient_queued(r.c) : -1, 0, "nothing left queued");
    is_int(r.c ? (long long)sb_wsclient_dropped(r.c) : -1, 0, "nothing dropped");

    /* a 100 KiB message each way: fragments and partial writes */
    char *big = malloc(100000);
    memset(big, 'x', 100000);
    int before = r.msgs;
    r.msgs = 0; /* the order check does not apply to big ones */
    sb_wsclient_send(r.c, true, sb_str(big, 100000), false);
    want_msgs = 1;
    run_until_cb(has_msgs, &r, 3000);
    free(big);
    ok(r.msgs == 1 && r.last_len == 100000 && r.binary_last, "a 100,000-byte message echoed whole (%zu)",
       r.last_len);
    r.msgs = before;

    if (!r.c)
        return;
    sb_wsclient_close(r.c, 4000, "done here");
    is_int(sb_wsclient_send(r.c, false, SB_STR("late"), false), SB_ECLOSED, "send after close: SB_ECLOSED");
    run_until_cb(is_closed, &r, 3000);
    is_int(r.closes, 1, "on_close once");
    is_int(r.err, 0, "err 0: it was open");
    is_int(r.code, 4000, "our code");
    is_int(r.after_close, 0, "nothing after on_close");
    ok(!r.close_in_connect, "not from inside connect");
}

TEST(by_name)
{
    char u[128];
    url(u, sizeof u, "localhost", port, "/echo");
    rec_t r;
    is_int(dial(ctx, &r, u, NULL), 0, "connecting to localhost (resolved off the loop)");
    run_until_cb(is_open, &r, 3000);
    is_int(r.opens, 1, "opened");
    if (r.c)
        sb_wsclient_send(r.c, false, SB_STR("m0"), false);
    want_msgs = 1;
    run_until_cb(has_msgs, &r, 3000);
    is_int(r.msgs, 1, "echoed");
    is_int(r.bad_order, 0, "the same message");
    if (r.c)
        sb_wsclient_send(r.c, false, SB_STR("close:4001"), false);
    run_until_cb(is_closed, &r, 3000);
    is_int(r.closes, 1, "closed by the peer");
    is_int(r.err, 0, "err 0");
    is_int(r.code, 4001, "the peer's code");
    is_int(r.after_close, 0, "nothing after on_close");
}

TEST(refused_upgrade)
{
    char u[128];
    url(u, sizeof u, "127.0.0.1", port, "/403");
    rec_t r;
    is_int(dial(ctx, &r, u, NULL), 0, "connecting");
    run_until_cb(is_closed, &r, 3000);
    is_int(r.closes, 1, "on_close once");
    is_int(r.opens, 0, "never opened");
    is_int(r.err, SB_EACCES, "SB_EACCES");
    is_int(r.status, 403, "http_status 403");
    ok(!r.close_in_connect, "not from inside connect");
}

TEST(closed_port)
{
    char u[128];
    url(u, sizeof u, "127.0.0.1", closed_port, "/x");
    rec_t r;
    is_int(dial(ctx, &r, u, NULL), 0, "connecting");
    run_until_cb(is_closed, &r, 3000);
    is_int(r.closes, 1, "on_close once");
    is_int(r.err, SB_EUNAVAIL, "SB_EUNAVAIL");
    ok(!r.close_in_connect, "not from inside connect");
}

TEST(connect_timeout)
{
    char u[128];
    url(u, sizeof u, "127.0.0.1", silent_port, "/x");
    sb_wsclient_opts_t o = {.connect_timeout_ms = 300};
    rec_t r;
    uint64_t t0 = uv_hrtime();
    is_int(dial(ctx, &r, u, &o), 0, "connecting");
    sb_wsclient_send(r.c, false, SB_STR("waits"), false);
    run_until_cb(is_closed, &r, 3000);
    uint64_t ms = (uv_hrtime() - t0) / 1000000;
    is_int(r.closes, 1, "on_close once");
    is_int(r.err, SB_ETIMEDOUT, "SB_ETIMEDOUT");
    ok(ms >= 250 && ms < 1500, "after connect_timeout_ms (%llu ms)", (unsigned long long)ms);
}

TEST(abandon_before_open)
{
    char u[128];
    url(u, sizeof u, "127.0.0.1", silent_port, "/x");
    rec_t r;
    is_int(dial(ctx, &r, u, NULL), 0, "connecting");
    uv_run(&loop, UV_RUN_NOWAIT);
    sb_wsclient_close(r.c, 1000, "");
    is_int(r.closes, 0, "on_close does not come from inside sb_wsclient_close");
    run_until_cb(is_closed, &r, 3000);
    is_int(r.closes, 1, "on_close once");
    is_int(r.err, SB_ECANCELED, "SB_ECANCELED");
}

/* Before it opens nothing is written, so the queue shows the eviction exactly. */
TEST(bound_before_open)
{
    char u[128];
    url(u, sizeof u, "127.0.0.1", port, "/slow");
    sb_wsclient_opts_t o = {.max_queued = 1000};
    rec_t r;
    is_int(dial(ctx, &r, u, &o), 0, "connecting");
    char m[100];
    int evicted = 0;
    for (int i = 0; i < 20; i++) {
        memset(m, ' ', sizeof m);
        snprintf(m, sizeof m, "d%d", i);
        evicted += sb_wsclient_send(r.c, false, sb_str(m, 100), true);
    }
    is_int(evicted, 10, "20 droppable messages of 100 bytes in 1000: the 10 oldest evicted");
    is_int((long long)sb_wsclient_dropped(r.c), 10, "and counted");
    is_int((long long)sb_wsclient_queued(r.c), 1000, "1000 bytes queued");
    memset(m, ' ', sizeof m);
    snprintf(m, sizeof m, "ctrl");
    is_int(sb_wsclient_send(r.c, false, sb_str(m, 100), false), 0, "a control message is queued over the bound");
    memset(m, ' ', sizeof m);
    snprintf(m, sizeof m, "d20");
    is_int(sb_wsclient_send(r.c, false, sb_str(m, 100), true), 2, "the next droppable one evicts the 2 oldest");
    is_int((long long)sb_wsclient_dropped(r.c), 12, "12 dropped in all");
    is_int((long long)sb_wsclient_queued(r.c), 1000, "1000 bytes queued");
    run_until_cb(is_open, &r, 3000);
    is_int(r.opens, 1, "opened");
    slow_ntail = 0;
    slow_filler = 0;
    if (srv_slow)
        sb_wsconn_set_reading(srv_slow, true);
    uint64_t end = uv_hrtime() + 3000000000ull;
    while (slow_ntail < 10 && uv_hrtime() < end)
        uv_run(&loop, UV_RUN_ONCE);
    int in_order = slow_ntail == 10;
    for (int i = 0; i < 8 && in_order; i++) {
        char want[8]; /* the server's copy stops at the NUL that follows the name */
        snprintf(want, sizeof want, "d%d", 12 + i);
        in_order = strcmp(slow_tail[i], want) == 0;
    }
    ok(in_order, "the server got d12..d19 in order (%s .. %s)", slow_tail[0], slow_tail[7]);
    ok(strcmp(slow_tail[8], "ctrl") == 0 && strcmp(slow_tail[9], "d20") == 0,
       "then ctrl, then d20 (%s, %s)", slow_tail[8], slow_tail[9]);
    if (r.c)
        sb_wsclient_close(r.c, 1000, "");
    run_until_cb(is_closed, &r, 3000);
    is_int(r.closes, 1, "closed");
}

/* The server stops reading: big control messages fill the socket and our queue; then droppable messages evict each
 * other while the control message sent between them waits its turn. */
TEST(bound_slow_reader)
{
    char u[128];
    url(u, sizeof u, "127.0.0.1", port, "/slow");
    rec_t r;
    is_int(dial(ctx, &r, u, NULL), 0, "connecting");
    run_until_cb(is_open, &r, 3000);
    is_int(r.opens, 1, "opened");
    ok(srv_slow != NULL, "the server does not read");
    enum { CHUNK = 64 * 1024, NCHUNK = 200 };
    char *filler = malloc(CHUNK);
    memset(filler, 'f', CHUNK);
    for (int i = 0; i < NCHUNK; i++)
        sb_wsclient_send(r.c, true, sb_str(filler, CHUNK), false);
    free(filler);
    for (int i = 0; i < 50; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    size_t q = sb_wsclient_queued(r.c);
    ok(q > 64 * 1024, "the socket is full and our queue holds the rest (%zu bytes)", q);
    int evicted = 0;
    for (int i = 0; i < 30; i++) {
        char m[16];
        int n = snprintf(m, sizeof m, "d%d", i);
        evicted += sb_wsclient_send(r.c, false, sb_str(m, (size_t)n), true);
    }
    is_int(evicted, 29, "each droppable message evicted the one before");
    sb_wsclient_send(r.c, false, SB_STR("ctrl"), false);
    is_int(sb_wsclient_send(r.c, false, SB_STR("last"), true), 1, "the last one evicts d29, not ctrl");
    is_int((long long)sb_wsclient_dropped(r.c), 30, "30 dropped");
    slow_ntail = 0;
    slow_filler = 0;
    sb_wsconn_set_reading(srv_slow, true);
    uint64_t end = uv_hrtime() + 5000000000ull;
    while (slow_ntail < 2 && uv_hrtime() < end)
        uv_run(&loop, UV_RUN_ONCE);
    is_int((long long)slow_filler, NCHUNK, "every control filler arrived");
    ok(slow_ntail == 2 && strcmp(slow_tail[0], "ctrl") == 0 && strcmp(slow_tail[1], "last") == 0,
       "then ctrl, then the newest droppable (%s, %s)", slow_ntail > 0 ? slow_tail[0] : "-",
       slow_ntail > 1 ? slow_tail[1] : "-");
    if (r.c)
        sb_wsclient_close(r.c, 1000, "");
    run_until_cb(is_closed, &r, 3000);
    is_int(r.closes, 1, "closed");
    is_int(r.code, 1000, "with our code");
}

TEST(message_too_big)
{
    char u[128];
    url(u, sizeof u, "127.0.0.1", port, "/echo");
    sb_wsclient_opts_t o = {.max_message = 1000};
    rec_t r;
    is_int(dial(ctx, &r, u, &o), 0, "connecting");
    run_until_cb(is_open, &r, 3000);
    sb_wsclient_send(r.c, false, SB_STR("big:1000"), false);
    want_msgs = 1;
    run_until_cb(has_msgs, &r, 3000);
    is_int(r.msgs, 1, "max_message bytes arrive");
    sb_wsclient_send(r.c, false, SB_STR("big:1001"), false);
    run_until_cb(is_closed, &r, 3000);
    is_int(r.msgs, 1, "one more byte does not");
    is_int(r.closes, 1, "on_close once");
    is_int(r.err, 0, "err 0");
    is_int(r.code, 1009, "closed 1009");
}

/* Answers that are not an upgrade we asked for: the connection never opens. */
TEST(bad_answers)
{
    static const struct {
        const char *path, *what;
        int status;
    } cases[] = {{"/badkey", "101 with a wrong Sec-WebSocket-Accept", 101},
                 {"/noupgrade", "101 without Upgrade: websocket", 101},
                 {"/longhead", "an answer head over 8 KiB", 0}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char u[128];
        url(u, sizeof u, "127.0.0.1", raw_port, cases[i].path);
        rec_t r;
        is_int(dial(ctx, &r, u, NULL), 0, "%s: connecting", cases[i].what);
        run_until_cb(is_closed, &r, 3000);
        is_int(r.opens, 0, "%s: never opened", cases[i].what);
        is_int(r.closes, 1, "%s: on_close once", cases[i].what);
        is_int(r.err, SB_EUNAVAIL, "%s: SB_EUNAVAIL", cases[i].what);
        is_int(r.status, cases[i].status, "%s: http_status %d", cases[i].what, cases[i].status);
        uint64_t end = uv_hrtime() + 2000000000ull;
        while (raw.open && uv_hrtime() < end)
            uv_run(&loop, UV_RUN_ONCE);
    }
}

static bool raw_done(void *arg)
{
    (void)arg;
    return !raw.open;
}

/* Frames in the segment of the 101: a message, a ping (answered with a masked pong), a close 1012 (echoed, and
 * reported as sent: no libwebsockets rewrite to 1002). */
TEST(frames_with_the_answer)
{
    char u[128];
    url(u, sizeof u, "127.0.0.1", raw_port, "/hello");
    rec_t r;
    is_int(dial(ctx, &r, u, NULL), 0, "connecting");
    run_until_cb(is_closed, &r, 3000);
    is_int(r.opens, 1, "opened");
    is_int(r.msgs, 1, "the message that came with the 101");
    is_int(r.bad_order, 0, "m0, text");
    is_int(r.closes, 1, "on_close once");
    is_int(r.err, 0, "err 0");
    is_int(r.code, 1012, "the peer's code, 1012");
    run_until_cb(raw_done, NULL, 3000);
    is_int(raw.bad, 0, "the client's frames were masked and well-formed");
    is_int(raw.pongs, 1, "the ping was answered");
    ok(raw.closes == 1 && raw.close_code == 1012, "the close echoed 1012 (%d)", raw.close_code);
}

TEST(masked_from_server)
{
    char u[128];
    url(u, sizeof u, "127.0.0.1", raw_port, "/masked");
    rec_t r;
    is_int(dial(ctx, &r, u, NULL), 0, "connecting");
    run_until_cb(is_closed, &r, 3000);
    is_int(r.opens, 1, "opened");
    is_int(r.msgs, 0, "the masked frame is not a message");
    is_int(r.err, 0, "err 0");
    is_int(r.code, 1002, "closed 1002");
    run_until_cb(raw_done, NULL, 3000);
    ok(raw.closes == 1 && raw.close_code == 1002 && raw.bad == 0, "the server got a close 1002 (%d)",
       raw.close_code);
}

/* wss:// still goes through libwebsockets: the closed port ends it as before. */
TEST(wss_unavailable)
{
    char u[128];
    snprintf(u, sizeof u, "wss://127.0.0.1:%d/x", closed_port);
    rec_t r;
    is_int(dial(ctx, &r, u, NULL), 0, "connecting with TLS");
    run_until_cb(is_closed, &r, 3000);
    is_int(r.closes, 1, "on_close once");
    is_int(r.err, SB_EUNAVAIL, "SB_EUNAVAIL");
    ok(!r.close_in_connect, "not from inside connect");
}

TEST(ctx_free_cancels)
{
    char u[128], s[128];
    url(u, sizeof u, "127.0.0.1", port, "/echo");
    url(s, sizeof s, "127.0.0.1", silent_port, "/x");
    rec_t r[4];
    for (int i = 0; i < 3; i++)
        dial(ctx, &r[i], u, NULL);
    dial(ctx, &r[3], s, NULL);
    for (int i = 0; i < 3; i++)
        run_until_cb(is_open, &r[i], 3000);
    ok(r[0].opens == 1 && r[1].opens == 1 && r[2].opens == 1, "three open");
    sb_wsclient_send(r[0].c, false, SB_STR("m0"), false); /* queued, never sent */
    sb_wsclient_ctx_free(ctx);
    ctx = NULL;
    int ok_all = 1;
    for (int i = 0; i < 4; i++)
        ok_all &= r[i].closes == 1 && r[i].err == SB_ECANCELED;
    ok(ok_all, "each got on_close once with SB_ECANCELED");
    for (int i = 0; i < 20; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    ok(r[0].closes == 1 && r[1].closes == 1 && r[2].closes == 1 && r[3].closes == 1, "and only once");
    ok(r[0].after_close == 0, "nothing after on_close");

    /* a second context on the same loop, freed from inside an on_close */
    sb_wsclient_ctx_t *x = sb_wsclient_ctx_new(&loop);
    ok(x != NULL, "another context");
    rec_t a, b;
    url(u, sizeof u, "127.0.0.1", closed_port, "/x");
    dial(x, &a, u, NULL);
    url(s, sizeof s, "127.0.0.1", silent_port, "/x");
    dial(x, &b, s, NULL);
    a.free_ctx_on_close = x;
    run_until_cb(is_closed, &a, 3000);
    is_int(a.err, SB_EUNAVAIL, "the first ends");
    run_until_cb(is_closed, &b, 3000);
    is_int(b.closes, 1, "the other gets on_close once");
    is_int(b.err, SB_ECANCELED, "SB_ECANCELED");
}

TEST(teardown)
{
    int srv_open = 0;
    uint64_t end = uv_hrtime() + 3000000000ull;
    while (sb_http_server_connections(srv) > 0 && uv_hrtime() < end)
        uv_run(&loop, UV_RUN_ONCE);
    srv_open = (int)sb_http_server_connections(srv);
    is_int(srv_open, 0, "the server saw every connection go");
    sb_http_server_close(srv);
    uv_close((uv_handle_t *)&ticker, NULL);
    uv_close((uv_handle_t *)&raw_listener, NULL);
    if (raw.open && !uv_is_closing((uv_handle_t *)&raw.tcp))
        uv_close((uv_handle_t *)&raw.tcp, raw_closed);
    sb_ws_reader_cleanup(&raw.rd);
    close(silent_fd);
    close(closed_fd);
    uv_run(&loop, UV_RUN_DEFAULT);
    is_int(uv_loop_close(&loop), 0, "no handle left open: lws's context is gone");
}

int main(void)
{
    RUN(setup);
    RUN(arguments);
    RUN(echo_in_order);
    RUN(by_name);
    RUN(refused_upgrade);
    RUN(closed_port);
    RUN(connect_timeout);
    RUN(abandon_before_open);
    RUN(bound_before_open);
    RUN(bound_slow_reader);
    RUN(message_too_big);
    RUN(bad_answers);
    RUN(frames_with_the_answer);
    RUN(masked_from_server);
    RUN(wss_unavailable);
    RUN(ctx_free_cancels);
    RUN(teardown);
    return tap_done();
}
