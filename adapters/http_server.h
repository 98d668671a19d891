/* HTTP server adapter: a libwebsockets context on a shard's libuv loop, listening with SO_REUSEPORT so that the
 * kernel spreads connections over every shard's listener.
 *
 * It turns lws callbacks into whole requests (method, path, query, body) handed to one handler function, and
 * writes each response (status line, headers and body) with a single write. A handler may answer at once or later
 * (after Redis or PostgreSQL replied): the request stays valid until sb_http_respond*() is called exactly once,
 * even if the client went away in between (then the answer is dropped).
 *
 * Limits: header bytes (lws's header buffer; larger requests are refused by lws), body bytes (413 before the body
 * is read when Content-Length says so, or as soon as the body passes the limit), time to receive the headers and
 * the body, and idle keep-alive time. Error answers are JSON {"error":{"code","message"}}. */
#ifndef SB_HTTP_SERVER_H
#define SB_HTTP_SERVER_H

#include "proto/str.h"

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

/* Creates the lws context on loop and starts listening. Returns 0 and *out, or SB_EUNAVAIL (bind failed: the
 * reason is logged). */
int sb_http_server_create(uv_loop_t *loop, const sb_http_server_opts_t *opts, sb_http_server_t **out);
/* Stops accepting (closes the listener); answers that follow carry "Connection: close"; keep-alive connections
 * with no request in progress are closed after a short grace. */
void sb_http_server_drain(sb_http_server_t *srv);
/* Connections currently open. */
unsigned sb_http_server_connections(const sb_http_server_t *srv);
/* Destroying takes two steps, because lws on a foreign loop finishes closing on later loop iterations:
 * sb_http_server_destroy() closes every connection and the listener; once the loop has run out of handles,
 * sb_http_server_free() completes the context's destruction (the loop must run once more) and frees the server. */
void sb_http_server_destroy(sb_http_server_t *srv);
void sb_http_server_free(sb_http_server_t *srv);

sb_http_method_t sb_http_req_method(const sb_http_req_t *req);
sb_str_t sb_http_req_path(const sb_http_req_t *req);  /* as lws decoded it, without the query */
sb_str_t sb_http_req_query(const sb_http_req_t *req); /* the arguments joined with '&', or empty */
sb_str_t sb_http_req_body(const sb_http_req_t *req);
/* Copies header `name` (lower case, with the colon: "content-type:") into buf as a C string. Only while the
 * handler runs synchronously. Returns its length, or SB_ENOENT, or SB_E2BIG if it does not fit. */
int sb_http_req_header(sb_http_req_t *req, const char *name, char *buf, size_t len);

/* Answers the request (copies body). Call exactly once per request. */
void sb_http_respond(sb_http_req_t *req, int status, const char *content_type, const void *body, size_t len);
/* Answers {"error":{"code":code,"message":message}} with the given status. */
void sb_http_respond_error(sb_http_req_t *req, int status, const char *code, const char *message);

#endif
