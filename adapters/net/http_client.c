/* Outgoing HTTP over curl multi on a libuv loop; see http_client.h for the contract.
 *
 * curl tells us which sockets to watch (CURLMOPT_SOCKETFUNCTION: one uv_poll_t each, found again through
 * curl_multi_assign) and when to wake it (CURLMOPT_TIMERFUNCTION: one uv_timer_t). Each readiness event or timer
 * expiry is handed back with curl_multi_socket_action, after which finished transfers are collected from
 * curl_multi_info_read and called back. User callbacks therefore never run inside a curl callback, which is what
 * lets them start new requests.
 *
 * Sockets are opened and closed through CURLOPT_OPENSOCKETFUNCTION / CLOSESOCKETFUNCTION, which counts connections
 * and guarantees that a socket's uv_poll_t is stopped before the descriptor is closed (libuv must never watch a
 * closed descriptor: the number may already belong to the next socket).
 *
 * A request is one allocation: the struct, then its header list (curl_slist nodes pointing into the same block, so
 * curl copies nothing and we can wipe everything the caller passed). The body is handed to curl with
 * CURLOPT_COPYPOSTFIELDS. Easy handles are reset and kept for the next request rather than rebuilt. */
#include "adapters/net/http_client.h"

#include "adapters/crypto.h"
#include "proto/version.h"
#include "proto/codec.h"
#include "proto/err.h"
#include "proto/list.h"
#include "proto/mem.h"

#include <curl/curl.h>
#include <limits.h>
#include <pthread.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_MAX_HOST 16
#define DEFAULT_MAX_IDLE 64
#define DEFAULT_CONNECT_MS 5000
#define DEFAULT_TIMEOUT_MS 30000
#define DEFAULT_MAX_RESPONSE (1u << 20)
#define EASY_POOL 64         /* reset easy handles kept for reuse */
#define CTYPE_MAX 127
#define KEEPIDLE_S 30
#define KEEPINTVL_S 15

typedef struct hc_req hc_req_t;
typedef struct hc_sock hc_sock_t;

struct hc_sock {
    uv_poll_t poll;
    sb_http_client_t *c;
    curl_socket_t fd;
    bool closing;
    sb_list_t link;         /* in c->socks while the poll is open (not closing) */
};

struct hc_req {
    sb_http_client_t *c;
    sb_list_t link;        /* in c->reqs */
    CURL *easy;
    sb_http_client_cb cb;
    void *arg;
    struct curl_slist *headers; /* nodes inside this allocation, after the struct */
    size_t extra_len;           /* bytes after the struct: header nodes and strings, wiped on free */
    sb_buf_t body;
    uint64_t start_ns;
    int retry_after_s;
    size_t ctype_len;
    bool too_big;
    char ctype[CTYPE_MAX + 1];
    char errbuf[CURL_ERROR_SIZE];
    _Alignas(max_align_t) unsigned char extra[];
};

struct sb_http_client {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    sb_list_t reqs;
    sb_list_t socks;
    CURL *pool[EASY_POOL];
    unsigned npool;
    char *user_agent;
    unsigned connect_timeout_ms, timeout_ms;
    size_t max_response;
    sb_http_client_stats_t stats;
    int open_handles;  /* the timer and every poll not yet closed */
    bool dispatching;  /* collecting finished transfers: a destroy waits until that ends */
    bool closing;      /* destroy was called */
    bool torn_down;    /* requests canceled, curl freed, handles closing */
};

/* ---- curl's process-wide set-up ------------------------------------------------------------------------------- */

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc = CURLE_FAILED_INIT;

