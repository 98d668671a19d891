/* Tests of the global send counters (adapters/counters.c) and the generic command API of adapters/redis.c, against
 * the local stack's real Redis (127.0.0.1:6390, or $SB_TEST_REDIS_PORT) in database 2, which they flush: first and
 * last, and only after checking that the connection really is on database 2.
 *
 * Time is Redis's: assertions compare the server times the scripts report, never this process's clock; timers only
 * decide when to ask again. "Two nodes" are two sb_redis_t connections on one loop, their calls pipelined and
 * interleaved. A lost connection is made with CLIENT KILL of our own client, an absent Redis with a closed port:
 * the shared Redis is never stopped. Last, every script runs once more on the Redis Cluster of ops/redis_cluster.sh
 * (which the test brings up), a tenant on each master: proof that each script's keys share one slot. */
#include "adapters/counters.h"
#include "adapters/redis.h"
#include "gateway/metrics.h"
#include "proto/err.h"
#include "tests/tap.h"
#include "tests/unit/redis_test.h"

#include <hiredis/hiredis.h>
#include <stdlib.h>

#define TEST_DB 2

static sb_redis_t *r1, *r2; /* two "nodes" */
static int port = 6390;

static bool wait_connected(sb_redis_t *r, uint64_t ms)
{
    uint64_t deadline = uv_hrtime() + ms * 1000000ull;
    while (!sb_redis_connected(r) && uv_hrtime() < deadline)
        uv_run(&loop, UV_RUN_ONCE);
    return sb_redis_connected(r);
}

/* ---- acquisition helpers -------------------------------------------------------------------------------------- */

typedef struct got {
    bool done;
    int calls, err;
    sb_counters_grant_t g;
} got_t;

static void on_grant(void *arg, int err, const sb_counters_grant_t *g)
{
    got_t *o = arg;
    o->done = true;
    o->calls++;
    o->err = err;
    if (g)
        o->g = *g;
}

static bool wait_all(got_t *v, int n)
{
    uint64_t deadline = uv_hrtime() + 10000000000ull;
    for (;;) {
        int done = 0;
        for (int i = 0; i < n; i++)
            done += v[i].done;
        if (done == n)
            return true;
        if (uv_hrtime() > deadline)
            return false;
        uv_run(&loop, UV_RUN_ONCE);
    }
}

static got_t acquire1(sb_redis_t *r, int64_t tenant, int64_t channel, const sb_counters_limits_t *lim)
{
    got_t o = {0};
    o.err = sb_counters_acquire(r, tenant, channel, lim, on_grant, &o);
    if (o.err == 0)
        run_until(&o.done, 5000);
    return o;
}

typedef struct fin {
    bool done;
    int calls, err;
} fin_t;

static void on_fin(void *arg, int err)
{
    fin_t *f = arg;
    f->done = true;
    f->calls++;
    f->err = err;
}

static fin_t release1(sb_redis_t *r, const sb_counters_lease_t *lease)
{
    fin_t f = {0};
    f.err = sb_counters_release(r, lease, on_fin, &f);
    if (f.err == 0)
        run_until(&f.done, 5000);
    return f;
}

typedef struct readout {
    bool done;
    int calls, err;
    sb_counters_state_t st;
} readout_t;

static void on_read(void *arg, int err, const sb_counters_state_t *st)
{
    readout_t *o = arg;
    o->done = true;
    o->calls++;
    o->err = err;
    if (st)
        o->st = *st;
}

static readout_t read1(sb_redis_t *r, int64_t tenant, int64_t channel)
{
    readout_t o = {0};
    o.err = sb_counters_read(r, tenant, channel, on_read, &o);
    if (o.err == 0)
        run_until(&o.done, 5000);
    return o;
}

static long long zcard(const char *key)
{
    return cmd(r1, "ZCARD", key, NULL).integer;
}

/* ---- the tests ------------------------------------------------------------------------------------------------ */

TEST(connect_db2)
{
    ok(wait_connected(r1, 5000) && wait_connected(r2, 5000), "both connections up");
    answer_t a = cmd(r1, "CLIENT", "INFO", NULL);
    bool db2 = a.err == 0 && strstr(a.str, " db=2 ") != NULL;
    answer_t b = cmd(r2, "CLIENT", "INFO", NULL);
    db2 = db2 && b.err == 0 && strstr(b.str, " db=2 ") != NULL;
    if (!db2) {
        printf("Bail out! the test connections are not on database %d: %s\n", TEST_DB, a.str);
        exit(1);
    }
    ok(db2, "both on database 2");
    a = cmd(r1, "FLUSHDB", NULL);
    is_str(a.str, "OK", "database 2 flushed");
}

TEST(redis_commands)
{
    sb_redis_stats_t s0, s1;
    sb_redis_get_stats(r1, &s0);
    const char *argv[2] = {"ECHO", "a\0b"};
    size_t len[2] = {4, 3};
    answer_t a = {0};
    is_int(sb_redis_command_argv(r1, 2, argv, len, on_answer, &a), 0, "ECHO sent");
    run_until(&a.done, 5000);
    ok(a.calls == 1 && a.err == 0 && a.type == REDIS_REPLY_STRING && a.len == 3 && memcmp(a.str, "a\0b", 3) == 0,
       "binary-safe argument and reply");
    a = cmd(r1, "NOSUCHCOMMAND", NULL);
    ok(a.calls == 1 && a.err == 0 && a.type == REDIS_REPLY_ERROR, "an error reply is a reply (err 0): %s", a.str);
    const char *set[3] = {"SET", "sb:{t0}:fire", "1"};
    size_t setlen[3] = {3, 12, 1};
    is_int(sb_redis_command_argv(r1, 3, set, setlen, NULL, NULL), 0, "a command without callback");
    a = cmd(r1, "GET", "sb:{t0}:fire", NULL);
    is_str(a.str, "1", "was executed (and its reply dropped)");
    cmd(r1, "DEL", "sb:{t0}:fire", NULL);
    sb_redis_get_stats(r1, &s1);
    is_int(s1.commands - s0.commands, 5, "five commands counted");
    is_int(s1.replies - s0.replies, 5, "five replies counted");
}

/* Observations in h at or past bucket `from`. */
static long long hist_count(sb_hist_t *h, unsigned from)
{
    long long n = 0;
    for (unsigned b = from; b < SB_HIST_BUCKETS; b++)
        n += (long long)sb_metric_get(&h->buckets[b]);
    return n;
}

/* sb_redis_set_histogram: one observation per reply, from the command's sending to its reply; a BLPOP that waits
 * 60 ms on an empty list shows up past 50 ms, quick commands well below. */
