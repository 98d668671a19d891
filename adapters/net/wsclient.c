/* Outgoing WebSocket connections on a shard's own libuv loop, ws:// over our own client, wss:// over
 * libwebsockets' client; see wsclient.h.
 *
 * Why not lws for ws://: measured on the Media Streams relay (1,000 calls, 50 frames/s each way), lws 4.1.6 spent
 * about 4.3 syscalls per frame on the voice app's side (a sendto per message, a 4-byte /dev/urandom read per mask
 * key, epoll_ctl whenever it changed write interest, a poll from lws_send_pipe_choked) where our own server side
 * spends 0.76. Our client (the "ws:// on our own socket" section) shares everything above the socket with the lws
 * path: the connection object, the URL and header checks, the resolver, the output FIFO and its eviction, the
 * context's timer for starts, deadlines and on_close. Its connections hold a uv_tcp_t, freed with the connection
 * once its close callback has run (tcp_open).
 *
 * One lws context per sb_wsclient_ctx_t, made with LWS_SERVER_OPTION_LIBUV on the caller's ("foreign") loop, no
 * listener, one protocol whose callback serves every connection. A connection finds itself again through the wsi's
 * opaque user data; once it is over that pointer is cleared first (the wsi is "detached"), so whatever lws still
 * says about a dying wsi finds nothing and is ignored.
 *
 * Nothing blocks the loop. lws 4.1 resolves names with a blocking getaddrinfo(), so we resolve them ourselves with
 * uv_getaddrinfo (libuv's thread pool) and give lws the numeric address, with the name as the Host header, which
 * lws also uses for TLS SNI and certificate checks. lws is always started from our own timer callback (never inside
 * sb_wsclient_connect), and on_close always comes from that callback too (never inside an lws callback or one of
 * our calls): every end is recorded on the context's done list and a zero timer delivers it. The same timer fires
 * at the earliest deadline of the connecting (connect_timeout_ms) and closing (the queue's time to drain) ones,
 * kept in a list sorted by deadline (inserted from its tail: O(1) when every connection uses the same timeout).
 *
 * Output is a FIFO of whole messages, each one allocation with LWS_PRE bytes of headroom so lws_write frames it in
 * place (our client copies it, masked, into its write buffer instead); droppable ones are also on a second list, so the oldest is evicted in O(1). Input chunks are joined in a
 * per-connection buffer only when a message comes in more than one; a message that arrives whole is handed over
 * where lws has it.
 *
 * Teardown on a foreign loop (lws 4.1.6): lws_context_destroy() closes every wsi's uv_poll; their close callbacks
 * then close lws's own idle and timer handles (whose data is the lws context); but on a foreign loop nothing
 * finishes the destruction after that, and the context's memory, which holds those handles, must outlive them. So
 * an idle handle of ours watches the loop (uv_walk) until no handle points at the lws context, then calls
 * lws_context_destroy() a second time, which frees it. That is why the loop must keep running after
 * sb_wsclient_ctx_free (a few turns). */
#include "adapters/net/wsclient.h"

#include "adapters/crypto.h"
#include "gateway/log.h"
#include "proto/codec.h"
#include "proto/err.h"
#include "proto/http1.h"
#include "proto/list.h"
#include "proto/mem.h"
#include "proto/ws.h"

#include <libwebsockets.h>
#include <mbedtls/chacha20.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define DEFAULT_CONNECT_MS 5000
#define DEFAULT_MAX_MESSAGE (64u * 1024)
#define DEFAULT_MAX_QUEUED (64u * 1024)
#define HOST_MAX 127         /* lws copies the TLS host name into a 128-byte buffer */
#define REASON_MAX 123       /* a close frame's payload is at most 125 bytes, 2 of them the code */
#define RX_CHUNK 8192        /* lws's per-connection receive buffer */
#define REAP_GIVE_UP_MS 5000 /* lws's handles still open this long after destroy: leak the context, log it */
#define PROTO_NAME "sb-wsclient"
/* ws:// (ours) */
#define ANSWER_MAX 8192        /* bytes of the upgrade answer's head */
#define READ_BUF (64u * 1024)  /* the context's one read buffer: every read is consumed before the next */
#define WRITE_BATCH (64u * 1024) /* frames built for one write: the queue stays ours until the socket takes them */
#define WBUF_KEEP (16u * 1024) /* a connection's write buffer is kept between writes up to this size */
#define RND_CHUNK 512          /* keystream bytes made at a time (128 mask keys) */

typedef enum wc_state {
    WC_RESOLVING,   /* the name is being resolved */
    WC_STARTING,    /* waiting for the timer to hand it to lws */
    WC_CONNECTING,  /* lws connects, shakes hands */
    WC_OPEN,
    WC_CLOSING,     /* sb_wsclient_close: the queue drains, then our close frame */
    WC_PEER_CLOSED, /* the peer's close frame came: lws answers it and closes */
    WC_DONE         /* ended: on_close is on its way (or was called) */
} wc_state_t;

typedef struct wc_msg {
    sb_list_t link;      /* in c->out */
    sb_list_t drop_link; /* in c->drops when droppable, else unlinked */
    size_t len;
    bool binary;
    _Alignas(max_align_t) unsigned char buf[]; /* LWS_PRE bytes for lws, then the payload */
} wc_msg_t;

struct sb_wsclient {
    sb_wsclient_ctx_t *ctx;
    const sb_wsclient_ops_t *ops;
    void *arg;
    struct lws *wsi;     /* while attached: lws's opaque user data points here */
    wc_state_t state;
    sb_list_t link;      /* in ctx->conns until it ends, then in ctx->done until on_close was called */
    sb_list_t dl_link;   /* in ctx->deadlines while connecting or closing */
    sb_list_t start_link; /* in ctx->starting */
    uint64_t deadline;   /* uv_now() ms */
    unsigned timeout_ms;
    size_t max_message, max_queued;
    /* output */
    sb_list_t out, drops;
    size_t queued;
    uint64_t dropped;
    bool write_asked;
    /* input */
    sb_buf_t rx;
    bool rx_active, rx_binary;
    /* the end */
    uint16_t close_code;  /* ours (sb_wsclient_close, 1009) or the peer's */
    bool close_ours;
    char close_reason[REASON_MAX + 1];
    int end_err, end_status;
    uint16_t end_code;
    /* who still holds the memory */
    bool user_done;       /* on_close was called */
    bool dns_pending;     /* gai is with the thread pool */
    bool in_lws_connect;  /* inside lws_client_connect_via_info */
    uv_getaddrinfo_t gai;
    /* where to connect; strings in text[] */
    int port;
    bool tls;
    const char *host, *path, *host_header, *subprotocol, *headers;
    size_t headers_len;
    char address[INET6_ADDRSTRLEN];
    /* ws:// (ours, on a uv_tcp_t; the lws fields above stay unused) */
    bool fast;
    bool tcp_open;        /* the uv_tcp_t is initialised and its close callback has not run */
    bool handshaking;     /* connected, our upgrade request sent, its answer not complete yet */
    bool writing;         /* a uv_write is in flight (at most one: wbuf is its buffer) */
    bool close_sent;      /* our close frame was built (into ctl or wbuf) */
    bool end_when_written; /* end once our close frame went (a reply to the peer's, or after broken framing) */
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    uv_write_t write_req;
    sb_list_t dirty_link; /* in ctx->dirty while it waits for the turn's end to write */
    sb_buf_t wbuf;        /* the bytes of the write in progress: the upgrade request, then frames */
    sb_buf_t ctl;         /* control frames (pong, close) waiting; they go ahead of the messages */
    sb_buf_t answer;      /* the upgrade answer while it arrives */
    sb_ws_reader_t rd;
    char accept[SB_WS_ACCEPT_LEN + 1]; /* the Sec-WebSocket-Accept the answer must carry */
    _Alignas(max_align_t) char text[];
};