static void global_init(void)
{
    global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ---- handles -------------------------------------------------------------------------------------------------- */

static void client_maybe_free(sb_http_client_t *c)
{
    if (!c->torn_down || c->open_handles > 0)
        return;
    free(c->user_agent);
    free(c);
}

static void on_handle_closed(uv_handle_t *h)
{
    sb_http_client_t *c = h->data;
    if (h->type == UV_POLL)
        free(h); /* the hc_sock_t: the poll is its first member */
    c->open_handles--;
    client_maybe_free(c);
}

/* Stops watching s and closes its poll (freed in the close callback). */
static void sock_close(hc_sock_t *s)
{
    if (s->closing)
        return;
    s->closing = true;
    sb_list_remove(&s->link);
    uv_poll_stop(&s->poll);
    uv_close((uv_handle_t *)&s->poll, on_handle_closed);
}

static void check_done(sb_http_client_t *c);
static void teardown(sb_http_client_t *c);

static void on_poll(uv_poll_t *p, int status, int events)
{
    hc_sock_t *s = (hc_sock_t *)p;
    sb_http_client_t *c = s->c;
    int flags = 0, running;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    curl_multi_socket_action(c->multi, s->fd, flags, &running);
    check_done(c);
}

static void on_timeout(uv_timer_t *t)
{
    sb_http_client_t *c = t->data;
    int running;
    curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(c);
}

/* CURLMOPT_SOCKETFUNCTION: watch fd for what curl wants, or stop watching it. */
static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    sb_http_client_t *c = userp;
    hc_sock_t *s = socketp;
    (void)easy;
    if (what == CURL_POLL_REMOVE) {
        if (s) {
            curl_multi_assign(c->multi, fd, NULL);
            sock_close(s);
        }
        return 0;
    }
    if (!s) {
        if (c->torn_down)
            return -1;
        s = sb_calloc(1, sizeof *s);
        sb_list_init(&s->link);
        s->c = c;
        s->fd = fd;
        if (uv_poll_init(c->loop, &s->poll, fd) < 0) {
            free(s);
            return -1; /* curl fails the transfers on this socket */
        }
        s->poll.data = c;
        c->open_handles++;
        sb_list_push_back(&c->socks, &s->link);
        curl_multi_assign(c->multi, fd, s);
    }
    int events = 0;
    if (what & CURL_POLL_IN)
        events |= UV_READABLE;
    if (what & CURL_POLL_OUT)
        events |= UV_WRITABLE;
    return uv_poll_start(&s->poll, events, on_poll) < 0 ? -1 : 0;
}

/* CURLMOPT_TIMERFUNCTION: (re)arm or stop the one timer. socket_action is never called from here, as curl asks;
 * a 0 ms timer fires on the next loop iteration. */
static int on_timer(CURLM *multi, long timeout_ms, void *userp)
{
    sb_http_client_t *c = userp;
    (void)multi;
    if (c->torn_down)
        return 0;
    if (timeout_ms < 0)
        uv_timer_stop(&c->timer);
    else
        uv_timer_start(&c->timer, on_timeout, (uint64_t)timeout_ms, 0);
    return 0;
}

/* CURLOPT_OPENSOCKETFUNCTION: every connection's socket is opened here, so it is counted. */
static curl_socket_t on_open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *a)
{
    sb_http_client_t *c = clientp;
    int fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
    if (fd < 0)
        return CURL_SOCKET_BAD;
    (void)purpose;
    c->stats.connections_opened++;
    c->stats.connections_open++;
    return fd;
}

/* CURLOPT_CLOSESOCKETFUNCTION: curl normally says CURL_POLL_REMOVE first; if it did not, the poll is stopped here,
 * before the descriptor number can be reused. */
static int on_close_socket(void *clientp, curl_socket_t fd)
{
    sb_http_client_t *c = clientp;
    sb_list_foreach(it, &c->socks)
    {
        hc_sock_t *s = sb_container_of(it, hc_sock_t, link);
        if (s->fd == fd) {
            sock_close(s);
            break;
        }
    }
    c->stats.connections_open--;
    return close(fd);
}

/* ---- requests ------------------------------------------------------------------------------------------------- */

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    hc_req_t *r = ud;
    size_t len = size * n;
    if (len > r->c->max_response - r->body.len) {
        r->too_big = true;
        return 0; /* anything but len: curl ends the transfer with CURLE_WRITE_ERROR */
    }
    sb_buf_append(&r->body, p, len);
    return len;
}

/* Parses a Retry-After value: delay-seconds or an HTTP-date. Returns seconds from now (>= 0) or -1. */
static int parse_retry_after(sb_str_t v)
{
    v = sb_str_trim(v);
    if (v.len == 0)
        return -1;
    long long n;
    if (sb_str_to_ll(v, 0, LLONG_MAX, &n) == 0)
        return n > INT_MAX ? INT_MAX : (int)n;
    char date[64];
    if (v.len >= sizeof date)
        return -1;
    memcpy(date, v.p, v.len);
    date[v.len] = '\0';
    time_t t = curl_getdate(date, NULL);
    if (t == (time_t)-1)
        return -1;
    time_t now = time(NULL);
    if (t <= now)
        return 0;
    return t - now > INT_MAX ? INT_MAX : (int)(t - now);
}

