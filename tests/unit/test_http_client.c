/* Tests of the outgoing HTTP client (adapters/net/http_client.c) on a private libuv loop, against our own HTTP server
 * (adapters/net/http_server.c) started on the same loop: what the server sees of GET, POST and PUT requests (method,
 * headers, body, basic auth, user agent), Retry-After on 429 and 503, the total timeout against a handler that does
 * not answer in time, connection refused, response size limit, argument checks (callback never called), 200
 * requests over at most max_host_connections kept-alive connections, and destroy with requests in flight (each
 * callback once, with SB_ECANCELED), also from inside a callback. The loop must end with no handle open. */
#include "adapters/net/http_client.h"
#include "adapters/net/http_server.h"
#include "proto/codec.h"
#include "proto/err.h"
#include "tests/tap.h"
#include "tests/unit/port.h"

#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static uv_loop_t loop;
static sb_http_server_t *srv;
static sb_http_client_t *client;
static int port;
static char base[64];

/* ---- the server side ------------------------------------------------------------------------------------------ */

typedef struct seen {
    int requests;
    char method[16], target[256], x_test[64], content_type[128], authorization[256], user_agent[64], expect[64];
    char body[4096];
    size_t body_len;
} seen_t;

static seen_t seen;
static sb_http_req_t *held[64];
static int nheld;

static void copy_header(sb_http_req_t *req, const char *name, char *dst, size_t cap)
{
    sb_str_t v;
    if (sb_http_req_header(req, name, &v))
        snprintf(dst, cap, "%.*s", (int)v.len, v.p);
    else
        dst[0] = '\0';
}

static void handler(void *arg, sb_http_req_t *req)
{
    (void)arg;
    sb_str_t path = sb_http_req_path(req);
    sb_str_t target = sb_http_req_target(req);
    sb_str_t body = sb_http_req_body(req);
    seen.requests++;
    if (sb_str_eq_cstr(path, "/hold")) { /* answered later by the test */
        held[nheld++] = req;
        return;
    }
    if (sb_str_eq_cstr(path, "/echo")) {
        sb_str_t m = sb_http_req_method(req) == SB_HTTP_GET    ? SB_STR("GET")
                     : sb_http_req_method(req) == SB_HTTP_POST ? SB_STR("POST")
                     : sb_http_req_method(req) == SB_HTTP_PUT  ? SB_STR("PUT")
                                                               : SB_STR("OTHER");
        snprintf(seen.method, sizeof seen.method, "%.*s", (int)m.len, m.p);
        snprintf(seen.target, sizeof seen.target, "%.*s", (int)target.len, target.p);
        copy_header(req, "x-test", seen.x_test, sizeof seen.x_test);
        copy_header(req, "content-type", seen.content_type, sizeof seen.content_type);
        copy_header(req, "authorization", seen.authorization, sizeof seen.authorization);
        copy_header(req, "user-agent", seen.user_agent, sizeof seen.user_agent);
        copy_header(req, "expect", seen.expect, sizeof seen.expect);
        seen.body_len = body.len < sizeof seen.body ? body.len : sizeof seen.body - 1;
        memcpy(seen.body, body.p, seen.body_len);
        seen.body[seen.body_len] = '\0';
        char out[4200];
        int n = snprintf(out, sizeof out, "echo:%.*s", (int)seen.body_len, seen.body);
        sb_http_respond(req, 200, "text/plain; charset=utf-8", out, (size_t)n);
        return;
    }
    /* sb_http_respond has no parameter for extra headers; the content type line carries one here */
    if (sb_str_eq_cstr(path, "/429")) {
        sb_http_respond(req, 429, "application/json\r\nretry-after: 7", "{\"slow\":\"down\"}", 15);
        return;
    }
    if (sb_str_eq_cstr(path, "/503")) {
        char ct[128], date[64];
        time_t t = time(NULL) + 120;
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        snprintf(ct, sizeof ct, "text/plain\r\nRetry-After: %s", date);
        sb_http_respond(req, 503, ct, "busy", 4);
        return;
    }
    if (sb_str_eq_cstr(path, "/big")) {
        static char big[4096];
        memset(big, 'x', sizeof big);
        sb_http_respond(req, 200, "text/plain", big, sizeof big);
        return;
    }
    sb_http_respond_error(req, 404, "not_found", "no such path");
}

static void release_held(void)
{
    for (int i = 0; i < nheld; i++)
        sb_http_respond(held[i], 200, "text/plain", "late", 4);
    nheld = 0;
}

/* ---- the client side ------------------------------------------------------------------------------------------ */

