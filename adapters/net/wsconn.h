/* A server-side WebSocket connection (RFC 6455) over an upgraded HTTP/1.1 connection (adapters/net/http_server):
 * the handshake, frame I/O, pings, the close handshake and the output bound. One module for every WebSocket front
 * door (the live inbox, the Media Streams endpoint), so each of them deals in whole messages only.
 *
 * sb_wsconn_accept() answers the upgrade request: 405 unless GET, 426 without a WebSocket upgrade (or another
 * version than 13), 400 without a well-formed Sec-WebSocket-Key or with a body, 403 when the caller's origin policy
 * refuses the Origin, 400 when the client offers subprotocols and none of ours; else 101 with the first of the
 * client's offers that we speak (the client's order is its preference), and the connection is open.
 *
 * Then: a whole text or binary message (fragments joined, at most max_message bytes, else closed 1009) goes to
 * on_message; pings are answered with pongs; a close frame is answered with one and the connection closes; broken
 * framing closes it with the RFC's code. Writes are whole frames; a peer that falls more than max_queued bytes
 * behind is closed with slow_code (it can resume: the caller's protocol says how). When the server drains, the
 * connection is closed 1001 unless the caller's on_drain says otherwise. on_close comes once, last; the connection
 * is freed after it returns. */
#ifndef SB_WSCONN_H
#define SB_WSCONN_H

#include "adapters/net/http_server.h"
#include "proto/str.h"
#include "proto/ws.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sb_wsconn sb_wsconn_t;

typedef struct sb_wsconn_ops {
    /* A whole message: op SB_WS_OP_TEXT or SB_WS_OP_BINARY, payload borrowed for the call. */
    void (*on_message)(void *arg, sb_wsconn_t *c, sb_ws_op_t op, sb_str_t payload);
    /* The peer fell more than max_queued bytes behind and is being closed (for the caller's log); may be NULL. */
    void (*on_slow)(void *arg, sb_wsconn_t *c);
    /* The server drains; NULL: the connection is closed with 1001. */
    void (*on_drain)(void *arg, sb_wsconn_t *c);
    /* The connection is gone; called once, last. */
    void (*on_close)(void *arg, sb_wsconn_t *c);
} sb_wsconn_ops_t;

typedef struct sb_wsconn_opts {
    const char *const *subprotocols;  /* ours, NULL-terminated; NULL: none (an offer is then refused) */
    size_t max_message;               /* bytes of one message (joined fragments) */
    size_t max_queued;                /* output bytes the peer may fall behind before it is closed */
    uint16_t slow_code;               /* ... with this code and reason */
    const char *slow_reason;
    /* The origin policy: may this request's Origin open the connection? NULL: any. */
    bool (*origin_allowed)(sb_http_req_t *req);
    const char *what;                 /* the endpoint's name in error messages: "the live inbox" */
} sb_wsconn_opts_t;

/* Answers req: an error (NULL returned), or 101 and an open connection served by ops (borrowed, must outlive it)
 * with arg; *subprotocol is the index in opts->subprotocols of the one chosen, or -1 when the client offered none. */
sb_wsconn_t *sb_wsconn_accept(sb_http_req_t *req, const sb_wsconn_opts_t *opts, const sb_wsconn_ops_t *ops,
                              void *arg, int *subprotocol);

/* Writes one whole frame (op and payload; the payload is copied). Nothing happens once the connection closes. */
void sb_wsconn_send(sb_wsconn_t *c, sb_ws_op_t op, sb_str_t payload);
/* Sends a close frame with code and reason, then closes once what is queued went out; messages are ignored from
 * now on. */
void sb_wsconn_close(sb_wsconn_t *c, uint16_t code, const char *reason);
/* Bytes written that the peer has not taken yet. */
size_t sb_wsconn_queued(const sb_wsconn_t *c);
/* Stops (false) or resumes reading: messages wait in the socket meanwhile. */
void sb_wsconn_set_reading(sb_wsconn_t *c, bool on);
/* Open: not closing, not closed. */
bool sb_wsconn_is_open(const sb_wsconn_t *c);
/* The peer's address, for logs. */
void sb_wsconn_peer(const sb_wsconn_t *c, char *out, size_t len);

#endif