struct sb_wsclient_ctx {
    uv_loop_t *loop;
    struct lws_context *lws;
    uv_timer_t timer;
    uv_idle_t reaper;
    sb_list_t conns, done, deadlines, starting;
    int depth;            /* inside our lws callback or our timer callback */
    int open_handles;
    bool kicked;          /* the timer is armed at 0 */
    bool closing;         /* sb_wsclient_ctx_free was called */
    bool torn_down;
    uint64_t reap_start;
    /* ws:// (ours) */
    uv_check_t flush_io;    /* after the I/O callbacks of a loop turn: writes what the dirty connections queued */
    uv_prepare_t flush_idle; /* before the loop blocks: what timers and other phases queued */
    bool flush_armed;
    sb_list_t dirty;
    char *rbuf;             /* READ_BUF bytes, shared by the loop's connections */
    uint8_t rnd_key[32];    /* ChaCha20 keystream for mask keys and handshake keys, seeded once from getrandom */
    uint32_t rnd_block;
    unsigned rnd_pos;
    uint8_t rnd[RND_CHUNK];
};

/* ---- lws's process-wide set-up -------------------------------------------------------------------------------- */

static pthread_once_t log_once = PTHREAD_ONCE_INIT;

/* lws's warnings and errors, as our log lines (lws ends its lines with a newline, ours add one). */
static void lws_emit(int level, const char *line)
{
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        n--;
    sb_log(level & LLL_ERR ? SB_LOG_ERROR : SB_LOG_WARN, "libwebsockets: %.*s", (int)n, line);
}

static void log_init(void)
{
    lws_set_log_level(LLL_ERR | LLL_WARN, lws_emit);
}

/* ---- small helpers -------------------------------------------------------------------------------------------- */

static void kick(sb_wsclient_ctx_t *ctx);
static void arm(sb_wsclient_ctx_t *ctx);

static sb_wsclient_t *conn_of(struct lws *wsi)
{
    return wsi ? lws_get_opaque_user_data(wsi) : NULL;
}

static void msg_free(wc_msg_t *m)
{
    sb_list_remove(&m->link);
    sb_list_remove(&m->drop_link);
    free(m);
}

static void conn_free_output(sb_wsclient_t *c)
{
    for (sb_list_t *l; (l = sb_list_first(&c->out));)
        msg_free(sb_container_of(l, wc_msg_t, link));
    c->queued = 0;
}

/* Frees c once nobody holds it: the user (until on_close returned), the resolver, lws's connect call. */
static void conn_maybe_free(sb_wsclient_t *c)
{
    if (!c->user_done || c->dns_pending || c->in_lws_connect || c->tcp_open)
        return;
    conn_free_output(c);
    sb_buf_cleanup(&c->rx);
    sb_buf_cleanup(&c->wbuf);
    sb_buf_cleanup(&c->ctl);
    sb_buf_cleanup(&c->answer);
    sb_ws_reader_cleanup(&c->rd);
    free(c);
}

static void deadline_set(sb_wsclient_t *c, uint64_t at)
{
    sb_wsclient_ctx_t *ctx = c->ctx;
    sb_list_remove(&c->dl_link);
    c->deadline = at;
    sb_list_t *pos = ctx->deadlines.prev; /* from the tail: usually the latest */
    while (pos != &ctx->deadlines && sb_container_of(pos, sb_wsclient_t, dl_link)->deadline > at)
        pos = pos->prev;
    sb_list_insert_after(pos, &c->dl_link);
    arm(ctx);
}

static void on_tcp_closed(uv_handle_t *h)
{
    sb_wsclient_t *c = h->data;
    c->tcp_open = false;
    conn_maybe_free(c);
}

/* Ends c with this outcome: detaches it from its wsi (and kills the wsi when lws is not closing it already), drops
 * the resolver's claim and queues the on_close call for the timer. Once only. */
static void conn_end(sb_wsclient_t *c, int err, uint16_t code, int status, bool kill)
{
    if (c->state == WC_DONE)
        return;
    sb_wsclient_ctx_t *ctx = c->ctx;
    c->state = WC_DONE;
    c->end_err = err;
    c->end_code = code;
    c->end_status = status;
    sb_list_remove(&c->dl_link);
    sb_list_remove(&c->start_link);
    if (c->wsi) {
        lws_set_opaque_user_data(c->wsi, NULL);
        if (kill)
            lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
        c->wsi = NULL;
    }
    if (c->dns_pending)
        uv_cancel((uv_req_t *)&c->gai); /* may be too late: on_resolved then sees WC_DONE */
    sb_list_remove(&c->dirty_link);
    if (c->tcp_open && !uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, on_tcp_closed); /* a pending connect or write is called back first */
    conn_free_output(c);
    sb_list_remove(&c->link);
    sb_list_push_back(&ctx->done, &c->link);
    if (!ctx->torn_down)
        kick(ctx);
}

/* Calls on_close for every ended connection, in the order they ended. */
static void deliver_done(sb_wsclient_ctx_t *ctx)
{
    for (sb_list_t *l; (l = sb_list_first(&ctx->done));) {
        sb_wsclient_t *c = sb_container_of(l, sb_wsclient_t, link);
        sb_list_remove(&c->link);
        c->ops->on_close(c->arg, c, c->end_err, c->end_code, c->end_status);
        c->user_done = true;
        conn_maybe_free(c);
    }
}

/* ---- the lws side --------------------------------------------------------------------------------------------- */

static void mark_dirty(sb_wsclient_t *c);

static void ask_write(sb_wsclient_t *c)
{
    if (c->fast) {
        mark_dirty(c);
        return;
    }
    if (c->write_asked || !c->wsi)
        return;
    c->write_asked = true;
    lws_callback_on_writable(c->wsi);
}