typedef struct outcome {
    int calls, err, status, retry_after;
    bool sent;
    uint64_t elapsed_us;
    char body[256], content_type[128], detail[256];
} outcome_t;

static void on_done(void *arg, const sb_http_client_res_t *res)
{
    outcome_t *o = arg;
    o->calls++;
    o->err = res->err;
    o->status = res->status;
    o->retry_after = res->retry_after_s;
    o->sent = res->sent;
    o->elapsed_us = res->elapsed_us;
    snprintf(o->body, sizeof o->body, "%.*s", (int)res->body.len, res->body.p);
    snprintf(o->content_type, sizeof o->content_type, "%.*s", (int)res->content_type.len, res->content_type.p);
    snprintf(o->detail, sizeof o->detail, "%s", res->detail);
}

/* Runs the loop until every outcome in v[0..n) has been called, or 5 s. */
static bool wait_all(outcome_t *v, int n)
{
    uint64_t deadline = uv_hrtime() + 5000000000ull;
    for (;;) {
        int done = 0;
        for (int i = 0; i < n; i++)
            done += v[i].calls > 0;
        if (done == n)
            return true;
        if (uv_hrtime() > deadline)
            return false;
        uv_run(&loop, UV_RUN_ONCE);
    }
}

static bool wait_held(int n)
{
    uint64_t deadline = uv_hrtime() + 5000000000ull;
    while (nheld < n && uv_hrtime() < deadline)
        uv_run(&loop, UV_RUN_ONCE);
    return nheld >= n;
}

static void url(char *dst, size_t cap, const char *path)
{
    snprintf(dst, cap, "%s%s", base, path);
}

/* ---- tests ---------------------------------------------------------------------------------------------------- */

TEST(setup)
{
    uv_loop_init(&loop);
    port = pick_port(NULL);
    snprintf(base, sizeof base, "http://127.0.0.1:%d", port);
    sb_http_server_opts_t so = {.host = "127.0.0.1", .port = port, .max_header_bytes = 8192,
                                .max_body_bytes = 1 << 20, .header_timeout_s = 10, .idle_timeout_s = 60,
                                .handler = handler};
    is_int(sb_http_server_create(&loop, &so, &srv), 0, "test server listening on port %d", port);
    sb_http_client_opts_t co = {.max_host_connections = 4};
    is_int(sb_http_client_create(&loop, &co, &client), 0, "client created");
}

TEST(get)
{
    outcome_t o = {0};
    char u[128];
    url(u, sizeof u, "/echo?a=1&b=%20x");
    const char *headers[] = {"X-Test: one", NULL};
    sb_http_client_req_t q = {.url = u, .headers = headers};
    is_int(sb_http_client_request(client, &q, on_done, &o), 0, "GET accepted");
    is_int(o.calls, 0, "the callback is not called from inside the request function");
    ok(wait_all(&o, 1), "callback called");
    is_int(o.calls, 1, "once");
    is_int(o.err, 0, "no error (%s)", o.detail);
    is_int(o.status, 200, "status 200");
    is_str(o.body, "echo:", "empty body echoed");
    is_str(o.content_type, "text/plain; charset=utf-8", "content type of the answer");
    is_int(o.retry_after, -1, "no Retry-After");
    ok(o.sent, "sent");
    is_str(seen.method, "GET", "server saw GET");
    is_str(seen.target, "/echo?a=1&b=%20x", "and the target byte for byte");
    is_str(seen.x_test, "one", "and the extra header");
    is_str(seen.user_agent, "switchboard/0.1.0", "and our user agent");
}

TEST(resolve)
{
    sb_http_client_t *c;
    is_int(sb_http_client_create(&loop, NULL, &c), 0, "a client of its own (its connection is another host's)");
    outcome_t o = {0};
    char u[128];
    snprintf(u, sizeof u, "http://localhost:%d/echo", port);
    sb_http_client_req_t q = {.url = u};
    is_int(sb_http_client_request(c, &q, on_done, &o), 0, "GET by host name accepted");
    ok(wait_all(&o, 1), "called back");
    ok(o.err == 0 && o.status == 200, "localhost resolved (through curl's resolver) and answered (%s)", o.detail);
    sb_http_client_destroy(c);
}

