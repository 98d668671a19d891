/* HTTP/1.1 server on libuv; see http_server.h for the contract.
 *
 * Why not libwebsockets for plain HTTP: measured on this machine, lws 4.1 on a libuv loop spends about six
 * epoll_ctl calls per keep-alive request (it waits for POLLOUT after every transaction before reading the next),
 * which held /healthz to half of nginx's rate; it also URL-decodes and splits the request target, which the
 * provider signatures need byte for byte. So HTTP is served here, WebSockets too (an upgraded connection becomes a
 * stream); libwebsockets is kept for what it is best at, the outgoing WebSocket client, once a module needs one.
 *
 * A connection is a uv_tcp_t plus, while bytes are being read, an input buffer (from the server's pool: an idle
 * connection holds none; connections themselves live in a slab, see proto/slab.h). Its life:
 *   HEAD     waiting for (the rest of) a request head; deadline = idle timeout while nothing has arrived, header
 *            timeout from the first byte; or, while the answers already given are not written (out_blocked, see
 *            below), neither reading nor parsing, with the idle timeout to drain them;
 *   BODY     reading a Content-Length or chunked body; deadline = header timeout from the head. A body that is not
 *            whole in the input when its head is parsed is moved, as it arrives, into a buffer of the request's
 *            own, up to max_body_bytes: the input buffer holds heads and pipelined bytes only;
 *   HANDLER  a handler holds the request; reading is stopped; no deadline (the handler bounds its own work);
 *   LINGER   answered with "Connection: close": write side shut down, input read and discarded until EOF or a
 *            short deadline, so the peer sees our answer rather than a reset;
 *   STREAM   upgraded (WebSocket): input goes to the stream's owner; no deadline until the owner closes it.
 * Answers are written with uv_try_write from a reused buffer; only what the kernel did not take is copied into a
 * write request. What a connection has answered but the kernel has not taken is bounded: past OUT_HIGH the
 * connection's pipelined requests wait (it is neither read nor parsed) until the peer has read it below OUT_LOW, and
 * a peer that does not read for the idle timeout is closed. So a client that pipelines and never reads costs at
 * most OUT_HIGH plus one answer, not one answer per request it sent. One sweep timer per server enforces every
 * deadline, and another answers the requests a handler chose to answer later (sb_http_respond_later). */
#include "adapters/net/http_server.h"

#include "adapters/net/accept.h"

#include "gateway/log.h"
#include "gateway/metrics.h"
#include "proto/err.h"
#include "proto/http1.h"
#include "proto/list.h"
#include "proto/mem.h"
#include "proto/slab.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <netinet/in.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define SWEEP_MS 200
#define LINGER_MS 2000
#define STREAM_LINGER_MS 10000 /* a closed stream's queued frames (and its close frame) may take this long to go */
#define READ_CHUNK 16384
#define IN_CAP (READ_CHUNK + 1) /* an input buffer as the pool hands it out: one read and its NUL */
#define POOL_KEEP 64            /* free input buffers a server keeps for the next connection that reads */
#define REQ_KEEP 64             /* free request objects it keeps for the next request */
#define MAX_BUFFERED (1u << 20) /* unanswered bytes a connection may hold before we stop reading */
#define OUT_HIGH (256u << 10)   /* unwritten answer bytes at which a connection's next request waits */
#define OUT_LOW (64u << 10)     /* ... until the peer has read them down to this */

typedef struct conn conn_t;

enum conn_state { C_HEAD, C_BODY, C_HANDLER, C_LINGER, C_STREAM };

struct sb_http_req {
    sb_http_server_t *srv;
    sb_metrics_t *m;
    conn_t *conn;          /* NULL once the connection is gone */
    sb_http1_req_t head;   /* parsed in place: views into the connection's input (or `orphan` once detached) */
    sb_http_method_t method;
    sb_str_t body;
    sb_buf_t body_buf;     /* the body when it is not read in place: chunked (decoded), or not whole at once */
    size_t max_body;       /* its limit (body_limit), once its head is read */
    sb_http_req_t *next_later; /* on the server's list of answers held back (sb_http_respond_later) */
    uint64_t later_at;         /* when to send it */
    int later_status;
    sb_buf_t later;            /* content type, NUL, extra headers, NUL, body */
    sb_buf_t orphan;       /* the input buffer, taken over when the connection closed first */
    void *user;            /* the handler's */
    bool dispatched, answered;
};

struct conn {
    uv_tcp_t tcp;
    uv_shutdown_t shutdown;
    sb_http_server_t *srv;
    sb_list_t link;            /* on the server's connections */
    sb_buf_t in;
    size_t head_len, body_len; /* of the current request, once known */
    sb_http1_chunked_t chunked;
    sb_http_req_t *req; /* from the first byte of a head until it is answered */
    enum conn_state state;
    uint64_t deadline;         /* uv_now() ms; 0 = none */
    unsigned writes;           /* uv_write requests in flight */
    size_t queued;             /* bytes in those requests */
    const sb_http_stream_ops_t *ops; /* C_STREAM: the owner's */
    void *ops_arg;
    conn_t *next_kick;         /* on the server's kick list: process() again from the idle handle */
    bool reading, closing, close_after, peer_eof, in_process, kicked, paused;
    bool out_blocked; /* C_HEAD: waiting for queued answers to drain below OUT_LOW */
};