/* LWS_CALLBACK_CLIENT_WRITEABLE: whole messages while the socket takes them, then our close frame if one was asked
 * for. Returns what the callback returns (-1: close). */
static int on_writeable(sb_wsclient_t *c, struct lws *wsi)
{
    c->write_asked = false;
    if (c->state != WC_OPEN && c->state != WC_CLOSING)
        return 0;
    unsigned n = 0;
    for (sb_list_t *l; (l = sb_list_first(&c->out)); n++) {
        if (n && lws_send_pipe_choked(wsi)) {
            ask_write(c);
            return 0;
        }
        wc_msg_t *m = sb_container_of(l, wc_msg_t, link);
        c->queued -= m->len;
        int w = lws_write(wsi, m->buf + LWS_PRE, m->len, m->binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT);
        msg_free(m);
        if (w < 0)
            return -1; /* lws closes: the end comes as CLIENT_CLOSED */
    }
    if (c->state == WC_CLOSING) {
        lws_close_reason(wsi, (enum lws_close_status)c->close_code, (unsigned char *)c->close_reason,
                         strlen(c->close_reason));
        return -1; /* lws sends the close frame and waits for the peer's */
    }
    return 0;
}

/* LWS_CALLBACK_CLIENT_RECEIVE: a chunk of a message. A message in one chunk is handed over in place; others are
 * joined up to max_message. Returns -1 to close (with 1009 set). */
static int on_receive(sb_wsclient_t *c, struct lws *wsi, const char *in, size_t len)
{
    bool final = lws_is_final_fragment(wsi) && lws_remaining_packet_payload(wsi) == 0;
    if (!c->rx_active) {
        c->rx_binary = lws_frame_is_binary(wsi);
        if (final) {
            if (len > c->max_message)
                goto too_big;
            if (c->state == WC_OPEN || c->state == WC_CLOSING)
                c->ops->on_message(c->arg, c, c->rx_binary, sb_str(in ? in : "", len));
            return 0;
        }
        c->rx_active = true;
        c->rx.len = 0;
    }
    if (len > c->max_message - c->rx.len)
        goto too_big;
    sb_buf_append(&c->rx, in, len);
    if (final) {
        c->rx_active = false;
        if (c->state == WC_OPEN || c->state == WC_CLOSING)
            c->ops->on_message(c->arg, c, c->rx_binary, sb_str(c->rx.p ? c->rx.p : "", c->rx.len));
        c->rx.len = 0;
        if (c->rx.cap > RX_CHUNK * 4)
            sb_buf_cleanup(&c->rx); /* a big message passed: do not keep its buffer */
    }
    return 0;
too_big:
    c->rx_active = false;
    c->rx.len = 0;
    c->close_code = LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE;
    c->close_ours = true;
    static const char reason[] = "message too big";
    lws_close_reason(wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE, (unsigned char *)reason, sizeof reason - 1);
    c->state = WC_CLOSING;
    return -1;
}

static int on_lws(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
    (void)user;
    sb_wsclient_t *c = conn_of(wsi);
    if (!c)
        return 0; /* context-wide events, or a wsi we detached */
    sb_wsclient_ctx_t *ctx = c->ctx;
    int rc = 0;
    if (!c->wsi)
        c->wsi = wsi; /* the first we hear of it may come before lws_client_connect_via_info returns */
    ctx->depth++;
    switch (reason) {
    case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER: {
        char **p = in;
        if (c->headers_len >= len) {
            sb_log_warn("wsclient: %s: the extra upgrade headers do not fit lws's buffer", c->host);
            rc = -1;
            break;
        }
        memcpy(*p, c->headers, c->headers_len);
        *p += c->headers_len;
        break;
    }
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        if (c->state != WC_CONNECTING)
            break;
        c->state = WC_OPEN;
        sb_list_remove(&c->dl_link);
        if (c->ops->on_open)
            c->ops->on_open(c->arg, c);
        if (c->state == WC_CLOSING || (c->state == WC_OPEN && !sb_list_empty(&c->out)))
            ask_write(c);
        break;
    case LWS_CALLBACK_CLIENT_RECEIVE:
        rc = on_receive(c, wsi, in, len);
        break;
    case LWS_CALLBACK_CLIENT_WRITEABLE:
        rc = on_writeable(c, wsi);
        break;
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        if (!c->close_ours) {
            const unsigned char *b = in;
            c->close_code = len >= 2 ? (uint16_t)(b[0] << 8 | b[1]) : LWS_CLOSE_STATUS_NO_STATUS;
        }
        if (c->state == WC_OPEN || c->state == WC_CLOSING)
            c->state = WC_PEER_CLOSED;
        break;
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        if (c->state == WC_OPEN || c->state == WC_CLOSING || c->state == WC_PEER_CLOSED) {
            conn_end(c, 0, c->close_code ? c->close_code : LWS_CLOSE_STATUS_ABNORMAL_CLOSE, 0, false);
        } else {
            int status = (int)lws_http_client_http_response(wsi);
            conn_end(c, status > 0 ? SB_EACCES : SB_EUNAVAIL, 0, status, false);
        }
        break;
    case LWS_CALLBACK_CLIENT_CLOSED:
    case LWS_CALLBACK_WSI_DESTROY: /* a safety net: CLIENT_CLOSED or CONNECTION_ERROR came first */
        if (c->state == WC_OPEN || c->state == WC_CLOSING || c->state == WC_PEER_CLOSED)
            conn_end(c, 0, c->close_code ? c->close_code : LWS_CLOSE_STATUS_ABNORMAL_CLOSE, 0, false);
        else
            conn_end(c, SB_EUNAVAIL, 0, 0, false);
        break;
    default:
        break;
    }
    ctx->depth--;
    return rc;
}

static const struct lws_protocols protocols[] = {
    {.name = PROTO_NAME, .callback = on_lws, .rx_buffer_size = RX_CHUNK},
    {0},
};

static void fast_start(sb_wsclient_t *c);

