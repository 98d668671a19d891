/* loadgen — steady mixed traffic for the reliability tests and the soak, every answer recorded.
 *
 *   loadgen PORT SETUP_FILE WEBHOOKS_PER_S SENDS_PER_S SECONDS OUT_FILE [INBOX_CLIENTS [REPORT_EVERY_S]]
 *
 * SETUP_FILE has one line per channel: "<api key> <channel id> <channel number> <auth token>" (the channel's tenant's
 * key). For SECONDS it writes signed Twilio inbound-SMS webhooks at WEBHOOKS_PER_S and POST /v1/messages at
 * SENDS_PER_S (each with an idempotency key), spread over the channels in turn and over CONNS keep-alive
 * connections, pipelined; the SECONDS start once those connections are up. A negative rate is a closed loop instead: that many requests of the kind kept in flight,
 * as fast as the gateway answers (to measure what it sustains). INBOX_CLIENTS live inbox clients come and go
 * meanwhile: each says hello, reads events for 1 to 5 s, leaves, and comes back.
 *
 * Unlike bench_live it expects trouble: a connection that fails or closes is opened again 100 ms later, and its
 * requests in flight are recorded as lost (no answer); a request unanswered for 15 s is recorded as hung and its
 * connection is closed; requests due while no connection is up are recorded as lost too. Every REPORT_EVERY_S (1 by
 * default) it prints to stderr what the answers were. At the end it waits up to 20 s for the answers in flight and
 * writes OUT_FILE, one line per request: "w <MessageSid> <status>" or "s <idempotency key> <status>", where status is
 * the HTTP status, 0 for lost, -1 for hung. stdout gets the totals.
 *
 * One thread, one libuv loop; the requests are built by tests/bench/loadkit.h. */
#include "tests/bench/loadkit.h"

#include "proto/mem.h"
#include "proto/str.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define CONNS 32
#define RING 16384          /* requests in flight per connection, at most */
#define HUNG_NS 15000000000ull
#define RECONNECT_MS 100
#define DRAIN_MS 20000
#define START_MS 2000
#define MAX_CHANNELS 4096

enum { LOST = 0, HUNG = -1 };

typedef struct channel {
    char key[128], id[32], number[32], token[128];
} channel_t;

typedef struct rec {
    char kind;  /* 'w' or 's' */
    int status; /* HTTP status; LOST, HUNG; INT_MIN while in flight */
    uint64_t seq;
} rec_t;

typedef struct conn {
    uv_tcp_t tcp;
    uv_connect_t connect;
    sb_buf_t in;
    enum { DOWN, CONNECTING, UP, CLOSING } state;
    uint64_t retry_at; /* ms, DOWN: when to connect again */
    size_t ring[RING]; /* records in flight, oldest at head */
    uint64_t sent_at[RING];
    size_t head, n;
} conn_t;

typedef struct client {
    uv_tcp_t tcp;
    uv_connect_t connect;
    sb_buf_t in;
    enum { C_DOWN, C_CONNECTING, C_HANDSHAKE, C_WELCOME, C_LIVE, C_CLOSING } state;
    uint64_t at; /* ms: C_DOWN, when to connect; C_LIVE, when to leave */
    int channel;
} client_t;

static uv_loop_t *loop;
static int port, nchannels, wrate, srate, seconds, nclients, every_s = 1;
static channel_t channels[MAX_CHANNELS];
static conn_t conns[CONNS];
static client_t *clients;
static rec_t *recs;
static size_t nrecs, caprecs;
static uint64_t t0, wsent, ssent, next_conn, run_id;
static bool started, stopping;
static uv_timer_t tick;
static uint64_t inflight[2]; /* in flight per kind: [0] webhooks, [1] sends */
/* answers counted per kind: 2xx, 503, other status, lost, hung; and for the whole run */
typedef struct counts {
    uint64_t ok, unavailable, other, lost, hung;
} counts_t;
static counts_t period[2], total[2];
static uint64_t welcomes, events, leaves, inbox_errors, last_report;

static uint64_t now_ms(void)
{
    return uv_now(loop);
}