struct sb_http_server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    uv_timer_t sweep;
    uv_timer_t later_timer; /* sends the held-back answers when they are due */
    sb_http_req_t *later;   /* answers held back, unordered */
    uint64_t later_due;     /* when later_timer fires (while it runs) */
    uv_idle_t kick;   /* runs process() for connections on the kick list, then stops */
    conn_t *kicks;
    uv_check_t uncork_io;     /* after the I/O callbacks of a loop turn: writes the gathered frames */
    uv_prepare_t uncork_idle; /* before the loop blocks: what timers and other phases gathered */
    conn_t *gather_conn;      /* the stream whose frames are in gather, or NULL */
    sb_buf_t gather;
    sb_http_server_opts_t opts;
    sb_metrics_t *m;
    sb_list_t conns;
    unsigned nconns;
    sb_buf_t out; /* answers are built here, then written */
    char *pool[POOL_KEEP]; /* free input buffers of IN_CAP bytes */
    unsigned npool;
    sb_http_req_t *free_reqs; /* kept for reuse, linked by next_later: a request object is large, and short-lived
                                 ones freed between long-lived connections' allocations would leave holes */
    unsigned nfree_reqs;
    sb_accept_guard_t accept;
    int open_handles;
    bool draining, closing, listening;
};

/* Connections, on the thread of their server's loop: packed in a slab, an idle one costs its own size. */
static _Thread_local sb_slab_t conn_slab;

static void process(conn_t *c);
static void conn_close(conn_t *c);
static void in_give(conn_t *c);
static void on_later(uv_timer_t *t);

/* ---- small helpers -------------------------------------------------------------------------------------------- */

static const char *reason_of(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

static sb_http_method_t method_of(sb_str_t m)
{
    static const struct {
        const char *name;
        sb_http_method_t method;
    } t[] = {{"GET", SB_HTTP_GET},     {"POST", SB_HTTP_POST},     {"HEAD", SB_HTTP_HEAD},
             {"PUT", SB_HTTP_PUT},     {"PATCH", SB_HTTP_PATCH},   {"DELETE", SB_HTTP_DELETE},
             {"OPTIONS", SB_HTTP_OPTIONS}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (sb_str_eq_cstr(m, t[i].name))
            return t[i].method;
    return SB_HTTP_OTHER;
}

static uint64_t now_ms(const sb_http_server_t *srv)
{
    return uv_now(srv->loop);
}

static void set_reading(conn_t *c, bool on);

/* ---- writing -------------------------------------------------------------------------------------------------- */

typedef struct write_req {
    uv_write_t req;
    conn_t *c;
    size_t len;
    char data[];
} write_req_t;

static void after_shutdown(uv_shutdown_t *req, int status)
{
    conn_t *c = req->data;
    (void)status;
    if (c->closing)
        return;
    c->state = C_LINGER; /* read and discard until EOF or the linger deadline */
    c->deadline = now_ms(c->srv) + LINGER_MS;
    set_reading(c, true);
}

/* Once everything is written, a connection marked close_after shuts its write side down and lingers. */
static void maybe_shutdown(conn_t *c)
{
    if (!c->close_after || c->writes || c->closing || c->state == C_LINGER)
        return;
    c->state = C_LINGER;
    c->shutdown.data = c;
    if (c->peer_eof || uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, after_shutdown) < 0)
        conn_close(c);
}

static void on_written(uv_write_t *w, int status)
{
    write_req_t *wr = (write_req_t *)w;
    conn_t *c = wr->c;
    c->queued -= wr->len;
    free(wr);
    c->writes--;
    if (status < 0 && !c->closing) {
        conn_close(c);
        return;
    }
    if (c->out_blocked && c->queued <= OUT_LOW && !c->closing) { /* the peer caught up: serve what it sent */
        c->out_blocked = false;
        c->deadline = now_ms(c->srv) + (uint64_t)(c->in.len ? c->srv->opts.header_timeout_s
                                                              : c->srv->opts.idle_timeout_s) * 1000;
        process(c);
        return;
    }
    maybe_shutdown(c);
}

/* Writes bufs[0..nbufs) in order (borrowed). Returns 0, or a negative code after which the connection is closing. */
static int conn_writev(conn_t *c, const uv_buf_t *bufs, unsigned nbufs)
{
    size_t len = 0, n = 0;
    for (unsigned i = 0; i < nbufs; i++)
        len += bufs[i].len;
    if (!c->writes) { /* nothing queued: try the kernel directly */
        int rc = uv_try_write((uv_stream_t *)&c->tcp, bufs, nbufs);
        if (rc == (int)len)
            return 0;
        if (rc < 0 && rc != UV_EAGAIN) {
            conn_close(c);
            return rc;
        }
        n = rc < 0 ? 0 : (size_t)rc;
    }
    size_t rest = len - n;
    write_req_t *wr = sb_malloc(sizeof *wr + rest);
    char *w = wr->data;
    for (unsigned i = 0; i < nbufs; i++) { /* copy what the kernel did not take, skipping the n bytes it did */
        size_t skip = n < bufs[i].len ? n : bufs[i].len;
        n -= skip;
        if (bufs[i].len > skip)
            memcpy(w, bufs[i].base + skip, bufs[i].len - skip);
        w += bufs[i].len - skip;
    }
    wr->c = c;
    wr->len = rest;
    uv_buf_t b = uv_buf_init(wr->data, (unsigned)rest);
    int rc = uv_write(&wr->req, (uv_stream_t *)&c->tcp, &b, 1, on_written);
    if (rc < 0) {
        free(wr);
        conn_close(c);
        return rc;
    }
    c->writes++;
    c->queued += rest;
    return 0;
}

static int conn_write(conn_t *c, const char *p, size_t len)
{
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)len);
    return conn_writev(c, &b, 1);
}