/* Hands c to lws, or to our own client for ws://. Called from our timer or resolver callback only. */
static void conn_start(sb_wsclient_t *c)
{
    if (c->fast) {
        fast_start(c);
        return;
    }
    struct lws_client_connect_info i;
    memset(&i, 0, sizeof i);
    i.context = c->ctx->lws;
    i.address = c->address;
    i.port = c->port;
    i.ssl_connection = c->tls ? LCCSCF_USE_SSL : 0;
    i.path = c->path;
    i.host = c->host_header;
    i.protocol = c->subprotocol;
    i.local_protocol_name = PROTO_NAME;
    i.alpn = "http/1.1"; /* lws 4.1 cannot upgrade to WebSocket over h2 */
    i.opaque_user_data = c;
    c->state = WC_CONNECTING;
    c->in_lws_connect = true;
    struct lws *wsi = lws_client_connect_via_info(&i);
    c->in_lws_connect = false;
    if (c->state == WC_DONE) { /* it failed at once: CONNECTION_ERROR came from inside */
        conn_maybe_free(c);
        return;
    }
    if (!wsi) {
        conn_end(c, SB_EUNAVAIL, 0, 0, false);
        return;
    }
    c->wsi = wsi;
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    sb_wsclient_t *c = sb_container_of(req, sb_wsclient_t, gai);
    c->dns_pending = false;
    if (c->state == WC_DONE) { /* timed out, abandoned or canceled meanwhile: the context may be gone */
        uv_freeaddrinfo(res);
        conn_maybe_free(c);
        return;
    }
    const struct addrinfo *pick = NULL;
    for (const struct addrinfo *a = status == 0 ? res : NULL; a; a = a->ai_next) {
        if (a->ai_family == AF_INET) { /* IPv4 first: "localhost" and dual-stack names where v6 is not served */
            pick = a;
            break;
        }
        if (a->ai_family == AF_INET6 && !pick)
            pick = a;
    }
    int rc = -1;
    if (pick && pick->ai_family == AF_INET)
        rc = uv_ip4_name((const struct sockaddr_in *)pick->ai_addr, c->address, sizeof c->address);
    else if (pick)
        rc = uv_ip6_name((const struct sockaddr_in6 *)pick->ai_addr, c->address, sizeof c->address);
    uv_freeaddrinfo(res);
    if (rc != 0) {
        sb_log_warn("wsclient: cannot resolve %s: %s", c->host, status < 0 ? uv_strerror(status) : "no address");
        conn_end(c, SB_EUNAVAIL, 0, 0, false);
        return;
    }
    conn_start(c);
}

/* ---- ws:// on our own socket -----------------------------------------------------------------------------------
 * Connect, write the upgrade request, read the answer (at most ANSWER_MAX bytes, proto/http1's response parser), check
 * it, then frames through proto/ws's reader in client mode. Output is corked: sb_wsclient_send only queues, and at
 * the end of the loop turn (ctx->flush_io after the I/O callbacks, ctx->flush_idle before the loop blocks) each
 * connection with something to write builds its frames, masked, into its write buffer (control frames first, then
 * whole messages up to WRITE_BATCH bytes) and writes them with uv_try_write, the rest with one uv_write; while that
 * is in flight the messages wait in the queue, where the bound and the eviction of droppable ones apply. */

/* n bytes of the context's ChaCha20 keystream: no syscall per frame. Reseeded from getrandom when the 32-bit block
 * counter would wrap (after 256 GiB). */
static void rnd_bytes(sb_wsclient_ctx_t *ctx, uint8_t *out, size_t n)
{
    static const uint8_t nonce[12], zero[RND_CHUNK];
    SB_BUG_ON(n > RND_CHUNK);
    if (ctx->rnd_pos + n > RND_CHUNK) {
        if (ctx->rnd_block > UINT32_MAX - RND_CHUNK / 64) {
            int seeded = sb_crypto_random(ctx->rnd_key, sizeof ctx->rnd_key);
            SB_BUG_ON(seeded != 0); /* it worked at ctx_new */
            ctx->rnd_block = 0;
        }
        int rc = mbedtls_chacha20_crypt(ctx->rnd_key, nonce, ctx->rnd_block, RND_CHUNK, zero, ctx->rnd);
        SB_BUG_ON(rc != 0);
        ctx->rnd_block += RND_CHUNK / 64;
        ctx->rnd_pos = 0;
    }
    memcpy(out, ctx->rnd + ctx->rnd_pos, n);
    ctx->rnd_pos += (unsigned)n;
}

static void fast_flush(sb_wsclient_t *c);

static void on_flush_turn(sb_wsclient_ctx_t *ctx)
{
    uv_check_stop(&ctx->flush_io);
    uv_prepare_stop(&ctx->flush_idle);
    ctx->flush_armed = false;
    for (sb_list_t *l; (l = sb_list_first(&ctx->dirty));) {
        sb_list_remove(l);
        fast_flush(sb_container_of(l, sb_wsclient_t, dirty_link));
    }
}

static void on_flush_io(uv_check_t *h)
{
    on_flush_turn(h->data);
}

static void on_flush_idle(uv_prepare_t *h)
{
    on_flush_turn(h->data);
}

/* c has output: it is written at the end of this loop turn, with whatever else is queued by then. */
static void mark_dirty(sb_wsclient_t *c)
{
    sb_wsclient_ctx_t *ctx = c->ctx;
    if (c->state == WC_DONE || ctx->torn_down || sb_list_linked(&c->dirty_link))
        return;
    sb_list_push_back(&ctx->dirty, &c->dirty_link);
    if (!ctx->flush_armed) {
        ctx->flush_armed = true;
        uv_check_start(&ctx->flush_io, on_flush_io);
        uv_prepare_start(&ctx->flush_idle, on_flush_idle);
    }
}

/* How c ends when its socket fails: before it opened, SB_EUNAVAIL; after, err 0 with the code known (1006 if none). */
static void fast_lost(sb_wsclient_t *c)
{
    if (c->state < WC_OPEN)
        conn_end(c, SB_EUNAVAIL, 0, 0, true);
    else
        conn_end(c, 0, c->close_code ? c->close_code : LWS_CLOSE_STATUS_ABNORMAL_CLOSE, 0, true);
}

static void on_written(uv_write_t *w, int status)
{
    sb_wsclient_t *c = w->data;
    c->writing = false;
    if (c->state == WC_DONE) /* ended meanwhile (the socket is closing): nothing more to do */
        return;
    if (status < 0) {
        fast_lost(c);
        return;
    }
    c->wbuf.len = 0;
    fast_flush(c);
}

/* Writes c->wbuf: what the kernel takes now, the rest with one uv_write (c->writing until it completes). */
static void fast_write(sb_wsclient_t *c)
{
    uv_buf_t b = uv_buf_init(c->wbuf.p, (unsigned)c->wbuf.len);
    int rc = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (rc == (int)b.len) {
        c->wbuf.len = 0;
        return;
    }
    if (rc < 0 && rc != UV_EAGAIN) {
        fast_lost(c);
        return;
    }
    size_t n = rc < 0 ? 0 : (size_t)rc;
    b = uv_buf_init(c->wbuf.p + n, (unsigned)(c->wbuf.len - n));
    c->write_req.data = c;
    if (uv_write(&c->write_req, (uv_stream_t *)&c->tcp, &b, 1, on_written) < 0) {
        fast_lost(c);
        return;
    }
    c->writing = true;
}

