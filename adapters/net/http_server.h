/* HTTP/1.1 server adapter: the gateway's HTTP front door on a shard's libuv loop.
 *
 * Every shard listens on the same port with SO_REUSEPORT, so the kernel spreads connections over the shards. The
 * server reads into a per-connection buffer, parses heads with proto/http1 (strict, fuzzed), reads bodies
 * (Content-Length or chunked), and hands each whole request to one handler function. A handler may answer at once
 * or later (after Redis or PostgreSQL replied): the request stays valid until sb_http_respond*() is called exactly
 * once, even if the client went away in between (then the answer is dropped). Pipelined requests are answered in
 * order; while a handler works the connection stops reading, so a client cannot make us buffer without bound, and
 * while the answers a connection was given are not read by its peer (past 256 KiB unwritten) its next request
 * waits, so a client that pipelines and never reads cannot either; one that stays so for the idle timeout is
 * closed. A body is read whole, up to max_body_bytes, before the handler sees the request.
 *
 * Limits, each answered with a JSON error {"error":{"code","message"}} and a closed connection: head size (431),
 * malformed head (400), unsupported version (505) or transfer coding (501), body size (413, before the body is
 * read when Content-Length says so), time to receive a head or body (408; a slowloris client is cut off at
 * header_timeout whatever it trickles), idle keep-alive time (closed silently).
 *
 * Upgrades (WebSocket): a handler that accepts one answers with sb_http_upgrade(), which writes its 101 head and
 * turns the connection into a *stream*: from then on the bytes read are handed to the stream's owner, which frames
 * them itself (gateway/inbox over proto/ws), writes with sb_http_stream_write() and ends with
 * sb_http_stream_close(). HTTP deadlines no longer apply; the owner keeps its own. */
#ifndef SB_HTTP_SERVER_H
#define SB_HTTP_SERVER_H

#include "proto/cidr.h"
#include "proto/str.h"

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

typedef struct sb_http_server sb_http_server_t;
typedef struct sb_http_req sb_http_req_t;

typedef enum sb_http_method {
    SB_HTTP_OTHER = 0,
    SB_HTTP_GET,
    SB_HTTP_HEAD,
    SB_HTTP_POST,
    SB_HTTP_PUT,
    SB_HTTP_PATCH,
    SB_HTTP_DELETE,
    SB_HTTP_OPTIONS
} sb_http_method_t;

/* Called once per complete request, on the shard thread. Borrows req until it answers it. */
typedef void (*sb_http_handler_fn)(void *arg, sb_http_req_t *req);

typedef struct sb_http_server_opts {
    const char *host; /* "0.0.0.0", "127.0.0.1", "::" ... */
    int port;
    unsigned shard;   /* whose metrics row to count in */
    int max_header_bytes, max_body_bytes, header_timeout_s, idle_timeout_s;
    /* A larger body limit for POSTs to one exact path (a route that takes big requests by design: a broadcast's
     * recipients), checked on the head as max_body_bytes is. large_body_path NULL: none. */
    const char *large_body_path;
    int large_body_bytes;
    /* Reverse proxies (borrowed; must outlive the server): a request whose peer is one of them has its client taken
     * from X-Forwarded-For and its base URL from X-Forwarded-Proto / X-Forwarded-Host. None: every peer is the
     * client and every header of that kind is ignored. */
    const sb_cidr_t *trusted_proxies;
    size_t ntrusted_proxies;
    sb_http_handler_fn handler;
    void *handler_arg;
} sb_http_server_opts_t;

/* Starts listening on loop. Returns 0 and *out, or a negative code (bind failed: logged). */
int sb_http_server_create(uv_loop_t *loop, const sb_http_server_opts_t *opts, sb_http_server_t **out);
/* Stops accepting (closes the listener) and closes idle keep-alive connections; requests being received or
 * handled finish, and their answers carry "Connection: close". */
void sb_http_server_drain(sb_http_server_t *srv);
/* Connections currently open. */
unsigned sb_http_server_connections(const sb_http_server_t *srv);
/* Closes the listener and every connection (requests still with a handler are detached); the server frees itself
 * once its handles have closed. */
void sb_http_server_close(sb_http_server_t *srv);

sb_http_method_t sb_http_req_method(const sb_http_req_t *req);
sb_str_t sb_http_req_path(const sb_http_req_t *req);   /* raw, not percent-decoded, without the query */
sb_str_t sb_http_req_query(const sb_http_req_t *req);  /* raw, without '?' */
sb_str_t sb_http_req_target(const sb_http_req_t *req); /* the request-target byte for byte (signatures need it) */
sb_str_t sb_http_req_body(const sb_http_req_t *req);
/* Finds a request header by name, case-insensitively. The view is valid until the request is answered. */
bool sb_http_req_header(const sb_http_req_t *req, const char *name, sb_str_t *out);

/* Appends the external base URL of the request to out: public_url when given (not NULL); else, from a trusted proxy,
 * X-Forwarded-Proto's scheme (http or https; http when absent or anything else) + "://" + X-Forwarded-Host (its
 * first entry, when it is a plain host[:port]) or the Host header; else "http://" + its Host header. Returns false,
 * appending nothing, when there is no host to name. */
bool sb_http_req_base_url(const sb_http_req_t *req, const char *public_url, sb_buf_t *out);