/* ---- corked stream writes ------------------------------------------------------------------------------------
 * The frames written to a stream in a row gather in the server's one buffer and go to the kernel together, in one
 * write(2), when a frame for another stream comes or the loop turn ends: an inbox client sent the two events of a
 * message in one turn costs one write and one TCP segment, and a fan-out to thousands of clients costs one write
 * each and no memory per client. The check handle flushes after the turn's I/O callbacks; the prepare handle before
 * the loop blocks, for what timers and close callbacks wrote. */

#define GATHER_KEEP 65536 /* the gathering buffer keeps up to this much room between flushes */

static void uncork(sb_http_server_t *srv)
{
    conn_t *c = srv->gather_conn;
    srv->gather_conn = NULL;
    if (c && srv->gather.len && !c->closing)
        conn_write(c, srv->gather.p, srv->gather.len); /* a failure closes the connection */
    srv->gather.len = 0;
    if (srv->gather.cap > GATHER_KEEP)
        sb_buf_cleanup(&srv->gather);
}

/* The turn's end (whichever handle comes first): what is gathered goes, and both handles rest until the next. */
static void uncork_turn(sb_http_server_t *srv)
{
    uv_check_stop(&srv->uncork_io);
    uv_prepare_stop(&srv->uncork_idle);
    uncork(srv);
}

static void on_uncork_io(uv_check_t *h)
{
    uncork_turn(h->data);
}

static void on_uncork_idle(uv_prepare_t *h)
{
    uncork_turn(h->data);
}

static void cork(conn_t *c, const uv_buf_t *bufs, unsigned n)
{
    sb_http_server_t *srv = c->srv;
    if (srv->gather_conn != c) {
        uncork(srv); /* another stream's frames go first */
        srv->gather_conn = c;
        uv_check_start(&srv->uncork_io, on_uncork_io);
        uv_prepare_start(&srv->uncork_idle, on_uncork_idle);
    }
    for (unsigned i = 0; i < n; i++)
        sb_buf_append(&srv->gather, bufs[i].base, bufs[i].len);
}

/* Bytes of c waiting in the gathering buffer. */
static size_t gathered(const conn_t *c)
{
    return c->srv->gather_conn == c ? c->srv->gather.len : 0;
}

/* ---- requests ------------------------------------------------------------------------------------------------- */

sb_http_method_t sb_http_req_method(const sb_http_req_t *req) { return req->method; }
sb_str_t sb_http_req_path(const sb_http_req_t *req) { return req->head.path; }
sb_str_t sb_http_req_query(const sb_http_req_t *req) { return req->head.query; }
sb_str_t sb_http_req_target(const sb_http_req_t *req) { return req->head.target; }
sb_str_t sb_http_req_body(const sb_http_req_t *req) { return req->body; }
void *sb_http_req_user(const sb_http_req_t *req) { return req->user; }

/* Whether req came through one of the server's trusted proxies (its connection is still open to say so). */
static bool via_trusted_proxy(const sb_http_req_t *req, struct sockaddr_storage *peer)
{
    int len = sizeof *peer;
    const sb_http_server_opts_t *o = &req->srv->opts;
    return o->ntrusted_proxies && req->conn &&
           uv_tcp_getpeername(&req->conn->tcp, (struct sockaddr *)peer, &len) == 0 &&
           sb_cidr_match(o->trusted_proxies, o->ntrusted_proxies, (const struct sockaddr *)peer);
}

/* The first entry of a forwarded header's list, trimmed. */
static sb_str_t first_item(sb_str_t v)
{
    const char *comma = v.len ? memchr(v.p, ',', v.len) : NULL;
    return sb_str_trim(comma ? sb_str(v.p, (size_t)(comma - v.p)) : v);
}

static bool is_https(sb_str_t v)
{
    return v.len == 5 && strncasecmp(v.p, "https", 5) == 0;
}

/* A host[:port] fit to go into a URL: letters, digits, '.', '-', ':' and IPv6 brackets, nothing else. */
static bool plain_host(sb_str_t h)
{
    if (!h.len || h.len > 255)
        return false;
    for (size_t i = 0; i < h.len; i++) {
        char ch = h.p[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
              ch == '-' || ch == ':' || ch == '[' || ch == ']'))
            return false;
    }
    return true;
}

bool sb_http_req_base_url(const sb_http_req_t *req, const char *public_url, sb_buf_t *out)
{
    const sb_str_t *host, *fwd;
    struct sockaddr_storage peer;
    if (public_url) {
        sb_buf_puts(out, public_url);
        return true;
    }
    if (via_trusted_proxy(req, &peer)) {
        const char *scheme = "http";
        sb_str_t h = {0};
        if ((fwd = sb_http1_header(&req->head, "x-forwarded-proto")) && is_https(first_item(*fwd)))
            scheme = "https";
        if ((fwd = sb_http1_header(&req->head, "x-forwarded-host")) && plain_host(first_item(*fwd)))
            h = first_item(*fwd);
        else if ((host = sb_http1_header(&req->head, "host")))
            h = *host;
        if (!h.len)
            return false;
        sb_buf_printf(out, "%s://%.*s", scheme, (int)h.len, h.p);
        return true;
    }
    if ((host = sb_http1_header(&req->head, "host")) && host->len) {
        sb_buf_printf(out, "http://%.*s", (int)host->len, host->p);
        return true;
    }
    return false;
}
void sb_http_req_set_user(sb_http_req_t *req, void *user) { req->user = user; }

bool sb_http_req_header(const sb_http_req_t *req, const char *name, sb_str_t *out)
{
    const sb_str_t *v = sb_http1_header(&req->head, name);
    if (!v)
        return false;
    *out = *v;
    return true;
}

