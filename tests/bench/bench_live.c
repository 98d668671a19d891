/* bench_live — webhook-to-inbox latency under load (a load generator for the live inbox), and, in its second
 * mode, end-to-end sends from the REST API to the mock provider.
 *
 *   bench_live PORT SETUP_FILE CLIENTS_PER_TENANT RATE SECONDS
 *   bench_live PORT SETUP_FILE 0 RATE SECONDS MOCK_PORT      (sends: POST /v1/messages over every channel in turn)
 *
 * In the second mode each message's body carries the monotonic time its request was written; after the run the
 * mock's records (its arrival times, on the same clock) give one accept-to-provider latency sample per message, and
 * the spread of those arrivals the rate at which the provider was reached.
 *
 * SETUP_FILE has one line per tenant: "<api key> <channel id> <channel number> <auth token>" (tests/bench/run.sh
 * creates them through the admin API). The program opens CLIENTS_PER_TENANT live inbox WebSockets per tenant, waits
 * until every one is welcomed, then sends signed Twilio inbound-SMS webhooks at RATE per second for SECONDS,
 * spread over the tenants in turn, pipelined over HTTP_CONNS keep-alive connections. Each webhook's Body carries the
 * monotonic time it was written; each message.created that reaches a client yields one latency sample (receive
 * time minus that). It prints the sample count and p50/p99/max, how many webhooks were acknowledged with 200, and
 * the request-to-answer latency of those answers. A second of the same traffic before the run warms the gateway up
 * (its channel caches, prepared statements and their plans); it is not counted.
 *
 * One thread, one libuv loop, our own code for the rest (HMAC-SHA1, base64): nothing here is the gateway's I/O
 * code, only its pure helpers. Runs beside the gateway on the same cores, so its own cost is part of the figure. */
#include "tests/bench/loadkit.h"

#include "proto/mem.h"
#include "proto/str.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#define HTTP_CONNS 128 /* requests spread round-robin: few connections would queue them behind each other */
#define MAX_TENANTS 4096

typedef struct tenant {
    char key[128], channel[32], number[32], token[128];
} tenant_t;

typedef struct wsc {
    uv_tcp_t tcp;
    sb_buf_t in;
    int tenant;
    int state; /* 0 handshake, 1 waiting welcome, 2 live */
} wsc_t;

#define IN_FLIGHT 4096 /* requests written and not yet answered, per connection */

typedef struct httpc {
    uv_tcp_t tcp;
    sb_buf_t in;
    bool up;
    uint64_t written[IN_FLIGHT]; /* uv_hrtime() each request in flight was written, oldest at [answered % ...] */
    uint64_t requests, answered;
} httpc_t;

static uv_loop_t *loop;
static int port, ntenants, per_tenant, rate, seconds;
static tenant_t tenants[MAX_TENANTS];
static wsc_t *clients;
static int nclients, welcomed, connected_http;
static httpc_t http[HTTP_CONNS];
static uint64_t t_start, sent, acked, not_ok, warm_acked;
typedef struct sampleset {
    uint64_t *v; /* ns */
    size_t n, cap;
} sampleset_t;

static sampleset_t delivered, acks; /* webhook-to-inbox (or accept-to-provider); request-to-answer */
static uv_timer_t tick, finish;
#define WARM_UP (1ull << 40) /* request numbers of the warm-up, apart from the run's */
#define WARM_UP_MS 1000
static uint64_t t_warm, warm_sent;
static int mock_port; /* sends mode when not 0 */

static void die(const char *what)
{
    fprintf(stderr, "bench_live: %s\n", what);
    exit(1);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    sb_buf_t *in = h->type == UV_TCP && ((uv_tcp_t *)h)->data ? ((uv_tcp_t *)h)->data : NULL;
    (void)suggested;
    sb_buf_reserve(in, 65536);
    *b = uv_buf_init(in->p + in->len, 65536);
}

static void write_copy(uv_stream_t *s, const char *p, size_t n)
{
    if (lk_write_copy(s, p, n) < 0)
        die("write failed");
}

/* ---- inbox clients -------------------------------------------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b);

static void sort(sampleset_t *set)
{
    qsort(set->v, set->n, sizeof *set->v, cmp_u64);
}

/* The p-th percentile (100: the maximum) of a sorted set, in ms; 0 when empty. */
static double pct(const sampleset_t *set, int p)
{
    if (!set->n)
        return 0;
    size_t i = p >= 100 ? set->n - 1 : set->n * (size_t)p / 100;
    return (double)set->v[i] / 1e6;
}

static void record(sampleset_t *set, uint64_t sample)
{
    if (set->n == set->cap) {
        set->cap = set->cap ? set->cap * 2 : 1 << 16;
        set->v = sb_realloc(set->v, set->cap * sizeof *set->v);
    }
    set->v[set->n++] = sample;
}