/* Called once per header line of every response head curl reads (an interim 1xx head comes first). */
static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    hc_req_t *r = ud;
    size_t len = size * n;
    sb_str_t line = sb_str(p, len);
    while (line.len && (line.p[line.len - 1] == '\n' || line.p[line.len - 1] == '\r'))
        line.len--;
    if (sb_str_has_prefix(line, SB_STR("HTTP/"))) { /* a new head: forget the previous one's */
        r->retry_after_s = -1;
        r->ctype_len = 0;
        return len;
    }
    const char *colon = memchr(line.p, ':', line.len);
    if (!colon)
        return len;
    sb_str_t name = sb_str(line.p, (size_t)(colon - line.p));
    sb_str_t value = sb_str_trim(sb_str(colon + 1, line.len - name.len - 1));
    if (name.len == 11 && strncasecmp(name.p, "retry-after", 11) == 0) {
        r->retry_after_s = parse_retry_after(value);
    } else if (name.len == 12 && strncasecmp(name.p, "content-type", 12) == 0) {
        r->ctype_len = value.len > CTYPE_MAX ? CTYPE_MAX : value.len;
        memcpy(r->ctype, value.p, r->ctype_len);
        r->ctype[r->ctype_len] = '\0';
    }
    return len;
}

static int map_curl_error(const hc_req_t *r, CURLcode rc)
{
    switch (rc) {
    case CURLE_OK:
        return 0;
    case CURLE_OPERATION_TIMEDOUT:
        return SB_ETIMEDOUT;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
        return SB_EUNAVAIL;
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return -ECONNRESET;
    case CURLE_WRITE_ERROR:
        return r->too_big ? SB_E2BIG : -EIO;
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_BAD_CONTENT_ENCODING:
    case CURLE_HTTP_RETURNED_ERROR:
        return SB_EPARSE;
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
        return SB_EINVAL;
    case CURLE_OUT_OF_MEMORY:
        return SB_ENOMEM;
    default:
        return -EIO;
    }
}

static void req_unlink(hc_req_t *r)
{
    sb_list_remove(&r->link);
}

/* Returns an easy handle (already removed from the multi) to the pool, or frees it. */
static void easy_release(sb_http_client_t *c, CURL *e)
{
    if (c->npool < EASY_POOL && !c->torn_down) {
        curl_easy_reset(e);
        c->pool[c->npool++] = e;
    } else {
        curl_easy_cleanup(e);
    }
}

static void req_free(hc_req_t *r)
{
    sb_crypto_wipe(r->extra, r->extra_len); /* the caller's header lines and credentials */
    sb_buf_cleanup(&r->body);
    free(r);
}

/* Ends r (already removed from the multi): calls its callback with the outcome, then frees it. */
static void req_complete(hc_req_t *r, CURLcode rc, bool canceled)
{
    sb_http_client_t *c = r->c;
    sb_http_client_res_t res = {.retry_after_s = -1, .detail = ""};
    if (canceled) {
        res.err = SB_ECANCELED;
        res.detail = "the client was destroyed";
    } else {
        res.err = map_curl_error(r, rc);
        long status = 0, reqsize = 0;
        curl_easy_getinfo(r->easy, CURLINFO_REQUEST_SIZE, &reqsize);
        res.sent = reqsize > 0;
        if (res.err == 0) {
            curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
            res.status = (int)status;
            res.body = sb_str(r->body.p ? r->body.p : "", r->body.len);
            res.content_type = sb_str(r->ctype, r->ctype_len);
            res.retry_after_s = r->retry_after_s;
        } else {
            res.detail = r->errbuf[0] ? r->errbuf : curl_easy_strerror(rc);
        }
        res.elapsed_us = (uv_hrtime() - r->start_ns) / 1000;
    }
    req_unlink(r);
    easy_release(c, r->easy);
    r->easy = NULL;
    c->stats.in_flight--;
    if (res.err)
        c->stats.failed++;
    r->cb(r->arg, &res);
    req_free(r);
}

/* Collects finished transfers and calls them back. A destroy asked for by a callback happens at the end. */
static void check_done(sb_http_client_t *c)
{
    if (c->torn_down)
        return;
    c->dispatching = true;
    CURLMsg *m;
    int left;
    while (!c->closing && (m = curl_multi_info_read(c->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        CURL *e = m->easy_handle;
        CURLcode rc = m->data.result; /* m is invalid once the handle is removed */
        char *priv = NULL;
        curl_easy_getinfo(e, CURLINFO_PRIVATE, &priv);
        curl_multi_remove_handle(c->multi, e);
        req_complete((hc_req_t *)priv, rc, false);
    }
    c->dispatching = false;
    if (c->closing)
        teardown(c);
}

static bool is_token(const char *s)
{
    if (!*s || strlen(s) > 32)
        return false;
    for (; *s; s++)
        if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '-' ||
              *s == '_'))
            return false;
    return true;
}