static void req_free(sb_http_req_t *req)
{
    sb_buf_cleanup(&req->body_buf);
    sb_buf_cleanup(&req->later);
    sb_buf_cleanup(&req->orphan);
    sb_http_server_t *srv = req->srv;
    if (req->conn && srv->nfree_reqs < REQ_KEEP) { /* (its connection still open: so is the server) */
        req->next_later = srv->free_reqs;
        srv->free_reqs = req;
        srv->nfree_reqs++;
        return;
    }
    free(req);
}

/* The request has been answered: drop its bytes from the input and get ready for the next one. */
static void request_done(conn_t *c)
{
    size_t used = c->head_len + c->body_len;
    if (used > c->in.len)
        used = c->in.len;
    memmove(c->in.p, c->in.p + used, c->in.len - used);
    c->in.len -= used;
    c->head_len = c->body_len = 0;
    c->req = NULL;
    if (c->close_after) {
        maybe_shutdown(c);
        return;
    }
    c->state = C_HEAD;
    c->deadline = now_ms(c->srv) + (uint64_t)(c->in.len ? c->srv->opts.header_timeout_s
                                                          : c->srv->opts.idle_timeout_s) * 1000;
    if (!c->in_process)
        process(c); /* an asynchronous answer: go on with pipelined bytes, resume reading */
}

void sb_http_respond(sb_http_req_t *req, int status, const char *content_type, const void *body, size_t len)
{
    sb_http_respond_headers(req, status, content_type, NULL, body, len);
}

void sb_http_respond_headers(sb_http_req_t *req, int status, const char *content_type, const char *headers,
                             const void *body, size_t len)
{
    SB_BUG_ON(req->answered);
    req->answered = true;
    conn_t *c = req->conn;
    sb_metric_add(&req->m->http_requests, 1);
    if (status >= 100 && status < 600)
        sb_metric_add(&req->m->http_status[status / 100], 1);
    if (!c) { /* the client left while we worked */
        req_free(req);
        return;
    }
    sb_http_server_t *srv = c->srv;
    if (srv->draining || !req->head.keep_alive || c->peer_eof)
        c->close_after = true;

    sb_buf_t *o = &srv->out;
    o->len = 0;
    sb_buf_printf(o, "HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %zu\r\n%s%s\r\n", status,
                  reason_of(status), content_type, len, headers ? headers : "",
                  c->close_after ? "connection: close\r\n" : "");
    if (len && req->method != SB_HTTP_HEAD)
        sb_buf_append(o, body, len);
    c->req = NULL;
    req_free(req);
    if (conn_write(c, o->p, o->len) < 0)
        return;
    request_done(c);
}

void sb_http_error_body(sb_buf_t *b, const char *code, const char *message)
{
    sb_buf_puts(b, "{\"error\":{\"code\":\"");
    sb_buf_json_escape(b, sb_str_cstr(code));
    sb_buf_puts(b, "\",\"message\":\"");
    sb_buf_json_escape(b, sb_str_cstr(message));
    sb_buf_puts(b, "\"}}\n");
}

void sb_http_respond_error(sb_http_req_t *req, int status, const char *code, const char *message)
{
    sb_buf_t b;
    sb_buf_init(&b);
    sb_http_error_body(&b, code, message);
    sb_http_respond(req, status, "application/json", b.p, b.len);
    sb_buf_cleanup(&b);
}

void sb_http_req_close(sb_http_req_t *req)
{
    req->head.keep_alive = false;
}

int sb_http_req_peer(const sb_http_req_t *req, struct sockaddr_storage *out)
{
    int len = sizeof *out;
    const sb_str_t *xff;
    const sb_http_server_opts_t *o = &req->srv->opts;
    if (via_trusted_proxy(req, out)) {
        if ((xff = sb_http1_header(&req->head, "x-forwarded-for")))
            sb_cidr_forwarded_client(o->trusted_proxies, o->ntrusted_proxies, *xff, out); /* else: the proxy's */
        return 0;
    }
    if (!req->conn || uv_tcp_getpeername(&req->conn->tcp, (struct sockaddr *)out, &len) < 0)
        return SB_ECLOSED;
    return 0;
}

bool sb_http_req_upgrade(const sb_http_req_t *req)
{
    return req->head.upgrade;
}

/* ---- answers held back ---------------------------------------------------------------------------------------- */

/* Sends req's held-back answer now; req is gone afterwards. */
static void later_send(sb_http_req_t *req)
{
    sb_buf_t later = req->later; /* req_free would take it along before it is used */
    sb_buf_init(&req->later);
    const char *type = later.p, *headers = type + strlen(type) + 1, *body = headers + strlen(headers) + 1;
    sb_http_respond_headers(req, req->later_status, type, *headers ? headers : NULL, body,
                            later.len - (size_t)(body - type));
    sb_buf_cleanup(&later);
}

static void later_arm(sb_http_server_t *srv, uint64_t due)
{
    uint64_t now = now_ms(srv);
    if (uv_is_active((uv_handle_t *)&srv->later_timer) && srv->later_due <= due)
        return;
    srv->later_due = due;
    uv_timer_start(&srv->later_timer, on_later, due > now ? due - now : 0, 0);
}

/* Sends every held-back answer that is due (all of them when the server stops), and waits for the next. */
static void later_flush(sb_http_server_t *srv, bool all)
{
    uint64_t now = now_ms(srv), next = 0;
    sb_http_req_t **pp = &srv->later;
    while (*pp) {
        sb_http_req_t *req = *pp;
        if (all || req->later_at <= now) {
            *pp = req->next_later;
            later_send(req);
            continue;
        }
        next = next && next < req->later_at ? next : req->later_at;
        pp = &req->next_later;
    }
    if (next)
        later_arm(srv, next);
}

static void on_later(uv_timer_t *t)
{
    later_flush(t->data, false);
}

