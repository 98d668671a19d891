/* Outgoing HTTP client: curl multi on a shard's libuv loop.
 *
 * The shards call Twilio's Messages API and Meta's Graph API and POST the tenants' outgoing webhooks through this.
 * Nothing here blocks the loop: curl is driven by curl_multi_socket_action from one uv_poll_t per socket curl asks
 * us to watch and one uv_timer_t for the timeouts curl asks for. One client holds one curl multi handle, so its
 * connections (HTTP/1.1 keep-alive, HTTP/2 where the server offers it over TLS) are kept and reused across requests;
 * at most max_host_connections are open to one host at a time and further requests wait for one of them.
 *
 * The callback rule is libuv's: if sb_http_client_request returns an error, its callback is never called; if it
 * returns 0, the callback is called exactly once, never from inside sb_http_client_request itself, on the loop's
 * thread — with SB_ECANCELED when the client is destroyed first. A callback may issue new requests or destroy the
 * client.
 *
 * One client belongs to one loop and one thread; no function here is thread-safe. curl's process-wide set-up
 * (curl_global_init) is done once, thread-safely, by the first sb_http_client_create.
 *
 * Secrets: the basic-auth credentials and every header line (so a "Authorization: Bearer ..." header may be passed)
 * are copied into memory this client wipes when the request ends. curl keeps a transient copy of the request head
 * while sending it, which is outside our control. Nothing is logged. curl honours the usual proxy environment
 * variables (http_proxy, https_proxy, no_proxy). */
#ifndef SB_HTTP_CLIENT_H
#define SB_HTTP_CLIENT_H

#include "proto/str.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct sb_http_client sb_http_client_t;

/* Options of a client. Zero means the default shown. */
typedef struct sb_http_client_opts {
    unsigned max_host_connections;  /* connections open at once to one host:port; default 16 */
    unsigned max_total_connections; /* connections open at once in all; default 0 = no limit */
    unsigned max_idle_connections;  /* idle connections kept for reuse; default 64 (at least max_host_connections) */
    unsigned connect_timeout_ms;    /* TCP + TLS connect; default 5000 */
    unsigned timeout_ms;            /* whole request, including waiting for a connection; default 30000 */
    size_t max_response_bytes;      /* larger response bodies fail the request with SB_E2BIG; default 1 MiB */
    const char *user_agent;         /* borrowed, copied; default "switchboard/" SB_VERSION */
} sb_http_client_opts_t;

/* One request. Everything is borrowed for the duration of sb_http_client_request only: what the request needs later
 * is copied before it returns. */
typedef struct sb_http_client_req {
    const char *method;          /* "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", ...; NULL = "GET" */
    const char *url;             /* absolute http:// or https:// URL */
    const char *const *headers;  /* NULL-terminated "Name: value" lines, or NULL. No CR or LF in a line. Without a
                                  * Content-Type line, a request with a body is sent as
                                  * application/x-www-form-urlencoded (curl's default). */
    sb_str_t body;               /* sent for every method but GET and HEAD when body.len > 0, and always for POST,
                                  * PUT and PATCH (possibly empty) */
    const char *basic_auth;      /* "user:password" for HTTP basic auth, or NULL; copied and wiped after use */
    unsigned timeout_ms;         /* whole request; 0 = the client's timeout_ms */
} sb_http_client_req_t;

/* The outcome of one request; borrowed by the callback and valid only while it runs. */
typedef struct sb_http_client_res {
    int err;              /* 0: an HTTP response arrived, whatever its status. Otherwise:
                           *   SB_ETIMEDOUT  the connect or the whole request took longer than allowed;
                           *   SB_EUNAVAIL   no connection could be made (refused, unreachable, DNS, TLS handshake
                           *                 or certificate): nothing was sent, so a retry cannot duplicate;
                           *   -ECONNRESET   the connection failed after the request was (perhaps) sent: the server
                           *                 may have acted on it;
                           *   SB_E2BIG      the response body exceeded max_response_bytes;
                           *   SB_EPARSE     the server's answer was not HTTP;
                           *   SB_EINVAL     curl refused the URL;
                           *   SB_ECANCELED  the client was destroyed first;
                           *   -EIO          anything else (see detail). */
    int status;           /* the HTTP status; 0 when err != 0 */
    bool sent;            /* false when no byte of the request was written (connect failures): retrying is safe */
    sb_str_t body;        /* the response body (empty when err != 0) */
    sb_str_t content_type; /* the Content-Type header's value, empty when absent (at most 127 bytes kept) */
    int retry_after_s;    /* the Retry-After header in seconds (a delay, or an HTTP-date turned into the delay from
                           * now, at least 0), or -1 when the response has none or it is unreadable */
    uint64_t elapsed_us;  /* from the request to the end of the response (0 when canceled) */
    const char *detail;   /* curl's description of the failure, "" on success; never NULL */
} sb_http_client_res_t;

/* Called once per accepted request, on the loop's thread. res is borrowed: copy what you keep. */
typedef void (*sb_http_client_cb)(void *arg, const sb_http_client_res_t *res);

/* Figures for /metrics and benchmarks. Read on the client's thread. */
typedef struct sb_http_client_stats {
    uint64_t requests;           /* accepted by sb_http_client_request */
    uint64_t in_flight;          /* accepted and not yet called back */
    uint64_t failed;             /* called back with err != 0 (cancellations included) */
    uint64_t connections_opened; /* sockets ever opened for connections (a reused connection counts once) */
    uint64_t connections_open;   /* sockets open now, busy or idle */
} sb_http_client_stats_t;

/* Creates a client on loop (borrowed; it must outlive the client's handles). opts (borrowed) may be NULL for every
 * default. Returns 0 and *out, or SB_ENOMEM when curl cannot be set up. */
int sb_http_client_create(uv_loop_t *loop, const sb_http_client_opts_t *opts, sb_http_client_t **out);

/* Starts req (borrowed; see sb_http_client_req_t) and returns at once. Returns 0, after which cb(arg, res) will be
 * called exactly once; or, and then cb is never called:
 *   SB_EINVAL   no callback, no URL, a URL that is not absolute http(s), a method that is not a token (letters,
 *               digits, '-', '_'; at most 32), a header line without a name before its ':' or with CR or LF,
 *               basic_auth with CR or LF;
 *   SB_ECLOSED  the client is being destroyed;
 *   SB_ENOMEM   curl could not take the request. */
int sb_http_client_request(sb_http_client_t *c, const sb_http_client_req_t *req, sb_http_client_cb cb, void *arg);

/* Fills *out with the client's figures. */
void sb_http_client_get_stats(const sb_http_client_t *c, sb_http_client_stats_t *out);

/* Cancels every request in flight (each callback is called with SB_ECANCELED before this returns — or, when called
 * from inside one of this client's callbacks, right after that callback returns), closes every connection, and
 * closes the client's libuv handles. The client's memory is freed once they have closed, so run the loop afterwards
 * (uv_run returns once nothing else is open). NULL is ignored. c must not be used once this returns, except by the
 * callbacks it calls: there sb_http_client_request is refused with SB_ECLOSED and sb_http_client_destroy does
 * nothing. */
void sb_http_client_destroy(sb_http_client_t *c);

#endif
