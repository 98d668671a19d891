/* HTTP server adapter over libwebsockets; see http_server.h for the contract.
 *
 * A connection (conn_t) lives from our accept() to lws's WSI_DESTROY callback and hangs on the wsi as its opaque
 * user data; every connection is linked in a list so that draining can count them and reach the idle ones (lws
 * binds no protocol to a connection until its first request head is complete, so its own per-session storage
 * cannot see a half-sent request). A request (sb_http_req_t) is heap-allocated apart from both, because a handler
 * may hold it past the connection's life: when the connection goes first, the request is detached (wsi = NULL)
 * and freed by the handler's answer. */
#include "adapters/http_server.h"

#include "gateway/log.h"
#include "gateway/metrics.h"
#include "proto/err.h"
#include "proto/mem.h"

#include <arpa/inet.h>
#include <libwebsockets.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define HEADER_ROOM 512 /* status line and our headers */
#define DRAIN_GRACE_S 2
#define ACCEPT_BATCH 64

typedef struct conn conn_t;

struct sb_http_req {
    struct lws *wsi; /* NULL once the connection is gone */
    sb_http_server_t *srv;
    conn_t *conn;
    sb_http_method_t method;
    char *path, *query;
    size_t path_len, query_len;
    sb_buf_t body;
    unsigned char *out; /* LWS_PRE + response, waiting for a writable callback */
    size_t out_len;
    bool in_handler; /* the handler is on the stack: answer by writing directly */
    bool dispatched, answered;
};

struct conn {
    conn_t *prev, *next;
    struct lws *wsi;
    sb_http_req_t *req; /* the request in progress, if any */
    bool too_big;       /* body passed the limit: answered 413, now closing */
};

struct sb_http_server {
    struct lws_context *ctx;
    struct lws_vhost *vh;
    int listen_fd;
    uv_poll_t *listen_poll;
    sb_http_server_opts_t opts;
    sb_metrics_t *m;
    conn_t *conns;
    unsigned nconns;
    bool draining;
};

/* ---- responses ------------------------------------------------------------------------------------------------ */

static const char *reason_of(int status)
{
    switch (status) {
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
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Unknown";
    }
}

static void req_free(sb_http_req_t *req)
{
    free(req->path);
    free(req->query);
    sb_buf_cleanup(&req->body);
    free(req->out);
    free(req);
}

/* Writes the prepared answer. Returns what an lws callback should return: 0 to keep the connection, -1 to close. */
static int write_answer(sb_http_req_t *req)
{
    struct lws *wsi = req->wsi;
    conn_t *c = req->conn;
    sb_http_server_t *srv = req->srv;
    int n = lws_write(wsi, req->out + LWS_PRE, req->out_len, LWS_WRITE_HTTP_HEADERS);
    bool close_after = srv->draining || (c && c->too_big);
    if (c)
        c->req = NULL;
    req_free(req);
    if (n < 0)
        return -1;
    if (close_after && !lws_partial_buffered(wsi))
        return -1;
    if (lws_http_transaction_completed(wsi))
        return -1;
    return 0;
}

void sb_http_respond(sb_http_req_t *req, int status, const char *content_type, const void *body, size_t len)
{
    SB_BUG_ON(req->answered);
    req->answered = true;
    sb_http_server_t *srv = req->srv;
    sb_metric_add(&srv->m->http_requests, 1);
    if (status >= 100 && status < 600)
        sb_metric_add(&srv->m->http_status[status / 100], 1);

    if (!req->wsi) { /* the client left while we worked */
        req_free(req);
        return;
    }
    char head[HEADER_ROOM];
    int hl = snprintf(head, sizeof head,
                      "HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %zu\r\n%s\r\n", status,
                      reason_of(status), content_type, len,
                      (srv->draining || (req->conn && req->conn->too_big)) ? "connection: close\r\n" : "");
    SB_BUG_ON(hl < 0 || (size_t)hl >= sizeof head);
    req->out = sb_malloc(LWS_PRE + (size_t)hl + len);
    memcpy(req->out + LWS_PRE, head, (size_t)hl);
    if (len)
        memcpy(req->out + LWS_PRE + hl, body, len);
    req->out_len = (size_t)hl + len;
    if (!req->in_handler)
        lws_callback_on_writable(req->wsi);
}