void sb_http_respond_later(sb_http_req_t *req, uint32_t delay_ms, int status, const char *content_type,
                           const char *headers, const void *body, size_t len)
{
    SB_BUG_ON(req->answered || req->later.len);
    sb_http_server_t *srv = req->srv;
    if (!req->conn || srv->draining || delay_ms == 0) {
        sb_http_respond_headers(req, status, content_type, headers, body, len);
        return;
    }
    req->later_status = status;
    sb_buf_append(&req->later, content_type, strlen(content_type) + 1);
    sb_buf_append(&req->later, headers ? headers : "", headers ? strlen(headers) + 1 : 1);
    sb_buf_append(&req->later, body, len);
    req->later_at = now_ms(srv) + delay_ms;
    req->next_later = srv->later;
    srv->later = req;
    later_arm(srv, req->later_at);
}

static sb_http_req_t *req_new(conn_t *c)
{
    sb_http_server_t *srv = c->srv;
    sb_http_req_t *req = srv->free_reqs;
    if (req) {
        srv->free_reqs = req->next_later;
        srv->nfree_reqs--;
        memset(req, 0, sizeof *req);
    } else {
        req = sb_calloc(1, sizeof *req);
    }
    req->srv = srv;
    req->m = c->srv->m;
    req->conn = c;
    c->req = req;
    return req;
}

/* The body limit of a request: max_body_bytes, or large_body_bytes for a POST to large_body_path. */
static size_t body_limit(const sb_http_server_t *srv, const sb_http1_req_t *head)
{
    if (srv->opts.large_body_path && sb_str_eq_cstr(head->method, "POST") &&
        sb_str_eq_cstr(head->path, srv->opts.large_body_path) && srv->opts.large_body_bytes > srv->opts.max_body_bytes)
        return (size_t)srv->opts.large_body_bytes;
    return (size_t)srv->opts.max_body_bytes;
}

/* Answers an error found before the request reached a handler, then closes the connection. */
static void reject(conn_t *c, int status, const char *code, const char *message)
{
    sb_http_req_t *req = c->req;
    req->head.keep_alive = false;
    req->method = SB_HTTP_GET; /* the head may be unparsed: answer with a body whatever it said */
    req->dispatched = true;
    c->close_after = true;
    c->state = C_HANDLER;
    c->deadline = 0;
    sb_http_respond_error(req, status, code, message);
}

/* ---- the request state machine -------------------------------------------------------------------------------- */

static void dispatch(conn_t *c)
{
    sb_http_req_t *req = c->req;
    if (c->state == C_BODY) /* reading the body may have moved the input: point the head's views at it again */
        sb_http1_parse(c->in.p, c->head_len, (size_t)c->srv->opts.max_header_bytes, &req->head);
    req->dispatched = true;
    c->state = C_HANDLER;
    c->deadline = 0;
    if (req->head.chunked || req->body_buf.len)
        req->body = sb_str(sb_buf_cstr(&req->body_buf), req->body_buf.len);
    else
        req->body = sb_str(c->in.p + c->head_len, c->body_len);
    c->srv->opts.handler(c->srv->opts.handler_arg, req);
}

/* Removes n bytes of the input at offset at (the body bytes that moved to the request's own buffer). */
static void drop_input(conn_t *c, size_t at, size_t n)
{
    memmove(c->in.p + at, c->in.p + at + n, c->in.len - at - n);
    c->in.len -= n;
    c->in.p[c->in.len] = '\0';
}