TEST(timed)
{
    static sb_hist_t h;
    memset(&h, 0, sizeof h);
    sb_redis_set_histogram(r1, &h);
    sb_redis_stats_t s0, s1;
    sb_redis_get_stats(r1, &s0);
    uint64_t t0 = uv_hrtime();
    answer_t a = cmd(r1, "BLPOP", "sb:{t0}:never", "0.06", NULL);
    uint64_t waited = uv_hrtime() - t0;
    ok(a.calls == 1 && a.err == 0, "BLPOP timed out on the empty list (reply type %d)", a.type);
    for (int i = 0; i < 5; i++)
        cmd(r1, "PING", NULL);
    sb_redis_get_stats(r1, &s1);
    is_int(hist_count(&h, 0), 6, "six replies, six observations");
    is_int((long long)(s1.replies - s0.replies), 6, "as many as the replies counted");
    is_int(hist_count(&h, sb_hist_bucket(50000001)), 1, "the BLPOP alone took more than 50 ms");
    uint64_t sum = sb_metric_get(&h.sum_ns);
    ok(sum >= 60000000 && sum <= waited + 5 * 50000000ull, "the sum is the BLPOP's wait and a little (%.1f ms)",
       (double)sum / 1e6);
    sb_redis_set_histogram(r1, NULL);
    cmd(r1, "PING", NULL);
    is_int(hist_count(&h, 0), 6, "histogram unset: nothing more recorded");
}

TEST(evalsha_fallback)
{
    /* A script no Redis has seen: EVALSHA must fail with NOSCRIPT and the call come back as EVAL. */
    char text[128], want[64];
    uint64_t salt = uv_hrtime();
    snprintf(want, sizeof want, "fallback-%llx", (unsigned long long)salt);
    snprintf(text, sizeof text, "return ARGV[1] .. KEYS[1] .. '%s'", want);
    static sb_redis_script_t s;
    sb_redis_script_init(&s, text);
    answer_t sha = cmd(r1, "SCRIPT", "LOAD", "return 1", NULL);
    sb_redis_script_t one;
    sb_redis_script_init(&one, "return 1");
    is_str(one.sha, sha.str, "SHA1 computed as Redis computes it");

    sb_redis_stats_t s0, s1, s2;
    sb_redis_get_stats(r1, &s0);
    const char *kv[2] = {"k", "v"};
    size_t kvlen[2] = {1, 1};
    answer_t a[3] = {{0}};
    for (int i = 0; i < 3; i++)
        is_int(sb_redis_evalsha(r1, &s, 1, 1, kv, kvlen, on_answer, &a[i]), 0, "EVALSHA %d sent", i);
    run_until(&a[0].done, 5000);
    run_until(&a[2].done, 5000);
    char full[80];
    snprintf(full, sizeof full, "vk%s", want);
    ok(a[0].err == 0 && a[1].err == 0 && a[2].err == 0, "all three answered");
    ok(strcmp(a[0].str, full) == 0 && strcmp(a[1].str, full) == 0 && strcmp(a[2].str, full) == 0,
       "with the script's result (%s)", a[0].str);
    sb_redis_get_stats(r1, &s1);
    is_int(s1.noscript - s0.noscript, 3, "each met NOSCRIPT once");
    is_int(s1.commands - s0.commands, 6, "and was resent as EVAL: two round trips each");
    answer_t b = {0};
    sb_redis_evalsha(r1, &s, 1, 1, kv, kvlen, on_answer, &b);
    run_until(&b.done, 5000);
    sb_redis_get_stats(r1, &s2);
    ok(strcmp(b.str, full) == 0 && s2.commands - s1.commands == 1 && s2.noscript == s1.noscript,
       "once loaded: one EVALSHA, one round trip");
}

TEST(invalid)
{
    sb_counters_limits_t lim = {.interval_us = 1000, .burst = 1, .lease_ms = 1000};
    got_t o = {0};
    lim.burst = 0;
    is_int(sb_counters_acquire(r1, 1, 1, &lim, on_grant, &o), SB_EINVAL, "burst 0 refused");
    lim.burst = 1;
    lim.lease_ms = 0;
    is_int(sb_counters_acquire(r1, 1, 1, &lim, on_grant, &o), SB_EINVAL, "lease 0 refused");
    lim.lease_ms = 1000;
    lim.interval_us = -1;
    is_int(sb_counters_acquire(r1, 1, 1, &lim, on_grant, &o), SB_EINVAL, "negative interval refused");
    is_int(sb_counters_acquire(r1, 1, 1, NULL, on_grant, &o), SB_EINVAL, "no limits refused");
    sb_counters_lease_t l = {.tenant = 1, .channel = 1, .id = "x"};
    is_int(sb_counters_extend(r1, &l, 0, on_fin, NULL), SB_EINVAL, "extend by 0 refused");
    is_int(o.calls, 0, "no callback for a refused call");
    is_int(sb_counters_interval_us(SB_COUNTERS_RATE_META_WHATSAPP), 12500, "Meta WhatsApp 80/s: T = 12.5 ms");
    is_int(sb_counters_interval_us(SB_COUNTERS_RATE_TWILIO_WHATSAPP), 100000, "Twilio WhatsApp 10/s: T = 100 ms");
    is_int(sb_counters_interval_us(SB_COUNTERS_RATE_TWILIO_LONG_CODE), 1000000, "Twilio long code 1/s: T = 1 s");
    is_int(sb_counters_interval_us(0), 0, "rate 0: no limit");
}

TEST(gcra_math)
{
    int64_t next;
    is_int(sb_counters_gcra_tokens(0, 1000, 100, 5, &next), 5, "idle: the whole burst");
    is_int(next, 1000, "free now");
    is_int(sb_counters_gcra_tokens(1250, 1000, 100, 5, &next), 2, "backlog 250 of tau 400: 2 more (at +250, +350)");
    is_int(sb_counters_gcra_tokens(1500, 1000, 100, 5, &next), 0, "backlog 500 > tau: none");
    is_int(next, 1100, "free at tat - tau");
    is_int(sb_counters_gcra_tokens(1400, 1000, 100, 5, &next), 1, "backlog == tau: exactly one");
}

/* From idle, exactly `burst` pass; the rest are told to come back when TAT - tau is reached, which after a burst
 * taken at t0 is t0 + T exactly (in Redis time). */
TEST(gcra_burst)
{
    enum { N = 12, BURST = 5 };
    const int64_t T = 1000000; /* 1/s, so the batch is far shorter than T */
    sb_counters_limits_t lim = {.interval_us = T, .burst = BURST, .lease_ms = 10000};
    got_t o[N];
    memset(o, 0, sizeof o);
    int sent = 0;
    for (int i = 0; i < N; i++)
        sent += sb_counters_acquire(r1, 10, 1, &lim, on_grant, &o[i]) == 0;
    is_int(sent, N, "%d acquisitions pipelined", N);
    ok(wait_all(o, N), "all answered");
    int okc = 0, rate = 0, bad_at = 0, bad_tokens = 0, bad_wait = 0, order = 0;
    for (int i = 0; i < N; i++) {
        if (o[i].err || o[i].calls != 1)
            continue;
        if (o[i].g.verdict == SB_COUNTERS_OK) {
            order += i != okc; /* the admitted ones are the first ones */
            bad_tokens += o[i].g.tokens != BURST - 1 - okc;
            okc++;
        } else if (o[i].g.verdict == SB_COUNTERS_RATE) {
            rate++;
            bad_at += o[i].g.at_us != o[0].g.now_us + T;
            bad_wait += o[i].g.wait_us <= 0 || o[i].g.wait_us > T || o[i].g.wait_us != o[i].g.at_us - o[i].g.now_us;
        }
    }
    is_int(okc, BURST, "exactly the burst admitted at once");
    is_int(rate, N - BURST, "the rest rate-limited");
    is_int(order, 0, "in the order they were sent");
    is_int(bad_tokens, 0, "tokens left count down to 0");
    is_int(bad_at, 0, "each told: next token at first admission + T (Redis time)");
    is_int(bad_wait, 0, "wait_us = at - now, in (0, T]");
    ok(o[N - 1].g.lease.id[0] == '\0' && o[N - 1].g.channel_inflight == -1, "a rate-limited call took no lease");
    is_int(zcard("sb:{t10}:inflight:ch:1"), BURST, "leases only for the admitted");
}