static void count(char kind, int status)
{
    counts_t *c[2] = {&period[kind == 's'], &total[kind == 's']};
    for (int i = 0; i < 2; i++) {
        if (status >= 200 && status < 300)
            c[i]->ok++;
        else if (status == 503)
            c[i]->unavailable++;
        else if (status == LOST)
            c[i]->lost++;
        else if (status == HUNG)
            c[i]->hung++;
        else
            c[i]->other++;
    }
}

static void settle(size_t r, int status)
{
    recs[r].status = status;
    inflight[recs[r].kind == 's']--;
    count(recs[r].kind, status);
}

/* ---- HTTP connections ------------------------------------------------------------------------------------------- */

static void conn_closed(uv_handle_t *h)
{
    conn_t *c = h->data;
    c->state = DOWN;
    c->retry_at = now_ms() + RECONNECT_MS;
}

/* Closes c; its requests in flight get status (LOST or HUNG). */
static void conn_drop(conn_t *c, int status)
{
    if (c->state == DOWN || c->state == CLOSING)
        return;
    for (; c->n; c->n--, c->head = (c->head + 1) % RING)
        settle(c->ring[c->head], status);
    c->in.len = 0;
    c->state = CLOSING;
    uv_close((uv_handle_t *)&c->tcp, conn_closed);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    conn_t *c = h->data;
    (void)suggested;
    sb_buf_reserve(&c->in, 65536);
    *b = uv_buf_init(c->in.p + c->in.len, 65536);
}

static void http_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    conn_t *c = s->data;
    (void)buf;
    if (nread < 0) {
        conn_drop(c, LOST);
        return;
    }
    c->in.len += (size_t)nread;
    size_t off = 0;
    for (;;) { /* whole responses: a head with content-length, then that many bytes */
        char *end = memmem(c->in.p + off, c->in.len - off, "\r\n\r\n", 4);
        if (!end)
            break;
        const char *cl = memmem(c->in.p + off, (size_t)(end - c->in.p) - off, "content-length: ", 16);
        size_t body = cl ? strtoul(cl + 16, NULL, 10) : 0;
        size_t whole = (size_t)(end + 4 - c->in.p) - off + body;
        if (c->in.len - off < whole)
            break;
        if (c->n) {
            settle(c->ring[c->head], atoi(c->in.p + off + 9));
            c->head = (c->head + 1) % RING;
            c->n--;
        }
        off += whole;
    }
    memmove(c->in.p, c->in.p + off, c->in.len - off);
    c->in.len -= off;
}

static void http_connected(uv_connect_t *req, int status)
{
    conn_t *c = req->data;
    if (c->state == CLOSING) /* dropped while connecting */
        return;
    if (status < 0) {
        c->state = CLOSING;
        uv_close((uv_handle_t *)&c->tcp, conn_closed);
        return;
    }
    c->state = UP;
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, http_read);
}

static void dial(uv_tcp_t *tcp, uv_connect_t *req, void *data, uv_connect_cb cb)
{
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", port, &addr);
    uv_tcp_init(loop, tcp);
    tcp->data = data;
    uv_tcp_nodelay(tcp, 1);
    req->data = data;
    if (uv_tcp_connect(req, tcp, (struct sockaddr *)&addr, cb) < 0) {
        fprintf(stderr, "loadgen: cannot connect\n");
        exit(1);
    }
}

/* Writes record r's request on the next connection that is up; none up: the request is lost. */
static void issue(size_t r, const sb_buf_t *req)
{
    inflight[recs[r].kind == 's']++;
    for (int k = 0; k < CONNS; k++) {
        conn_t *c = &conns[next_conn++ % CONNS];
        if (c->state != UP || c->n == RING)
            continue;
        size_t at = (c->head + c->n) % RING;
        c->ring[at] = r;
        c->sent_at[at] = uv_hrtime();
        c->n++;
        if (lk_write_copy((uv_stream_t *)&c->tcp, req->p, req->len) < 0)
            conn_drop(c, LOST);
        return;
    }
    settle(r, LOST);
}

static size_t new_rec(char kind, uint64_t seq)
{
    if (nrecs == caprecs) {
        caprecs = caprecs ? caprecs * 2 : 1 << 16;
        recs = sb_realloc(recs, caprecs * sizeof *recs);
    }
    recs[nrecs] = (rec_t){.kind = kind, .status = INT32_MIN, .seq = seq};
    return nrecs++;
}