/* Appends our close frame (code, reason) to the control frames. */
static void fast_queue_close(sb_wsclient_t *c, uint16_t code, const char *reason)
{
    uint8_t p[SB_WS_CONTROL_MAX], key[4];
    size_t n = sb_ws_close_payload(p, code, sb_str(reason, strlen(reason)));
    rnd_bytes(c->ctx, key, 4);
    sb_ws_frame_append_masked(&c->ctl, SB_WS_OP_CLOSE, true, sb_str((const char *)p, n), key);
    c->close_sent = true;
}

/* Writes what c has queued, batch after batch, until the socket is full or nothing is left; ends c if its last
 * frame went. Called at the turn's end and when a write completes. */
static void fast_flush(sb_wsclient_t *c)
{
    while (!c->writing && c->state != WC_DONE && c->state >= WC_OPEN && !c->handshaking) {
        c->wbuf.len = 0;
        if (c->ctl.len) {
            sb_buf_append(&c->wbuf, c->ctl.p, c->ctl.len);
            c->ctl.len = 0;
        }
        if (c->state == WC_OPEN || c->state == WC_CLOSING) {
            for (sb_list_t *l; c->wbuf.len < WRITE_BATCH && (l = sb_list_first(&c->out));) {
                wc_msg_t *m = sb_container_of(l, wc_msg_t, link);
                uint8_t key[4];
                rnd_bytes(c->ctx, key, 4);
                sb_ws_frame_append_masked(&c->wbuf, m->binary ? SB_WS_OP_BINARY : SB_WS_OP_TEXT, true,
                                          sb_str((const char *)m->buf + LWS_PRE, m->len), key);
                c->queued -= m->len;
                msg_free(m);
            }
            if (c->state == WC_CLOSING && !c->close_sent && sb_list_empty(&c->out)) {
                fast_queue_close(c, c->close_code, c->close_reason);
                sb_buf_append(&c->wbuf, c->ctl.p, c->ctl.len);
                c->ctl.len = 0;
            }
        }
        if (!c->wbuf.len) {
            if (c->end_when_written && c->close_sent)
                conn_end(c, 0, c->close_code, 0, true);
            break;
        }
        fast_write(c);
    }
    if (!c->writing && c->wbuf.cap > WBUF_KEEP)
        sb_buf_cleanup(&c->wbuf); /* a big message passed: do not keep its buffer */
}

/* Stops c after the peer broke the framing (err from sb_ws_feed) or closed (err 0, its code): our close frame goes
 * (the peer's code echoed, or the RFC's for the error) and the socket is closed once it went. */
static void fast_finish(sb_wsclient_t *c, int err, uint16_t peer_code)
{
    if (c->close_sent) { /* ours went first: this answers it (or the peer gave up on it) */
        conn_end(c, 0, c->close_code, 0, true);
        return;
    }
    const char *reason = "";
    uint16_t code = peer_code; /* echoed; 1005 (none) is echoed as an empty close frame */
    if (err) {
        code = sb_ws_close_code(err);
        reason = err == SB_E2BIG ? "message too big" : err == SB_EINVAL ? "invalid UTF-8" : "protocol error";
    }
    if (err || !c->close_ours) /* a close asked for by sb_wsclient_close keeps its code for on_close */
        c->close_code = code;
    c->close_ours = true;
    conn_free_output(c); /* no data frame after a close */
    fast_queue_close(c, code, reason);
    c->end_when_written = true;
    c->state = WC_PEER_CLOSED;
    uv_read_stop((uv_stream_t *)&c->tcp);
    deadline_set(c, uv_now(c->ctx->loop) + c->timeout_ms);
    mark_dirty(c);
}

/* Feeds in[0..n) (modified by the reader) to c's frame reader and acts on every event. */
static void fast_frames(sb_wsclient_t *c, char *in, size_t n)
{
    for (size_t off = 0; c->state == WC_OPEN || c->state == WC_CLOSING;) {
        size_t used;
        sb_ws_event_t ev;
        int rc = sb_ws_feed(&c->rd, in + off, n - off, &used, &ev);
        off += used;
        if (rc == 0)
            return;
        if (rc < 0) {
            fast_finish(c, rc == SB_ECLOSED ? SB_EPARSE : rc, 0);
            return;
        }
        switch (ev.op) {
        case SB_WS_OP_TEXT:
        case SB_WS_OP_BINARY:
            c->ops->on_message(c->arg, c, ev.op == SB_WS_OP_BINARY, ev.payload);
            break;
        case SB_WS_OP_PING:
            if (!c->close_sent) { /* ctl then holds pongs only: answer the latest ping only (section 5.5.3), so a
                                   * peer that pings and does not read cannot grow it */
                uint8_t key[4];
                rnd_bytes(c->ctx, key, 4);
                c->ctl.len = 0;
                sb_ws_frame_append_masked(&c->ctl, SB_WS_OP_PONG, true, ev.payload, key);
                mark_dirty(c);
            }
            break;
        case SB_WS_OP_CLOSE:
            fast_finish(c, 0, ev.code);
            return;
        default: /* pongs */
            break;
        }
    }
}

/* A list header value (Connection) holds token, case-insensitively. */
static bool has_token(sb_str_t v, const char *token)
{
    size_t tl = strlen(token);
    for (size_t i = 0; i < v.len;) {
        while (i < v.len && (v.p[i] == ' ' || v.p[i] == '\t' || v.p[i] == ','))
            i++;
        size_t s = i;
        while (i < v.len && v.p[i] != ',' && v.p[i] != ' ' && v.p[i] != '\t')
            i++;
        if (i - s == tl && strncasecmp(v.p + s, token, tl) == 0)
            return true;
    }
    return false;
}

/* Why a 101 answer is not a WebSocket upgrade we asked for, or NULL when it is. */
static const char *answer_wrong(const sb_wsclient_t *c, const sb_http1_resp_t *r)
{
    const sb_str_t *v = sb_http1_resp_header(r, "upgrade");
    if (!v || v->len != 9 || strncasecmp(v->p, "websocket", 9) != 0)
        return "no Upgrade: websocket";
    if (!(v = sb_http1_resp_header(r, "connection")) || !has_token(*v, "upgrade"))
        return "no Connection: upgrade";
    if (!(v = sb_http1_resp_header(r, "sec-websocket-accept")) || !sb_str_eq_cstr(*v, c->accept))
        return "a wrong Sec-WebSocket-Accept";
    if (sb_http1_resp_header(r, "sec-websocket-extensions"))
        return "an extension we did not offer";
    v = sb_http1_resp_header(r, "sec-websocket-protocol");
    if (v && !(c->subprotocol && sb_str_eq_cstr(*v, c->subprotocol)))
        return "a subprotocol we did not offer";
    return NULL;
}

/* Bytes of the upgrade answer: once its head is complete, c opens (or ends), and what followed the head is read
 * as frames. */