/* Handles every complete request the input holds, in order, stopping while a handler has one. */
static void process(conn_t *c)
{
    sb_http_server_t *srv = c->srv;
    c->in_process = true;
    while (!c->closing && !c->close_after) {
        if (c->state == C_HEAD) {
            if (c->queued > OUT_HIGH) { /* the peer does not read its answers: its next request waits */
                if (!c->out_blocked)
                    c->deadline = now_ms(srv) + (uint64_t)srv->opts.idle_timeout_s * 1000;
                c->out_blocked = true;
                break;
            }
            if (c->in.len == 0)
                break;
            if (!c->req)
                req_new(c);
            int rc = sb_http1_parse(c->in.p, c->in.len, (size_t)srv->opts.max_header_bytes, &c->req->head);
            if (rc == 0) {
                if (c->deadline == 0 || c->deadline > now_ms(srv) + (uint64_t)srv->opts.header_timeout_s * 1000)
                    c->deadline = now_ms(srv) + (uint64_t)srv->opts.header_timeout_s * 1000;
                break;
            }
            if (rc < 0) {
                if (rc == SB_E2BIG)
                    reject(c, 431, "header_too_large", "request head exceeds max_header_bytes");
                else if (rc == SB_ERANGE)
                    reject(c, 505, "http_version_not_supported", "only HTTP/1.0 and HTTP/1.1 are served");
                else if (rc == SB_EINVAL)
                    reject(c, 501, "not_implemented", "unsupported Transfer-Encoding");
                else
                    reject(c, 400, "bad_request", "malformed request head");
                break;
            }
            c->head_len = (size_t)rc;
            c->body_len = 0;
            sb_http_req_t *req = c->req;
            req->method = method_of(req->head.method);
            req->max_body = body_limit(srv, &req->head);
            if (req->head.content_length > (int64_t)req->max_body) {
                /* the body is not read, so the connection cannot continue */
                reject(c, 413, "payload_too_large", "request body exceeds max_body_bytes");
                break;
            }
            if (req->head.chunked || req->head.content_length > 0) {
                c->state = C_BODY;
                c->deadline = now_ms(srv) + (uint64_t)srv->opts.header_timeout_s * 1000;
                if (req->head.chunked)
                    sb_http1_chunked_init(&c->chunked);
                if (req->head.expect_continue) {
                    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
                    if (conn_write(c, cont, sizeof cont - 1) < 0)
                        break;
                }
                continue;
            }
            dispatch(c);
            continue;
        }
        if (c->state == C_BODY) {
            sb_http_req_t *req = c->req;
            size_t avail = c->in.len - c->head_len;
            if (req->head.chunked) { /* decoded into body_buf; the framing it consumed leaves the input */
                size_t used = 0;
                int rc = sb_http1_chunked_feed(&c->chunked, c->in.p + c->head_len, avail, &req->body_buf,
                                               req->max_body, &used);
                drop_input(c, c->head_len, used);
                if (rc == 0)
                    break;
                if (rc < 0) {
                    if (rc == SB_E2BIG)
                        reject(c, 413, "payload_too_large", "request body exceeds max_body_bytes");
                    else
                        reject(c, 400, "bad_request", "malformed chunked body");
                    break;
                }
                dispatch(c);
                continue;
            }
            size_t need = (size_t)req->head.content_length - req->body_buf.len;
            if (req->body_buf.len == 0 && avail >= need) { /* whole already: read in place */
                c->body_len = need;
                dispatch(c);
                continue;
            }
            size_t take = avail < need ? avail : need; /* else it moves to its own buffer as it comes */
            sb_buf_append(&req->body_buf, c->in.p + c->head_len, take);
            drop_input(c, c->head_len, take);
            if (take < need)
                break;
            dispatch(c);
            continue;
        }
        if (c->state == C_STREAM && !c->paused && c->in.len) {
            size_t used = c->ops->on_data(c->ops_arg, (sb_http_stream_t *)c, c->in.p, c->in.len);
            SB_BUG_ON(used > c->in.len);
            memmove(c->in.p, c->in.p + used, c->in.len - used);
            c->in.len -= used;
        }
        break; /* HANDLER, LINGER or STREAM: nothing to parse now */
    }
    c->in_process = false;
    if (c->closing)
        return;
    in_give(c);
    /* Read while there is room and no handler holds a request; a handler's answer resumes reading. */
    bool want = (c->state == C_HEAD && !c->out_blocked) || c->state == C_BODY || (c->state == C_STREAM && !c->paused);
    set_reading(c, want && !c->close_after && c->in.len < MAX_BUFFERED);
    if (c->close_after && !c->req)
        maybe_shutdown(c);
}

/* ---- reading --------------------------------------------------------------------------------------------------
 * An idle connection holds no input buffer (as nginx keeps idle keep-alive connections small): one is taken from
 * the server's pool when the socket is readable, and given back once its bytes are consumed. */

static void in_take(conn_t *c)
{
    if (c->in.p)
        return;
    sb_http_server_t *srv = c->srv;
    c->in.p = srv->npool ? srv->pool[--srv->npool] : sb_malloc(IN_CAP);
    c->in.cap = IN_CAP;
    c->in.len = 0;
}

static void in_give(conn_t *c)
{
    if (!c->in.p || c->in.len || c->req)
        return;
    sb_http_server_t *srv = c->srv;
    if (c->in.cap != IN_CAP || srv->npool == POOL_KEEP) { /* grown for a large head or body, or enough kept */
        sb_buf_cleanup(&c->in);
        return;
    }
    srv->pool[srv->npool++] = c->in.p;
    sb_buf_init(&c->in);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    conn_t *c = h->data;
    (void)suggested;
    in_take(c);
    if (c->state == C_LINGER) { /* discarded anyway: reuse the same room */
        sb_buf_reserve(&c->in, READ_CHUNK);
        *buf = uv_buf_init(c->in.p, READ_CHUNK);
        return;
    }
    sb_buf_reserve(&c->in, READ_CHUNK);
    *buf = uv_buf_init(c->in.p + c->in.len, (unsigned)(c->in.cap - c->in.len - 1));
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    conn_t *c = st->data;
    (void)buf;
    if (n == 0) { /* nothing after all */
        in_give(c);
        return;
    }
    if (n < 0) {
        if (n == UV_EOF && c->state == C_HANDLER) { /* half-closed after its request: still answer it */
            c->peer_eof = true;
            set_reading(c, false);
            return;
        }
        conn_close(c);
        return;
    }
    if (c->state == C_LINGER) {
        in_give(c);
        return;
    }
    c->in.len += (size_t)n;
    c->in.p[c->in.len] = '\0';
    process(c);
}

static void set_reading(conn_t *c, bool on)
{
    if (on == c->reading || c->closing)
        return;
    if (on)
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    else
        uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = on;
}

/* ---- connections ---------------------------------------------------------------------------------------------- */

static void server_maybe_free(sb_http_server_t *srv)
{
    if (srv->closing && srv->open_handles == 0) {
        sb_buf_cleanup(&srv->out);
        sb_buf_cleanup(&srv->gather);
        while (srv->npool)
            free(srv->pool[--srv->npool]);
        while (srv->free_reqs) {
            sb_http_req_t *req = srv->free_reqs;
            srv->free_reqs = req->next_later;
            free(req);
        }
        free(srv);
    }
}

static void conn_closed(uv_handle_t *h)
{
    conn_t *c = h->data;
    sb_http_server_t *srv = c->srv;
    if (c->kicked) {
        conn_t **pp = &srv->kicks;
        while (*pp != c)
            pp = &(*pp)->next_kick;
        *pp = c->next_kick;
    }
    if (srv->gather_conn == c) { /* (its frames were dropped when it closed) */
        srv->gather_conn = NULL;
        srv->gather.len = 0;
    }
    if (c->ops)
        c->ops->on_close(c->ops_arg, (sb_http_stream_t *)c);
    sb_buf_cleanup(&c->in);
    sb_slab_free(&conn_slab, c);
    srv->open_handles--;
    server_maybe_free(srv);
}