static void sid_of(char *out, size_t len, uint64_t seq)
{
    snprintf(out, len, "SM%08llx%024llx", (unsigned long long)run_id, (unsigned long long)seq);
}

static void key_of(char *out, size_t len, uint64_t seq)
{
    snprintf(out, len, "L%08llx-%llu", (unsigned long long)run_id, (unsigned long long)seq);
}

static void send_webhook(void)
{
    uint64_t seq = wsent++;
    const channel_t *ch = &channels[seq % (uint64_t)nchannels];
    char sid[48], text[48], from[24];
    sid_of(sid, sizeof sid, seq);
    snprintf(text, sizeof text, "load %llu", (unsigned long long)seq);
    snprintf(from, sizeof from, "+1415%07llu", (unsigned long long)(seq % 9973)); /* many conversations */
    sb_buf_t req;
    sb_buf_init(&req);
    lk_twilio_sms(&req, port, ch->id, ch->number, ch->token, sid, from, text);
    issue(new_rec('w', seq), &req);
    sb_buf_cleanup(&req);
}

static void send_message(void)
{
    uint64_t seq = ssent++;
    const channel_t *ch = &channels[seq % (uint64_t)nchannels];
    char key[48];
    key_of(key, sizeof key, seq);
    sb_buf_t body, req;
    sb_buf_init(&body);
    sb_buf_init(&req);
    sb_buf_printf(&body, "{\"channel_id\":\"%s\",\"to\":\"+1415555%04llu\",\"body\":\"load %s\",\"idempotency_key\":\"%s\"}",
                  ch->id, (unsigned long long)(seq % 997), key, key);
    sb_buf_printf(&req,
                  "POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAuthorization: Bearer %s\r\n"
                  "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                  port, ch->key, body.len, sb_buf_cstr(&body));
    issue(new_rec('s', seq), &req);
    sb_buf_cleanup(&body);
    sb_buf_cleanup(&req);
}

/* ---- live inbox clients ------------------------------------------------------------------------------------------ */

static void client_closed(uv_handle_t *h)
{
    client_t *c = h->data;
    c->state = C_DOWN;
    c->in.len = 0;
    c->at = now_ms() + RECONNECT_MS + (uint64_t)(rand() % 200);
}

static void client_leave(client_t *c)
{
    if (c->state == C_DOWN || c->state == C_CLOSING)
        return;
    c->state = C_CLOSING;
    uv_close((uv_handle_t *)&c->tcp, client_closed);
}

static void on_client_frame(void *arg, int opcode, const char *p, size_t n)
{
    client_t *c = arg;
    if (opcode == 8) { /* closed by the gateway (1013 while the database is away, 1001 on shutdown) */
        client_leave(c);
        return;
    }
    if (opcode != 1)
        return;
    if (c->state == C_WELCOME) {
        if (n > 14 && memcmp(p, "{\"op\":\"welcome", 14) == 0) {
            c->state = C_LIVE;
            c->at = now_ms() + 1000 + (uint64_t)(rand() % 4000);
            welcomes++;
        } else {
            inbox_errors++;
            client_leave(c);
        }
        return;
    }
    if (n > 14 && memcmp(p, "{\"op\":\"event\"", 13) == 0)
        events++;
}

static void client_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    client_t *c = h->data;
    (void)suggested;
    sb_buf_reserve(&c->in, 65536);
    *b = uv_buf_init(c->in.p + c->in.len, 65536);
}

static void client_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    client_t *c = s->data;
    (void)buf;
    if (nread < 0) {
        client_leave(c);
        return;
    }
    c->in.len += (size_t)nread;
    size_t off = 0;
    if (c->state == C_HANDSHAKE) {
        char *end = memmem(c->in.p, c->in.len, "\r\n\r\n", 4);
        if (!end)
            return;
        if (memcmp(c->in.p, "HTTP/1.1 101", 12) != 0) {
            inbox_errors++;
            client_leave(c);
            return;
        }
        off = (size_t)(end + 4 - c->in.p);
        c->state = C_WELCOME;
        char hello[256];
        snprintf(hello, sizeof hello, "{\"op\":\"hello\",\"token\":\"%s\"}", channels[c->channel].key);
        unsigned char frame[300];
        lk_write_copy(s, (char *)frame, lk_ws_text(frame, hello));
    }
    off += lk_ws_frames(c->in.p + off, c->in.len - off, on_client_frame, c);
    if (c->state == C_CLOSING)
        return;
    memmove(c->in.p, c->in.p + off, c->in.len - off);
    c->in.len -= off;
}