static void fast_answer(sb_wsclient_t *c, const char *in, size_t n)
{
    sb_buf_append(&c->answer, in, n);
    sb_http1_resp_t r;
    int rc = sb_http1_parse_response(c->answer.p, c->answer.len, ANSWER_MAX, &r);
    if (rc == 0)
        return;
    if (rc < 0) {
        sb_log_warn("wsclient: %s: %s upgrade answer", c->host, rc == SB_E2BIG ? "an over-long" : "a malformed");
        conn_end(c, SB_EUNAVAIL, 0, 0, true);
        return;
    }
    if (r.status != 101) {
        conn_end(c, SB_EACCES, 0, r.status, true);
        return;
    }
    const char *wrong = answer_wrong(c, &r);
    if (wrong) {
        sb_log_warn("wsclient: %s: the upgrade was answered 101 with %s", c->host, wrong);
        conn_end(c, SB_EUNAVAIL, 0, 101, true);
        return;
    }
    c->handshaking = false;
    c->state = WC_OPEN;
    sb_list_remove(&c->dl_link);
    sb_ws_reader_init_client(&c->rd, c->max_message);
    if (c->ops->on_open)
        c->ops->on_open(c->arg, c);
    if (c->state == WC_CLOSING || (c->state == WC_OPEN && !sb_list_empty(&c->out)))
        mark_dirty(c);
    if ((size_t)rc < c->answer.len) /* frames came with the answer */
        fast_frames(c, c->answer.p + rc, c->answer.len - (size_t)rc);
    sb_buf_cleanup(&c->answer);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    sb_wsclient_t *c = h->data;
    (void)suggested;
    *buf = uv_buf_init(c->ctx->rbuf, READ_BUF);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    sb_wsclient_t *c = s->data;
    if (c->state == WC_DONE || nread == 0)
        return;
    if (nread < 0) { /* EOF or an error */
        fast_lost(c);
        return;
    }
    sb_wsclient_ctx_t *ctx = c->ctx;
    ctx->depth++;
    if (c->handshaking)
        fast_answer(c, buf->base, (size_t)nread);
    else if (c->state == WC_OPEN || c->state == WC_CLOSING)
        fast_frames(c, buf->base, (size_t)nread);
    ctx->depth--;
}

static void on_connected(uv_connect_t *req, int status)
{
    sb_wsclient_t *c = req->data;
    if (c->state == WC_DONE)
        return;
    if (status < 0) {
        conn_end(c, SB_EUNAVAIL, 0, 0, true);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uint8_t raw[16];
    char key[25];
    rnd_bytes(c->ctx, raw, sizeof raw);
    key[sb_codec_b64_encode(key, raw, sizeof raw, SB_B64_STD)] = '\0';
    SB_BUG_ON(sb_ws_accept_key(sb_str(key, 24), c->accept) != 0);
    sb_buf_printf(&c->wbuf,
                  "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n",
                  c->path, c->host_header, key);
    if (c->subprotocol)
        sb_buf_printf(&c->wbuf, "Sec-WebSocket-Protocol: %s\r\n", c->subprotocol);
    sb_buf_append(&c->wbuf, c->headers, c->headers_len);
    sb_buf_append(&c->wbuf, "\r\n", 2);
    c->handshaking = true;
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0) {
        conn_end(c, SB_EUNAVAIL, 0, 0, true);
        return;
    }
    fast_write(c);
}

/* Connects c to its numeric address. From our timer or resolver callback only. */
static void fast_start(sb_wsclient_t *c)
{
    struct sockaddr_storage sa;
    if (uv_ip4_addr(c->address, c->port, (struct sockaddr_in *)&sa) != 0 &&
        uv_ip6_addr(c->address, c->port, (struct sockaddr_in6 *)&sa) != 0) {
        conn_end(c, SB_EUNAVAIL, 0, 0, true);
        return;
    }
    c->state = WC_CONNECTING;
    uv_tcp_init(c->ctx->loop, &c->tcp);
    c->tcp.data = c;
    c->tcp_open = true;
    c->connect_req.data = c;
    if (uv_tcp_connect(&c->connect_req, &c->tcp, (const struct sockaddr *)&sa, on_connected) < 0)
        conn_end(c, SB_EUNAVAIL, 0, 0, true);
}

/* ---- the context's timer: starts, deadlines, ends ------------------------------------------------------------- */

static void teardown(sb_wsclient_ctx_t *ctx);

static void on_timer(uv_timer_t *t)
{
    sb_wsclient_ctx_t *ctx = t->data;
    ctx->kicked = false;
    ctx->depth++;
    for (sb_list_t *l; !ctx->closing && (l = sb_list_first(&ctx->starting));) {
        sb_wsclient_t *c = sb_container_of(l, sb_wsclient_t, start_link);
        sb_list_remove(l);
        conn_start(c);
    }
    uint64_t now = uv_now(ctx->loop);
    for (sb_list_t *l; (l = sb_list_first(&ctx->deadlines));) {
        sb_wsclient_t *c = sb_container_of(l, sb_wsclient_t, dl_link);
        if (c->deadline > now)
            break;
        if (c->state == WC_CLOSING || c->state == WC_PEER_CLOSED) /* the queue or the close handshake stalled */
            conn_end(c, 0, c->close_code, 0, true);
        else
            conn_end(c, SB_ETIMEDOUT, 0, 0, true);
    }
    deliver_done(ctx);
    ctx->depth--;
    if (ctx->closing)
        teardown(ctx);
    else
        arm(ctx);
}

/* Runs the timer at once (next loop turn): a start or an end is waiting. */
static void kick(sb_wsclient_ctx_t *ctx)
{
    if (ctx->kicked || ctx->torn_down)
        return;
    ctx->kicked = true;
    uv_timer_start(&ctx->timer, on_timer, 0, 0);
}

/* Arms the timer for the earliest deadline (or stops it), unless a kick is pending. */
static void arm(sb_wsclient_ctx_t *ctx)
{
    if (ctx->kicked || ctx->torn_down)
        return;
    sb_list_t *l = sb_list_first(&ctx->deadlines);
    if (!l) {
        uv_timer_stop(&ctx->timer);
        return;
    }
    uint64_t at = sb_container_of(l, sb_wsclient_t, dl_link)->deadline, now = uv_now(ctx->loop);
    uv_timer_start(&ctx->timer, on_timer, at > now ? at - now : 0, 0);
}

/* ---- teardown ------------------------------------------------------------------------------------------------- */

static void ctx_maybe_free(sb_wsclient_ctx_t *ctx)
{
    if (ctx->open_handles == 0 && ctx->torn_down && !ctx->lws) {
        free(ctx->rbuf);
        sb_crypto_wipe(ctx->rnd_key, sizeof ctx->rnd_key);
        free(ctx);
    }
}

static void on_handle_closed(uv_handle_t *h)
{
    sb_wsclient_ctx_t *ctx = h->data;
    ctx->open_handles--;
    ctx_maybe_free(ctx);
}

