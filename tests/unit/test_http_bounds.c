/* Tests of the HTTP server's bounds and held answers (adapters/net/http_server.c), with a blocking client on a thread of
 * its own and the server on a private loop in the main thread:
 *   - a body larger than the input buffer's 1 MiB, sent in small writes, reaches the handler whole (it moves to the
 *     request's own buffer as it arrives), Content-Length and chunked alike;
 *   - an answer held back with sb_http_respond_later arrives after its delay, and the pipelined request behind it
 *     waits for it: answers stay in order;
 *   - a request held back when the server closes is freed with it (ASan's leak check), and no handle stays open;
 *   - an upgrade over HTTP/1.0 is refused with 426 by sb_http_upgrade itself. */
#include "adapters/net/http_server.h"
#include "tests/tap.h"
#include "tests/unit/port.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BIG (3 * 1024 * 1024)

static uv_loop_t loop;
static sb_http_server_t *srv;
static int port;
static atomic_bool client_done;

static const char head[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: test\r\nConnection: Upgrade\r\n\r\n";

static size_t on_data(void *arg, sb_http_stream_t *st, char *p, size_t len)
{
    (void)arg, (void)st, (void)p;
    return len;
}
static void on_drain(void *arg, sb_http_stream_t *st)
{
    (void)arg;
    sb_http_stream_close(st);
}
static void on_close(void *arg, sb_http_stream_t *st)
{
    (void)arg, (void)st;
}
static const sb_http_stream_ops_t ops = {on_data, on_drain, on_close};

/* /body answers the body's length and a checksum; /slow holds its answer 300 ms; /hold holds it for a minute (the
 * server closes first); /up upgrades. */
static void handler(void *arg, sb_http_req_t *req)
{
    (void)arg;
    sb_str_t path = sb_http_req_path(req), body = sb_http_req_body(req);
    char out[64];
    if (sb_str_eq_cstr(path, "/body")) {
        unsigned long sum = 0;
        for (size_t i = 0; i < body.len; i++)
            sum = sum * 31 + (unsigned char)body.p[i];
        int n = snprintf(out, sizeof out, "%zu %lu", body.len, sum);
        sb_http_respond(req, 200, "text/plain", out, (size_t)n);
    } else if (sb_str_eq_cstr(path, "/slow")) {
        sb_http_respond_later(req, 300, 200, "text/plain", "x-held: yes\r\n", "slow", 4);
    } else if (sb_str_eq_cstr(path, "/hold")) {
        sb_http_respond_later(req, 60000, 200, "text/plain", NULL, "never", 5);
    } else if (sb_str_eq_cstr(path, "/up")) {
        sb_http_upgrade(req, head, sizeof head - 1, &ops, NULL);
    } else {
        sb_http_respond(req, 200, "text/plain", "fast", 4);
    }
}

/* ---- the client thread ------------------------------------------------------------------------------------------
 */

static int dial(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Sends len bytes in pieces of at most piece bytes. */
static void send_all(int fd, const char *p, size_t len, size_t piece)
{
    while (len) {
        ssize_t n = send(fd, p, len < piece ? len : piece, MSG_NOSIGNAL);
        if (n <= 0)
            return;
        p += n;
        len -= (size_t)n;
    }
}

/* Reads until want bytes of answers arrived, or EOF / timeout. */
static size_t recv_some(int fd, char *buf, size_t cap, const char *until)
{
    size_t n = 0;
    while (n < cap - 1) {
        ssize_t r = recv(fd, buf + n, cap - 1 - n, 0);
        if (r <= 0)
            break;
        n += (size_t)r;
        buf[n] = '\0';
        if (until && strstr(buf, until))
            break;
    }
    buf[n] = '\0';
    return n;
}

static char answer_cl[512], answer_chunked[512], answer_order[1024], answer_up[512];
static double slow_ms;
static unsigned long want_sum;

static void *client(void *arg)
{
    (void)arg;
    char *body = malloc(BIG);
    for (size_t i = 0; i < BIG; i++)
        body[i] = (char)('a' + i % 23);
    unsigned long sum = 0;
    for (size_t i = 0; i < BIG; i++)
        sum = sum * 31 + (unsigned char)body[i];
    want_sum = sum;

    int fd = dial();
    char h[256];
    int n = snprintf(h, sizeof h, "POST /body HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n", BIG);
    send_all(fd, h, (size_t)n, (size_t)n);
    send_all(fd, body, BIG, 16384);
    recv_some(fd, answer_cl, sizeof answer_cl, "\r\n\r\n");
    close(fd);

    fd = dial();
    const char ch[] = "POST /body HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";
    send_all(fd, ch, sizeof ch - 1, sizeof ch);
    for (size_t at = 0; at < BIG; at += 10000) {
        size_t k = BIG - at < 10000 ? BIG - at : 10000;
        n = snprintf(h, sizeof h, "%zx\r\n", k);
        send_all(fd, h, (size_t)n, (size_t)n);
        send_all(fd, body + at, k, k);
        send_all(fd, "\r\n", 2, 2);
    }
    send_all(fd, "0\r\n\r\n", 5, 5);
    recv_some(fd, answer_chunked, sizeof answer_chunked, "\r\n\r\n");
    close(fd);
    free(body);

    fd = dial();
    const char two[] = "GET /slow HTTP/1.1\r\nHost: t\r\n\r\nGET /fast HTTP/1.1\r\nHost: t\r\n\r\n";
    uint64_t t0 = uv_hrtime();
    send_all(fd, two, sizeof two - 1, sizeof two);
    recv_some(fd, answer_order, sizeof answer_order, "fast");
    slow_ms = (double)(uv_hrtime() - t0) / 1e6;
    close(fd);

    fd = dial();
    const char up10[] = "GET /up HTTP/1.0\r\nHost: t\r\nUpgrade: test\r\nConnection: Upgrade\r\n\r\n";
    send_all(fd, up10, sizeof up10 - 1, sizeof up10);
    recv_some(fd, answer_up, sizeof answer_up, "}\n");
    close(fd);

    fd = dial(); /* left held when the server closes */
    const char hold[] = "GET /hold HTTP/1.1\r\nHost: t\r\n\r\n";
    send_all(fd, hold, sizeof hold - 1, sizeof hold);
    usleep(200 * 1000);
    atomic_store(&client_done, true);
    usleep(200 * 1000);
    close(fd);
    return NULL;
}

/* ---- tests ---------------------------------------------------------------------------------------------------- */

TEST(bounds_and_held_answers)
{
    uv_loop_init(&loop);
    port = pick_port(NULL);
    sb_http_server_opts_t so = {.host = "127.0.0.1",
                                .port = port,
                                .max_header_bytes = 8192,
                                .max_body_bytes = 4 * 1024 * 1024,
                                .header_timeout_s = 10,
                                .idle_timeout_s = 10,
                                .handler = handler};
    is_int(sb_http_server_create(&loop, &so, &srv), 0, "server listening on port %d", port);
    pthread_t t;
    pthread_create(&t, NULL, client, NULL);
    uint64_t end = uv_hrtime() + 30000000000ull;
    while (!atomic_load(&client_done) && uv_hrtime() < end)
        uv_run(&loop, UV_RUN_ONCE);

    char want[64];
    snprintf(want, sizeof want, "\r\n\r\n%d %lu", BIG, want_sum);
    ok(strstr(answer_cl, want) != NULL, "a 3 MiB body in 16 KiB writes reaches the handler whole");
    ok(strstr(answer_chunked, want) != NULL, "and chunked");
    const char *slow = strstr(answer_order, "slow"), *fast = strstr(answer_order, "fast");
    ok(slow && fast && slow < fast, "the held answer comes first, the pipelined one after it");
    ok(strstr(answer_order, "x-held: yes\r\n") != NULL, "with its headers");
    ok(slow_ms >= 250, "after its delay (%.0f ms)", slow_ms);
    ok(strncmp(answer_up, "HTTP/1.1 426 ", 13) == 0, "an upgrade over HTTP/1.0: 426");

    sb_http_server_close(srv); /* the /hold request is still held */
    uv_run(&loop, UV_RUN_DEFAULT);
    pthread_join(t, NULL);
    is_int(uv_loop_close(&loop), 0, "no handle left open (the held request went with the server)");
}

int main(void)
{
    RUN(bounds_and_held_answers);
    return tap_done();
}