static void client_connected(uv_connect_t *req, int status)
{
    client_t *c = req->data;
    if (status < 0) {
        client_leave(c);
        return;
    }
    c->state = C_HANDSHAKE;
    char head[256];
    int n = lk_inbox_upgrade(head, sizeof head, port);
    lk_write_copy((uv_stream_t *)&c->tcp, head, (size_t)n);
    uv_read_start((uv_stream_t *)&c->tcp, client_alloc, client_read);
}

/* ---- the run ------------------------------------------------------------------------------------------------------ */

static void report(uint64_t now)
{
    fprintf(stderr,
            "loadgen t=%llus webhooks 2xx %llu 503 %llu other %llu lost %llu hung %llu | sends 2xx %llu 503 %llu "
            "other %llu lost %llu hung %llu | inbox welcomes %llu events %llu\n",
            (unsigned long long)((now - t0) / 1000), (unsigned long long)period[0].ok,
            (unsigned long long)period[0].unavailable, (unsigned long long)period[0].other,
            (unsigned long long)period[0].lost, (unsigned long long)period[0].hung, (unsigned long long)period[1].ok,
            (unsigned long long)period[1].unavailable, (unsigned long long)period[1].other,
            (unsigned long long)period[1].lost, (unsigned long long)period[1].hung, (unsigned long long)welcomes,
            (unsigned long long)events);
    memset(period, 0, sizeof period);
}

/* How many requests of a kind are due now: paced by rate, or (rate < 0) enough to keep -rate in flight. */
static uint64_t due(int rate, uint64_t sent, uint64_t flying, uint64_t elapsed_ms)
{
    if (rate >= 0) {
        uint64_t want = elapsed_ms * (uint64_t)rate / 1000;
        return want > sent ? want - sent : 0;
    }
    return flying < (uint64_t)-rate ? (uint64_t)-rate - flying : 0;
}

static void on_tick(uv_timer_t *t)
{
    uint64_t now = now_ms();
    for (int i = 0; i < CONNS; i++) { /* connections: reconnect, and close those with a hung request */
        conn_t *c = &conns[i];
        if (c->state == DOWN && now >= c->retry_at && !stopping) {
            c->state = CONNECTING;
            dial(&c->tcp, &c->connect, c, http_connected);
        } else if (c->state == UP && c->n && uv_hrtime() - c->sent_at[c->head] > HUNG_NS) {
            const rec_t *r = &recs[c->ring[c->head]];
            fprintf(stderr, "loadgen: connection %d: its oldest request (%s %llu) unanswered for %.1f s, %zu in flight, "
                    "%zu bytes read and not parsed: closed\n", i, r->kind == 's' ? "send" : "webhook",
                    (unsigned long long)r->seq, (double)(uv_hrtime() - c->sent_at[c->head]) / 1e9, c->n, c->in.len);
            conn_drop(c, HUNG);
        }
    }
    for (int i = 0; i < nclients; i++) {
        client_t *c = &clients[i];
        if (c->state == C_DOWN && now >= c->at && !stopping) {
            c->state = C_CONNECTING;
            dial(&c->tcp, &c->connect, c, client_connected);
        } else if (c->state == C_LIVE && (now >= c->at || stopping)) {
            leaves++;
            client_leave(c);
        }
    }
    if (now - last_report >= (uint64_t)every_s * 1000) {
        last_report = now;
        report(now);
    }
    if (!started) { /* the clock starts once every connection is up (or after 2 s): none of it is lost to dialling */
        int up = 0;
        for (int i = 0; i < CONNS; i++)
            up += conns[i].state == UP;
        if (up < CONNS && now - t0 < START_MS)
            return;
        started = true;
        t0 = last_report = now;
    }
    uint64_t elapsed = now - t0;
    if (!stopping && elapsed >= (uint64_t)seconds * 1000) {
        stopping = true;
        fprintf(stderr, "loadgen: %llu webhooks and %llu sends written; waiting for the answers in flight\n",
                (unsigned long long)wsent, (unsigned long long)ssent);
    }
    if (stopping) {
        bool idle = inflight[0] + inflight[1] == 0;
        if (idle || elapsed >= (uint64_t)seconds * 1000 + DRAIN_MS) {
            for (int i = 0; i < CONNS; i++)
                conn_drop(&conns[i], LOST);
            for (int i = 0; i < nclients; i++)
                client_leave(&clients[i]);
            uv_timer_stop(t);
            uv_close((uv_handle_t *)t, NULL);
        }
        return;
    }
    for (uint64_t n = due(wrate, wsent, inflight[0], elapsed); n; n--)
        send_webhook();
    for (uint64_t n = due(srate, ssent, inflight[1], elapsed); n; n--)
        send_message();
}

