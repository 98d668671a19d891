/* HTTP/1.1 server adapter: the gateway's HTTP front door on a shard's libuv loop.
 *
 * Every shard listens on the same port with SO_REUSEPORT, so the kernel spreads connections over the shards. The
 * server reads into a per-connection buffer, parses heads with proto/http1 (strict, fuzzed), reads bodies
 * (Content-Length or chunked), and hands each whole request to one handler function. A handler may answer at once
 * or later (after Redis or PostgreSQL replied): the request stays valid until sb_http_respond*() is called exactly
 * once, even if the client went away in between (then the answer is dropped). Pipelined requests are answered in
 * order; while a handler works the connection stops reading, so a client cannot make us buffer without bound.
 *
 * Limits, each answered with a JSON error {"error":{"code","message"}} and a closed connection: head size (431),
 * malformed head (400), unsupported version (505) or transfer coding (501), body size (413, before the body is
 * read when Content-Length says so), time to receive a head or body (408; a slowloris client is cut off at
 * header_timeout whatever it trickles), idle keep-alive time (closed silently).
 *
 * WebSocket upgrades are not served yet: the live inbox (the inbound issue) brings them. */
#ifndef SB_HTTP_SERVER_H
#define SB_HTTP_SERVER_H

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

/* Appends the external base URL of the request to out: public_url when given (not NULL), else "http://" + its
 * Host header. Returns false, appending nothing, when there is neither. */
bool sb_http_req_base_url(const sb_http_req_t *req, const char *public_url, sb_buf_t *out);

/* A pointer the handler may keep with the request until it answers (NULL at first). */
void *sb_http_req_user(const sb_http_req_t *req);
void sb_http_req_set_user(sb_http_req_t *req, void *user);

/* Answers the request (copies body). Call exactly once per request. */
void sb_http_respond(sb_http_req_t *req, int status, const char *content_type, const void *body, size_t len);
/* Answers {"error":{"code":code,"message":message}} with the given status. */
void sb_http_respond_error(sb_http_req_t *req, int status, const char *code, const char *message);

#endif