/* One server frame's payload: a welcome, or an event whose message.created body holds the send time. */
static void on_frame(void *arg, int opcode, const char *p, size_t n)
{
    wsc_t *c = arg;
    uint64_t now = uv_hrtime();
    if (opcode != 1)
        return;
    if (c->state == 1) {
        if (n > 14 && memcmp(p, "{\"op\":\"welcome", 14) == 0) {
            c->state = 2;
            welcomed++;
        } else {
            die("no welcome (is the API key right?)");
        }
        return;
    }
    static const char created[] = "\"type\":\"message.created\"", body[] = "\"body\":\"bench ";
    if (!memmem(p, n, created, sizeof created - 1))
        return;
    const char *b = memmem(p, n, body, sizeof body - 1);
    if (!b)
        return;
    uint64_t at = strtoull(b + sizeof body - 1, NULL, 10);
    if (t_start && at >= t_start) /* not a warm-up webhook */
        record(&delivered, now - at);
}

static void ws_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    wsc_t *c = (wsc_t *)s;
    (void)buf;
    if (nread < 0)
        die("an inbox client was disconnected");
    c->in.len += (size_t)nread;
    size_t off = 0;
    if (c->state == 0) {
        long head = lk_ws_handshake(c->in.p, c->in.len);
        if (head == 0)
            return;
        if (head < 0)
            die("handshake refused");
        off = (size_t)head;
        c->state = 1;
        char hello[256];
        snprintf(hello, sizeof hello, "{\"op\":\"hello\",\"token\":\"%s\"}", tenants[c->tenant].key);
        unsigned char frame[300];
        write_copy(s, (char *)frame, lk_ws_text(frame, hello));
    }
    off += lk_ws_frames(c->in.p + off, c->in.len - off, on_frame, c);
    memmove(c->in.p, c->in.p + off, c->in.len - off);
    c->in.len -= off;
}

static void ws_connected(uv_connect_t *req, int status)
{
    wsc_t *c = req->data;
    free(req);
    if (status < 0)
        die("cannot connect an inbox client");
    char head[256];
    int n = lk_inbox_upgrade(head, sizeof head, port);
    write_copy((uv_stream_t *)&c->tcp, head, (size_t)n);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, ws_read);
}

/* ---- webhooks ------------------------------------------------------------------------------------------------- */

static void http_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    httpc_t *c = (httpc_t *)s;
    (void)buf;
    if (nread < 0)
        die("a webhook connection was closed");
    c->in.len += (size_t)nread;
    /* count whole responses: each is a head with content-length, then that many bytes */
    size_t off = 0;
    for (;;) {
        char *end = memmem(c->in.p + off, c->in.len - off, "\r\n\r\n", 4);
        if (!end)
            break;
        const char *cl = memmem(c->in.p + off, (size_t)(end - c->in.p) - off, "content-length: ", 16);
        size_t body = cl ? strtoul(cl + 16, NULL, 10) : 0;
        size_t total = (size_t)(end + 4 - c->in.p) - off + body;
        if (c->in.len - off < total)
            break;
        uint64_t written = c->answered < c->requests ? c->written[c->answered++ % IN_FLIGHT] : 0;
        if (!written) /* a warm-up request's answer */
            warm_acked++;
        else if (record(&acks, uv_hrtime() - written),
                 memcmp(c->in.p + off, "HTTP/1.1 200", 12) == 0 || memcmp(c->in.p + off, "HTTP/1.1 202", 12) == 0)
            acked++;
        else
            not_ok++;
        off += total;
    }
    memmove(c->in.p, c->in.p + off, c->in.len - off);
    c->in.len -= off;
}

static void http_connected(uv_connect_t *req, int status)
{
    httpc_t *c = req->data;
    free(req);
    if (status < 0)
        die("cannot connect a webhook connection");
    c->up = true;
    connected_http++;
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, http_read);
}

/* Writes one request on c, noting when (a connection with IN_FLIGHT unanswered requests is a stalled run). */
static void http_write(httpc_t *c, const sb_buf_t *req)
{
    if (c->requests - c->answered == IN_FLIGHT)
        die("a webhook connection has too many requests unanswered");
    c->written[c->requests++ % IN_FLIGHT] = t_start ? uv_hrtime() : 0; /* 0: warm-up */
    write_copy((uv_stream_t *)&c->tcp, req->p, req->len);
}