static bool header_ok(const char *h)
{
    const char *colon = strchr(h, ':');
    if (!colon || colon == h)
        return false;
    for (const char *p = h; *p; p++)
        if (*p == '\r' || *p == '\n')
            return false;
    for (const char *p = h; p < colon; p++)
        if (*p == ' ' || *p == '\t')
            return false;
    return true;
}

/* An absolute http(s) URL curl can parse. */
static bool url_ok(const char *url)
{
    if (!url || strpbrk(url, "\r\n \t"))
        return false;
    CURLU *u = curl_url();
    if (!u)
        return false;
    char *scheme = NULL;
    bool ok = curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
              curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK && scheme &&
              (strcmp(scheme, "http") == 0 || strcmp(scheme, "https") == 0);
    curl_free(scheme);
    curl_url_cleanup(u);
    return ok;
}

static bool method_is(const char *m, const char *want)
{
    return strcmp(m, want) == 0;
}

int sb_http_client_request(sb_http_client_t *c, const sb_http_client_req_t *q, sb_http_client_cb cb, void *arg)
{
    if (c->closing)
        return SB_ECLOSED;
    const char *method = q->method ? q->method : "GET";
    if (!cb || !url_ok(q->url) || !is_token(method) || (q->body.len && !q->body.p))
        return SB_EINVAL;
    if (q->basic_auth && strpbrk(q->basic_auth, "\r\n"))
        return SB_EINVAL;

    /* the header block: nodes first, then the strings they point to */
    size_t nh = 0, strings = 0;
    for (const char *const *h = q->headers; h && *h; h++) {
        if (!header_ok(*h))
            return SB_EINVAL;
        nh++;
        strings += strlen(*h) + 1;
    }
    bool with_body = !method_is(method, "GET") && !method_is(method, "HEAD") &&
                     (q->body.len > 0 || method_is(method, "POST") || method_is(method, "PUT") ||
                      method_is(method, "PATCH"));
    static const char expect[] = "Expect:"; /* never wait for a 100 Continue */
    static const char basic[] = "Authorization: Basic ";
    size_t auth_len = 0;
    if (q->basic_auth) {
        auth_len = sizeof basic - 1 + sb_codec_b64_encoded_len(strlen(q->basic_auth), SB_B64_STD);
        strings += auth_len + 1;
        nh++;
    }
    if (with_body) {
        strings += sizeof expect;
        nh++;
    }
    size_t extra = nh * sizeof(struct curl_slist) + strings;
    hc_req_t *r = sb_calloc(1, sizeof *r + extra);
    sb_list_init(&r->link);
    r->c = c;
    r->extra_len = extra;
    r->cb = cb;
    r->arg = arg;
    r->retry_after_s = -1;
    sb_buf_init(&r->body);

    struct curl_slist *nodes = (struct curl_slist *)r->extra;
    char *text = (char *)(nodes + nh);
    size_t k = 0;
#define ADD_LINE(src, len)                                                                                         \
    do {                                                                                                           \
        memcpy(text, (src), (len));                                                                                \
        text[(len)] = '\0';                                                                                        \
        nodes[k].data = text;                                                                                      \
        nodes[k].next = k + 1 < nh ? &nodes[k + 1] : NULL;                                                         \
        text += (len) + 1;                                                                                         \
        k++;                                                                                                       \
    } while (0)
    for (const char *const *h = q->headers; h && *h; h++)
        ADD_LINE(*h, strlen(*h));
    if (q->basic_auth) {
        memcpy(text, basic, sizeof basic - 1);
        sb_codec_b64_encode(text + sizeof basic - 1, q->basic_auth, strlen(q->basic_auth), SB_B64_STD);
        text[auth_len] = '\0';
        nodes[k].data = text;
        nodes[k].next = k + 1 < nh ? &nodes[k + 1] : NULL;
        text += auth_len + 1;
        k++;
    }
    if (with_body)
        ADD_LINE(expect, sizeof expect - 1);
#undef ADD_LINE
    r->headers = nh ? nodes : NULL;

    CURL *e = c->npool ? c->pool[--c->npool] : curl_easy_init();
    if (!e) {
        req_free(r);
        return SB_ENOMEM;
    }
    r->easy = e;
    curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)r);
    curl_easy_setopt(e, CURLOPT_URL, q->url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
#if LIBCURL_VERSION_NUM >= 0x075700
    /* A transfer that ends (timeout, destroy) while its name is still being resolved would otherwise make curl
     * join the resolver thread, blocking the loop for as long as the DNS server takes. This leaves the thread to
     * finish and free itself. */
    curl_easy_setopt(e, CURLOPT_QUICK_EXIT, 1L);
#endif
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPIDLE, (long)KEEPIDLE_S);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPINTVL, (long)KEEPINTVL_S);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)c->connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(q->timeout_ms ? q->timeout_ms : c->timeout_ms));
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    curl_easy_setopt(e, CURLOPT_USERAGENT, c->user_agent);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, on_open_socket);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, c);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, on_close_socket);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, c);
    if (method_is(method, "HEAD")) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else if (with_body) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)q->body.len);
        curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, q->body.len ? q->body.p : "");
        if (!method_is(method, "POST"))
            curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    } else if (!method_is(method, "GET")) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    }

    r->start_ns = uv_hrtime();
    if (curl_multi_add_handle(c->multi, e) != CURLM_OK) {
        curl_easy_cleanup(e);
        req_free(r);
        return SB_ENOMEM;
    }
    sb_list_push_back(&c->reqs, &r->link);
    c->stats.requests++;
    c->stats.in_flight++;
    return 0;
}

