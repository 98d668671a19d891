/* The domain on a shard; see domain.h. */
#include "shards/domain.h"

#include "actors/session.h"
#include "actors/tenant.h"
#include "adapters/apphook.h"
#include "adapters/counters.h"
#include "adapters/crypto.h"
#include "adapters/pg.h"
#include "adapters/store/broadcasts.h"
#include "adapters/provider.h"
#include "gateway/log.h"
#include "gateway/metrics.h"
#include "proto/err.h"
#include "proto/mem.h"
#include "shards/cluster.h"
#include "shards/placement.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define TICK_MS 1000          /* passivation, and shard 0's sweeps */
#define SWEEP_EVERY_MS 5000
#define SWEEP_BACKLOG_MS 500  /* a full page: the next one soon */
#define SWEEP_OLDER_MS 3000   /* younger receipts are most likely on their way through a session right now */
#define SWEEP_PAGE 1000
#define QUEUES_EVERY_MS 5000  /* the outbox and the dead letters counted for /metrics */
#define DUE_PAGE 10000        /* scheduled messages read per scan for the channels to wake (their sessions load all
                               * of theirs): more due within a minute than this wakes the rest on the next scans */

typedef struct domain {
    sb_shard_t *s;
    const sb_domain_opts_t *opts;
    sb_store_t *store;
    sb_provider_t *provider;
    sb_domain_config_t config;
    sb_ports_t ports;
    uv_timer_t *tick;
    uint64_t next_sweep, next_queues, next_due;
    bool sweeping, backlog_done, backlog_asked, counting, scanning_due;
    uint64_t served_gen;    /* the cluster's generation the backlog and the sweep last looked at */
    bool sweep_now;         /* slots were taken: their receipts are swept whatever their age */
    uint64_t sweep_gen;     /* the sweep under way catches up the slots taken up to this generation (0: none) */
    int64_t catchup_after;  /* the catch-up's pages: the last receipt id the previous page handed over */
} domain_t;

static const sb_shard_module_t *self_module(void);
static const sb_domain_opts_t *g_opts;

static void on_tick(uv_timer_t *t);

/* Shard 0 started serving slots: their backlog and receipts now, not at the next tick. */
static void slots_served(sb_shard_t *s)
{
    domain_t *d = sb_shard_state(s, self_module());
    if (d)
        on_tick(d->tick);
}

void sb_domain_init(const sb_domain_opts_t *opts)
{
    g_opts = opts;
    sb_cluster_set_served_hook(slots_served);
}

/* ---- placement ---------------------------------------------------------------------------------------------- */

unsigned sb_domain_owner(int64_t tenant)
{
    const sb_domain_opts_t *o = g_opts;
    char t[24];
    int n = snprintf(t, sizeof t, "%" PRId64, tenant);
    return sb_place_shard(sb_place_slot(sb_str(t, (size_t)n), o && o->slots ? o->slots : 1), sb_shards_count());
}

static unsigned port_owner(void *ctx, int64_t tenant)
{
    (void)ctx;
    return sb_domain_owner(tenant);
}

sb_store_t *sb_domain_store(sb_shard_t *s)
{
    domain_t *d = sb_shard_state(s, self_module());
    return d ? d->store : NULL;
}

/* ---- the small ports: time, randomness, counters, publishing ------------------------------------------------------ */