/* Acquire as fast as allowed for one second of Redis time, retrying when told: the admissions must keep GCRA's
 * bound over every window, and come close to rate + burst - 1 in the first second. */
typedef struct pacer {
    const sb_counters_limits_t *lim;
    uv_timer_t timer;
    int64_t first_us, times[256];
    int n, rate_replies, bad_wait, errors;
    bool done;
} pacer_t;

static void pacer_go(pacer_t *p);

static void pacer_timer(uv_timer_t *t)
{
    pacer_go(t->data);
}

static void pacer_grant(void *arg, int err, const sb_counters_grant_t *g)
{
    pacer_t *p = arg;
    if (err) {
        p->errors++;
        p->done = true;
        return;
    }
    if (!p->first_us)
        p->first_us = g->now_us;
    if (g->now_us - p->first_us >= 1000000 || p->n == 256) {
        p->done = true;
        return;
    }
    if (g->verdict == SB_COUNTERS_OK) {
        p->times[p->n++] = g->now_us;
        pacer_go(p);
        return;
    }
    p->rate_replies++;
    p->bad_wait += g->verdict != SB_COUNTERS_RATE || g->wait_us <= 0 || g->wait_us > p->lim->interval_us;
    /* ms timers: round up, so retries are rarely early (an early retry is only answered "wait" again) */
    uv_timer_start(&p->timer, pacer_timer, (uint64_t)(g->wait_us + 999) / 1000, 0);
}

static void pacer_go(pacer_t *p)
{
    if (sb_counters_acquire(r1, 11, 1, p->lim, pacer_grant, p) != 0) {
        p->errors++;
        p->done = true;
    }
}