/* ---- life cycle ----------------------------------------------------------------------------------------------- */

int sb_http_client_create(uv_loop_t *loop, const sb_http_client_opts_t *opts, sb_http_client_t **out)
{
    static const sb_http_client_opts_t none;
    if (!opts)
        opts = &none;
    pthread_once(&global_once, global_init);
    if (global_rc != CURLE_OK)
        return SB_ENOMEM;
    CURLM *multi = curl_multi_init();
    if (!multi)
        return SB_ENOMEM;
    sb_http_client_t *c = sb_calloc(1, sizeof *c);
    sb_list_init(&c->reqs);
    sb_list_init(&c->socks);
    c->loop = loop;
    c->multi = multi;
    c->connect_timeout_ms = opts->connect_timeout_ms ? opts->connect_timeout_ms : DEFAULT_CONNECT_MS;
    c->timeout_ms = opts->timeout_ms ? opts->timeout_ms : DEFAULT_TIMEOUT_MS;
    c->max_response = opts->max_response_bytes ? opts->max_response_bytes : DEFAULT_MAX_RESPONSE;
    c->user_agent = sb_strdup(opts->user_agent ? opts->user_agent : "switchboard/" SB_VERSION);
    long max_host = opts->max_host_connections ? (long)opts->max_host_connections : DEFAULT_MAX_HOST;
    long max_idle = opts->max_idle_connections ? (long)opts->max_idle_connections : DEFAULT_MAX_IDLE;
    if (max_idle < max_host)
        max_idle = max_host;
    curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(multi, CURLMOPT_TIMERDATA, c);
    curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, max_host);
    curl_multi_setopt(multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)opts->max_total_connections);
    curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, max_idle);
    curl_multi_setopt(multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    c->open_handles = 1;
    *out = c;
    return 0;
}

void sb_http_client_get_stats(const sb_http_client_t *c, sb_http_client_stats_t *out)
{
    *out = c->stats;
}

/* Cancels what is in flight, frees curl's side and closes the handles; the client frees itself afterwards. */
static void teardown(sb_http_client_t *c)
{
    if (c->torn_down)
        return;
    for (sb_list_t *l; (l = sb_list_first(&c->reqs));) {
        hc_req_t *r = sb_container_of(l, hc_req_t, link);
        curl_multi_remove_handle(c->multi, r->easy);
        req_complete(r, CURLE_OK, true);
    }
    c->torn_down = true; /* from here on curl's callbacks neither arm the timer nor open polls */
    while (c->npool)
        curl_easy_cleanup(c->pool[--c->npool]);
    curl_multi_cleanup(c->multi); /* closes every cached connection, through on_close_socket */
    c->multi = NULL;
    for (sb_list_t *l; (l = sb_list_first(&c->socks));)
        sock_close(sb_container_of(l, hc_sock_t, link));
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}

void sb_http_client_destroy(sb_http_client_t *c)
{
    if (!c || c->closing)
        return;
    c->closing = true;
    if (!c->dispatching)
        teardown(c);
}
