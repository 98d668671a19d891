/* Per-shard counters and their Prometheus text rendering; see metrics.h. */
#include "gateway/metrics.h"

#include "gateway/version.h"
#include "proto/err.h"
#include "shards/shard.h"

static sb_metrics_t rows[SB_METRICS_MAX_SHARDS];

sb_metrics_t *sb_metrics_shard(unsigned idx)
{
    SB_BUG_ON(idx >= SB_METRICS_MAX_SHARDS);
    return &rows[idx];
}

static void family(sb_buf_t *out, const char *name, const char *type, const char *help)
{
    sb_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void sb_metrics_render(sb_buf_t *out, unsigned shards)
{
    sb_shard_stats_t st[SB_METRICS_MAX_SHARDS];
    if (shards > SB_METRICS_MAX_SHARDS)
        shards = SB_METRICS_MAX_SHARDS;
    for (unsigned i = 0; i < shards; i++)
        sb_shard_get_stats(i, &st[i]);

    family(out, "sb_build_info", "gauge", "Version of the running gateway.");
    sb_buf_printf(out, "sb_build_info{version=\"%s\"} 1\n", SB_VERSION);

    family(out, "sb_http_requests_total", "counter", "HTTP requests answered.");
    for (unsigned i = 0; i < shards; i++)
        sb_buf_printf(out, "sb_http_requests_total{shard=\"%u\"} %llu\n", i,
                      (unsigned long long)sb_metric_get(&rows[i].http_requests));
    family(out, "sb_http_responses_total", "counter", "HTTP responses by status class.");
    for (unsigned i = 0; i < shards; i++)
        for (unsigned c = 1; c <= 5; c++)
            sb_buf_printf(out, "sb_http_responses_total{shard=\"%u\",class=\"%uxx\"} %llu\n", i, c,
                          (unsigned long long)sb_metric_get(&rows[i].http_status[c]));
    family(out, "sb_connections", "gauge", "Open HTTP and WebSocket connections.");
    for (unsigned i = 0; i < shards; i++)
        sb_buf_printf(out, "sb_connections{shard=\"%u\"} %lld\n", i,
                      (long long)sb_gauge_get(&rows[i].http_connections));
    family(out, "sb_console_sessions", "gauge", "Open admin console sessions.");
    for (unsigned i = 0; i < shards; i++)
        sb_buf_printf(out, "sb_console_sessions{shard=\"%u\"} %lld\n", i,
                      (long long)sb_gauge_get(&rows[i].console_sessions));

    family(out, "sb_actors", "gauge", "Live actors.");
    for (unsigned i = 0; i < shards; i++)
        sb_buf_printf(out, "sb_actors{shard=\"%u\"} %llu\n", i, (unsigned long long)st[i].actors);
    family(out, "sb_mailbox_depth", "gauge", "Messages waiting in actor mailboxes.");
    for (unsigned i = 0; i < shards; i++)
        sb_buf_printf(out, "sb_mailbox_depth{shard=\"%u\"} %llu\n", i, (unsigned long long)st[i].mailbox_depth);
    family(out, "sb_actor_messages_total", "counter", "Actor messages handled.");
    for (unsigned i = 0; i < shards; i++)
        sb_buf_printf(out, "sb_actor_messages_total{shard=\"%u\"} %llu\n", i, (unsigned long long)st[i].processed);
    family(out, "sb_actor_restarts_total", "counter", "Actor restarts by the supervisor.");
    for (unsigned i = 0; i < shards; i++)
        sb_buf_printf(out, "sb_actor_restarts_total{shard=\"%u\"} %llu\n", i, (unsigned long long)st[i].restarts);
    family(out, "sb_actor_dead_letters_total", "counter", "Actor messages dropped undelivered.");
    for (unsigned i = 0; i < shards; i++)
        sb_buf_printf(out, "sb_actor_dead_letters_total{shard=\"%u\"} %llu\n", i,
                      (unsigned long long)st[i].dead_letters);
    family(out, "sb_loop_lag_seconds", "gauge", "How late the shard loop ran its last 100 ms tick.");
    for (unsigned i = 0; i < shards; i++)
        sb_buf_printf(out, "sb_loop_lag_seconds{shard=\"%u\"} %.6f\n", i, (double)st[i].loop_lag_us / 1e6);
}