/* Whether req asks for an upgrade: HTTP/1.1 (RFC 9110 7.8: an HTTP/1.0 request's Upgrade is ignored), Connection
 * with the token "upgrade" and a non-empty Upgrade header. */
bool sb_http_req_upgrade(const sb_http_req_t *req);

/* The client's address into *out: the connection's peer, or, when that peer is a trusted proxy, the client its
 * X-Forwarded-For names (the first entry from the right that is not a trusted proxy itself; the peer's address
 * when the header is absent or unreadable). For logs and per-address guards. Returns 0, or SB_ECLOSED when the
 * connection is gone. */
struct sockaddr_storage;
int sb_http_req_peer(const sb_http_req_t *req, struct sockaddr_storage *out);

/* The answer to req will end its connection ("connection: close"): for a client that is refused for good. */
void sb_http_req_close(sb_http_req_t *req);

/* A pointer the handler may keep with the request until it answers (NULL at first). */
void *sb_http_req_user(const sb_http_req_t *req);
void sb_http_req_set_user(sb_http_req_t *req, void *user);

/* Answers the request (copies body). Call exactly once per request. */
void sb_http_respond(sb_http_req_t *req, int status, const char *content_type, const void *body, size_t len);
/* The same, with extra header lines (borrowed; each "name: value\r\n", or NULL): our own constant headers only,
 * never peer input. */
void sb_http_respond_headers(sb_http_req_t *req, int status, const char *content_type, const char *headers,
                             const void *body, size_t len);
/* Answers {"error":{"code":code,"message":message}} with the given status. */
void sb_http_respond_error(sb_http_req_t *req, int status, const char *code, const char *message);
/* Appends that error body to b, for answers that need more than sb_http_respond_error gives. */
void sb_http_error_body(sb_buf_t *b, const char *code, const char *message);
/* As sb_http_respond_headers (everything copied now), but sent delay_ms from now: to slow down a client without
 * holding a timer of one's own. The connection waits meanwhile, pipelined requests and all. The answer goes at once
 * when delay_ms is 0, when the connection is already gone, or when the server drains or closes first. */
void sb_http_respond_later(sb_http_req_t *req, uint32_t delay_ms, int status, const char *content_type,
                           const char *headers, const void *body, size_t len);

/* ---- upgraded connections ------------------------------------------------------------------------------------ */

typedef struct sb_http_stream sb_http_stream_t;

typedef struct sb_http_stream_ops {
    /* Bytes arrived: p[0..len) is borrowed and may be modified in place (unmasking). Returns how many bytes it
     * consumed; the rest is kept and offered again, with whatever arrives next, when more arrives or reading
     * resumes. Called on the shard thread, never re-entered. */
    size_t (*on_data)(void *arg, sb_http_stream_t *st, char *p, size_t len);
    /* The server is draining (shutdown): say goodbye and close soon. */
    void (*on_drain)(void *arg, sb_http_stream_t *st);
    /* The connection is gone (peer left, write error, or after sb_http_stream_close); called once, last: the
     * stream handle is invalid afterwards and arg is not used again. Never called from inside the stream calls
     * below, so an owner may free its state here. */
    void (*on_close)(void *arg, sb_http_stream_t *st);
} sb_http_stream_ops_t;

/* Answers req with head[0..len) (borrowed: a complete 101 response head, ending with an empty line) and turns its
 * connection into a stream served by ops (borrowed, must outlive the stream) with arg. Bytes that followed the
 * request are offered to on_data from the next loop turn. Returns the stream, or NULL when the connection is
 * already gone (nothing happens then, and on_close is never called), or when req is no upgrade request
 * (sb_http_req_upgrade; answered 426) or the server drains (answered 503). req is finished either way. Only for a
 * request with no body that the handler has not answered. */
sb_http_stream_t *sb_http_upgrade(sb_http_req_t *req, const char *head, size_t len, const sb_http_stream_ops_t *ops,
                                  void *arg);
/* Writes the buffers in order (borrowed: they are copied). The frames written to a stream in a row go to the kernel
 * together, in one write, when another stream is written or the loop turn ends (so at the latest before the loop
 * blocks again); they wait in one buffer of the server's, none of the connection's. Returns 0, or a negative code
 * when the connection is closing (the bytes are dropped). */
int sb_http_stream_write(sb_http_stream_t *st, const uv_buf_t *bufs, unsigned n);
/* Bytes accepted by sb_http_stream_write that the kernel has not taken yet: how far behind the peer is. */
size_t sb_http_stream_queued(const sb_http_stream_t *st);
/* Stops or resumes reading (and offering kept bytes) for backpressure while the owner waits on something. */
void sb_http_stream_set_reading(sb_http_stream_t *st, bool on);
/* Closes gracefully: queued bytes are written, the write side is shut down and input discarded until the peer
 * closes or a short deadline. Idempotent. on_close follows, from a later loop turn. */
void sb_http_stream_close(sb_http_stream_t *st);
/* Closes at once, dropping what is queued (a peer that does not read). on_close follows from a later turn. */
void sb_http_stream_abort(sb_http_stream_t *st);
/* The peer's address as text ("1.2.3.4:5678"), for logs. */
void sb_http_stream_peer(const sb_http_stream_t *st, char *out, size_t len);

#endif
