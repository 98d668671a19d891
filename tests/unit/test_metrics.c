/* Unit tests for gateway/metrics: the latency histograms' bucket math (inclusive upper bounds, as Prometheus's `le`,
 * and +Inf past the last), and their rendering — cumulative buckets summed over the shards, _sum in seconds, _count
 * equal to the +Inf bucket — next to the database gauges shard 0 refreshes. */
#include "gateway/metrics.h"

#include "tests/tap.h"

#include <stdio.h>
#include <string.h>

static const uint64_t bounds_ns[SB_HIST_BUCKETS - 1] = {
    100000,   250000,   500000,    1000000,   2500000,   5000000,    10000000,
    25000000, 50000000, 100000000, 250000000, 500000000, 1000000000, 2500000000};

TEST(buckets)
{
    is_int(sb_hist_bucket(0), 0, "0 ns: the first bucket");
    is_int(sb_hist_bucket(1), 0, "1 ns: the first bucket");
    int exact = 0, above = 0, below = 0;
    for (unsigned i = 0; i < SB_HIST_BUCKETS - 1; i++) {
        exact += sb_hist_bucket(bounds_ns[i]) == i;
        above += sb_hist_bucket(bounds_ns[i] + 1) == i + 1;
        below += sb_hist_bucket(bounds_ns[i] - 1) == i;
    }
    is_int(exact, SB_HIST_BUCKETS - 1, "each bound falls in its own bucket (le is inclusive)");
    is_int(above, SB_HIST_BUCKETS - 1, "a nanosecond more falls in the next one");
    is_int(below, SB_HIST_BUCKETS - 1, "a nanosecond less stays in it");
    is_int(sb_hist_bucket(350000), 2, "350 us: le 0.0005");
    is_int(sb_hist_bucket(7000000), 6, "7 ms: le 0.01");
    is_int(sb_hist_bucket(2500000001ULL), SB_HIST_BUCKETS - 1, "past 2.5 s: +Inf");
    is_int(sb_hist_bucket(UINT64_MAX), SB_HIST_BUCKETS - 1, "the largest latency: +Inf");
    unsigned prev = 0;
    int monotone = 1;
    for (uint64_t ns = 0; ns < 3000000000ULL; ns += 997 * 1013) {
        unsigned b = sb_hist_bucket(ns);
        monotone &= b >= prev && b < SB_HIST_BUCKETS;
        prev = b;
    }
    ok(monotone, "the bucket never goes down as the latency grows, and stays in range");
}

TEST(observe)
{
    sb_hist_t h;
    memset(&h, 0, sizeof h);
    sb_hist_observe(&h, 100000);
    sb_hist_observe(&h, 100001);
    sb_hist_observe(&h, 3000000000ULL);
    sb_hist_observe(NULL, 5); /* not timed: nothing happens */
    is_int((long long)sb_metric_get(&h.buckets[0]), 1, "100 us in bucket 0");
    is_int((long long)sb_metric_get(&h.buckets[1]), 1, "100.001 us in bucket 1");
    is_int((long long)sb_metric_get(&h.buckets[SB_HIST_BUCKETS - 1]), 1, "3 s in +Inf");
    is_int((long long)sb_metric_get(&h.sum_ns), 3000200001LL, "the sum in nanoseconds");
}

/* The value of the exposition line that starts with `line` (up to the space before the value), or -1. */
static double sample(const char *page, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = page; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, line, n) == 0 && p[n] == ' ') {
            double v;
            return sscanf(p + n + 1, "%lf", &v) == 1 ? v : -1;
        }
    }
    return -1;
}

TEST(render)
{
    /* Shard 0: 80 us and 3 ms; shard 1: 40 ms. Rows are static: this process is their only writer. */
    sb_hist_observe(&sb_metrics_shard(0)->postgres_seconds, 80000);
    sb_hist_observe(&sb_metrics_shard(0)->postgres_seconds, 3000000);
    sb_hist_observe(&sb_metrics_shard(1)->postgres_seconds, 40000000);
    sb_hist_observe(&sb_metrics_shard(1)->redis_seconds, 200000);
    sb_gauge_set(&sb_metrics_shard(0)->outbox_waiting, 12);
    sb_gauge_set(&sb_metrics_shard(0)->outbox_oldest_ms, 4500);
    sb_gauge_set(&sb_metrics_shard(0)->webhook_dead_letters, 3);
    sb_buf_t b;
    sb_buf_init(&b);
    sb_metrics_render(&b, 2);
    const char *page = sb_buf_cstr(&b);
    ok(strstr(page, "# TYPE sb_postgres_seconds histogram\n") != NULL, "sb_postgres_seconds is a histogram");
    ok(strstr(page, "# TYPE sb_redis_seconds histogram\n") != NULL, "sb_redis_seconds is a histogram");
    is_int((long long)sample(page, "sb_postgres_seconds_bucket{le=\"0.0001\"}"), 1, "le 0.0001: the 80 us one");
    is_int((long long)sample(page, "sb_postgres_seconds_bucket{le=\"0.0025\"}"), 1, "le 0.0025: still one");
    is_int((long long)sample(page, "sb_postgres_seconds_bucket{le=\"0.005\"}"), 2, "le 0.005: the 3 ms one too");
    is_int((long long)sample(page, "sb_postgres_seconds_bucket{le=\"0.05\"}"), 3,
           "le 0.05: shard 1's 40 ms one too (summed over the shards)");
    is_int((long long)sample(page, "sb_postgres_seconds_bucket{le=\"+Inf\"}"), 3, "+Inf: all three");
    is_int((long long)sample(page, "sb_postgres_seconds_count"), 3, "_count is the +Inf bucket");
    double s = sample(page, "sb_postgres_seconds_sum");
    ok(s > 0.043079 && s < 0.043081, "_sum in seconds: 0.04308 (%f)", s);
    is_int((long long)sample(page, "sb_redis_seconds_bucket{le=\"0.00025\"}"), 1, "redis: le 0.00025");
    is_int((long long)sample(page, "sb_redis_seconds_bucket{le=\"0.0001\"}"), 0, "redis: not le 0.0001");
    int buckets = 0;
    for (const char *p = page; (p = strstr(p, "sb_redis_seconds_bucket{")); p++)
        buckets++;
    is_int(buckets, SB_HIST_BUCKETS, "15 buckets, +Inf included");
    is_int((long long)sample(page, "sb_outbox_waiting"), 12, "sb_outbox_waiting from row 0");
    double age = sample(page, "sb_outbox_oldest_seconds");
    ok(age > 4.49 && age < 4.51, "sb_outbox_oldest_seconds in seconds (%f)", age);
    is_int((long long)sample(page, "sb_webhook_dead_letters"), 3, "sb_webhook_dead_letters from row 0");
    sb_buf_cleanup(&b);
}

int main(void)
{
    RUN(buckets);
    RUN(observe);
    RUN(render);
    return tap_done();
}