int main(int argc, char **argv)
{
    if (argc < 7 || argc > 9) {
        fprintf(stderr, "usage: loadgen PORT SETUP_FILE WEBHOOKS_PER_S SENDS_PER_S SECONDS OUT_FILE "
                        "[INBOX_CLIENTS [REPORT_EVERY_S]]\n");
        return 2;
    }
    port = atoi(argv[1]);
    wrate = atoi(argv[3]);
    srate = atoi(argv[4]);
    seconds = atoi(argv[5]);
    nclients = argc > 7 ? atoi(argv[7]) : 0;
    every_s = argc > 8 ? atoi(argv[8]) : 1;
    FILE *f = fopen(argv[2], "r");
    if (!f) {
        fprintf(stderr, "loadgen: cannot read %s\n", argv[2]);
        return 2;
    }
    while (nchannels < MAX_CHANNELS &&
           fscanf(f, "%127s %31s %31s %127s", channels[nchannels].key, channels[nchannels].id,
                  channels[nchannels].number, channels[nchannels].token) == 4)
        nchannels++;
    fclose(f);
    if (!nchannels || seconds < 1 || every_s < 1) {
        fprintf(stderr, "loadgen: nothing to do\n");
        return 2;
    }
    loop = uv_default_loop();
    run_id = (uv_hrtime() / 1000) & 0xffffffff;
    srand((unsigned)run_id);
    clients = sb_calloc((size_t)(nclients ? nclients : 1), sizeof *clients);
    for (int i = 0; i < nclients; i++) {
        clients[i].channel = i % nchannels;
        clients[i].state = C_DOWN;
        sb_buf_init(&clients[i].in);
    }
    for (int i = 0; i < CONNS; i++) {
        conns[i].state = DOWN;
        sb_buf_init(&conns[i].in);
    }
    uv_update_time(loop);
    t0 = last_report = now_ms();
    uv_timer_init(loop, &tick);
    uv_timer_start(&tick, on_tick, 0, 5);
    uv_run(loop, UV_RUN_DEFAULT);

    FILE *out = fopen(argv[6], "w");
    if (!out) {
        fprintf(stderr, "loadgen: cannot write %s\n", argv[6]);
        return 2;
    }
    for (size_t i = 0; i < nrecs; i++) {
        char id[48];
        if (recs[i].kind == 'w')
            sid_of(id, sizeof id, recs[i].seq);
        else
            key_of(id, sizeof id, recs[i].seq);
        fprintf(out, "%c %s %d\n", recs[i].kind, id, recs[i].status == INT32_MIN ? LOST : recs[i].status);
    }
    fclose(out);
    printf("loadgen: webhooks %llu: 2xx %llu, 503 %llu, other %llu, lost %llu, hung %llu; sends %llu: 2xx %llu, "
           "503 %llu, other %llu, lost %llu, hung %llu; inbox welcomes %llu, leaves %llu, events %llu, errors %llu\n",
           (unsigned long long)wsent, (unsigned long long)total[0].ok, (unsigned long long)total[0].unavailable,
           (unsigned long long)total[0].other, (unsigned long long)total[0].lost, (unsigned long long)total[0].hung,
           (unsigned long long)ssent, (unsigned long long)total[1].ok, (unsigned long long)total[1].unavailable,
           (unsigned long long)total[1].other, (unsigned long long)total[1].lost, (unsigned long long)total[1].hung,
           (unsigned long long)welcomes, (unsigned long long)leaves, (unsigned long long)events,
           (unsigned long long)inbox_errors);
    return 0;
}