typedef struct reap_probe {
    const void *lws;
    bool found;
} reap_probe_t;

static void find_lws_handle(uv_handle_t *h, void *arg)
{
    reap_probe_t *p = arg;
    if (h->data == p->lws)
        p->found = true;
}

/* Each loop turn after lws_context_destroy: once no handle on the loop points at the lws context, lws's close
 * callbacks have all run and the second lws_context_destroy frees it. */
static void on_reap(uv_idle_t *h)
{
    sb_wsclient_ctx_t *ctx = h->data;
    reap_probe_t probe = {.lws = ctx->lws};
    uv_walk(ctx->loop, find_lws_handle, &probe);
    if (probe.found) {
        if (uv_now(ctx->loop) - ctx->reap_start < REAP_GIVE_UP_MS)
            return;
        sb_log_error("wsclient: libwebsockets still has handles open %d ms after its context was destroyed; "
                     "leaking it", REAP_GIVE_UP_MS);
    } else {
        lws_context_destroy(ctx->lws);
    }
    ctx->lws = NULL;
    uv_idle_stop(h);
    uv_close((uv_handle_t *)h, on_handle_closed);
}

/* Cancels every connection (on_close with SB_ECANCELED, now), destroys the lws context and closes our handles; the
 * context frees itself once lws's handles have closed too. Never inside an lws callback. */
static void teardown(sb_wsclient_ctx_t *ctx)
{
    if (ctx->torn_down)
        return;
    ctx->torn_down = true; /* from here on the timer is neither kicked nor armed */
    for (sb_list_t *l; (l = sb_list_first(&ctx->conns));)
        conn_end(sb_container_of(l, sb_wsclient_t, link), SB_ECANCELED, 0, 0, false);
    ctx->depth++;
    deliver_done(ctx);
    ctx->depth--;
    lws_context_destroy(ctx->lws); /* closes every wsi: none points at a connection any more */
    uv_timer_stop(&ctx->timer);
    uv_close((uv_handle_t *)&ctx->timer, on_handle_closed);
    uv_close((uv_handle_t *)&ctx->flush_io, on_handle_closed);
    uv_close((uv_handle_t *)&ctx->flush_idle, on_handle_closed);
    ctx->reap_start = uv_now(ctx->loop);
    uv_idle_start(&ctx->reaper, on_reap);
}

/* ---- the context ---------------------------------------------------------------------------------------------- */

sb_wsclient_ctx_t *sb_wsclient_ctx_new(uv_loop_t *loop)
{
    pthread_once(&log_once, log_init);
#if defined(LWS_WITH_EVLIB_PLUGINS) && defined(LWS_INSTALL_LIBDIR)
    static const char plugin[] = LWS_INSTALL_LIBDIR "/libwebsockets-evlib_uv.so";
    if (access(plugin, R_OK) != 0) {
        sb_log_error("wsclient: libwebsockets' libuv plugin %s is missing: install libwebsockets-evlib-uv "
                     "(ops/deps.sh)", plugin);
        return NULL;
    }
#endif
    sb_wsclient_ctx_t *ctx = sb_calloc(1, sizeof *ctx);
    ctx->loop = loop;
    sb_list_init(&ctx->conns);
    sb_list_init(&ctx->done);
    sb_list_init(&ctx->deadlines);
    sb_list_init(&ctx->starting);
    sb_list_init(&ctx->dirty);
    if (sb_crypto_random(ctx->rnd_key, sizeof ctx->rnd_key) != 0) {
        sb_log_error("wsclient: getrandom failed: no keys for WebSocket masks");
        free(ctx);
        return NULL;
    }
    ctx->rnd_pos = RND_CHUNK; /* the first use makes the first block */

    void *loops[1] = {loop};
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = protocols;
    info.options = LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    info.foreign_loops = loops;
    info.user = ctx;
    info.gid = -1;
    info.uid = -1;
    info.timeout_secs = 5; /* lws's own steps: the close handshake, TLS */
    ctx->lws = lws_create_context(&info);
    if (!ctx->lws) {
        sb_log_error("wsclient: libwebsockets could not start on this loop (see its messages above)");
        free(ctx);
        return NULL;
    }
    uv_timer_init(loop, &ctx->timer);
    ctx->timer.data = ctx;
    uv_idle_init(loop, &ctx->reaper);
    ctx->reaper.data = ctx;
    uv_check_init(loop, &ctx->flush_io);
    ctx->flush_io.data = ctx;
    uv_prepare_init(loop, &ctx->flush_idle);
    ctx->flush_idle.data = ctx;
    ctx->open_handles = 4;
    ctx->rbuf = sb_malloc(READ_BUF);
    return ctx;
}

void sb_wsclient_ctx_free(sb_wsclient_ctx_t *ctx)
{
    if (!ctx || ctx->closing)
        return;
    ctx->closing = true;
    if (ctx->depth > 0) { /* inside one of our callbacks: the timer tears down once it has returned */
        kick(ctx);
        return;
    }
    teardown(ctx);
}

/* ---- connections ---------------------------------------------------------------------------------------------- */

/* A header line "Name: value": a name without spaces, no CR or LF anywhere. */
static bool header_ok(const char *h)
{
    const char *colon = strchr(h, ':');
    if (!colon || colon == h)
        return false;
    for (const char *p = h; p < colon; p++)
        if (*p <= ' ' || *p == 0x7f)
            return false;
    return !strpbrk(colon, "\r\n");
}

/* Splits ws[s]://host[:port][/path][?query] (no user info, no fragment, no control characters or spaces). */
typedef struct wc_url {
    bool tls;
    sb_str_t host; /* without brackets */
    bool ipv6;
    int port;
    const char *rest; /* the path and query as given ("" when absent) */
} wc_url_t;

static bool url_parse(const char *url, wc_url_t *u)
{
    memset(u, 0, sizeof *u);
    for (const unsigned char *p = (const unsigned char *)url; *p; p++)
        if (*p <= ' ' || *p == 0x7f || *p == '#')
            return false;
    const char *p;
    if (strncasecmp(url, "ws://", 5) == 0) {
        p = url + 5;
        u->port = 80;
    } else if (strncasecmp(url, "wss://", 6) == 0) {
        p = url + 6;
        u->tls = true;
        u->port = 443;
    } else {
        return false;
    }
    const char *end = p + strcspn(p, "/?");
    if (memchr(p, '@', (size_t)(end - p)))
        return false;
    const char *port = NULL;
    if (*p == '[') {
        const char *close = memchr(p, ']', (size_t)(end - p));
        if (!close)
            return false;
        u->host = sb_str(p + 1, (size_t)(close - p - 1));
        u->ipv6 = true;
        if (close + 1 < end) {
            if (close[1] != ':')
                return false;
            port = close + 2;
        }
    } else {
        const char *colon = memchr(p, ':', (size_t)(end - p));
        u->host = sb_str(p, (size_t)((colon ? colon : end) - p));
        if (colon)
            port = colon + 1;
    }
    if (u->host.len == 0 || u->host.len > HOST_MAX)
        return false;
    if (port) {
        long long n;
        if (sb_str_to_ll(sb_str(port, (size_t)(end - port)), 1, 65535, &n) != 0)
            return false;
        u->port = (int)n;
    }
    u->rest = end;
    return true;
}