TEST(post)
{
    outcome_t o = {0};
    char u[128];
    url(u, sizeof u, "/echo");
    char body[] = "To=%2B15550001111&Body=h%C3%A9llo+there";
    const char *headers[] = {"Content-Type: application/x-www-form-urlencoded", "X-Test: two", NULL};
    sb_http_client_req_t q = {.method = "POST", .url = u, .headers = headers, .body = sb_str(body, strlen(body))};
    is_int(sb_http_client_request(client, &q, on_done, &o), 0, "POST accepted");
    memset(body, '#', strlen(body)); /* the body is copied before the function returns */
    ok(wait_all(&o, 1) && o.err == 0 && o.status == 200, "answered 200 (%s)", o.detail);
    is_str(seen.method, "POST", "server saw POST");
    is_str(seen.body, "To=%2B15550001111&Body=h%C3%A9llo+there", "and the body, though the caller's copy changed");
    is_str(seen.content_type, "application/x-www-form-urlencoded", "and its content type");
    is_str(seen.x_test, "two", "and the extra header");
    is_str(seen.expect, "", "no Expect: 100-continue");
    is_str(o.body, "echo:To=%2B15550001111&Body=h%C3%A9llo+there", "response body");

    outcome_t p = {0};
    const char *jh[] = {"Content-Type: application/json", NULL};
    sb_http_client_req_t put = {.method = "PUT", .url = u, .headers = jh, .body = SB_STR("{\"a\":1}")};
    is_int(sb_http_client_request(client, &put, on_done, &p), 0, "PUT accepted");
    ok(wait_all(&p, 1) && p.status == 200, "answered");
    is_str(seen.method, "PUT", "server saw PUT");
    is_str(seen.body, "{\"a\":1}", "with its JSON body");
}

TEST(basic_auth)
{
    outcome_t o = {0};
    char u[128];
    url(u, sizeof u, "/echo");
    char cred[] = "AC0123456789abcdef:s3cr3t:with:colons";
    sb_http_client_req_t q = {.method = "POST", .url = u, .basic_auth = cred, .body = SB_STR("x=1")};
    is_int(sb_http_client_request(client, &q, on_done, &o), 0, "accepted");
    memset(cred, 0, sizeof cred);
    ok(wait_all(&o, 1) && o.status == 200, "answered");
    ok(strncmp(seen.authorization, "Basic ", 6) == 0, "server saw a Basic Authorization header");
    char dec[128];
    size_t n = 0;
    int rc = sb_codec_b64_decode(sb_str_cstr(seen.authorization + 6), SB_B64_STD, dec, sizeof dec - 1, &n);
    dec[rc == 0 ? n : 0] = '\0';
    is_str(dec, "AC0123456789abcdef:s3cr3t:with:colons", "carrying user:password");
}

TEST(retry_after)
{
    outcome_t a = {0}, b = {0};
    char u1[128], u2[128];
    url(u1, sizeof u1, "/429");
    url(u2, sizeof u2, "/503");
    sb_http_client_req_t q1 = {.method = "POST", .url = u1, .body = SB_STR("x")};
    sb_http_client_req_t q2 = {.url = u2};
    is_int(sb_http_client_request(client, &q1, on_done, &a), 0, "accepted");
    is_int(sb_http_client_request(client, &q2, on_done, &b), 0, "accepted");
    ok(wait_all(&a, 1) && wait_all(&b, 1), "both answered");
    is_int(a.err, 0, "a 429 is a response, not an error");
    is_int(a.status, 429, "status 429");
    is_int(a.retry_after, 7, "Retry-After: 7 -> 7 s");
    is_str(a.body, "{\"slow\":\"down\"}", "with its body");
    is_int(b.status, 503, "status 503");
    ok(b.retry_after >= 118 && b.retry_after <= 121, "Retry-After as an HTTP-date two minutes ahead -> %d s",
       b.retry_after);
}

TEST(timeout)
{
    outcome_t o = {0};
    char u[128];
    url(u, sizeof u, "/hold");
    sb_http_client_req_t q = {.url = u, .timeout_ms = 200};
    is_int(sb_http_client_request(client, &q, on_done, &o), 0, "accepted");
    ok(wait_all(&o, 1), "called back although the server never answered");
    is_int(o.err, SB_ETIMEDOUT, "SB_ETIMEDOUT (%s)", o.detail);
    is_int(o.status, 0, "no status");
    ok(o.sent, "the request had been sent");
    ok(o.elapsed_us >= 190000 && o.elapsed_us < 2000000, "after about 200 ms (%llu us)",
       (unsigned long long)o.elapsed_us);
    ok(o.detail[0] != '\0', "with a detail");
    is_int(nheld, 1, "the server holds the request");
    release_held(); /* its connection is gone: the answer is dropped */
    outcome_t p = {0};
    url(u, sizeof u, "/echo");
    sb_http_client_req_t q2 = {.url = u};
    sb_http_client_request(client, &q2, on_done, &p);
    ok(wait_all(&p, 1) && p.status == 200, "the client works afterwards");
}