TEST(gcra_paces)
{
    const int64_t T = 20000, BURST = 3; /* 50/s */
    sb_counters_limits_t lim = {.interval_us = T, .burst = BURST, .lease_ms = 5000};
    static pacer_t p;
    memset(&p, 0, sizeof p);
    p.lim = &lim;
    uv_timer_init(&loop, &p.timer);
    p.timer.data = &p;
    pacer_go(&p);
    run_until(&p.done, 10000);
    uv_close((uv_handle_t *)&p.timer, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    is_int(p.errors, 0, "no errors");
    int violations = 0;
    for (int i = 0; i < p.n; i++)
        for (int j = i + 1; j < p.n; j++)
            violations += (j - i + 1) > (p.times[j] - p.times[i]) / T + BURST;
    is_int(violations, 0, "in every window [t_i, t_j]: at most floor(len / T) + burst admitted (%d admissions)", p.n);
    ok(p.n <= 1000000 / T + BURST - 1, "at most rate + burst - 1 in the first second: %d", p.n);
    ok(p.n >= 1000000 / T + BURST - 1 - 8, "and close to it (%d of %lld): it paces, it does not starve", p.n,
       (long long)(1000000 / T + BURST - 1));
    ok(p.rate_replies > 0 && p.bad_wait == 0, "every refusal said wait (0, T] (%d refusals)", p.rate_replies);
    int back_to_back = 0;
    for (int i = 1; i < p.n && p.times[i] - p.times[0] < T; i++)
        back_to_back++;
    ok(back_to_back >= (int)BURST - 1, "the burst passed back to back first (%d)", back_to_back + 1);
}

/* Two connections ("nodes") hammer three channels of one tenant with pipelined acquisitions. */
TEST(semaphores_two_nodes)
{
    enum { N = 150, CH_MAX = 5, T_MAX = 8 };
    sb_counters_limits_t lim = {.burst = 1, .channel_max = CH_MAX, .tenant_max = T_MAX, .lease_ms = 30000};
    static got_t o[N];
    memset(o, 0, sizeof o);
    int sent = 0;
    for (int i = 0; i < N; i++)
        sent += sb_counters_acquire(i % 2 ? r2 : r1, 20, 1 + (i / 2) % 3, &lim, on_grant, &o[i]) == 0;
    is_int(sent, N, "%d acquisitions pipelined on two connections", N);
    ok(wait_all(o, N), "all answered");
    int okc = 0, per_ch[4] = {0}, over = 0, busy = 0, bad_busy = 0, errs = 0;
    int64_t min_exp = INT64_MAX;
    for (int i = 0; i < N; i++) {
        errs += o[i].err != 0;
        if (o[i].err)
            continue;
        const sb_counters_grant_t *g = &o[i].g;
        if (g->verdict == SB_COUNTERS_OK) {
            okc++;
            per_ch[g->lease.channel]++;
            over += g->channel_inflight > CH_MAX || g->tenant_inflight > T_MAX;
            if (g->at_us < min_exp)
                min_exp = g->at_us;
        } else {
            busy++;
        }
    }
    for (int i = 0; i < N; i++)
        if (!o[i].err && o[i].g.verdict == SB_COUNTERS_BUSY)
            bad_busy += !(o[i].g.full & SB_COUNTERS_FULL_TENANT) || o[i].g.at_us < min_exp ||
                        o[i].g.wait_us != o[i].g.at_us - o[i].g.now_us || o[i].g.lease.id[0] != '\0';
    is_int(errs, 0, "no errors");
    is_int(okc, T_MAX, "exactly the tenant's limit admitted");
    ok(per_ch[1] <= CH_MAX && per_ch[2] <= CH_MAX && per_ch[3] <= CH_MAX, "no channel over its limit (%d %d %d)",
       per_ch[1], per_ch[2], per_ch[3]);
    is_int(over, 0, "no grant saw more in flight than the limits");
    is_int(busy, N - T_MAX, "the rest were told busy");
    is_int(bad_busy, 0, "busy: tenant full, wait until a lease's expiry, nothing taken");
    is_int(zcard("sb:{t20}:inflight:tenant"), T_MAX, "the tenant set holds the limit");

    readout_t rd = read1(r2, 20, SB_COUNTERS_NO_CHANNEL);
    ok(rd.err == 0 && rd.st.tenant_inflight == T_MAX && rd.st.channel_inflight == -1 &&
           rd.st.tenant_next_expiry_us == min_exp, "read-out: tenant in flight, earliest expiry");

    int released = 0;
    for (int i = 0; i < N; i++)
        if (!o[i].err && o[i].g.verdict == SB_COUNTERS_OK)
            released += release1(i % 2 ? r1 : r2, &o[i].g.lease).err == 0; /* released by the other node */
    is_int(released, T_MAX, "each lease released once, from the other connection");
    rd = read1(r1, 20, 1);
    ok(rd.err == 0 && rd.st.tenant_inflight == 0 && rd.st.channel_inflight == 0 && !rd.st.rate_state,
       "nothing in flight afterwards; no rate state without a rate limit");
}

/* Workers on two connections take, hold for a moment and give back one channel's slots; the count of slots held
 * as this process sees it (from the grant to the release being issued) never exceeds the limit. */
typedef struct churn {
    int held, max_held, grants, busy, errors, target, active;
    int64_t limit;
    sb_counters_limits_t lim;
} churn_t;

typedef struct worker {
    churn_t *c;
    sb_redis_t *r;
    uv_timer_t timer;
    sb_counters_lease_t lease;
    bool holding;
    int n;
} worker_t;

static void worker_step(worker_t *w);

static void worker_timer(uv_timer_t *t)
{
    worker_t *w = t->data;
    if (w->holding) {
        w->holding = false;
        w->c->held--;
        sb_counters_release(w->r, &w->lease, NULL, NULL); /* fire and forget */
    }
    worker_step(w);
}

static void worker_grant(void *arg, int err, const sb_counters_grant_t *g)
{
    worker_t *w = arg;
    churn_t *c = w->c;
    if (err) {
        c->errors++;
        c->active--;
        return;
    }
    if (g->verdict == SB_COUNTERS_OK) {
        c->grants++;
        c->held++;
        if (c->held > c->max_held)
            c->max_held = c->held;
        w->lease = g->lease;
        w->holding = true;
        uv_timer_start(&w->timer, worker_timer, (uint64_t)(w->n++ % 3), 0);
    } else {
        c->busy++;
        uv_timer_start(&w->timer, worker_timer, 1, 0);
    }
}

static void worker_step(worker_t *w)
{
    if (w->c->grants >= w->c->target) {
        w->c->active--;
        return;
    }
    if (sb_counters_acquire(w->r, 21, 1, &w->c->lim, worker_grant, w) != 0) {
        w->c->errors++;
        w->c->active--;
    }
}

static bool churn_over(const churn_t *c)
{
    return c->active == 0;
}

TEST(semaphores_churn)
{
    enum { W = 16 };
    static churn_t c;
    static worker_t w[W];
    memset(&c, 0, sizeof c);
    c.target = 600;
    c.lim = (sb_counters_limits_t){.burst = 1, .channel_max = 3, .lease_ms = 30000};
    c.active = W;
    for (int i = 0; i < W; i++) {
        w[i] = (worker_t){.c = &c, .r = i % 2 ? r2 : r1};
        uv_timer_init(&loop, &w[i].timer);
        w[i].timer.data = &w[i];
    }
    for (int i = 0; i < W; i++)
        worker_step(&w[i]);
    uint64_t deadline = uv_hrtime() + 20000000000ull;
    while (!churn_over(&c) && uv_hrtime() < deadline)
        uv_run(&loop, UV_RUN_ONCE);
    ok(churn_over(&c), "workers finished");
    is_int(c.errors, 0, "no errors");
    ok(c.grants >= c.target, "%d grants, %d busy answers", c.grants, c.busy);
    ok(c.max_held <= 3, "never more than 3 held at once (max %d)", c.max_held);
    ok(c.max_held == 3, "and the limit was reached");
    for (int i = 0; i < W; i++) {
        if (w[i].holding)
            sb_counters_release(w[i].r, &w[i].lease, NULL, NULL);
        uv_close((uv_handle_t *)&w[i].timer, NULL);
    }
    uv_run(&loop, UV_RUN_NOWAIT);
    cmd(r2, "PING", NULL); /* r2's fire-and-forget releases are done once this answers; r1's go before the read */
    readout_t rd = read1(r1, 21, 1);
    ok(rd.err == 0 && rd.st.channel_inflight == 0, "every slot given back (%lld in flight)",
       (long long)rd.st.channel_inflight);
}

/* Leases of a "crashed node" (never released) come back when they expire. */
TEST(lease_expiry)
{
    sb_counters_limits_t lim = {.burst = 1, .channel_max = 2, .lease_ms = 200};
    got_t a = acquire1(r1, 30, 1, &lim), b = acquire1(r2, 30, 1, &lim);
    ok(a.err == 0 && a.g.verdict == SB_COUNTERS_OK && b.err == 0 && b.g.verdict == SB_COUNTERS_OK,
       "two slots taken, never released");
    ok(a.g.at_us == a.g.now_us + 200000, "lease expiry = now + 200 ms of Redis time");
    got_t c = acquire1(r1, 30, 1, &lim);
    ok(c.err == 0 && c.g.verdict == SB_COUNTERS_BUSY && c.g.full == SB_COUNTERS_FULL_CHANNEL,
       "the third is told busy (channel full)");
    ok(c.g.at_us == a.g.at_us && c.g.wait_us > 0 && c.g.wait_us <= 200000,
       "until the first lease expires (wait %lld us)", (long long)c.g.wait_us);
    answer_t pt = cmd(r1, "PTTL", "sb:{t30}:inflight:ch:1", NULL);
    ok(pt.integer > 0 && pt.integer <= 201, "the set expires with its last lease, + 1 ms (pttl %lld)", pt.integer);

    pause_ms((uint64_t)(c.g.wait_us / 1000) + 2);
    got_t d = acquire1(r2, 30, 1, &lim);
    ok(d.err == 0 && d.g.verdict == SB_COUNTERS_OK, "after that expiry (Redis time %lld >= %lld) a slot is free",
       (long long)d.g.now_us, (long long)c.g.at_us);
    ok(d.g.now_us >= a.g.at_us && d.g.channel_inflight <= 2, "the expired lease was swept, not counted (%lld)",
       (long long)d.g.channel_inflight);
    fin_t f = release1(r1, &a.g.lease);
    is_int(f.err, SB_ENOENT, "releasing the expired lease: SB_ENOENT (harmless)");
    pause_ms(250);
    answer_t ex = cmd(r1, "EXISTS", "sb:{t30}:inflight:ch:1", "sb:{t30}:inflight:tenant", NULL);
    is_int(ex.integer, 0, "idle sets vanish once every lease expired");
}

TEST(release_frees)
{
    sb_counters_limits_t lim = {.burst = 1, .channel_max = 1, .tenant_max = 1, .lease_ms = 30000};
    got_t a = acquire1(r1, 40, 1, &lim);
    ok(a.err == 0 && a.g.verdict == SB_COUNTERS_OK && strlen(a.g.lease.id) == SB_COUNTERS_LEASE_ID_LEN,
       "taken, lease id %s", a.g.lease.id);
    got_t b = acquire1(r2, 40, 2, &lim);
    ok(b.err == 0 && b.g.verdict == SB_COUNTERS_BUSY && b.g.full == SB_COUNTERS_FULL_TENANT,
       "another channel of the tenant: busy (tenant full)");
    fin_t f = release1(r2, &a.g.lease);
    ok(f.calls == 1 && f.err == 0, "released");
    b = acquire1(r2, 40, 2, &lim);
    ok(b.err == 0 && b.g.verdict == SB_COUNTERS_OK, "now the other channel gets it");
    is_int(release1(r1, &a.g.lease).err, SB_ENOENT, "a second release: SB_ENOENT");
    is_int(sb_counters_release(r2, &b.g.lease, NULL, NULL), 0, "fire-and-forget release");
    got_t c = acquire1(r2, 40, 1, &lim); /* same connection: runs after the release */
    ok(c.err == 0 && c.g.verdict == SB_COUNTERS_OK, "freed the slot");
    release1(r2, &c.g.lease);
    ok(a.g.lease.id[0] && strcmp(a.g.lease.id, b.g.lease.id) != 0 && strcmp(b.g.lease.id, c.g.lease.id) != 0,
       "lease ids differ");
}

TEST(extend)
{
    sb_counters_limits_t lim = {.burst = 1, .channel_max = 1, .lease_ms = 200};
    got_t a = acquire1(r1, 50, 1, &lim);
    ok(a.err == 0 && a.g.verdict == SB_COUNTERS_OK, "taken for 200 ms");
    fin_t f = {0};
    is_int(sb_counters_extend(r1, &a.g.lease, 5000, on_fin, &f), 0, "extend to 5 s");
    run_until(&f.done, 5000);
    is_int(f.err, 0, "extended");
    pause_ms(300);
    got_t b = acquire1(r2, 50, 1, &lim);
    ok(b.err == 0 && b.g.verdict == SB_COUNTERS_BUSY && b.g.at_us > b.g.now_us + 4000000,
       "past the first 200 ms the slot is still held, now for ~5 s");
    answer_t pt = cmd(r1, "PTTL", "sb:{t50}:inflight:tenant", NULL);
    ok(pt.integer > 4000, "the set's TTL followed (%lld ms)", pt.integer);
    release1(r1, &a.g.lease);

    lim.lease_ms = 50;
    got_t c = acquire1(r1, 50, 2, &lim);
    pause_ms(120);
    memset(&f, 0, sizeof f);
    sb_counters_extend(r1, &c.g.lease, 5000, on_fin, &f);
    run_until(&f.done, 5000);
    is_int(f.err, SB_ENOENT, "an expired lease is not revived: SB_ENOENT");
    answer_t s1 = cmd(r1, "ZSCORE", "sb:{t50}:inflight:ch:2", c.g.lease.id, NULL);
    answer_t s2 = cmd(r1, "ZSCORE", "sb:{t50}:inflight:tenant", c.g.lease.id, NULL);
    ok(s1.type == REDIS_REPLY_NIL && s2.type == REDIS_REPLY_NIL, "and it is gone from both sets");
}

TEST(read_state)
{
    const int64_t T = 1000000; /* 1/s: the whole test runs well inside one T */
    sb_counters_limits_t lim = {.interval_us = T, .burst = 4, .channel_max = 10, .tenant_max = 10, .lease_ms = 30000};
    got_t g[3];
    for (int i = 0; i < 3; i++)
        g[i] = acquire1(r1, 60, 7, &lim);
    ok(g[0].g.verdict == SB_COUNTERS_OK && g[2].g.verdict == SB_COUNTERS_OK, "three of a burst of 4 taken");
    readout_t rd = read1(r2, 60, 7);
    ok(rd.err == 0 && rd.calls == 1, "read");
    ok(rd.st.rate_state && rd.st.interval_us == T && rd.st.burst == 4, "rate state: T and burst as used");
    ok(rd.st.tat_us == g[0].g.now_us + 3 * T, "TAT = first + 3 T");
    int64_t next;
    int64_t want = sb_counters_gcra_tokens(rd.st.tat_us, rd.st.now_us, T, 4, &next);
    ok(rd.st.tokens == want && want >= 1 && rd.st.next_free_us == rd.st.now_us, "tokens now: %lld",
       (long long)rd.st.tokens);
    is_int(rd.st.channel_inflight, 3, "channel in flight");
    is_int(rd.st.tenant_inflight, 3, "tenant in flight");
    is_int(rd.st.channel_next_expiry_us, g[0].g.at_us, "earliest lease expiry");
    got_t more = acquire1(r1, 60, 7, &lim);
    got_t none = acquire1(r1, 60, 7, &lim);
    ok(more.g.verdict == SB_COUNTERS_OK && none.g.verdict == SB_COUNTERS_RATE, "burst used up");
    rd = read1(r2, 60, 7);
    ok(rd.st.tokens == 0 && rd.st.next_free_us == none.g.at_us, "read-out: no token, next free when acquire said");
    readout_t idle = read1(r2, 60, 8);
    ok(idle.err == 0 && !idle.st.rate_state && idle.st.tokens == -1 && idle.st.channel_inflight == 0 &&
           idle.st.tenant_inflight == 4, "an idle channel: no state, nothing in flight; the tenant's 4 counted");
}

TEST(hash_tags_and_ttls)
{
    answer_t keys = cmd(r1, "KEYS", "*", NULL);
    ok(keys.err == 0 && keys.elements > 0, "%zu keys in database 2", keys.elements);
    int untagged = 0, persistent = 0, unknown = 0;
    char *save = NULL;
    for (char *k = strtok_r(keys.str, "\n", &save); k; k = strtok_r(NULL, "\n", &save)) {
        long long t, c;
        char rest[64];
        untagged += strncmp(k, "sb:{t", 5) != 0 || !strchr(k, '}');
        unknown += !(sscanf(k, "sb:{t%lld}:rl:%lld%63s", &t, &c, rest) == 2 ||
                     sscanf(k, "sb:{t%lld}:inflight:ch:%lld%63s", &t, &c, rest) == 2 ||
                     (sscanf(k, "sb:{t%lld}:inflight:tenant%63s", &t, rest) == 1 && strstr(k, "}:inflight:tenant") &&
                      strcmp(strstr(k, "}:inflight:tenant"), "}:inflight:tenant") == 0));
        answer_t pt = cmd(r1, "PTTL", k, NULL);
        persistent += pt.integer < 0;
    }
    is_int(untagged, 0, "every key carries the {t<tenant>} hash tag first");
    is_int(unknown, 0, "and is one of the three documented names");
    is_int(persistent, 0, "and has a TTL");
}

TEST(one_round_trip)
{
    enum { N = 200 };
    sb_counters_limits_t lim = {.interval_us = 1, .burst = 1000, .channel_max = 0, .tenant_max = 0,
                                .lease_ms = 30000};
    got_t warm = acquire1(r1, 70, 0, &lim); /* loads the script if this Redis never saw it */
    release1(r1, &warm.g.lease);
    answer_t i0 = cmd(r2, "INFO", "commandstats", NULL);
    sb_redis_stats_t s0, s1;
    sb_redis_get_stats(r1, &s0);
    static got_t o[N];
    memset(o, 0, sizeof o);
    for (int i = 0; i < N; i++)
        sb_counters_acquire(r1, 70, i % 50, &lim, on_grant, &o[i]);
    ok(wait_all(o, N), "%d acquisitions answered", N);
    int admitted = 0;
    for (int i = 0; i < N; i++)
        admitted += !o[i].err && o[i].g.verdict == SB_COUNTERS_OK;
    is_int(admitted, N, "all admitted");
    sb_redis_get_stats(r1, &s1);
    is_int(s1.commands - s0.commands, N, "one command per acquisition (this connection's count)");
    is_int(s1.replies - s0.replies, N, "one reply per acquisition");
    is_int(s1.noscript - s0.noscript, 0, "no NOSCRIPT detour");
    for (int i = 0; i < N; i++)
        sb_counters_release(r1, &o[i].g.lease, NULL, NULL);
    fin_t last = release1(r1, &warm.g.lease); /* behind the fire-and-forget ones */
    (void)last;
    sb_redis_get_stats(r1, &s0);
    is_int(s0.commands - s1.commands, N + 1, "one command per release");
    answer_t i1 = cmd(r2, "INFO", "commandstats", NULL);
    const char *p0 = strstr(i0.str, "cmdstat_evalsha:calls="), *p1 = strstr(i1.str, "cmdstat_evalsha:calls=");
    long long c0 = p0 ? atoll(p0 + 22) : 0, c1 = p1 ? atoll(p1 + 22) : 0;
    ok(c1 - c0 >= 2 * N + 1, "the server counted the EVALSHAs (%lld; server-wide, other clients included)", c1 - c0);
}

TEST(unavailable)
{
    sb_redis_t *down = sb_redis_create(&loop, "127.0.0.1", 1, TEST_DB); /* nothing listens on port 1 */
    sb_counters_limits_t lim = {.burst = 1, .lease_ms = 1000};
    got_t o = {0};
    readout_t rd = {0};
    fin_t f = {0};
    sb_counters_lease_t l = {.tenant = 1, .channel = 1, .id = "x"};
    is_int(sb_counters_acquire(down, 1, 1, &lim, on_grant, &o), SB_EUNAVAIL, "acquire: SB_EUNAVAIL at once");
    is_int(sb_counters_release(down, &l, on_fin, &f), SB_EUNAVAIL, "release likewise");
    is_int(sb_counters_extend(down, &l, 1000, on_fin, &f), SB_EUNAVAIL, "extend likewise");
    is_int(sb_counters_read(down, 1, 1, on_read, &rd), SB_EUNAVAIL, "read likewise");
    pause_ms(150); /* a reconnection attempt fails meanwhile */
    is_int(sb_counters_acquire(down, 1, 1, &lim, on_grant, &o), SB_EUNAVAIL, "still, after a retry");
    ok(o.calls == 0 && f.calls == 0 && rd.calls == 0, "and no callback");
    sb_redis_close(down);
}

/* A connection lost with calls in flight: they fail with SB_EUNAVAIL; the adapter reconnects, to database 2. */
TEST(connection_lost)
{
    sb_redis_t *r3 = sb_redis_create(&loop, "127.0.0.1", port, TEST_DB);
    ok(wait_connected(r3, 5000), "third connection up");
    answer_t id = cmd(r3, "CLIENT", "ID", NULL);
    char idbuf[32];
    snprintf(idbuf, sizeof idbuf, "%lld", id.integer);
    answer_t blocked = {0};
    const char *bl[3] = {"BLPOP", "sb:{t80}:never", "5"};
    size_t bllen[3] = {5, 14, 1};
    sb_redis_command_argv(r3, 3, bl, bllen, on_answer, &blocked); /* holds the connection's later commands */
    sb_counters_limits_t lim = {.burst = 1, .channel_max = 1, .lease_ms = 30000};
    got_t o = {0};
    is_int(sb_counters_acquire(r3, 80, 1, &lim, on_grant, &o), 0, "acquire queued behind a blocking command");
    answer_t kill = cmd(r1, "CLIENT", "KILL", "ID", idbuf, NULL);
    is_int(kill.integer, 1, "the connection killed from the other one");
    run_until(&o.done, 5000);
    ok(o.calls == 1 && o.err == SB_EUNAVAIL, "the acquisition failed with SB_EUNAVAIL (%d)", o.err);
    ok(blocked.calls == 1 && blocked.err == SB_EUNAVAIL, "and so did the blocked command");
    ok(wait_connected(r3, 5000), "reconnected");
    got_t again = acquire1(r3, 80, 1, &lim);
    ok(again.err == 0 && again.g.verdict == SB_COUNTERS_OK, "acquires again");
    is_int(zcard("sb:{t80}:inflight:ch:1"), 1, "in database 2 (SELECT after reconnecting)");
    sb_redis_stats_t st;
    sb_redis_get_stats(r3, &st);
    is_int(st.connects, 2, "two connections counted");
    release1(r3, &again.g.lease);
    sb_redis_close(r3);
}

TEST(cancel_on_close)
{
    sb_redis_t *r4 = sb_redis_create(&loop, "127.0.0.1", port, TEST_DB);
    ok(wait_connected(r4, 5000), "fourth connection up");
    sb_counters_limits_t lim = {.burst = 1, .lease_ms = 1000};
    got_t o = {0};
    readout_t rd = {0};
    fin_t f = {0};
    sb_counters_lease_t l = {.tenant = 90, .channel = 1, .id = "x"};
    is_int(sb_counters_acquire(r4, 90, 1, &lim, on_grant, &o), 0, "acquire sent");
    is_int(sb_counters_read(r4, 90, 1, on_read, &rd), 0, "read sent");
    is_int(sb_counters_release(r4, &l, on_fin, &f), 0, "release sent");
    is_int(sb_counters_release(r4, &l, NULL, NULL), 0, "fire-and-forget release sent");
    sb_redis_close(r4);
    ok(o.calls == 1 && o.err == SB_ECANCELED, "closing called the acquisition back with SB_ECANCELED");
    ok(rd.calls == 1 && rd.err == SB_ECANCELED && f.calls == 1 && f.err == SB_ECANCELED, "and the others");
}

/* ---- calls ---------------------------------------------------------------------------------------------------- */

typedef struct admitted_t {
    bool done;
    int calls, err;
    sb_counters_call_grant_t g;
} admitted_t;

static void on_admit(void *arg, int err, const sb_counters_call_grant_t *g)
{
    admitted_t *o = arg;
    o->done = true;
    o->calls++;
    o->err = err;
    if (g)
        o->g = *g;
}

static admitted_t admit1(sb_redis_t *r, int64_t tenant, int64_t channel, const char *key,
                         const sb_counters_call_caps_t *caps)
{
    admitted_t o = {0};
    o.err = sb_counters_call_admit(r, tenant, channel, key, caps, on_admit, &o);
    if (o.err == 0)
        run_until(&o.done, 5000);
    return o;
}

/* Many admissions pipelined on two connections ("two nodes") over two tenants and four channels: exactly as many
 * as the tightest cap allows, never one more, and each refusal names a cap that was full. */
TEST(call_caps_two_nodes)
{
    enum { N = 120, FLEET = 20, TENANT = 8, CHANNEL = 3 };
    cmd(r1, "DEL", "sb:{calls}:fleet", NULL);
    sb_counters_call_caps_t caps = {.fleet_max = FLEET, .tenant_max = TENANT, .channel_max = CHANNEL,
                                    .lease_ms = 30000};
    static admitted_t o[N];
    static char keys[N][24];
    memset(o, 0, sizeof o);
    int sent = 0;
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof keys[i], "CA%04d", i);
        int64_t tenant = 300 + i % 2, channel = 10 * tenant + (i / 2) % 4;
        sent += sb_counters_call_admit(i % 3 ? r2 : r1, tenant, channel, keys[i], &caps, on_admit, &o[i]) == 0;
    }
    is_int(sent, N, "%d admissions pipelined on two connections", N);
    bool all = true;
    for (int i = 0; i < N; i++)
        all = all && run_until(&o[i].done, 5000);
    ok(all, "all answered");
    int admitted = 0, per_tenant[2] = {0}, per_channel[8] = {0}, over = 0, bad_full = 0, errs = 0;
    for (int i = 0; i < N; i++) {
        errs += o[i].err != 0;
        if (o[i].err)
            continue;
        int t = i % 2, c = (i / 2) % 4;
        if (o[i].g.admitted) {
            admitted++;
            per_tenant[t]++;
            per_channel[t * 4 + c]++;
            over += o[i].g.fleet > FLEET || o[i].g.tenant > TENANT || o[i].g.channel > CHANNEL;
        } else {
            bad_full += o[i].g.full == 0;
        }
    }
    is_int(errs, 0, "no errors");
    is_int(admitted, 2 * TENANT, "the tenants' caps admitted exactly (%d)", admitted);
    ok(per_tenant[0] == TENANT && per_tenant[1] == TENANT, "each tenant at its cap (%d, %d)", per_tenant[0],
       per_tenant[1]);
    int worst = 0;
    for (int i = 0; i < 8; i++)
        worst = per_channel[i] > worst ? per_channel[i] : worst;
    ok(worst <= CHANNEL, "no channel over its cap (at most %d)", worst);
    is_int(over, 0, "no admission saw more live calls than a cap");
    is_int(bad_full, 0, "every refusal names a full cap");
    is_int(zcard("sb:{calls}:fleet"), 2 * TENANT, "the fleet set holds every live call");

    /* the same key again is the same call: renewed, not counted twice */
    int first = -1;
    for (int i = 0; i < N && first < 0; i++)
        if (o[i].g.admitted)
            first = i;
    int64_t tenant = 300 + first % 2, channel = 10 * tenant + (first / 2) % 4;
    admitted_t again = admit1(r1, tenant, channel, keys[first], &caps);
    ok(again.err == 0 && again.g.admitted && again.g.fleet == 2 * TENANT,
       "a retried admission of a live call is admitted without a second slot");
    /* a third tenant fills the fleet: the fleet's cap binds */
    int filled = 0;
    for (int i = 0; i < FLEET - 2 * TENANT; i++) {
        char key[24];
        snprintf(key, sizeof key, "CAfill%d", i);
        filled += admit1(i % 2 ? r1 : r2, 999, 9990 + i, key, &caps).g.admitted;
    }
    is_int(filled, FLEET - 2 * TENANT, "a third tenant takes what the fleet has left");
    admitted_t full = admit1(r1, 998, 9980, "CAfull", &caps);
    ok(full.err == 0 && !full.g.admitted && full.g.full == SB_CALLCAP_FLEET && full.g.fleet == FLEET,
       "the next call of a fourth tenant is refused: fleet full");
    /* releasing frees exactly one slot of each cap */
    fin_t f = {0};
    is_int(sb_counters_call_release(r2, tenant, channel, keys[first], on_fin, &f), 0, "release sent");
    run_until(&f.done, 5000);
    is_int(f.err, 0, "released (all three sets held it)");
    is_int(zcard("sb:{calls}:fleet"), FLEET - 1, "one slot of the fleet free");
    admitted_t next = admit1(r1, 998, 9980, "CAfull", &caps);
    ok(next.err == 0 && next.g.admitted, "and the refused call now gets it");
    cmd(r1, "DEL", "sb:{calls}:fleet", NULL);
}

