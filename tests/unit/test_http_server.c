/* Tests of upgraded streams in the HTTP server (adapters/net/http_server.c), on a private libuv loop with the client on
 * the same loop: the frames written during one loop turn are held (sb_http_stream_queued counts them) and reach
 * the peer together, in order, when the turn ends; a frame for another stream sends them at once (the server
 * gathers one stream's frames at a time); a write made from a timer reaches the kernel before the loop
 * blocks again; a close sends what was written before it, then ends the stream. The loop must end with no handle
 * open. */
#include "adapters/net/http_server.h"
#include "tests/tap.h"
#include "tests/unit/port.h"

#include <stdlib.h>
#include <string.h>

static uv_loop_t loop;
static sb_http_server_t *srv;
static int port;
static sb_http_stream_t *stream, *stream2;
static int closed, closed2;
static size_t queued_after[3];

static const char head[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: test\r\nConnection: Upgrade\r\n\r\n";

/* ---- the server side ------------------------------------------------------------------------------------------ */

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
    (void)st;
    if (arg) { /* the second stream's */
        closed2++;
        stream2 = NULL;
        return;
    }
    closed++;
    stream = NULL;
}

static const sb_http_stream_ops_t ops = {on_data, on_drain, on_close};

static void write_str(const char *s)
{
    uv_buf_t b = uv_buf_init((char *)s, (unsigned)strlen(s));
    sb_http_stream_write(stream, &b, 1);
}

/* Upgrades and writes three frames in the same turn, noting what is queued after each; a second connection is only
 * upgraded. */
static void handler(void *arg, sb_http_req_t *req)
{
    (void)arg;
    if (stream) {
        stream2 = sb_http_upgrade(req, head, sizeof head - 1, &ops, &stream2);
        return;
    }
    stream = sb_http_upgrade(req, head, sizeof head - 1, &ops, NULL);
    const char *frames[3] = {"a", "bb", "ccc"};
    for (int i = 0; i < 3 && stream; i++) {
        write_str(frames[i]);
        queued_after[i] = sb_http_stream_queued(stream);
    }
}

/* ---- the client side ------------------------------------------------------------------------------------------ */

static uv_tcp_t cli;
static uv_connect_t connecting;
static uv_write_t writing;
static char got[4096];
static size_t ngot;
static bool eof;
static unsigned turn, got_turn; /* loop turns run by the test; the turn of the last read */

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    (void)h, (void)hint;
    *b = uv_buf_init(got + ngot, (unsigned)(sizeof got - 1 - ngot));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    (void)s, (void)b;
    if (n > 0) {
        ngot += (size_t)n;
        got[ngot] = '\0';
        got_turn = turn;
    } else if (n < 0) {
        eof = true;
        uv_read_stop(s);
    }
}

/* Asks for the upgrade on a connected client, and reads what comes with alloc and read. */
static void send_upgrade(uv_stream_t *h, uv_write_t *w, uv_alloc_cb alloc, uv_read_cb read)
{
    static char req[] = "GET /stream HTTP/1.1\r\nHost: test\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\n";
    uv_buf_t b = uv_buf_init(req, sizeof req - 1);
    uv_write(w, h, &b, 1, NULL);
    uv_read_start(h, alloc, read);
}

static void on_connect(uv_connect_t *c, int status)
{
    if (status >= 0)
        send_upgrade(c->handle, &writing, on_alloc, on_read);
}

/* Runs the loop a turn at a time until *flag is set or a second passed. */
static void run_until(const bool *flag)
{
    uint64_t end = uv_hrtime() + 1000000000ull;
    while (!*flag && uv_hrtime() < end)
        uv_run(&loop, UV_RUN_NOWAIT);
}

/* ---- tests ---------------------------------------------------------------------------------------------------- */

static bool have(const char *want)
{
    return ngot == strlen(want) && memcmp(got, want, ngot) == 0;
}

static bool seen_abc;