TEST(refused)
{
    int fd = -1;
    int p = pick_port(&fd); /* bound, not listening: connecting is refused */
    char u[128];
    snprintf(u, sizeof u, "http://127.0.0.1:%d/x", p);
    outcome_t o = {0};
    sb_http_client_req_t q = {.method = "POST", .url = u, .body = SB_STR("a=b")};
    is_int(sb_http_client_request(client, &q, on_done, &o), 0, "accepted");
    ok(wait_all(&o, 1), "called back");
    is_int(o.calls, 1, "once");
    is_int(o.err, SB_EUNAVAIL, "SB_EUNAVAIL (%s)", o.detail);
    ok(!o.sent, "nothing was sent: a retry cannot duplicate");
    close(fd);
}

TEST(too_big)
{
    sb_http_client_t *small;
    sb_http_client_opts_t co = {.max_response_bytes = 1024};
    is_int(sb_http_client_create(&loop, &co, &small), 0, "client with a 1 KiB response limit");
    outcome_t o = {0};
    char u[128];
    url(u, sizeof u, "/big");
    sb_http_client_req_t q = {.url = u};
    sb_http_client_request(small, &q, on_done, &o);
    ok(wait_all(&o, 1), "called back");
    is_int(o.err, SB_E2BIG, "a 4 KiB body: SB_E2BIG (%s)", o.detail);
    sb_http_client_destroy(small);
}