int sb_wsclient_connect(sb_wsclient_ctx_t *ctx, const sb_wsclient_opts_t *opts, const sb_wsclient_ops_t *ops,
                        void *arg, sb_wsclient_t **out)
{
    if (ctx->closing)
        return SB_ECLOSED;
    wc_url_t u;
    if (!opts || !ops || !ops->on_message || !ops->on_close || !opts->url || !url_parse(opts->url, &u))
        return SB_EINVAL;
    if (opts->subprotocol && (!*opts->subprotocol || strpbrk(opts->subprotocol, "\r\n")))
        return SB_EINVAL;
    size_t hlen = 0;
    for (const char *const *h = opts->headers; h && *h; h++) {
        if (!header_ok(*h))
            return SB_EINVAL;
        hlen += strlen(*h) + 2;
    }
    bool default_port = u.port == (u.tls ? 443 : 80);
    size_t rest_len = strlen(u.rest);
    size_t sub_len = opts->subprotocol ? strlen(opts->subprotocol) + 1 : 0;
    /* host, path ("/" added when the URL has none), Host header (brackets, ":port"), subprotocol, headers */
    size_t text = (u.host.len + 1) + (rest_len + 2) + (u.host.len + 2 + 7 + 1) + sub_len + hlen + 1;
    sb_wsclient_t *c = sb_calloc(1, sizeof *c + text);
    c->ctx = ctx;
    c->ops = ops;
    c->arg = arg;
    sb_list_init(&c->link);
    sb_list_init(&c->dl_link);
    sb_list_init(&c->start_link);
    sb_list_init(&c->out);
    sb_list_init(&c->drops);
    sb_list_init(&c->dirty_link);
    sb_buf_init(&c->rx);
    sb_buf_init(&c->wbuf);
    sb_buf_init(&c->ctl);
    sb_buf_init(&c->answer);
    c->timeout_ms = opts->connect_timeout_ms ? opts->connect_timeout_ms : DEFAULT_CONNECT_MS;
    c->max_message = opts->max_message ? opts->max_message : DEFAULT_MAX_MESSAGE;
    c->max_queued = opts->max_queued ? opts->max_queued : DEFAULT_MAX_QUEUED;
    c->port = u.port;
    c->tls = u.tls;
    c->fast = !u.tls;

    char *t = c->text;
    c->host = t;
    memcpy(t, u.host.p, u.host.len);
    t += u.host.len + 1;
    c->path = t;
    t += sprintf(t, "%s%s", *u.rest == '/' ? "" : "/", u.rest) + 1;
    c->host_header = t;
    t += sprintf(t, u.ipv6 ? "[%s]" : "%s", c->host);
    if (!default_port)
        t += sprintf(t, ":%d", u.port);
    t++;
    if (opts->subprotocol) {
        c->subprotocol = t;
        memcpy(t, opts->subprotocol, sub_len);
        t += sub_len;
    }
    c->headers = t;
    for (const char *const *h = opts->headers; h && *h; h++)
        t += sprintf(t, "%s\r\n", *h);
    c->headers_len = (size_t)(t - c->headers);

    unsigned char bin[sizeof(struct in6_addr)];
    bool numeric = uv_inet_pton(AF_INET, c->host, bin) == 0 || uv_inet_pton(AF_INET6, c->host, bin) == 0;
    if (u.ipv6 && !numeric) {
        free(c);
        return SB_EINVAL;
    }
    if (numeric) {
        snprintf(c->address, sizeof c->address, "%s", c->host);
        c->state = WC_STARTING;
        sb_list_push_back(&ctx->starting, &c->start_link);
        kick(ctx);
    } else {
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
        c->state = WC_RESOLVING;
        int rc = uv_getaddrinfo(ctx->loop, &c->gai, on_resolved, c->host, NULL, &hints);
        if (rc < 0) {
            free(c);
            return rc == UV_ENOMEM ? SB_ENOMEM : SB_EINVAL;
        }
        c->dns_pending = true;
    }
    sb_list_push_back(&ctx->conns, &c->link);
    deadline_set(c, uv_now(ctx->loop) + c->timeout_ms);
    *out = c;
    return 0;
}

int sb_wsclient_send(sb_wsclient_t *c, bool binary, sb_str_t payload, bool droppable)
{
    if (c->state > WC_OPEN)
        return SB_ECLOSED;
    int evicted = 0;
    if (droppable) {
        for (sb_list_t *l; c->queued + payload.len > c->max_queued && (l = sb_list_first(&c->drops)); evicted++) {
            wc_msg_t *m = sb_container_of(l, wc_msg_t, drop_link);
            c->queued -= m->len;
            msg_free(m);
        }
        c->dropped += (uint64_t)evicted;
    }
    wc_msg_t *m = sb_malloc(sizeof *m + LWS_PRE + payload.len);
    sb_list_init(&m->drop_link);
    m->len = payload.len;
    m->binary = binary;
    if (payload.len)
        memcpy(m->buf + LWS_PRE, payload.p, payload.len);
    sb_list_push_back(&c->out, &m->link);
    if (droppable)
        sb_list_push_back(&c->drops, &m->drop_link);
    c->queued += payload.len;
    if (c->state == WC_OPEN)
        ask_write(c);
    return evicted;
}

void sb_wsclient_close(sb_wsclient_t *c, uint16_t code, const char *reason)
{
    if (c->state < WC_OPEN) {
        conn_end(c, SB_ECANCELED, 0, 0, true);
        return;
    }
    if (c->state != WC_OPEN)
        return;
    c->state = WC_CLOSING;
    c->close_code = code;
    c->close_ours = true;
    size_t n = reason ? strlen(reason) : 0;
    if (n > REASON_MAX) { /* cut at a UTF-8 boundary */
        n = REASON_MAX;
        while (n && ((unsigned char)reason[n] & 0xc0) == 0x80)
            n--;
    }
    memcpy(c->close_reason, reason ? reason : "", n);
    c->close_reason[n] = '\0';
    deadline_set(c, uv_now(c->ctx->loop) + c->timeout_ms);
    ask_write(c);
}

size_t sb_wsclient_queued(const sb_wsclient_t *c)
{
    return c->queued;
}

uint64_t sb_wsclient_dropped(const sb_wsclient_t *c)
{
    return c->dropped;
}

bool sb_wsclient_is_open(const sb_wsclient_t *c)
{
    return c->state == WC_OPEN;
}