void sb_http_respond_error(sb_http_req_t *req, int status, const char *code, const char *message)
{
    sb_buf_t b;
    sb_buf_init(&b);
    sb_buf_puts(&b, "{\"error\":{\"code\":\"");
    sb_buf_json_escape(&b, sb_str_cstr(code));
    sb_buf_puts(&b, "\",\"message\":\"");
    sb_buf_json_escape(&b, sb_str_cstr(message));
    sb_buf_puts(&b, "\"}}\n");
    sb_http_respond(req, status, "application/json", b.p, b.len);
    sb_buf_cleanup(&b);
}

/* ---- requests ------------------------------------------------------------------------------------------------- */

sb_http_method_t sb_http_req_method(const sb_http_req_t *req) { return req->method; }
sb_str_t sb_http_req_path(const sb_http_req_t *req) { return sb_str(req->path, req->path_len); }
sb_str_t sb_http_req_query(const sb_http_req_t *req) { return sb_str(req->query, req->query_len); }
sb_str_t sb_http_req_body(const sb_http_req_t *req) { return sb_str(req->body.p ? req->body.p : "", req->body.len); }

int sb_http_req_header(sb_http_req_t *req, const char *name, char *buf, size_t len)
{
    if (!req->wsi || !req->in_handler)
        return SB_ENOENT;
    int nlen = (int)strlen(name);
    int n = lws_hdr_custom_length(req->wsi, name, nlen);
    if (n < 0)
        return SB_ENOENT;
    if ((size_t)n >= len)
        return SB_E2BIG;
    if (lws_hdr_custom_copy(req->wsi, buf, (int)len, name, nlen) < 0)
        return SB_ENOENT;
    return n;
}

static const struct {
    enum lws_token_indexes tok;
    sb_http_method_t method;
} methods[] = {
    {WSI_TOKEN_GET_URI, SB_HTTP_GET},       {WSI_TOKEN_POST_URI, SB_HTTP_POST},
    {WSI_TOKEN_HEAD_URI, SB_HTTP_HEAD},     {WSI_TOKEN_PUT_URI, SB_HTTP_PUT},
    {WSI_TOKEN_PATCH_URI, SB_HTTP_PATCH},   {WSI_TOKEN_DELETE_URI, SB_HTTP_DELETE},
    {WSI_TOKEN_OPTIONS_URI, SB_HTTP_OPTIONS},
};

static sb_http_method_t method_of(struct lws *wsi)
{
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
        if (lws_hdr_total_length(wsi, methods[i].tok) > 0)
            return methods[i].method;
    return SB_HTTP_OTHER;
}

/* Hands the request to the handler. Returns the lws callback result. */
static int dispatch(sb_http_req_t *req)
{
    sb_http_server_t *srv = req->srv;
    struct lws *wsi = req->wsi;
    req->dispatched = true;
    req->in_handler = true;
    lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0); /* the handler bounds its own work */
    srv->opts.handler(srv->opts.handler_arg, req);
    req->in_handler = false;
    if (req->answered)
        return write_answer(req);
    return 0;
}

static sb_http_req_t *req_new(sb_http_server_t *srv, conn_t *c, struct lws *wsi, const char *path, size_t len)
{
    sb_http_req_t *req = sb_calloc(1, sizeof *req);
    req->wsi = wsi;
    req->srv = srv;
    req->conn = c;
    req->method = method_of(wsi);
    req->path = sb_strndup(path, len);
    req->path_len = len;
    int ql = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_URI_ARGS);
    if (ql > 0) {
        /* lws stores each argument as a fragment; copy them joined by '&'. */
        req->query = sb_malloc((size_t)ql + 64);
        int n = lws_hdr_copy(wsi, req->query, ql + 64, WSI_TOKEN_HTTP_URI_ARGS);
        req->query_len = n > 0 ? (size_t)n : 0;
    } else {
        req->query = sb_strdup("");
    }
    sb_buf_init(&req->body);
    c->req = req;
    return req;
}

/* ---- the lws callback ----------------------------------------------------------------------------------------- */