TEST(bad_arguments)
{
    outcome_t o = {0};
    char u[128];
    url(u, sizeof u, "/echo");
    const char *crlf[] = {"X-Test: a\r\nX-Evil: b", NULL};
    const char *nocolon[] = {"X-Test", NULL};
    sb_http_client_req_t bad[] = {
        {.url = NULL},
        {.url = "ftp://127.0.0.1/x"},
        {.url = "not a url"},
        {.url = "/relative"},
        {.url = u, .method = "GE T"},
        {.url = u, .headers = crlf},
        {.url = u, .headers = nocolon},
        {.url = u, .basic_auth = "a:b\r\nX: y"},
    };
    int einval = 0;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        einval += sb_http_client_request(client, &bad[i], on_done, &o) == SB_EINVAL;
    is_int(einval, (int)(sizeof bad / sizeof bad[0]), "every bad request refused with SB_EINVAL");
    for (int i = 0; i < 5; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    is_int(o.calls, 0, "and no callback was ever called for them");
}

static int keepalive_calls, keepalive_ok;

static void on_keepalive(void *arg, const sb_http_client_res_t *res)
{
    (void)arg;
    keepalive_calls++;
    keepalive_ok += res->err == 0 && res->status == 200 && sb_str_eq_cstr(res->body, "echo:");
}

TEST(keepalive)
{
    sb_http_client_stats_t before, after;
    sb_http_client_get_stats(client, &before);
    char u[128];
    url(u, sizeof u, "/echo");
    sb_http_client_req_t q = {.url = u};
    int accepted = 0;
    for (int i = 0; i < 200; i++)
        accepted += sb_http_client_request(client, &q, on_keepalive, NULL) == 0;
    is_int(accepted, 200, "200 requests accepted at once");
    sb_http_client_stats_t mid;
    sb_http_client_get_stats(client, &mid);
    is_int(mid.in_flight, 200, "200 in flight");
    uint64_t deadline = uv_hrtime() + 10000000000ull;
    unsigned max_conns = 0;
    while (keepalive_calls < 200 && uv_hrtime() < deadline) {
        uv_run(&loop, UV_RUN_ONCE);
        if (sb_http_server_connections(srv) > max_conns)
            max_conns = sb_http_server_connections(srv);
    }
    is_int(keepalive_calls, 200, "every callback called");
    is_int(keepalive_ok, 200, "every one answered 200");
    sb_http_client_get_stats(client, &after);
    ok(after.connections_opened - before.connections_opened <= 4,
       "at most max_host_connections = 4 connections opened for them (%llu)",
       (unsigned long long)(after.connections_opened - before.connections_opened));
    ok(max_conns <= 5, "the server never saw more than 4 (+1 from earlier tests) at once (%u)", max_conns);
    is_int(after.in_flight, 0, "none in flight");
    is_int(after.requests - before.requests, 200, "200 requests counted");

    /* sequential requests reuse the idle connections: no new one */
    keepalive_calls = keepalive_ok = 0;
    for (int i = 0; i < 20; i++) {
        sb_http_client_request(client, &q, on_keepalive, NULL);
        while (keepalive_calls <= i && uv_hrtime() < deadline)
            uv_run(&loop, UV_RUN_ONCE);
    }
    sb_http_client_stats_t again;
    sb_http_client_get_stats(client, &again);
    is_int(keepalive_ok, 20, "20 sequential requests answered");
    is_int(again.connections_opened, after.connections_opened, "on kept-alive connections: none opened");
    ok(again.connections_open >= 1 && again.connections_open <= 4, "1..4 connections open, idle (%llu)",
       (unsigned long long)again.connections_open);
}

TEST(destroy_in_flight)
{
    sb_http_client_t *c2;
    is_int(sb_http_client_create(&loop, NULL, &c2), 0, "second client with defaults");
    enum { N = 5 };
    outcome_t o[N];
    memset(o, 0, sizeof o);
    char u[128];
    url(u, sizeof u, "/hold");
    sb_http_client_req_t q = {.url = u};
    for (int i = 0; i < N; i++)
        sb_http_client_request(c2, &q, on_done, &o[i]);
    ok(wait_held(N), "the server holds all %d requests", N);
    sb_http_client_stats_t st;
    sb_http_client_get_stats(c2, &st);
    is_int(st.in_flight, N, "%d in flight", N);
    is_int(st.connections_open, N, "on %d connections", N);
    sb_http_client_destroy(c2);
    int once = 0, canceled = 0;
    for (int i = 0; i < N; i++) {
        once += o[i].calls == 1;
        canceled += o[i].err == SB_ECANCELED;
    }
    is_int(once, N, "every callback called once, before destroy returned");
    is_int(canceled, N, "each with SB_ECANCELED");
    release_held();
    for (int i = 0; i < 20; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    once = 0;
    for (int i = 0; i < N; i++)
        once += o[i].calls == 1;
    is_int(once, N, "and never again");
}

static sb_http_client_t *c3;
static outcome_t c3_out[4];
static int c3_refused;

static void on_destroying(void *arg, const sb_http_client_res_t *res)
{
    on_done(arg, res);
    sb_http_client_destroy(c3);
    char u[128];
    url(u, sizeof u, "/echo");
    sb_http_client_req_t q = {.url = u};
    c3_refused = sb_http_client_request(c3, &q, on_done, &c3_out[3]);
    sb_http_client_destroy(c3); /* a second call from a callback does nothing */
}

TEST(destroy_from_callback)
{
    is_int(sb_http_client_create(&loop, NULL, &c3), 0, "third client");
    memset(c3_out, 0, sizeof c3_out);
    char u1[128], u2[128];
    url(u1, sizeof u1, "/echo");
    url(u2, sizeof u2, "/hold");
    sb_http_client_req_t fast = {.url = u1}, slow = {.url = u2};
    sb_http_client_request(c3, &slow, on_done, &c3_out[1]);
    sb_http_client_request(c3, &slow, on_done, &c3_out[2]);
    sb_http_client_request(c3, &fast, on_destroying, &c3_out[0]);
    ok(wait_all(c3_out, 3), "all three called back");
    is_int(c3_out[0].status, 200, "the first answered, and its callback destroyed the client");
    is_int(c3_refused, SB_ECLOSED, "a request from that callback is refused with SB_ECLOSED");
    ok(c3_out[1].calls == 1 && c3_out[1].err == SB_ECANCELED && c3_out[2].calls == 1 &&
           c3_out[2].err == SB_ECANCELED,
       "the two still in flight: canceled, once each");
    is_int(c3_out[3].calls, 0, "the refused request's callback never runs");
}

TEST(teardown)
{
    sb_http_client_destroy(client);
    for (int i = 0; i < 10; i++) /* requests canceled after they were written may still reach the server */
        uv_run(&loop, UV_RUN_NOWAIT);
    release_held();
    sb_http_server_close(srv);
    int rc = uv_run(&loop, UV_RUN_DEFAULT);
    is_int(rc, 0, "the loop ends: every handle closed");
    is_int(uv_loop_close(&loop), 0, "uv_loop_close finds nothing open");
}

int main(void)
{
    RUN(setup);
    RUN(get);
    RUN(resolve);
    RUN(post);
    RUN(basic_auth);
    RUN(retry_after);
    RUN(timeout);
    RUN(refused);
    RUN(too_big);
    RUN(bad_arguments);
    RUN(keepalive);
    RUN(destroy_in_flight);
    RUN(destroy_from_callback);
    RUN(teardown);
    return tap_done();
}
