/* Per-shard counters and their Prometheus text rendering; see metrics.h. */
#include "gateway/metrics.h"

#include "proto/version.h"
#include "proto/err.h"
#include "shards/shard.h"

#include <stddef.h>

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

/* One figure per shard: a counter or gauge in the shard's metrics row, or a field of its runtime stats. */
enum source { ROW_COUNTER, ROW_GAUGE, STAT };

static const struct figure {
    const char *name, *type, *help;
    enum source src;
    size_t off; /* in sb_metrics_t or sb_shard_stats_t */
} figures[] = {
    {"sb_http_requests_total", "counter", "HTTP requests answered.", ROW_COUNTER,
     offsetof(sb_metrics_t, http_requests)},
    {"sb_connections", "gauge", "Open HTTP and WebSocket connections.", ROW_GAUGE,
     offsetof(sb_metrics_t, http_connections)},
    {"sb_connections_refused_total", "counter", "Connections refused for lack of file descriptors.", ROW_COUNTER,
     offsetof(sb_metrics_t, connections_refused)},
    {"sb_console_sessions", "gauge", "Open admin console sessions.", ROW_GAUGE,
     offsetof(sb_metrics_t, console_sessions)},
    {"sb_inbox_clients", "gauge", "Live inbox WebSocket clients.", ROW_GAUGE, offsetof(sb_metrics_t, inbox_clients)},
    {"sb_inbox_events_total", "counter", "Events written to live inbox clients.", ROW_COUNTER,
     offsetof(sb_metrics_t, inbox_events)},
    {"sb_inbox_too_slow_total", "counter", "Live inbox clients closed for falling behind (4408).", ROW_COUNTER,
     offsetof(sb_metrics_t, inbox_too_slow)},
    {"sb_receipts_stored_total", "counter", "Webhook receipts committed (before their 200).", ROW_COUNTER,
     offsetof(sb_metrics_t, receipts_stored)},
    {"sb_receipts_applied_total", "counter", "Webhook receipts applied by their session (marked processed).",
     ROW_COUNTER, offsetof(sb_metrics_t, receipts_applied)},
    {"sb_calls_admitted_total", "counter", "Calls given a slot of the call caps.", ROW_COUNTER,
     offsetof(sb_metrics_t, calls_admitted)},
    {"sb_calls_rejected_total", "counter", "Calls refused because a call cap was full.", ROW_COUNTER,
     offsetof(sb_metrics_t, calls_rejected)},
    {"sb_media_streams", "gauge", "Media Streams being relayed to voice apps.", ROW_GAUGE,
     offsetof(sb_metrics_t, media_streams)},
    {"sb_media_frames_total", "counter", "Media Streams frames relayed, both ways.", ROW_COUNTER,
     offsetof(sb_metrics_t, media_frames)},
    {"sb_media_dropped_total", "counter", "Audio frames dropped toward a voice app that fell behind.", ROW_COUNTER,
     offsetof(sb_metrics_t, media_dropped)},
    {"sb_actors", "gauge", "Live actors.", STAT, offsetof(sb_shard_stats_t, actors)},
    {"sb_actor_activations_total", "counter", "Keyed actors activated (their state loaded).", STAT,
     offsetof(sb_shard_stats_t, activations)},
    {"sb_actor_passivations_total", "counter", "Keyed actors passivated when idle (their memory returned).", STAT,
     offsetof(sb_shard_stats_t, passivations)},
    {"sb_mailbox_depth", "gauge", "Messages waiting in actor mailboxes.", STAT,
     offsetof(sb_shard_stats_t, mailbox_depth)},
    {"sb_actor_messages_total", "counter", "Actor messages handled.", STAT, offsetof(sb_shard_stats_t, processed)},
    {"sb_actor_restarts_total", "counter", "Actor restarts by the supervisor.", STAT,
     offsetof(sb_shard_stats_t, restarts)},
    {"sb_actor_dead_letters_total", "counter", "Actor messages dropped undelivered.", STAT,
     offsetof(sb_shard_stats_t, dead_letters)},
};

void sb_metrics_render(sb_buf_t *out, unsigned shards)
{
    sb_shard_stats_t st[SB_METRICS_MAX_SHARDS];
    if (shards > SB_METRICS_MAX_SHARDS)
        shards = SB_METRICS_MAX_SHARDS;
    for (unsigned i = 0; i < shards; i++)
        sb_shard_get_stats(i, &st[i]);

    family(out, "sb_build_info", "gauge", "Version of the running gateway.");
    sb_buf_printf(out, "sb_build_info{version=\"%s\"} 1\n", SB_VERSION);

    for (size_t f = 0; f < sizeof figures / sizeof figures[0]; f++) {
        const struct figure *fg = &figures[f];
        family(out, fg->name, fg->type, fg->help);
        for (unsigned i = 0; i < shards; i++) {
            long long v;
            if (fg->src == ROW_COUNTER)
                v = (long long)sb_metric_get((_Atomic uint64_t *)((char *)&rows[i] + fg->off));
            else if (fg->src == ROW_GAUGE)
                v = (long long)sb_gauge_get((_Atomic int64_t *)((char *)&rows[i] + fg->off));
            else
                v = (long long)*(const uint64_t *)((const char *)&st[i] + fg->off);
            sb_buf_printf(out, "%s{shard=\"%u\"} %lld\n", fg->name, i, v);
        }
    }
    family(out, "sb_http_responses_total", "counter", "HTTP responses by status class.");
    for (unsigned i = 0; i < shards; i++)
        for (unsigned c = 1; c <= 5; c++)
            sb_buf_printf(out, "sb_http_responses_total{shard=\"%u\",class=\"%uxx\"} %llu\n", i, c,
                          (unsigned long long)sb_metric_get(&rows[i].http_status[c]));
    family(out, "sb_loop_lag_seconds", "gauge", "How late the shard loop ran its last 100 ms tick.");
    for (unsigned i = 0; i < shards; i++)
        sb_buf_printf(out, "sb_loop_lag_seconds{shard=\"%u\"} %.6f\n", i, (double)st[i].loop_lag_us / 1e6);
}