static void conn_close(conn_t *c)
{
    if (c->closing)
        return;
    c->closing = true;
    sb_http_server_t *srv = c->srv;
    if (c->req && c->req->dispatched) { /* a handler holds it: it keeps the input its views point into */
        c->req->conn = NULL;
        c->req->orphan = c->in;
        sb_buf_init(&c->in);
    } else if (c->req) {
        req_free(c->req);
    }
    c->req = NULL;
    sb_list_remove(&c->link);
    srv->nconns--;
    sb_gauge_add(&srv->m->http_connections, -1);
    uv_close((uv_handle_t *)&c->tcp, conn_closed);
}

static void on_connection(uv_stream_t *server, int status)
{
    sb_http_server_t *srv = server->data;
    if (status < 0 || srv->draining || srv->closing)
        return;
    conn_t *c = sb_slab_alloc(&conn_slab, sizeof *c);
    sb_list_init(&c->link);
    c->srv = srv;
    sb_buf_init(&c->in);
    uv_tcp_init(srv->loop, &c->tcp);
    c->tcp.data = c;
    srv->open_handles++;
    if (!sb_accept_guarded(&srv->accept, server, (uv_stream_t *)&c->tcp)) {
        c->closing = true;
        uv_close((uv_handle_t *)&c->tcp, conn_closed);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    sb_list_push_back(&srv->conns, &c->link);
    srv->nconns++;
    sb_gauge_add(&srv->m->http_connections, 1);
    c->state = C_HEAD;
    c->deadline = now_ms(srv) + (uint64_t)srv->opts.header_timeout_s * 1000;
    set_reading(c, true);
}

/* Enforces deadlines: idle keep-alive connections close silently, slow heads and bodies get 408, lingering
 * connections close. */
static void on_sweep(uv_timer_t *t)
{
    sb_http_server_t *srv = t->data;
    uint64_t now = now_ms(srv);
    sb_list_foreach_safe(it, nx, &srv->conns)
    {
        conn_t *c = sb_container_of(it, conn_t, link);
        if (!c->deadline || now < c->deadline || c->closing)
            continue;
        bool quiet = c->state == C_HEAD && (c->in.len == 0 || c->out_blocked); /* idle, or not reading us */
        if (c->state == C_LINGER || c->state == C_STREAM || quiet) {
            conn_close(c);
        } else if (c->state == C_HEAD || c->state == C_BODY) {
            if (!c->req)
                req_new(c);
            reject(c, 408, "request_timeout", "the request did not arrive in time");
        }
    }
}

/* ---- listening and life cycle --------------------------------------------------------------------------------- */

/* A listening socket with SO_REUSEPORT: every shard binds the same port and the kernel spreads connections. */
static int listen_socket(const char *host, int port)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof ss);
    if (strchr(host, ':')) {
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, host, &a6->sin6_addr) != 1)
            return SB_EINVAL;
        sl = sizeof *a6;
    } else {
        struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, host, &a4->sin_addr) != 1)
            return SB_EINVAL;
        sl = sizeof *a4;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0 || bind(fd, (struct sockaddr *)&ss, sl) < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    return fd;
}

static void handle_closed(uv_handle_t *h)
{
    sb_http_server_t *srv = h->data;
    srv->open_handles--;
    server_maybe_free(srv);
}

/* The server's own handles but the listener. */
static void close_handles(sb_http_server_t *srv)
{
    uv_close((uv_handle_t *)&srv->sweep, handle_closed);
    uv_close((uv_handle_t *)&srv->later_timer, handle_closed);
    uv_close((uv_handle_t *)&srv->kick, handle_closed);
    uv_close((uv_handle_t *)&srv->uncork_io, handle_closed);
    uv_close((uv_handle_t *)&srv->uncork_idle, handle_closed);
}

int sb_http_server_create(uv_loop_t *loop, const sb_http_server_opts_t *opts, sb_http_server_t **out)
{
    int fd = listen_socket(opts->host, opts->port);
    if (fd < 0) {
        sb_log_error("http: cannot listen on %s:%d: %s", opts->host, opts->port, sb_strerror(fd));
        return fd;
    }
    sb_http_server_t *srv = sb_calloc(1, sizeof *srv);
    sb_list_init(&srv->conns);
    srv->loop = loop;
    srv->opts = *opts;
    srv->m = sb_metrics_shard(opts->shard);
    sb_accept_guard_init(&srv->accept, "http", &srv->m->connections_refused);
    sb_buf_init(&srv->out);
    uv_tcp_init(loop, &srv->listener);
    srv->listener.data = srv;
    uv_timer_init(loop, &srv->sweep);
    srv->sweep.data = srv;
    uv_timer_init(loop, &srv->later_timer);
    srv->later_timer.data = srv;
    uv_idle_init(loop, &srv->kick);
    srv->kick.data = srv;
    uv_check_init(loop, &srv->uncork_io);
    srv->uncork_io.data = srv;
    uv_prepare_init(loop, &srv->uncork_idle);
    srv->uncork_idle.data = srv;
    srv->open_handles = 6;
    int rc = uv_tcp_open(&srv->listener, fd);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&srv->listener, 1024, on_connection);
    if (rc < 0) {
        sb_log_error("http: cannot listen on %s:%d: %s", opts->host, opts->port, uv_strerror(rc));
        if (!uv_is_closing((uv_handle_t *)&srv->listener))
            close(fd);
        srv->closing = true;
        uv_close((uv_handle_t *)&srv->listener, handle_closed);
        close_handles(srv);
        return rc;
    }
    srv->listening = true;
    uv_timer_start(&srv->sweep, on_sweep, SWEEP_MS, SWEEP_MS);
    *out = srv;
    return 0;
}