static void check_abc(uv_idle_t *h)
{
    (void)h;
    seen_abc = ngot >= sizeof head - 1 + 6;
}

TEST(setup)
{
    uv_loop_init(&loop);
    port = pick_port(NULL);
    sb_http_server_opts_t so = {.host = "127.0.0.1", .port = port, .max_header_bytes = 8192,
                                .max_body_bytes = 1 << 20, .header_timeout_s = 10, .idle_timeout_s = 10,
                                .handler = handler};
    is_int(sb_http_server_create(&loop, &so, &srv), 0, "server listening on port %d", port);
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", port, &a);
    uv_tcp_init(&loop, &cli);
    is_int(uv_tcp_connect(&connecting, &cli, (const struct sockaddr *)&a, on_connect), 0, "client connecting");
}

TEST(one_turn_one_write)
{
    uv_idle_t idle;
    uv_idle_init(&loop, &idle);
    uv_idle_start(&idle, check_abc);
    run_until(&seen_abc);
    uv_close((uv_handle_t *)&idle, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    ok(stream != NULL, "upgraded");
    is_int((long long)queued_after[0], 1, "the first frame waits for the end of the turn");
    is_int((long long)queued_after[1], 3, "the second joins it");
    is_int((long long)queued_after[2], 6, "the third too");
    char want[256];
    snprintf(want, sizeof want, "%sabbccc", head);
    ok(have(want), "the peer got the head, then the frames in order");
    is_int(stream ? (long long)sb_http_stream_queued(stream) : -1, 0, "nothing queued once the turn ended");
}

static unsigned written_turn;

static void write_later(uv_timer_t *t)
{
    (void)t;
    write_str("d");
    written_turn = turn;
}

static void nothing(uv_timer_t *t)
{
    (void)t;
}

/* A timer's write must not wait for other I/O: corked until after the poll phase, it would leave only when
 * something else woke the loop (here the server's sweep timer, or the guard). It must reach the peer before the
 * loop blocks again. */
TEST(timer_write_goes_before_the_loop_blocks)
{
    uv_timer_t t, guard;
    uv_timer_init(&loop, &t);
    uv_timer_init(&loop, &guard);
    uv_timer_start(&t, write_later, 10, 0);
    uv_timer_start(&guard, nothing, 2000, 0);
    uint64_t end = uv_hrtime() + 3000000000ull;
    while (!(ngot && got[ngot - 1] == 'd') && uv_hrtime() < end) {
        turn++;
        uv_run(&loop, UV_RUN_ONCE);
    }
    ok(ngot && got[ngot - 1] == 'd', "the write arrived");
    /* UV_RUN_ONCE runs due timers at the end of its turn as well, so "before the loop blocks" is the poll of the
     * turn that wrote it or of the next one */
    ok(got_turn <= written_turn + 1, "by the next poll (written in turn %u, read in turn %u)", written_turn, got_turn);
    uv_close((uv_handle_t *)&t, NULL);
    uv_close((uv_handle_t *)&guard, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
}

/* ---- a second stream: frames written to one stream in a row go together, and a frame for another sends them ---- */

static uv_tcp_t cli2;
static uv_connect_t connecting2;
static uv_write_t writing2;
static char got2[256];
static size_t ngot2;
static size_t q_after_b[2], q_after_z[2];

static void on_alloc2(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    (void)h, (void)hint;
    *b = uv_buf_init(got2 + ngot2, (unsigned)(sizeof got2 - 1 - ngot2));
}

static void on_read2(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    (void)b;
    if (n > 0)
        ngot2 += (size_t)n;
    else if (n < 0)
        uv_read_stop(s);
}

static void on_connect2(uv_connect_t *c, int status)
{
    if (status >= 0)
        send_upgrade(c->handle, &writing2, on_alloc2, on_read2);
}

static bool upgraded2, interleaved;

static void check_upgraded2(uv_idle_t *h)
{
    (void)h;
    upgraded2 = stream2 && ngot2 >= sizeof head - 1;
}

/* One turn: "x" to the first stream, "yy" to the second, "z" to the first again. */
static void write_interleaved(uv_timer_t *t)
{
    (void)t;
    uv_buf_t x = uv_buf_init("x", 1), y = uv_buf_init("yy", 2), z = uv_buf_init("z", 1);
    sb_http_stream_write(stream, &x, 1);
    sb_http_stream_write(stream2, &y, 1);
    q_after_b[0] = sb_http_stream_queued(stream);
    q_after_b[1] = sb_http_stream_queued(stream2);
    sb_http_stream_write(stream, &z, 1);
    q_after_z[0] = sb_http_stream_queued(stream);
    q_after_z[1] = sb_http_stream_queued(stream2);
    interleaved = true;
}

TEST(another_stream_sends_the_gathered_frames)
{
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", port, &a);
    uv_tcp_init(&loop, &cli2);
    uv_tcp_connect(&connecting2, &cli2, (const struct sockaddr *)&a, on_connect2);
    uv_idle_t idle;
    uv_idle_init(&loop, &idle);
    uv_idle_start(&idle, check_upgraded2);
    run_until(&upgraded2);
    uv_close((uv_handle_t *)&idle, NULL);
    ok(upgraded2, "a second stream upgraded");
    size_t before = ngot;
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    uv_timer_start(&t, write_interleaved, 1, 0);
    run_until(&interleaved);
    is_int((long long)q_after_b[0], 0, "a frame for the second stream sends the first stream's gathered frame");
    is_int((long long)q_after_b[1], 2, "and gathers its own");
    ok(q_after_z[0] == 1 && q_after_z[1] == 0, "back to the first: the second's frame goes (queued %zu and %zu)",
       q_after_z[0], q_after_z[1]);
    uint64_t end = uv_hrtime() + 1000000000ull;
    while ((ngot < before + 2 || ngot2 < sizeof head - 1 + 2) && uv_hrtime() < end)
        uv_run(&loop, UV_RUN_NOWAIT);
    ok(ngot == before + 2 && memcmp(got + before, "xz", 2) == 0, "the first peer got x then z");
    ok(ngot2 == sizeof head - 1 + 2 && memcmp(got2 + sizeof head - 1, "yy", 2) == 0, "the second peer got yy");
    uv_close((uv_handle_t *)&t, NULL);
    uv_close((uv_handle_t *)&cli2, NULL);
    end = uv_hrtime() + 1000000000ull;
    while (closed2 == 0 && uv_hrtime() < end)
        uv_run(&loop, UV_RUN_NOWAIT);
    is_int(closed2, 1, "the second stream closed when its peer left");
}

static void write_and_close(uv_timer_t *t)
{
    (void)t;
    write_str("e");
    sb_http_stream_close(stream);
}

TEST(close_sends_what_came_before)
{
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    uv_timer_start(&t, write_and_close, 1, 0);
    run_until(&eof);
    ok(eof, "the stream ended");
    ok(ngot > 0 && got[ngot - 1] == 'e', "after the last frame written before the close");
    uv_close((uv_handle_t *)&t, NULL);
    uv_close((uv_handle_t *)&cli, NULL);
    uint64_t end = uv_hrtime() + 1000000000ull;
    while (closed == 0 && uv_hrtime() < end)
        uv_run(&loop, UV_RUN_NOWAIT);
    is_int(closed, 1, "on_close once");
}

TEST(teardown)
{
    sb_http_server_close(srv);
    uv_run(&loop, UV_RUN_DEFAULT);
    is_int(uv_loop_close(&loop), 0, "no handle left open");
}

int main(void)
{
    RUN(setup);
    RUN(one_turn_one_write);
    RUN(timer_write_goes_before_the_loop_blocks);
    RUN(another_stream_sends_the_gathered_frames);
    RUN(close_sends_what_came_before);
    RUN(teardown);
    return tap_done();
}
