/* Outgoing WebSocket connections (ws:// and wss://) on a shard's libuv loop: ws:// over our own client on a libuv
 * TCP socket, wss:// over libwebsockets' client.
 *
 * The call actors dial the tenant's voice app with this, and the mock provider dials the gateway's Media Streams
 * endpoint as Twilio would. One sb_wsclient_ctx_t per loop (one lws context running on that foreign uv loop, and
 * what our own client shares per loop: a read buffer, a mask-key generator, the end-of-turn write flush); nothing
 * here is thread-safe and nothing blocks the loop: DNS, connect, TLS and the upgrade all happen in the background,
 * bounded by connect_timeout_ms.
 *
 * The callback rule is libuv's: sb_wsclient_connect returns an error and calls nothing, or returns 0 and then calls
 * on_open at most once, on_message any number of times after it, and on_close exactly once, last, never from inside
 * sb_wsclient_connect itself. After on_close returns, the connection is freed. on_close always comes from a loop
 * turn of its own (the context's timer), never from inside sb_wsclient_send/close or another connection's callback;
 * on_open and on_message come from inside the socket's read callback (lws's service of it for wss://). Any call of
 * this header may be made from inside any of these callbacks, sb_wsclient_ctx_free included.
 *
 * Names are resolved with uv_getaddrinfo (the thread pool; lws 4.1 would block the loop), the first IPv4 address
 * preferred, and only that address is tried. wss:// checks the server's certificate against the system's CAs and
 * the URL's host name (also sent as SNI), and offers only http/1.1 in ALPN.
 *
 * ws:// (RFC 6455 client side): the upgrade request carries Host, a random Sec-WebSocket-Key, version 13, the
 * subprotocol and the extra headers; the answer's head (at most 8 KiB, parsed strictly) must be 101 with Upgrade:
 * websocket, Connection: upgrade, the right Sec-WebSocket-Accept, no extension, and no subprotocol but the one
 * offered. Our frames are masked with keys from a per-loop ChaCha20 keystream (seeded once from getrandom); the
 * server's must not be (a masked one, like any broken framing, is answered with a close frame carrying the RFC's
 * code, 1002, 1007 or 1009, and on_close reports that code). Pings are answered; a peer's close is echoed and the
 * socket closed once the echo went. Everything a loop turn queues for a connection leaves in one write at the turn's
 * end, never two writes in flight.
 *
 * Output: sb_wsclient_send copies the payload into a FIFO of whole messages, written as the socket takes them. The
 * queue is bounded by max_queued bytes: a message marked droppable that does not fit evicts the oldest droppable
 * messages not yet begun (audio, where the newest matters most) and is counted in sb_wsclient_dropped; a message
 * not marked droppable (control: marks, start, stop) is always queued. When the messages that cannot be dropped
 * leave no room, a droppable one still goes in once every older droppable one was evicted: the queue then holds them
 * and the newest droppable message only. (ws:// hands the socket at most 64 KiB of frames at a time; what it has not
 * taken stays in the queue, where the bound applies.) */
#ifndef SB_WSCLIENT_H
#define SB_WSCLIENT_H

#include "proto/str.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct sb_wsclient_ctx sb_wsclient_ctx_t;
typedef struct sb_wsclient sb_wsclient_t;

/* The lws context of one loop, on the loop's thread. NULL when libwebsockets cannot start (logged; a missing
 * libwebsockets-evlib-uv package is named). Starting loads lws's libuv plugin and scans a library directory: call it
 * when the shard starts, not per call. */
sb_wsclient_ctx_t *sb_wsclient_ctx_new(uv_loop_t *loop);
/* Closes every connection still open or connecting (each gets on_close with SB_ECANCELED, from inside this call, or
 * from the next loop turn when called inside one of this context's callbacks) and destroys the lws context. The
 * memory is released only after lws's own uv handles have closed, which takes a few more turns of the loop: keep
 * running it (uv_run with UV_RUN_DEFAULT returns once they are gone) before uv_loop_close. NULL: nothing. */
void sb_wsclient_ctx_free(sb_wsclient_ctx_t *ctx);

typedef struct sb_wsclient_ops {
    /* The upgrade was answered 101: messages may flow. May be NULL. */
    void (*on_open)(void *arg, sb_wsclient_t *c);
    /* One whole message (fragments joined; at most max_message bytes, else the connection is closed 1009), borrowed
     * for the call. */
    void (*on_message)(void *arg, sb_wsclient_t *c, bool binary, sb_str_t payload);
    /* The connection is over. err 0: it was open and closed (code: the peer's close code, or ours, 1009 when a
     * message was too big, 1002 or 1007 when the peer's framing was broken, 1006 when the socket just went; over
     * wss://, lws 4.1 reports a peer's 1012..1014 as 1002); else it never opened, or was open when the context was
     * freed: SB_ETIMEDOUT (connect_timeout_ms passed), SB_EACCES (the upgrade was answered but not with 101:
     * http_status says what), SB_EUNAVAIL (DNS, connect, TLS or a malformed upgrade answer; http_status 101 when it
     * was a 101 that is not the upgrade asked for: a wrong accept key, a missing header), SB_ECANCELED
     * (sb_wsclient_close before it opened, or the context freed). */
    void (*on_close)(void *arg, sb_wsclient_t *c, int err, uint16_t code, int http_status);
} sb_wsclient_ops_t;

typedef struct sb_wsclient_opts {
    const char *url;              /* ws://host[:port]/path[?query] or wss://... (host at most 127 bytes, no user
                                   * info, no fragment, [v6] literals); copied */
    const char *const *headers;   /* extra upgrade header lines "Name: value", NULL-terminated, or NULL; copied */
    const char *subprotocol;      /* offered in Sec-WebSocket-Protocol, or NULL */
    unsigned connect_timeout_ms;  /* 0: 5000 */
    size_t max_message;           /* bytes of one incoming message; 0: 64 KiB */
    size_t max_queued;            /* output bytes queued before droppable messages are evicted; 0: 64 KiB */
} sb_wsclient_opts_t;

/* Starts a connection. Returns 0 and the connection in *out (valid until on_close returns), or SB_EINVAL (a URL
 * that is not ws:// or wss://, a header line holding CR or LF or without a name), SB_ENOMEM, or SB_ECLOSED (the
 * context is being freed). opts, ops and arg: ops is borrowed and must outlive the connection; opts is copied. */
int sb_wsclient_connect(sb_wsclient_ctx_t *ctx, const sb_wsclient_opts_t *opts, const sb_wsclient_ops_t *ops,
                        void *arg, sb_wsclient_t **out);

/* Queues one whole message (copied). Before on_open, messages wait and leave once it is open. Returns how many
 * queued messages were evicted to make room (0 usually), or SB_ECLOSED once the connection is closing. */
int sb_wsclient_send(sb_wsclient_t *c, bool binary, sb_str_t payload, bool droppable);
/* Sends a close frame with code and reason (cut to 123 bytes) once what is queued went out; on_close follows with
 * err 0 and this code. A queue that has not drained, or a peer that has not answered the close, within
 * connect_timeout_ms gets its socket cut (still err 0, this code). Before it is open: the attempt is abandoned
 * (on_close with SB_ECANCELED, from a later loop turn). Nothing once it is closing. */
void sb_wsclient_close(sb_wsclient_t *c, uint16_t code, const char *reason);
/* Bytes queued and not yet written; messages evicted since the connection was made. */
size_t sb_wsclient_queued(const sb_wsclient_t *c);
uint64_t sb_wsclient_dropped(const sb_wsclient_t *c);
bool sb_wsclient_is_open(const sb_wsclient_t *c);

#endif
