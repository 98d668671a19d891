/* Per-shard counters and their Prometheus text rendering; see metrics.h. */
#include "gateway/metrics.h"

#include "proto/event.h"
#include "proto/version.h"
#include "proto/err.h"
#include "shards/shard.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

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
    {"sb_calls_live", "gauge", "Calls holding a slot of the call caps (on this node's actors).", ROW_GAUGE,
     offsetof(sb_metrics_t, calls_live)},
    {"sb_media_streams", "gauge", "Media Streams being relayed to voice apps.", ROW_GAUGE,
     offsetof(sb_metrics_t, media_streams)},
    {"sb_media_frames_total", "counter", "Media Streams frames relayed, both ways.", ROW_COUNTER,
     offsetof(sb_metrics_t, media_frames)},
    {"sb_media_dropped_total", "counter", "Audio frames dropped toward a voice app that fell behind.", ROW_COUNTER,
     offsetof(sb_metrics_t, media_dropped)},
    {"sb_rate_limited_total", "counter", "Tenant API requests and inbox sends refused by a rate limit (429).",
     ROW_COUNTER, offsetof(sb_metrics_t, rate_limited)},
    {"sb_channel_lookups_total", "counter", "Channels read from PostgreSQL by the front doors (cache misses).",
     ROW_COUNTER, offsetof(sb_metrics_t, channel_lookups)},
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

static const char *const send_results[SB_SEND_RESULTS] = {"sent", "retry", "failed", "unknown"};
static const char *const provider_errs[SB_PROVIDER_ERRS] = {"400", "401", "403", "404", "429", "4xx", "5xx",
                                                            "timeout", "transport"};
static const char *const providers[2] = {"twilio", "meta"};

unsigned sb_metrics_provider_err(int http_status, const char *error_code)
{
    switch (http_status) {
    case 400: return 0;
    case 401: return 1;
    case 403: return 2;
    case 404: return 3;
    case 429: return 4;
    default: break;
    }
    if (http_status >= 400 && http_status < 500)
        return 5;
    if (http_status >= 500)
        return 6;
    return error_code && strcmp(error_code, "timeout") == 0 ? 7 : 8;
}

/* A counter summed over the shards' rows, given its place in row 0 (the labelled families are per node: their
 * labels are what matters). */
static unsigned long long sum(_Atomic uint64_t *first, unsigned shards)
{
    unsigned long long n = 0;
    for (unsigned i = 0; i < shards; i++)
        n += sb_metric_get((_Atomic uint64_t *)((char *)first + i * sizeof(sb_metrics_t)));
    return n;
}

/* A histogram summed over the shards' rows (given its place in row 0), in seconds: cumulative `le` buckets, _sum and
 * _count. The bounds' text is sb_hist_bucket's, written once here so that the labels never depend on %g. */
static void render_hist(sb_buf_t *out, const char *name, const char *help, sb_hist_t *first, unsigned shards)
{
    static const char *const le[SB_HIST_BUCKETS] = {"0.0001", "0.00025", "0.0005", "0.001", "0.0025",
                                                     "0.005",  "0.01",    "0.025",  "0.05",  "0.1",
                                                     "0.25",   "0.5",     "1",      "2.5",   "+Inf"};
    family(out, name, "histogram", help);
    unsigned long long cum = 0;
    for (int b = 0; b < SB_HIST_BUCKETS; b++) {
        cum += sum(&first->buckets[b], shards);
        sb_buf_printf(out, "%s_bucket{le=\"%s\"} %llu\n", name, le[b], cum);
    }
    sb_buf_printf(out, "%s_sum %.6f\n", name, (double)sum(&first->sum_ns, shards) / 1e9);
    sb_buf_printf(out, "%s_count %llu\n", name, cum);
}

