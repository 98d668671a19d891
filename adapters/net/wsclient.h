/* Outgoing WebSocket connections (ws:// and wss://) on a shard's libuv loop, over libwebsockets' client.
 *
 * The call actors dial the tenant's voice app with this, and the mock provider dials the gateway's Media Streams
 * endpoint as Twilio would. One sb_wsclient_ctx_t per loop (one lws context running on that foreign uv loop);
 * nothing here is thread-safe and nothing blocks the loop: DNS, connect, TLS and the upgrade all happen in the
 * background, bounded by connect_timeout_ms.
 *
 * The callback rule is libuv's: sb_wsclient_connect returns an error and calls nothing, or returns 0 and then calls
 * on_open at most once, on_message any number of times after it, and on_close exactly once, last, never from inside
 * sb_wsclient_connect itself. After on_close returns, the connection is freed.
 *
 * Output: sb_wsclient_send copies the payload into a FIFO of whole messages, written as the socket takes them. The
 * queue is bounded by max_queued bytes: a message marked droppable that does not fit evicts the oldest droppable
 * messages not yet begun (audio, where the newest matters most) and is counted in sb_wsclient_dropped; a message
 * not marked droppable (control: marks, start, stop) is always queued. */
#ifndef SB_WSCLIENT_H
#define SB_WSCLIENT_H

#include "proto/str.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct sb_wsclient_ctx sb_wsclient_ctx_t;
typedef struct sb_wsclient sb_wsclient_t;

/* The lws context of one loop. NULL when libwebsockets cannot start (logged). */
sb_wsclient_ctx_t *sb_wsclient_ctx_new(uv_loop_t *loop);
/* Closes every connection still open (each gets on_close with SB_ECANCELED) and frees the context; the loop may
 * have to run once more for lws's handles to close (uv_run with UV_RUN_NOWAIT is enough). */
void sb_wsclient_ctx_free(sb_wsclient_ctx_t *ctx);

typedef struct sb_wsclient_ops {
    /* The upgrade was answered 101: messages may flow. May be NULL. */
    void (*on_open)(void *arg, sb_wsclient_t *c);
    /* One whole message (fragments joined; at most max_message bytes, else the connection is closed 1009), borrowed
     * for the call. */
    void (*on_message)(void *arg, sb_wsclient_t *c, bool binary, sb_str_t payload);
    /* The connection is over. err 0: it was open and closed (code: the peer's close code, or ours, 1006 when the
     * socket just went); else it never opened: SB_ETIMEDOUT (connect_timeout_ms passed), SB_EACCES (the upgrade was
     * answered but not with 101: http_status says what), SB_EUNAVAIL (DNS, connect or TLS failed), SB_ECANCELED
     * (sb_wsclient_close before it opened, or the context freed). */
    void (*on_close)(void *arg, sb_wsclient_t *c, int err, uint16_t code, int http_status);
} sb_wsclient_ops_t;

typedef struct sb_wsclient_opts {
    const char *url;              /* ws://host[:port]/path[?query] or wss://...; copied */
    const char *const *headers;   /* extra upgrade header lines "Name: value", NULL-terminated, or NULL; copied */
    const char *subprotocol;      /* offered in Sec-WebSocket-Protocol, or NULL */
    unsigned connect_timeout_ms;  /* 0: 5000 */
    size_t max_message;           /* bytes of one incoming message; 0: 64 KiB */
    size_t max_queued;            /* output bytes queued before droppable messages are evicted; 0: 64 KiB */
} sb_wsclient_opts_t;

/* Starts a connection. Returns 0 and the connection in *out (valid until on_close returns), or SB_EINVAL (a URL
 * that is not ws:// or wss://, a header line holding CR or LF) or SB_ENOMEM. */
int sb_wsclient_connect(sb_wsclient_ctx_t *ctx, const sb_wsclient_opts_t *opts, const sb_wsclient_ops_t *ops,
                        void *arg, sb_wsclient_t **out);

/* Queues one whole message (copied). Before on_open, messages wait and leave once it is open. Returns how many
 * queued messages were evicted to make room (0 usually), or SB_ECLOSED once the connection is closing. */
int sb_wsclient_send(sb_wsclient_t *c, bool binary, sb_str_t payload, bool droppable);
/* Sends a close frame with code and reason once what is queued went out; on_close follows. Before it is open: the
 * attempt is abandoned (on_close with SB_ECANCELED). */
void sb_wsclient_close(sb_wsclient_t *c, uint16_t code, const char *reason);
/* Bytes queued and not yet written; messages evicted since the connection was made. */
size_t sb_wsclient_queued(const sb_wsclient_t *c);
uint64_t sb_wsclient_dropped(const sb_wsclient_t *c);
bool sb_wsclient_is_open(const sb_wsclient_t *c);

#endif