/* Writes webhook number i: tenant i mod ntenants, Body "bench <send time ns>", signed like Twilio. */
static void send_webhook(uint64_t i)
{
    const tenant_t *t = &tenants[i % (uint64_t)ntenants];
    char sid[40], body_text[48];
    snprintf(sid, sizeof sid, "SM%08llx%024llx", (unsigned long long)(t_start & 0xffffffff), (unsigned long long)i);
    snprintf(body_text, sizeof body_text, "bench %llu", (unsigned long long)uv_hrtime());
    sb_buf_t req;
    sb_buf_init(&req);
    lk_twilio_sms(&req, port, t->channel, t->number, t->token, sid, "+14155550100", body_text);
    http_write(&http[i % HTTP_CONNS], &req);
    sb_buf_cleanup(&req);
}

/* Sends mode: message number i, on channel i mod channels, its body the time it is written. */
static void send_message(uint64_t i)
{
    const tenant_t *t = &tenants[i % (uint64_t)ntenants];
    sb_buf_t body, req;
    sb_buf_init(&body);
    sb_buf_init(&req);
    sb_buf_printf(&body, "{\"channel_id\":\"%s\",\"to\":\"+14155550123\",\"body\":\"bench %llu\"}", t->channel,
                  (unsigned long long)uv_hrtime());
    sb_buf_printf(&req,
                  "POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAuthorization: Bearer %s\r\n"
                  "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                  port, t->key, body.len, sb_buf_cstr(&body));
    http_write(&http[i % HTTP_CONNS], &req);
    sb_buf_cleanup(&body);
    sb_buf_cleanup(&req);
}

/* A blocking GET of the mock's control API (after the loop ended); the body, or NULL. Caller frees. */
static char *mock_get(const char *path)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)mock_port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0)
        die("cannot reach the mock provider");
    char head[256];
    int n = snprintf(head, sizeof head, "GET %s HTTP/1.1\r\nHost: mock\r\nConnection: close\r\n\r\n", path);
    if (write(fd, head, (size_t)n) != n)
        die("cannot ask the mock provider");
    sb_buf_t in;
    sb_buf_init(&in);
    for (;;) {
        sb_buf_reserve(&in, 65536);
        ssize_t r = read(fd, in.p + in.len, 65536);
        if (r <= 0)
            break;
        in.len += (size_t)r;
    }
    close(fd);
    char *b = in.len ? strstr(sb_buf_cstr(&in), "\r\n\r\n") : NULL;
    char *out = b ? sb_strdup(b + 4) : NULL;
    sb_buf_cleanup(&in);
    return out;
}

/* Sends mode, after the run: waits for the mock to have every accepted message, then takes its records. */
static void mock_samples(uint64_t *first_us, uint64_t *last_us, uint64_t *count)
{
    for (int tries = 0; tries < 300; tries++) {
        char *st = mock_get("/_mock/stats");
        json_t *j = st ? json_loads(st, 0, NULL) : NULL;
        uint64_t total = (uint64_t)json_integer_value(json_object_get(j, "total"));
        json_decref(j);
        free(st);
        if (total >= acked + warm_acked)
            break;
        usleep(100000);
    }
    char *body = mock_get("/_mock/received?limit=1000000");
    json_t *j = body ? json_loads(body, 0, NULL) : NULL;
    json_t *reqs = json_object_get(j, "requests");
    *first_us = UINT64_MAX;
    *last_us = 0;
    *count = (uint64_t)json_integer_value(json_object_get(j, "count"));
    for (size_t i = 0; i < json_array_size(reqs); i++) {
        json_t *r = json_array_get(reqs, i);
        const char *b = json_string_value(json_object_get(r, "body"));
        uint64_t t_us = (uint64_t)json_integer_value(json_object_get(r, "t_us"));
        if (!b || strncmp(b, "bench ", 6) != 0)
            continue;
        uint64_t at = strtoull(b + 6, NULL, 10);
        if (at < t_start) /* a warm-up message */
            continue;
        record(&delivered, t_us * 1000 - at);
        if (t_us < *first_us)
            *first_us = t_us;
        if (t_us > *last_us)
            *last_us = t_us;
    }
    json_decref(j);
    free(body);
}

static void on_finish(uv_timer_t *t)
{
    uv_stop(t->loop);
}

/* Before the measured run, WARM_UP_MS of the same traffic warms the gateway up (its channel caches, prepared
 * statements and their plans, connections); what it yields is not counted. */