static int64_t port_now_us(void *ctx)
{
    struct timespec ts;
    (void)ctx;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static uint64_t port_random(void *ctx)
{
    uint64_t r = 0;
    (void)ctx;
    if (sb_crypto_random(&r, sizeof r) < 0)
        r = uv_hrtime();
    return r;
}

typedef struct acquire {
    void (*cb)(void *arg, int err, const sb_grant_t *g);
    void *arg;
} acquire_t;

static void acquired(void *arg, int err, const sb_counters_grant_t *g)
{
    acquire_t *a = arg;
    sb_grant_t out = {0};
    if (!err) {
        out.granted = g->verdict == SB_COUNTERS_OK;
        out.wait_us = g->wait_us > 0 ? (uint64_t)g->wait_us : 0;
        out.busy = g->verdict == SB_COUNTERS_BUSY;
        out.tokens = g->verdict == SB_COUNTERS_OK ? g->tokens : 0;
        snprintf(out.lease, sizeof out.lease, "%s", g->lease.id);
    }
    a->cb(a->arg, err, &out);
    free(a);
}

static int port_acquire(void *ctx, int64_t tenant, int64_t channel, const sb_send_limits_t *lim,
                        void (*cb)(void *, int, const sb_grant_t *), void *arg)
{
    domain_t *d = ctx;
    sb_redis_t *r = sb_shard_redis(d->s);
    if (!r)
        return SB_EUNAVAIL;
    sb_counters_limits_t l = {.interval_us = (int64_t)lim->interval_us,
                              .burst = lim->burst,
                              .channel_max = lim->channel_max,
                              .tenant_max = lim->tenant_max,
                              .lease_ms = lim->lease_ms};
    acquire_t *a = sb_malloc(sizeof *a);
    *a = (acquire_t){cb, arg};
    int rc = sb_counters_acquire(r, tenant, channel, &l, acquired, a);
    if (rc < 0)
        free(a);
    return rc;
}

static void port_release(void *ctx, int64_t tenant, int64_t channel, const char *lease)
{
    domain_t *d = ctx;
    sb_redis_t *r = sb_shard_redis(d->s);
    sb_counters_lease_t l = {.tenant = tenant, .channel = channel};
    snprintf(l.id, sizeof l.id, "%s", lease);
    if (r) /* fire and forget: a lease nobody releases expires anyway */
        sb_counters_release(r, &l, NULL, NULL);
}

typedef struct admit {
    void (*cb)(void *arg, int err, const sb_call_grant_t *g);
    void *arg;
} admit_t;

static void admitted(void *arg, int err, const sb_counters_call_grant_t *g)
{
    admit_t *a = arg;
    sb_call_grant_t out = {0};
    if (!err) {
        out.admitted = g->admitted;
        out.full = g->full & SB_CALLCAP_FLEET ? "fleet" : g->full & SB_CALLCAP_TENANT ? "tenant" : "channel";
        out.dial_in_us = g->admitted && g->dial_at_us > g->now_us ? (uint64_t)(g->dial_at_us - g->now_us) : 0;
    }
    a->cb(a->arg, err, &out);
    free(a);
}

static int port_call_admit(void *ctx, int64_t tenant, int64_t channel, const char *key, const sb_call_limits_t *lim,
                           void (*cb)(void *, int, const sb_call_grant_t *), void *arg)
{
    domain_t *d = ctx;
    sb_redis_t *r = sb_shard_redis(d->s);
    if (!r)
        return SB_EUNAVAIL;
    sb_counters_call_caps_t caps = {.fleet_max = d->config.max_concurrent_calls,
                                    .tenant_max = lim->tenant_max,
                                    .channel_max = lim->channel_max,
                                    .lease_ms = d->config.call_lease_ttl_ms,
                                    .interval_us = lim->interval_us};
    admit_t *a = sb_malloc(sizeof *a);
    *a = (admit_t){cb, arg};
    int rc = sb_counters_call_admit(r, tenant, channel, key, &caps, admitted, a);
    if (rc < 0)
        free(a);
    return rc;
}

static int port_call_renew(void *ctx, int64_t tenant, int64_t channel, const char *key, sb_done_cb cb, void *arg)
{
    domain_t *d = ctx;
    sb_redis_t *r = sb_shard_redis(d->s);
    return r ? sb_counters_call_extend(r, tenant, channel, key, d->config.call_lease_ttl_ms, cb, arg) : SB_EUNAVAIL;
}

static void port_call_release(void *ctx, int64_t tenant, int64_t channel, const char *key)
{
    domain_t *d = ctx;
    sb_redis_t *r = sb_shard_redis(d->s);
    if (r) /* fire and forget: the lease expires anyway */
        sb_counters_call_release(r, tenant, channel, key, NULL, NULL);
}

static void deliver_on(sb_shard_t *s, void *arg)
{
    sb_inbox_batch_t *b = arg;
    const sb_domain_opts_t *o = g_opts;
    if (o && o->deliver)
        o->deliver(s, b);
    sb_inbox_batch_unref(b);
}

static void port_everywhere(void *ctx, int64_t tenant, int64_t prev, size_t n, const char *const *types,
                            const sb_str_t *data)
{
    domain_t *d = ctx;
    sb_cluster_publish_live(d->s, tenant, prev, n, types, data);
}

static void port_publish(void *ctx, unsigned shard, sb_inbox_batch_t *b)
{
    domain_t *d = ctx;
    sb_inbox_batch_ref(b);
    if (shard == sb_shard_index(d->s))
        deliver_on(d->s, b);
    else if (sb_shard_exec(shard, deliver_on, b) < 0)
        sb_inbox_batch_unref(b);
}

/* ---- shard 0: the sweeper and the backlog at start ------------------------------------------------------------- */

static void swept(void *arg, int err, const sb_store_unprocessed_t *u, size_t n)
{
    domain_t *d = arg;
    uint64_t gen = d->sweep_gen;
    d->sweeping = false;
    d->sweep_gen = 0;
    if (err) {
        sb_log_debug("domain: sweep skipped: %s", sb_strerror(err));
        if (gen)
            d->sweep_now = true; /* the catch-up is still owed */
        return;
    }
    sb_rt_t *rt = sb_shard_rt(d->s);
    size_t handed = 0;
    for (size_t i = 0; i < n; i++) {
        if (!sb_cluster_owns(u[i].tenant))
            continue; /* another node's slot (or one this node is giving up): its own sweeper's */
        handed++;
        sb_session_receipt_t r = {.receipt_id = u[i].id, .tenant = u[i].tenant, .age_ms = u[i].age_ms};
        sb_session_receipt(rt, sb_domain_owner(u[i].tenant), u[i].channel, &r, &u[i].ev);
    }
    if (handed)
        sb_log_info("domain: sweeper handed %zu unprocessed receipt(s) back to their sessions", handed);
    if (n == SWEEP_PAGE) /* a backlog (an outage, a crash under load): the next page soon */
        d->next_sweep = uv_now(sb_shard_loop(d->s)) + SWEEP_BACKLOG_MS;
    if (gen && n == SWEEP_PAGE) {
        d->sweep_now = true; /* the catch-up goes on: more pages first, each after the last */
        d->catchup_after = u[n - 1].id;
    } else if (gen) {
        d->catchup_after = 0;
        sb_cluster_caught_up(gen); /* every receipt of the new slots is with its session: served now */
    }
    if (d->sweep_now) /* at once rather than at the next tick: slots wait to be served */
        on_tick(d->tick);
}

static void backlog_read(void *arg, int err, const int64_t *channel_tenants, const int64_t *channels, size_t nch,
                         const int64_t *tenants, size_t nt)
{
    domain_t *d = arg;
    d->backlog_asked = false;
    if (err)
        return; /* asked again on the next tick */
    d->backlog_done = true;
    sb_rt_t *rt = sb_shard_rt(d->s);
    size_t served = 0;
    for (size_t i = 0; i < nch; i++)
        if (sb_cluster_owns(channel_tenants[i]) && ++served)
            sb_rt_send_key(rt, sb_domain_owner(channel_tenants[i]), &sb_session_kind, (uint64_t)channels[i],
                           SB_SESSION_RESUME, NULL, 0);
    for (size_t i = 0; i < nt; i++)
        if (sb_cluster_owns(tenants[i]) && ++served)
            sb_rt_send_key(rt, sb_domain_owner(tenants[i]), &sb_tenant_kind, (uint64_t)tenants[i], SB_TENANT_HOOKS,
                           NULL, 0);
    if (sb_cluster_enabled() && served < nch + nt)
        sb_log_debug("domain: %zu of the backlog's channels and tenants are other nodes'", nch + nt - served);
    if (nch || nt)
        sb_log_info("domain: %zu channel(s) with messages to send and %zu tenant(s) with webhooks to deliver", nch,
                    nt);
}

/* The channels with scheduled messages due within the sessions' horizon: their sessions are woken (activated if
 * they were passivated, which loads the schedule and arms its timer; nothing for an active one). */
static void due_read(void *arg, int err, const int64_t *tenants, const int64_t *channels, size_t n)
{
    domain_t *d = arg;
    d->scanning_due = false;
    if (err) {
        sb_log_debug("domain: scheduled sends scan skipped: %s", sb_strerror(err));
        return;
    }
    sb_rt_t *rt = sb_shard_rt(d->s);
    for (size_t i = 0; i < n; i++)
        if (sb_cluster_owns(tenants[i]))
            sb_rt_send_key(rt, sb_domain_owner(tenants[i]), &sb_session_kind, (uint64_t)channels[i],
                           SB_SESSION_WAKE, NULL, 0);
}

/* The database's queues into row 0's gauges; a failed count leaves the last figures (sb_postgres_up says why). */
static void queues_counted(void *arg, int err, const sb_store_queues_t *q)
{
    domain_t *d = arg;
    d->counting = false;
    if (err)
        return;
    sb_metrics_t *m = sb_metrics_shard(0);
    sb_gauge_set(&m->outbox_waiting, q->outbox_waiting);
    sb_gauge_set(&m->outbox_oldest_ms, q->outbox_oldest_ms);
    sb_gauge_set(&m->webhook_dead_letters, q->dead_letters);
}

static void on_tick(uv_timer_t *t)
{
    domain_t *d = t->data;
    sb_rt_t *rt = sb_shard_rt(d->s);
    sb_rt_set_time(rt, uv_now(t->loop));
    sb_rt_passivate(rt);
    if (sb_shard_index(d->s) != 0 || !sb_store_connected(d->store) || sb_shard_draining(d->s) ||
        !sb_pg_connected(sb_shard_pg_sweeper(d->s)))
        return;
    uint64_t gen = sb_cluster_generation();
    if (gen != d->served_gen) { /* this node took slots: their backlog and their receipts, now */
        d->served_gen = gen;
        d->backlog_done = false;
        d->sweep_now = true;
        d->catchup_after = 0; /* from the start again: the new slots' receipts may be anywhere */
    }
    if (!d->backlog_done && !d->backlog_asked && sb_store_backlog(d->store, backlog_read, d) == 0)
        d->backlog_asked = true;
    uint64_t now = uv_now(t->loop);
    if (!d->sweeping && (now >= d->next_sweep || d->sweep_now)) {
        d->next_sweep = now + SWEEP_EVERY_MS;
        if (sb_store_sweep(d->store, d->sweep_now ? 0 : SWEEP_OLDER_MS, d->sweep_now ? d->catchup_after : 0,
                           SWEEP_PAGE, swept, d) == 0) {
            d->sweeping = true;
            d->sweep_gen = d->sweep_now ? d->served_gen : 0;
            d->sweep_now = false;
        }
    }
    if (!d->scanning_due && now >= d->next_due) {
        d->next_due = now + SB_SESSION_SCHEDULE_SCAN_MS;
        if (sb_store_scheduled_due(d->store, SB_SESSION_SCHEDULE_HORIZON_MS, DUE_PAGE, due_read, d) == 0)
            d->scanning_due = true;
    }
    if (!d->counting && now >= d->next_queues) {
        d->next_queues = now + QUEUES_EVERY_MS;
        if (sb_store_queues(d->store, queues_counted, d) == 0)
            d->counting = true;
    }
}

/* ---- the module ----------------------------------------------------------------------------------------------- */

static int domain_start(sb_shard_t *s, void **state)
{
    const sb_domain_opts_t *o = g_opts;
    if (!o || !sb_shard_pg(s))
        return SB_EINVAL;
    domain_t *d = sb_calloc(1, sizeof *d);
    *state = d;
    d->s = s;
    d->opts = o;
    d->store = sb_store_create(sb_shard_pg(s), sb_shard_pg_ingest(s), o->master_key, sb_shard_index(s));
    sb_store_set_sweeper(d->store, sb_shard_pg_sweeper(s));
    if (sb_cluster_enabled())
        sb_store_set_fence(d->store, sb_cluster_fence, NULL);
    sb_provider_opts_t po = {.master_key = o->master_key,
                             .public_url = o->public_url,
                             .twilio_api_base = o->twilio_api_base,
                             .meta_graph_base = o->meta_graph_base,
                             .shard = sb_shard_index(s)};
    d->provider = sb_provider_create(sb_shard_loop(s), &po);
    if (!d->provider)
        sb_log_error("domain: no HTTP client on this shard: outbound messages and webhooks wait");
    d->config = (sb_domain_config_t){.webhook_max_age_s = o->webhook_max_age_s,
                                     .public_url = o->public_url,
                                     .max_concurrent_calls = o->max_concurrent_calls,
                                     .call_lease_ttl_ms = (int64_t)(o->call_lease_ttl_s ? o->call_lease_ttl_s : 15) * 1000,
                                     .max_call_duration_ms = (int64_t)o->max_call_duration_s * 1000};
    sb_store_port(d->store, &d->ports.store);
    sb_store_broadcast_port(d->store, &d->ports.store);
    d->ports.counters = (sb_counters_port_t){.ctx = d,
                                             .acquire = port_acquire,
                                             .release = port_release,
                                             .call_admit = port_call_admit,
                                             .call_renew = port_call_renew,
                                             .call_release = port_call_release};
    if (d->provider) {
        sb_provider_port(d->provider, &d->ports.provider);
        sb_apphook_port(sb_provider_client(d->provider), &d->ports.hooks);
    } else {
        sb_apphook_port(NULL, &d->ports.hooks);
    }
    d->ports.publish = (sb_publish_port_t){.ctx = d,
                                           .publish = port_publish,
                                           .everywhere = sb_cluster_enabled() ? port_everywhere : NULL};
    d->ports.shard = sb_shard_index(s);
    d->ports.owner = port_owner;
    d->ports.now_us = port_now_us;
    d->ports.random = port_random;
    d->ports.config = &d->config;
    sb_rt_t *rt = sb_shard_rt(s);
    sb_rt_set_env(rt, &d->ports);
    sb_rt_set_idle_timeout(rt, (uint64_t)o->actor_idle_timeout_s * 1000);
    d->tick = sb_malloc(sizeof *d->tick);
    uv_timer_init(sb_shard_loop(s), d->tick);
    d->tick->data = d;
    uv_timer_start(d->tick, on_tick, TICK_MS, TICK_MS);
    d->next_sweep = uv_now(sb_shard_loop(s)) + 1000;
    return 0;
}

static void domain_drain(sb_shard_t *s, void *state)
{
    domain_t *d = state;
    (void)s;
    if (d->provider)
        sb_provider_drain(d->provider); /* no new send starts: queued messages wait for the next start */
}

/* Sends out with the provider, and what the store still has to write (their outcomes among it). */
static unsigned domain_busy(sb_shard_t *s, void *state)
{
    domain_t *d = state;
    return (d->provider ? sb_provider_inflight(d->provider) : 0) + sb_store_inflight(d->store) +
           (sb_rt_has_work(sb_shard_rt(s)) ? 1 : 0);
}

static void tick_closed(uv_handle_t *h)
{
    free(h);
}

/* The actors go first, while their ports still work (a session gives its counters' leases back, the requests it
 * accepted are answered); then the provider's requests end (their late answers find no actor) and what the store
 * had not sent yet is handed back. The store itself lives until finish: the connections' last callbacks need it. */
static void domain_stop(sb_shard_t *s, void *state)
{
    domain_t *d = state;
    sb_rt_close(sb_shard_rt(s));
    sb_provider_destroy(d->provider);
    d->provider = NULL;
    sb_store_flush(d->store);
    uv_close((uv_handle_t *)d->tick, tick_closed);
}

static void domain_finish(sb_shard_t *s, void *state)
{
    domain_t *d = state;
    sb_rt_set_env(sb_shard_rt(s), NULL);
    sb_store_destroy(d->store);
    free(d);
}

const sb_shard_module_t sb_domain_module = {
    .name = "domain",
    .start = domain_start,
    .drain = domain_drain,
    .busy = domain_busy,
    .stop = domain_stop,
    .finish = domain_finish,
};

static const sb_shard_module_t *self_module(void)
{
    return &sb_domain_module;
}