/* A call's lease runs out unless renewed: the slots of a node that died come back. */
TEST(call_lease_expiry)
{
    cmd(r1, "DEL", "sb:{calls}:fleet", "sb:{calls}:t:400", "sb:{calls}:ch:4000", NULL);
    sb_counters_call_caps_t caps = {.fleet_max = 1, .lease_ms = 300};
    admitted_t a = admit1(r1, 400, 4000, "CAa", &caps), b = admit1(r2, 400, 4000, "CAb", &caps);
    ok(a.err == 0 && a.g.admitted && a.g.expires_us - a.g.now_us == 300000, "admitted, lease 300 ms");
    ok(b.err == 0 && !b.g.admitted && b.g.full == SB_CALLCAP_FLEET, "the second refused: fleet cap 1");
    pause_ms(150);
    fin_t f = {0};
    is_int(sb_counters_call_extend(r1, 400, 4000, "CAa", 300, on_fin, &f), 0, "renewal sent");
    run_until(&f.done, 5000);
    is_int(f.err, 0, "renewed in time");
    pause_ms(200);
    b = admit1(r2, 400, 4000, "CAb", &caps);
    ok(b.err == 0 && !b.g.admitted, "still held after the first lease time: the renewal counted");
    pause_ms(350);
    b = admit1(r2, 400, 4000, "CAb", &caps);
    ok(b.err == 0 && b.g.admitted, "once not renewed, the slot came back");
    f = (fin_t){0};
    sb_counters_call_extend(r1, 400, 4000, "CAa", 300, on_fin, &f);
    run_until(&f.done, 5000);
    is_int(f.err, SB_ENOENT, "renewing an expired lease says so");
    sb_counters_call_release(r2, 400, 4000, "CAb", NULL, NULL);
}