static void conn_link(sb_http_server_t *srv, struct lws *wsi)
{
    conn_t *c = sb_calloc(1, sizeof *c);
    c->wsi = wsi;
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    srv->conns = c;
    srv->nconns++;
    sb_gauge_add(&srv->m->http_connections, 1);
    lws_set_opaque_user_data(wsi, c);
}

/* wsi_alive is false when lws already freed the wsi (context destruction). */
static void conn_unlink(sb_http_server_t *srv, conn_t *c, bool wsi_alive)
{
    if (wsi_alive)
        lws_set_opaque_user_data(c->wsi, NULL);
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    srv->nconns--;
    sb_gauge_add(&srv->m->http_connections, -1);
    if (c->req) {
        if (c->req->dispatched && !c->req->answered) {
            c->req->wsi = NULL; /* the handler answers later; that frees it */
            c->req->conn = NULL;
        } else {
            req_free(c->req);
        }
    }
    free(c);
}

static int on_http(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
    sb_http_server_t *srv = lws_context_user(lws_get_context(wsi));
    conn_t *c = wsi ? lws_get_opaque_user_data(wsi) : NULL;

    switch (reason) {
    case LWS_CALLBACK_WSI_DESTROY:
        if (c && srv)
            conn_unlink(srv, c, true);
        return 0;

    case LWS_CALLBACK_HTTP: {
        if (!c || !srv)
            return -1;
        sb_http_req_t *req = req_new(srv, c, wsi, in ? (const char *)in : "/", in ? strlen(in) : 1);
        (void)len;
        char cl[32];
        long long content_length = 0;
        if (lws_hdr_copy(wsi, cl, sizeof cl, WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0 &&
            sb_str_to_ll(sb_str_cstr(cl), 0, INT64_MAX, &content_length) < 0) {
            c->too_big = true; /* unparseable length: we cannot find the request's end */
            req->dispatched = true;
            req->in_handler = true;
            sb_http_respond_error(req, 400, "bad_request", "invalid Content-Length");
            req->in_handler = false;
            return write_answer(req);
        }
        if (content_length > srv->opts.max_body_bytes) {
            c->too_big = true;
            req->dispatched = true;
            req->in_handler = true;
            sb_http_respond_error(req, 413, "payload_too_large", "request body exceeds max_body_bytes");
            req->in_handler = false;
            return write_answer(req);
        }
        if (content_length > 0) { /* wait for the body, within the header timeout */
            lws_set_timeout(wsi, PENDING_TIMEOUT_HTTP_CONTENT, srv->opts.header_timeout_s);
            return 0;
        }
        return dispatch(req);
    }

    case LWS_CALLBACK_HTTP_BODY:
        if (!c || !c->req || c->req->dispatched)
            return c && c->too_big ? -1 : 0;
        if (c->req->body.len + len > (size_t)srv->opts.max_body_bytes) {
            c->too_big = true;
            c->req->dispatched = true;
            c->req->in_handler = true;
            sb_http_respond_error(c->req, 413, "payload_too_large", "request body exceeds max_body_bytes");
            c->req->in_handler = false;
            return write_answer(c->req);
        }
        sb_buf_append(&c->req->body, in, len);
        return 0;

    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        if (!c || !c->req || c->req->dispatched)
            return 0;
        return dispatch(c->req);

    case LWS_CALLBACK_HTTP_WRITEABLE:
        if (c && c->req && c->req->answered && c->req->wsi == wsi)
            return write_answer(c->req);
        return 0;

    default:
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    }
}

static const struct lws_protocols protocols[] = {
    {"http", on_http, 0, 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

/* ---- listening ------------------------------------------------------------------------------------------------
 *
 * We own the listening socket rather than lws: lws 4.1 sets SO_REUSEPORT on no Linux listener, and every shard
 * must listen on the same port. Accepted sockets are handed to lws as if its own listener had accepted them. */

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
        if (inet_pton(AF_INET, host[0] ? host : "0.0.0.0", &a4->sin_addr) != 1)
            return SB_EINVAL;
        sl = sizeof *a4;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0 || bind(fd, (struct sockaddr *)&ss, sl) < 0 ||
        listen(fd, 1024) < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    return fd;
}

static void on_listen_readable(uv_poll_t *h, int status, int events)
{
    sb_http_server_t *srv = h->data;
    (void)events;
    if (status < 0 || srv->listen_fd < 0)
        return;
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        int fd = accept4(srv->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                sb_log_warn("http: accept: %s", strerror(errno));
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct lws *wsi = lws_adopt_socket_vhost(srv->vh, fd);
        if (wsi)
            conn_link(srv, wsi);
        else
            sb_log_warn("http: lws could not adopt a connection");
    }
}

static void listen_poll_closed(uv_handle_t *h)
{
    free(h);
}

static void stop_listening(sb_http_server_t *srv)
{
    if (srv->listen_poll) {
        uv_poll_stop(srv->listen_poll);
        uv_close((uv_handle_t *)srv->listen_poll, listen_poll_closed);
        srv->listen_poll = NULL;
    }
    if (srv->listen_fd >= 0) {
        close(srv->listen_fd);
        srv->listen_fd = -1;
    }
}

/* ---- life cycle ----------------------------------------------------------------------------------------------- */

int sb_http_server_create(uv_loop_t *loop, const sb_http_server_opts_t *opts, sb_http_server_t **out)
{
    sb_http_server_t *srv = sb_calloc(1, sizeof *srv);
    srv->opts = *opts;
    srv->m = sb_metrics_shard(opts->shard);
    srv->listen_fd = listen_socket(strcmp(opts->host, "0.0.0.0") ? opts->host : "", opts->port);
    if (srv->listen_fd < 0) {
        sb_log_error("http: cannot listen on %s:%d: %s", opts->host, opts->port, sb_strerror(srv->listen_fd));
        free(srv);
        return SB_EUNAVAIL;
    }

    void *loops[1] = {loop};
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.options = LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_UV_NO_SIGSEGV_SIGFPE_SPIN;
    info.port = CONTEXT_PORT_NO_LISTEN_SERVER;
    info.foreign_loops = loops;
    info.protocols = protocols;
    info.user = srv;
    info.vhost_name = "switchboard";
    info.server_string = "switchboard";
    info.max_http_header_data = (unsigned short)(opts->max_header_bytes > 65535 ? 65535 : opts->max_header_bytes);
    info.max_http_header_pool = 1024;
    info.keepalive_timeout = opts->idle_timeout_s;
    info.timeout_secs = (unsigned)opts->header_timeout_s;
    info.timeout_secs_ah_idle = (unsigned)opts->header_timeout_s;
    info.pt_serv_buf_size = 16384;

    srv->ctx = lws_create_context(&info);
    srv->vh = srv->ctx ? lws_get_vhost_by_name(srv->ctx, "switchboard") : NULL;
    if (!srv->vh) {
        sb_log_error("http: cannot create the lws context (see the lws error above)");
        if (srv->ctx)
            lws_context_destroy(srv->ctx);
        close(srv->listen_fd);
        free(srv);
        return SB_EUNAVAIL;
    }
    srv->listen_poll = sb_malloc(sizeof *srv->listen_poll);
    uv_poll_init(loop, srv->listen_poll, srv->listen_fd);
    srv->listen_poll->data = srv;
    uv_poll_start(srv->listen_poll, UV_READABLE, on_listen_readable);
    *out = srv;
    return 0;
}

void sb_http_server_drain(sb_http_server_t *srv)
{
    if (srv->draining)
        return;
    srv->draining = true;
    stop_listening(srv);
    /* Idle keep-alive connections (no request in progress) get a short grace, then close. A connection in the
     * middle of sending a request counts as idle here too, so the grace is what lets it finish. */
    for (conn_t *c = srv->conns; c; c = c->next)
        if (!c->req)
            lws_set_timeout(c->wsi, PENDING_TIMEOUT_HTTP_KEEPALIVE_IDLE, DRAIN_GRACE_S);
}

unsigned sb_http_server_connections(const sb_http_server_t *srv)
{
    return srv ? srv->nconns : 0;
}

void sb_http_server_destroy(sb_http_server_t *srv)
{
    if (!srv)
        return;
    stop_listening(srv);
    lws_context_destroy(srv->ctx);
}

void sb_http_server_free(sb_http_server_t *srv)
{
    if (!srv)
        return;
    lws_context_destroy(srv->ctx);
    while (srv->conns) /* lws destroyed these without a callback we saw */
        conn_unlink(srv, srv->conns, false);
    free(srv);
}
