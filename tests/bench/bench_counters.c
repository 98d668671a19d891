/* Global send counters benchmark: prints figures, asserts nothing.
 *
 *   pipelined   acquire + release pairs per second over ONE connection: SENDS acquisitions across 1000 channels of
 *               10 tenants, WINDOW of them in flight at a time; each granted lease is released at once (fire and
 *               forget) and the next acquisition goes out. Every acquisition runs the whole script: the GCRA check
 *               (a rate that never binds) and both semaphores.
 *   sequential  the same with one acquisition in flight: the round-trip latency of one acquire (+ its release)
 *   per send    Redis commands per send (acquire + release) counted on the connection, and Redis's own CPU time per
 *               EVALSHA from INFO commandstats (server-wide: other clients' EVALSHAs in the same interval count too)
 *
 * Runs against the local stack's Redis (127.0.0.1:6390, or $SB_TEST_REDIS_PORT) in database 2, which it flushes
 * before and after (only once the connection says it is on database 2). Each figure is the median of ROUNDS runs.
 * Usage: bench_counters [sends] [window] */
#include "adapters/counters.h"
#include "adapters/redis.h"
#include "gateway/log.h"
#include "proto/err.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROUNDS 3
#define CHANNELS 1000
#define TENANTS 10

static uv_loop_t loop;
static sb_redis_t *redis;

static double now_s(void)
{
    return (double)uv_hrtime() / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return v[n / 2];
}

/* ---- a synchronous command, for set-up and INFO --------------------------------------------------------------- */

typedef struct answer {
    bool done;
    int err;
    char str[65536];
} answer_t;

static answer_t ans;

static void on_answer(void *arg, int err, const struct redisReply *rep)
{
    answer_t *a = arg;
    a->done = true;
    a->err = err;
    a->str[0] = '\0';
    if (rep && (rep->type == REDIS_REPLY_STRING || rep->type == REDIS_REPLY_STATUS || rep->type == REDIS_REPLY_ERROR))
        snprintf(a->str, sizeof a->str, "%.*s", (int)rep->len, rep->str);
}

static const char *cmd2(const char *w0, const char *w1)
{
    const char *argv[2] = {w0, w1};
    size_t len[2] = {strlen(w0), w1 ? strlen(w1) : 0};
    memset(&ans, 0, sizeof ans);
    if (sb_redis_command_argv(redis, w1 ? 2 : 1, argv, len, on_answer, &ans) != 0)
        return "";
    while (!ans.done)
        uv_run(&loop, UV_RUN_ONCE);
    return ans.str;
}

/* EVALSHA calls and their total µs of Redis CPU, from INFO commandstats. */
static void evalsha_stats(long long *calls, long long *usec)
{
    const char *s = strstr(cmd2("INFO", "commandstats"), "cmdstat_evalsha:");
    *calls = *usec = 0;
    if (s)
        sscanf(s, "cmdstat_evalsha:calls=%lld,usec=%lld", calls, usec);
}

/* ---- the load ------------------------------------------------------------------------------------------------- */

static const sb_counters_limits_t lim = {
    .interval_us = 1, .burst = SB_COUNTERS_MAX_BURST, .channel_max = 64, .tenant_max = 100000, .lease_ms = 30000};

typedef struct load {
    long target, issued, answered, granted, refused, errors;
    int window;
} load_t;

static void issue(load_t *l);

static void on_grant(void *arg, int err, const sb_counters_grant_t *g)
{
    load_t *l = arg;
    l->answered++;
    if (err)
        l->errors++;
    else if (g->verdict == SB_COUNTERS_OK) {
        l->granted++;
        sb_counters_release(redis, &g->lease, NULL, NULL);
    } else
        l->refused++;
    issue(l);
}

static void issue(load_t *l)
{
    while (l->issued < l->target && l->issued - l->answered < l->window) {
        long i = l->issued++;
        int64_t channel = i % CHANNELS;
        if (sb_counters_acquire(redis, channel % TENANTS + 1, channel + 1, &lim, on_grant, l) != 0) {
            l->answered++;
            l->errors++;
        }
    }
}

/* Runs one round; returns acquire + release pairs per second. */
static double round_once(long sends, int window, load_t *out)
{
    load_t l = {.target = sends, .window = window};
    double t0 = now_s();
    issue(&l);
    while (l.answered < l.target)
        uv_run(&loop, UV_RUN_ONCE);
    cmd2("PING", NULL); /* the last releases are done */
    double dt = now_s() - t0;
    *out = l;
    return (double)l.granted / dt;
}

static void run(const char *name, long sends, int window)
{
    double v[ROUNDS];
    load_t l = {0};
    sb_redis_stats_t s0, s1;
    long long c0, u0, c1, u1;
    evalsha_stats(&c0, &u0);
    sb_redis_get_stats(redis, &s0);
    for (int i = 0; i < ROUNDS; i++) {
        v[i] = round_once(sends, window, &l);
        printf("  %-10s round %d: %9.0f sends/s (acquire + release)  granted %ld, refused %ld, errors %ld\n", name,
               i + 1, v[i], l.granted, l.refused, l.errors);
    }
    sb_redis_get_stats(redis, &s1);
    evalsha_stats(&c1, &u1);
    double per_send = (double)(s1.commands - s0.commands - ROUNDS) / (double)(sends * ROUNDS); /* minus the PINGs */
    printf("  %-10s median : %9.0f sends/s, %.0f us per send; %.2f Redis commands (round trips) per send; "
           "Redis CPU %.2f us per EVALSHA\n",
           name, median(v, ROUNDS), 1e6 / median(v, ROUNDS), per_send,
           c1 > c0 ? (double)(u1 - u0) / (double)(c1 - c0) : 0.0);
}

int main(int argc, char **argv)
{
    long sends = argc > 1 ? atol(argv[1]) : 100000;
    int window = argc > 2 ? atoi(argv[2]) : 512;
    const char *p = getenv("SB_TEST_REDIS_PORT");
    sb_log_set_level(SB_LOG_WARN);
    uv_loop_init(&loop);
    redis = sb_redis_create(&loop, "127.0.0.1", p ? atoi(p) : 6390, 2);
    uint64_t deadline = uv_hrtime() + 5000000000ull;
    while (!sb_redis_connected(redis) && uv_hrtime() < deadline)
        uv_run(&loop, UV_RUN_ONCE);
    if (!sb_redis_connected(redis)) {
        fprintf(stderr, "bench_counters: Redis is not reachable (ops/stack.sh up)\n");
        return 1;
    }
    if (!strstr(cmd2("CLIENT", "INFO"), " db=2 ")) {
        fprintf(stderr, "bench_counters: not on database 2, not flushing it: %s\n", ans.str);
        return 1;
    }
    cmd2("FLUSHDB", NULL);
    printf("== bench_counters: %ld sends over %d channels of %d tenants, one connection\n", sends, CHANNELS, TENANTS);
    run("pipelined", sends, window);
    run("sequential", sends / 10, 1);
    cmd2("FLUSHDB", NULL);
    sb_redis_close(redis);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return 0;
}