/* Placed calls: the dial times are reserved one interval apart, and admission never waits for them. */
TEST(call_pace)
{
    cmd(r1, "DEL", "sb:{calls}:fleet", "sb:{calls}:pace:5000", NULL);
    sb_counters_call_caps_t caps = {.lease_ms = 30000, .interval_us = 200000};
    int64_t at[5];
    bool ok_all = true;
    for (int i = 0; i < 5; i++) {
        char key[16];
        snprintf(key, sizeof key, "SBp%d", i);
        admitted_t a = admit1(i % 2 ? r2 : r1, 500, 5000, key, &caps);
        ok_all = ok_all && a.err == 0 && a.g.admitted;
        at[i] = a.g.dial_at_us;
        if (i == 0)
            ok(a.g.dial_at_us == a.g.now_us, "the first dial is due at once");
    }
    ok(ok_all, "five placed calls admitted at once");
    bool spaced = true;
    for (int i = 1; i < 5; i++)
        spaced = spaced && at[i] - at[i - 1] >= 200000 && at[i] - at[i - 1] < 210000;
    ok(spaced, "each dial due one interval (200 ms) after the previous");
    admitted_t bad = {0};
    sb_counters_call_caps_t neg = {.lease_ms = 0};
    is_int(sb_counters_call_admit(r1, 1, 1, "x", &neg, on_admit, &bad), SB_EINVAL, "a zero lease is refused");
    is_int(sb_counters_call_admit(r1, 1, 1, "", &caps, on_admit, &bad), SB_EINVAL, "an empty key is refused");
    for (int i = 0; i < 5; i++) {
        char key[16];
        snprintf(key, sizeof key, "SBp%d", i);
        sb_counters_call_release(r1, 500, 5000, key, NULL, NULL);
    }
}

