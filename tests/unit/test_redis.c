/* Tests of the Redis adapter's connection handling (adapters/redis.c) against a fake server on the same libuv loop:
 * a server that resets the connection while a command waits for its answer (what Redis restarted under load does:
 * POLLERR on the client's socket) must fail that command as lost, at once, and the adapter must see the connection
 * down and connect again. With the poll glue Debian's hiredis ships, the command waited for its timeout instead,
 * and the connection stayed "up" for good. */
#include "adapters/redis.h"
#include "proto/err.h"
#include "tests/tap.h"
#include "tests/unit/port.h"

#include <string.h>

static uv_loop_t loop;
static uv_tcp_t listener;
static uv_tcp_t peers[4];
static int accepted, port;
static char rbuf[4096];
static bool reset_on_read = true;

static void peer_closed(uv_handle_t *h)
{
    (void)h;
}

static void peer_alloc(uv_handle_t *h, size_t n, uv_buf_t *b)
{
    (void)h, (void)n;
    *b = uv_buf_init(rbuf, sizeof rbuf);
}

/* The first command that arrives is never answered: the connection is reset instead (RST, not FIN). */
static void peer_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    (void)b;
    if (n > 0 && reset_on_read) {
        reset_on_read = false;
        uv_read_stop(s);
        uv_tcp_close_reset((uv_tcp_t *)s, peer_closed);
    } else if (n < 0 && !uv_is_closing((uv_handle_t *)s)) {
        uv_close((uv_handle_t *)s, peer_closed);
    }
}

static void on_peer(uv_stream_t *server, int status)
{
    if (status < 0 || accepted == 4)
        return;
    uv_tcp_t *p = &peers[accepted++];
    uv_tcp_init(&loop, p);
    if (uv_accept(server, (uv_stream_t *)p) == 0)
        uv_read_start((uv_stream_t *)p, peer_alloc, peer_read);
}

static int ping_err = 1;
static const char *ping_detail;

static void pinged(void *arg, int err, const char *detail)
{
    (void)arg;
    ping_err = err;
    ping_detail = detail;
}

static void run_until(bool (*cond)(void), uint64_t ms)
{
    uint64_t end = uv_hrtime() + ms * 1000000ull;
    while (!cond() && uv_hrtime() < end)
        uv_run(&loop, UV_RUN_ONCE);
}

static sb_redis_t *r;
static bool connected(void) { return sb_redis_connected(r); }
static bool ping_done(void) { return ping_err != 1; }
static bool reconnected(void) { return accepted == 2 && sb_redis_connected(r); }

TEST(reset_while_waiting)
{
    uv_loop_init(&loop);
    port = pick_port(NULL);
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", port, &a);
    uv_tcp_init(&loop, &listener);
    uv_tcp_bind(&listener, (const struct sockaddr *)&a, 0);
    is_int(uv_listen((uv_stream_t *)&listener, 8, on_peer), 0, "fake server listening on %d", port);

    r = sb_redis_create(&loop, "127.0.0.1", port, 0);
    run_until(connected, 3000);
    ok(sb_redis_connected(r), "connected");
    uint64_t t0 = uv_hrtime();
    is_int(sb_redis_ping(r, 3000, pinged, NULL), 0, "PING sent");
    run_until(ping_done, 5000);
    double ms = (double)(uv_hrtime() - t0) / 1e6;
    ok(ping_err == SB_EUNAVAIL && ping_detail && strcmp(ping_detail, "connection lost") == 0,
       "the reset fails the waiting command as lost (%s, after %.0f ms)", ping_detail ? ping_detail : "-", ms);
    ok(ms < 1000, "at once, not at its timeout (%.0f ms)", ms);
    run_until(reconnected, 3000);
    ok(reconnected(), "the adapter saw the connection down and connected again");

    sb_redis_close(r);
    for (int i = 0; i < accepted; i++)
        if (!uv_is_closing((uv_handle_t *)&peers[i]))
            uv_close((uv_handle_t *)&peers[i], peer_closed);
    uv_close((uv_handle_t *)&listener, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    is_int(uv_loop_close(&loop), 0, "no handle left open");
}

int main(void)
{
    RUN(reset_while_waiting);
    return tap_done();
}