static void stop_listening(sb_http_server_t *srv)
{
    if (srv->listening) {
        srv->listening = false;
        uv_close((uv_handle_t *)&srv->listener, handle_closed);
    }
}

void sb_http_server_drain(sb_http_server_t *srv)
{
    if (!srv || srv->draining)
        return;
    srv->draining = true;
    stop_listening(srv);
    later_flush(srv, true); /* held-back answers go now, saying close */
    sb_list_foreach_safe(it, nx, &srv->conns)
    {
        conn_t *c = sb_container_of(it, conn_t, link);
        if (c->state == C_HEAD && c->in.len == 0)
            conn_close(c); /* idle keep-alive: nothing in flight; the others' answers will say close */
        else if (c->state == C_STREAM && !c->close_after && !c->closing)
            c->ops->on_drain(c->ops_arg, (sb_http_stream_t *)c);
    }
}

unsigned sb_http_server_connections(const sb_http_server_t *srv)
{
    return srv ? srv->nconns : 0;
}

void sb_http_server_close(sb_http_server_t *srv)
{
    if (!srv || srv->closing)
        return;
    srv->draining = true;
    stop_listening(srv);
    for (sb_list_t *l; (l = sb_list_first(&srv->conns));)
        conn_close(sb_container_of(l, conn_t, link));
    later_flush(srv, true); /* their connections are gone: this frees them */
    srv->closing = true;
    close_handles(srv);
}

/* ---- upgraded connections ------------------------------------------------------------------------------------- */

static void on_kick(uv_idle_t *h)
{
    sb_http_server_t *srv = h->data;
    conn_t *c = srv->kicks;
    srv->kicks = NULL;
    uv_idle_stop(h);
    while (c) {
        conn_t *next = c->next_kick;
        c->kicked = false;
        if (!c->closing)
            process(c);
        c = next;
    }
}

/* Runs process(c) from the next loop turn (never under the caller's stack). */
static void kick(conn_t *c)
{
    if (c->kicked || c->closing)
        return;
    c->kicked = true;
    c->next_kick = c->srv->kicks;
    c->srv->kicks = c;
    uv_idle_start(&c->srv->kick, on_kick);
}

sb_http_stream_t *sb_http_upgrade(sb_http_req_t *req, const char *head, size_t len, const sb_http_stream_ops_t *ops,
                                  void *arg)
{
    SB_BUG_ON(req->answered || req->body.len);
    if (!req->head.upgrade) { /* RFC 6455 4.1: HTTP/1.1 or later, with Connection: upgrade and an Upgrade header */
        sb_http_respond_error(req, 426, "upgrade_required", "an upgrade needs HTTP/1.1 with Connection: upgrade");
        return NULL;
    }
    conn_t *c = req->conn;
    if (c && (c->srv->draining || c->close_after || c->peer_eof)) {
        sb_http_respond_error(req, 503, "draining", "the server is shutting down");
        return NULL;
    }
    req->answered = true;
    sb_metric_add(&req->m->http_requests, 1);
    sb_metric_add(&req->m->http_status[1], 1);
    req_free(req);
    if (!c)
        return NULL;
    c->req = NULL;
    size_t used = c->head_len + c->body_len;
    memmove(c->in.p, c->in.p + used, c->in.len - used);
    c->in.len -= used;
    c->head_len = c->body_len = 0;
    c->deadline = 0;
    if (conn_write(c, head, len) < 0)
        return NULL;
    c->state = C_STREAM;
    c->ops = ops;
    c->ops_arg = arg;
    kick(c); /* offer bytes that came with the request, and read */
    return (sb_http_stream_t *)c;
}

int sb_http_stream_write(sb_http_stream_t *st, const uv_buf_t *bufs, unsigned n)
{
    conn_t *c = (conn_t *)st;
    if (c->closing || c->close_after)
        return SB_ECLOSED;
    cork(c, bufs, n);
    return 0;
}

size_t sb_http_stream_queued(const sb_http_stream_t *st)
{
    const conn_t *c = (const conn_t *)st;
    return c->queued + gathered(c);
}

void sb_http_stream_set_reading(sb_http_stream_t *st, bool on)
{
    conn_t *c = (conn_t *)st;
    c->paused = !on;
    if (on)
        kick(c);
    else
        set_reading(c, false);
}

void sb_http_stream_close(sb_http_stream_t *st)
{
    conn_t *c = (conn_t *)st;
    if (c->closing || c->close_after)
        return;
    if (c->srv->gather_conn == c)
        uncork(c->srv); /* what was written before the close goes first */
    c->close_after = true;
    c->deadline = now_ms(c->srv) + STREAM_LINGER_MS; /* a peer that does not read cannot hold us */
    set_reading(c, false);
    maybe_shutdown(c);
}

void sb_http_stream_abort(sb_http_stream_t *st)
{
    conn_close((conn_t *)st);
}

void sb_http_stream_peer(const sb_http_stream_t *st, char *out, size_t len)
{
    const conn_t *c = (const conn_t *)st;
    struct sockaddr_storage ss;
    int sl = sizeof ss;
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET6) {
            const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &a6->sin6_addr, host, sizeof host);
            port = ntohs(a6->sin6_port);
        } else {
            const struct sockaddr_in *a4 = (const struct sockaddr_in *)&ss;
            inet_ntop(AF_INET, &a4->sin_addr, host, sizeof host);
            port = ntohs(a4->sin_port);
        }
    }
    snprintf(out, len, "%s:%d", host, port);
}