/* ---- on a Redis Cluster --------------------------------------------------------------------------------------- */

static void on_calls(void *arg, int err, int64_t fleet, int64_t tenant)
{
    int64_t *o = arg;
    o[0] = err == 0 ? fleet : -1;
    o[1] = err == 0 ? tenant : -1;
    o[2] = 1;
}

/* Which master of CLUSTER NODES (its text) serves slot: its port, or 0. A master's line reads
 * "<id> <ip:port@cport> <flags> - <ping> <pong> <epoch> <state> <from>-<to> ...". */
static int master_port_of(const char *nodes, unsigned slot)
{
    for (const char *line = nodes; *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : "") {
        const char *end = strchr(line, '\n') ? strchr(line, '\n') : line + strlen(line);
        const char *addr = memchr(line, ' ', (size_t)(end - line));
        if (!addr || !strstr(line, "master") || strstr(line, "master") > end)
            continue;
        const char *colon = memchr(addr, ':', (size_t)(end - addr));
        int mport = colon ? atoi(colon + 1) : 0;
        int field = 0;
        for (const char *q = addr; q && q < end; q = memchr(q + 1, ' ', (size_t)(end - q - 1))) {
            if (++field < 8 || q[1] == '[') /* the first slot range is the 9th field; [migrating] ones skipped */
                continue;
            char *dash;
            unsigned long from = strtoul(q + 1, &dash, 10), to = *dash == '-' ? strtoul(dash + 1, NULL, 10) : from;
            if (from <= slot && slot <= to)
                return mport;
        }
    }
    return 0;
}