static void on_tick(uv_timer_t *t)
{
    (void)t;
    uint64_t now = uv_hrtime();
    if (!t_warm) {
        if (welcomed < nclients || connected_http < HTTP_CONNS)
            return;
        t_warm = now;
    }
    if (!t_start) {
        if (now - t_warm < WARM_UP_MS * 1000000ull) {
            for (uint64_t due = (now - t_warm) * (uint64_t)rate / 1000000000ull; warm_sent < due; warm_sent++)
                mock_port ? send_message(WARM_UP + warm_sent) : send_webhook(WARM_UP + warm_sent);
            return;
        }
        if (mock_port)
            fprintf(stderr, "bench_live: sending %d messages/s over %d channels for %d s\n", rate, ntenants, seconds);
        else
            fprintf(stderr, "bench_live: %d inbox clients welcomed; sending %d webhooks/s for %d s\n", nclients,
                    rate, seconds);
        t_start = now;
        uv_timer_start(&finish, on_finish, (uint64_t)seconds * 1000 + 2000, 0);
    }
    uint64_t elapsed = now - t_start;
    if (elapsed > (uint64_t)seconds * 1000000000ull)
        return;
    uint64_t due = elapsed * (uint64_t)rate / 1000000000ull;
    while (sent < due)
        mock_port ? send_message(sent++) : send_webhook(sent++);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static void start_tcp(uv_tcp_t *tcp, void *data, uv_connect_cb cb)
{
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", port, &addr);
    uv_tcp_init(loop, tcp);
    uv_tcp_nodelay(tcp, 1);
    uv_connect_t *req = sb_malloc(sizeof *req);
    req->data = data;
    if (uv_tcp_connect(req, tcp, (struct sockaddr *)&addr, cb) < 0)
        die("connect");
}

int main(int argc, char **argv)
{
    if (argc != 6 && argc != 7)
        die("usage: bench_live PORT SETUP_FILE CLIENTS_PER_TENANT RATE SECONDS [MOCK_PORT]");
    mock_port = argc == 7 ? atoi(argv[6]) : 0;
    port = atoi(argv[1]);
    per_tenant = atoi(argv[3]);
    rate = atoi(argv[4]);
    seconds = atoi(argv[5]);
    FILE *f = fopen(argv[2], "r");
    if (!f)
        die("cannot read the setup file");
    while (ntenants < MAX_TENANTS && fscanf(f, "%127s %31s %31s %127s", tenants[ntenants].key,
                                             tenants[ntenants].channel, tenants[ntenants].number,
                                             tenants[ntenants].token) == 4)
        ntenants++;
    fclose(f);
    if (!ntenants || (per_tenant < 1 && !mock_port) || rate < 1 || seconds < 1)
        die("nothing to do");
    loop = uv_default_loop();
    nclients = ntenants * per_tenant;
    clients = sb_calloc((size_t)nclients, sizeof *clients);
    for (int i = 0; i < nclients; i++) {
        clients[i].tenant = i % ntenants;
        sb_buf_init(&clients[i].in);
        clients[i].tcp.data = &clients[i].in;
        start_tcp(&clients[i].tcp, &clients[i], ws_connected);
        clients[i].tcp.data = &clients[i].in;
    }
    for (int i = 0; i < HTTP_CONNS; i++) {
        sb_buf_init(&http[i].in);
        start_tcp(&http[i].tcp, &http[i], http_connected);
        http[i].tcp.data = &http[i].in;
    }
    uv_timer_init(loop, &tick);
    uv_timer_init(loop, &finish);
    uv_timer_start(&tick, on_tick, 1, 1);
    uv_run(loop, UV_RUN_DEFAULT);

    double secs = (double)seconds;
    sort(&delivered);
    sort(&acks);
    if (mock_port) {
        uint64_t first, last, count;
        mock_samples(&first, &last, &count);
        sort(&delivered); /* filled just now */
        printf("  sends: %llu requested (%.0f/s), %llu accepted (202), %llu other; answered p50 %.2f ms, p99 %.2f ms\n",
               (unsigned long long)sent, (double)sent / secs, (unsigned long long)acked, (unsigned long long)not_ok,
               pct(&acks, 50), pct(&acks, 99));
        if (!delivered.n) {
            printf("  sends reaching the mock provider: none\n");
            return 1;
        }
        printf("  reached the mock provider: %zu (%.0f/s between the first and the last), accept-to-provider p50 "
               "%.2f ms, p99 %.2f ms, max %.2f ms\n",
               delivered.n, last > first ? (double)delivered.n * 1e6 / (double)(last - first) : 0.0,
               pct(&delivered, 50), pct(&delivered, 99), pct(&delivered, 100));
        (void)count;
        return 0;
    }
    printf("  webhooks: %llu sent (%.0f/s), %llu acknowledged 200, %llu other; acknowledged p50 %.2f ms, p99 %.2f ms, "
           "max %.2f ms\n",
           (unsigned long long)sent, (double)sent / secs, (unsigned long long)acked, (unsigned long long)not_ok,
           pct(&acks, 50), pct(&acks, 99), pct(&acks, 100));
    if (!delivered.n) {
        printf("  webhook-to-inbox: no samples\n");
        return 1;
    }
    printf("  webhook-to-inbox over %d clients: %zu deliveries (expected %llu), p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
           nclients, delivered.n, (unsigned long long)sent * (unsigned long long)per_tenant, pct(&delivered, 50),
           pct(&delivered, 99), pct(&delivered, 100));
    return 0;
}