/* The labelled families of sends, provider errors, breakers, webhooks and connections; the process's own figures. */
static void render_labelled(sb_buf_t *out, unsigned shards)
{
    family(out, "sb_sends_total", "counter", "Provider answers to sends, by channel type and result.");
    for (int t = 1; t < SB_METRICS_CH_TYPES; t++)
        for (int r = 0; r < SB_SEND_RESULTS; r++)
            sb_buf_printf(out, "sb_sends_total{channel_type=\"%s\",result=\"%s\"} %llu\n",
                          sb_channel_type_name((sb_channel_type_t)t), send_results[r],
                          sum(&rows[0].sends[t][r], shards));
    family(out, "sb_provider_errors_total", "counter",
           "Sends the provider did not take, by channel type and error (HTTP status, or timeout / transport).");
    for (int t = 1; t < SB_METRICS_CH_TYPES; t++)
        for (int e = 0; e < SB_PROVIDER_ERRS; e++)
            sb_buf_printf(out, "sb_provider_errors_total{channel_type=\"%s\",code=\"%s\"} %llu\n",
                          sb_channel_type_name((sb_channel_type_t)t), provider_errs[e],
                          sum(&rows[0].provider_errors[t][e], shards));
    family(out, "sb_provider_breaker_open", "gauge",
           "1 while the shard's circuit breaker for the provider's API is open or half-open.");
    for (unsigned i = 0; i < shards; i++)
        for (int p = 0; p < 2; p++)
            sb_buf_printf(out, "sb_provider_breaker_open{shard=\"%u\",provider=\"%s\"} %lld\n", i, providers[p],
                          (long long)sb_gauge_get(&rows[i].breaker_open[p]));
    family(out, "sb_webhooks_total", "counter", "Provider webhook requests answered, by provider and status class.");
    for (int p = 0; p < 2; p++)
        for (int c = 2; c <= 5; c++)
            sb_buf_printf(out, "sb_webhooks_total{provider=\"%s\",class=\"%dxx\"} %llu\n", providers[p], c,
                          sum(&rows[0].webhooks[p][c], shards));
    family(out, "sb_webhook_events_total", "counter",
           "Provider events stored as new receipts, by channel type and kind (message, status).");
    for (int t = 1; t < SB_METRICS_CH_TYPES; t++)
        for (int k = 0; k < 2; k++)
            sb_buf_printf(out, "sb_webhook_events_total{channel_type=\"%s\",kind=\"%s\"} %llu\n",
                          sb_channel_type_name((sb_channel_type_t)t), k ? "status" : "message",
                          sum(&rows[0].webhook_events[t][k], shards));
    family(out, "sb_outbound_lane_depth", "gauge",
           "Outbound messages in the channels' lanes (waiting for the pace and caps, or under way), by priority.");
    static const char *const lanes[3] = {"interactive", "normal", "bulk"};
    for (int p = 0; p < 3; p++) {
        long long depth = 0;
        for (unsigned i = 0; i < shards; i++)
            depth += sb_gauge_get(&rows[i].lane_depth[p]);
        sb_buf_printf(out, "sb_outbound_lane_depth{priority=\"%s\"} %lld\n", lanes[p], depth);
    }
    family(out, "sb_redis_up", "gauge", "1 while the shard's Redis connection is up.");
    for (unsigned i = 0; i < shards; i++)
        sb_buf_printf(out, "sb_redis_up{shard=\"%u\"} %lld\n", i, (long long)sb_gauge_get(&rows[i].redis_up));
    family(out, "sb_postgres_up", "gauge", "1 while both of the shard's PostgreSQL connections are up.");
    for (unsigned i = 0; i < shards; i++)
        sb_buf_printf(out, "sb_postgres_up{shard=\"%u\"} %lld\n", i,
                      (long long)sb_gauge_get(&rows[i].postgres_up));
    render_hist(out, "sb_redis_seconds",
                "Redis round trips: a counters or call-cap command written to the connection until its reply is read.",
                &rows[0].redis_seconds, shards);
    render_hist(out, "sb_postgres_seconds",
                "PostgreSQL transactions of the shards' connections: a pipeline segment's Sync sent until its result "
                "(the COMMIT) is read.",
                &rows[0].postgres_seconds, shards);

    /* The database's queues, as shard 0 last counted them (every gateway on one database reports the same). */
    family(out, "sb_outbox_waiting", "gauge", "Outbound messages not finished (rows of outbox).");
    sb_buf_printf(out, "sb_outbox_waiting %lld\n", (long long)sb_gauge_get(&rows[0].outbox_waiting));
    family(out, "sb_outbox_oldest_seconds", "gauge", "Age of the oldest outbound message not finished (0: none).");
    sb_buf_printf(out, "sb_outbox_oldest_seconds %.3f\n", (double)sb_gauge_get(&rows[0].outbox_oldest_ms) / 1e3);
    family(out, "sb_webhook_dead_letters", "gauge",
           "Tenant webhook deliveries that ran out of attempts (rows of webhook_dead_letters).");
    sb_buf_printf(out, "sb_webhook_dead_letters %lld\n", (long long)sb_gauge_get(&rows[0].webhook_dead_letters));

    /* The process: resident memory (statm, cheap) and the descriptor limit accepting stops short of. Open
     * descriptors are not counted here (a million entries of /proc/self/fd on a shard's loop): sb_connections is
     * what uses them. */
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
            resident = 0;
        fclose(f);
    }
    family(out, "process_resident_memory_bytes", "gauge", "Resident memory of the gateway process.");
    sb_buf_printf(out, "process_resident_memory_bytes %lld\n", (long long)resident * sysconf(_SC_PAGESIZE));
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        family(out, "process_max_fds", "gauge", "The process's open-files limit (soft).");
        sb_buf_printf(out, "process_max_fds %llu\n", (unsigned long long)rl.rlim_cur);
    }
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
    render_labelled(out, shards);
}