/* Every script above against the Redis Cluster of ops/redis_cluster.sh (first port of $SB_RCLUSTER_PORTS, default
 * 7101), for a tenant on each of its three masters: a script whose keys spanned two slots would be refused
 * (CROSSSLOT) and come back as an error; each call must also reach its master without a redirection. */
TEST(on_cluster)
{
    int cport = 7101;
    const char *p = getenv("SB_RCLUSTER_PORTS");
    if (p)
        cport = atoi(p);
    is_int(system("ops/redis_cluster.sh up >/dev/null"), 0, "ops/redis_cluster.sh up");
    sb_redis_t *rc = sb_redis_create(&loop, "127.0.0.1", cport, 0);
    sb_redis_stats_t st = {0};
    uint64_t deadline = uv_hrtime() + 10000000000ull;
    while ((st.nodes_up < 3 || st.slot_maps == 0) && uv_hrtime() < deadline) {
        uv_run(&loop, UV_RUN_ONCE);
        sb_redis_get_stats(rc, &st);
    }
    ok(st.nodes_up == 3 && st.slot_maps > 0, "the adapter knows the cluster's three masters");
    answer_t nodes = cmd(rc, "CLUSTER", "NODES", NULL);
    int masters[3] = {0};
    int64_t tenants[3] = {0};
    int found = 0;
    for (int64_t t = 100; t < 2000 && found < 3; t++) {
        char key[40];
        int n = snprintf(key, sizeof key, "sb:{t%lld}:rl:1", (long long)t);
        int mport = master_port_of(nodes.str, sb_redis_key_slot(key, (size_t)n));
        int i = 0;
        while (i < found && masters[i] != mport)
            i++;
        if (mport && i == found) {
            masters[found] = mport;
            tenants[found++] = t;
        }
    }
    is_int(found, 3, "a tenant on each master: %lld on %d, %lld on %d, %lld on %d", (long long)tenants[0], masters[0],
           (long long)tenants[1], masters[1], (long long)tenants[2], masters[2]);
    sb_redis_stats_t s0;
    sb_redis_get_stats(rc, &s0);
    sb_counters_limits_t lim = {
        .interval_us = 1000, .burst = 5, .channel_max = 2, .tenant_max = 3, .lease_ms = 30000};
    int acquired = 0, read = 0, extended = 0, released = 0;
    for (int i = 0; i < found; i++) {
        got_t a = acquire1(rc, tenants[i], 7, &lim);
        acquired += a.err == 0 && a.g.verdict == SB_COUNTERS_OK && a.g.channel_inflight == 1;
        readout_t rd = read1(rc, tenants[i], 7);
        read += rd.err == 0 && rd.st.channel_inflight == 1 && rd.st.tenant_inflight == 1 && rd.st.rate_state;
        fin_t e = {0};
        if (sb_counters_extend(rc, &a.g.lease, 60000, on_fin, &e) == 0)
            run_until(&e.done, 5000);
        extended += e.done && e.err == 0;
        fin_t f = release1(rc, &a.g.lease);
        released += f.done && f.err == 0;
    }
    is_int(acquired, 3, "acquire on each master");
    is_int(read, 3, "the read-out on each master");
    is_int(extended, 3, "extend on each master");
    is_int(released, 3, "release on each master");
    sb_counters_call_caps_t caps = {
        .fleet_max = 10, .tenant_max = 5, .channel_max = 2, .lease_ms = 30000, .interval_us = 1000};
    int admitted = 0, fins = 0;
    for (int i = 0; i < found; i++) {
        char key[24];
        snprintf(key, sizeof key, "CAcluster%d", i);
        admitted += admit1(rc, tenants[i], 70 + i, key, &caps).g.admitted;
    }
    is_int(admitted, 3, "call admit for each tenant (the keys under {calls})");
    int64_t calls[3] = {0};
    if (sb_counters_calls_read(rc, tenants[1], on_calls, calls) == 0)
        while (!calls[2] && uv_hrtime() < deadline + 10000000000ull)
            uv_run(&loop, UV_RUN_ONCE);
    ok(calls[0] == 3 && calls[1] == 1, "calls read: fleet %lld, tenant %lld", (long long)calls[0],
       (long long)calls[1]);
    for (int i = 0; i < found; i++) {
        char key[24];
        snprintf(key, sizeof key, "CAcluster%d", i);
        fin_t e = {0}, f = {0};
        if (sb_counters_call_extend(rc, tenants[i], 70 + i, key, 60000, on_fin, &e) == 0)
            run_until(&e.done, 5000);
        if (sb_counters_call_release(rc, tenants[i], 70 + i, key, on_fin, &f) == 0)
            run_until(&f.done, 5000);
        fins += e.done && e.err == 0 && f.done && f.err == 0;
    }
    is_int(fins, 3, "call extend and release for each");
    sb_redis_stats_t s1;
    sb_redis_get_stats(rc, &s1);
    is_int(s1.moved - s0.moved, 0, "every script went straight to its master (no MOVED)");
    sb_redis_close(rc);
}

TEST(teardown)
{
    answer_t a = cmd(r1, "FLUSHDB", NULL);
    is_str(a.str, "OK", "database 2 flushed at the end");
    sb_redis_close(r1);
    sb_redis_close(r2);
    uv_run(&loop, UV_RUN_DEFAULT);
    is_int(uv_loop_close(&loop), 0, "every handle closed");
}

int main(void)
{
    const char *p = getenv("SB_TEST_REDIS_PORT");
    if (p)
        port = atoi(p);
    uv_loop_init(&loop);
    r1 = sb_redis_create(&loop, "127.0.0.1", port, TEST_DB);
    r2 = sb_redis_create(&loop, "127.0.0.1", port, TEST_DB);
    RUN(connect_db2);
    RUN(redis_commands);
    RUN(timed);
    RUN(evalsha_fallback);
    RUN(invalid);
    RUN(gcra_math);
    RUN(gcra_burst);
    RUN(gcra_paces);
    RUN(semaphores_two_nodes);
    RUN(semaphores_churn);
    RUN(lease_expiry);
    RUN(release_frees);
    RUN(extend);
    RUN(read_state);
    RUN(hash_tags_and_ttls);
    RUN(one_round_trip);
    RUN(unavailable);
    RUN(connection_lost);
    RUN(cancel_on_close);
    RUN(call_caps_two_nodes);
    RUN(call_lease_expiry);
    RUN(call_pace);
    RUN(on_cluster);
    RUN(teardown);
    return tap_done();
}
