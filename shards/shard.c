/* Shard threads and their loops; see shard.h for the contract.
 *
 * Per shard, on its loop:
 *   async   wakes the shard when another thread pushed to its inbox (messages for its actors, exec calls);
 *   runner  an idle handle, active only while the actor run queue has work, so the loop polls I/O without
 *           blocking between batches and sleeps in epoll when there is nothing to do;
 *   timer   armed for the runtime's earliest actor timer;
 *   tick    every 100 ms: measures loop lag, publishes figures for other threads, checks the drain. */
#include "shards/shard.h"

#include "adapters/pg.h"
#include "adapters/redis.h"
#include "gateway/log.h"
#include "gateway/metrics.h"
#include "proto/err.h"
#include "proto/mem.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#define RUN_BUDGET 8192 /* actor messages per loop iteration before I/O gets its turn */
#define TICK_MS 100
#define DRAIN_POLL_MS 20

enum { SYS_EXEC = 1 };

typedef struct exec_call {
    sb_shard_fn fn;
    void *arg;
} exec_call_t;

struct sb_shard {
    unsigned idx;
    uv_thread_t thread;
    uv_loop_t loop;
    uv_async_t async;
    uv_idle_t runner;
    uv_timer_t actor_timer;
    uv_timer_t tick;
    uv_timer_t drain_timer;
    sb_mpsc_t inbox;
    sb_rt_t *rt;
    sb_redis_t *redis;
    sb_pg_t *pg;
    sb_pg_t *ingest; /* a second connection: webhook receipts, so acks never wait behind the actors' writes */
    sb_pg_t *sweeper; /* shard 0 only, a third: the sweeper's scans, so nothing waits behind them */
    const sb_shard_module_t *mods[SB_SHARD_MAX_MODULES];
    void *states[SB_SHARD_MAX_MODULES];
    unsigned nmods, nstarted;
    bool timer_dirty;
    bool draining;
    bool stopped;
    uint64_t drain_deadline;
    uint64_t tick_expected_ns;
    uint64_t remote_in;
    int start_rc;
    uv_sem_t started;

    _Atomic int closed;  /* set before the async handle closes: no more sends */
    _Atomic int senders; /* threads between their closed-check and their uv_async_send */
    struct {
        _Atomic uint64_t actors, mailbox_depth, processed, restarts, dead_letters, timers, activations, passivations,
            loop_lag_us, remote_in;
    } stats;
};

static sb_shard_t *shards[SB_MAX_SHARDS];
static unsigned nshards;
static sb_shards_opts_t g_opts;
static char *g_redis_host, *g_pg_conninfo; /* the copies g_opts points to */
static _Atomic unsigned running;
static _Thread_local sb_shard_t *self;

static inline sb_msg_t *msg_of(sb_mpsc_node_t *n)
{
    return (sb_msg_t *)(void *)((char *)n - offsetof(sb_msg_t, qnode));
}

/* ---- cross-thread sends --------------------------------------------------------------------------------------- */

/* Pushes msg to shard idx and wakes it. Takes ownership on 0. */
static int push_to(unsigned idx, sb_msg_t *msg)
{
    sb_shard_t *t = idx < nshards ? shards[idx] : NULL;
    if (!t)
        return SB_ENOENT;
    atomic_fetch_add(&t->senders, 1);
    if (atomic_load(&t->closed)) {
        atomic_fetch_sub(&t->senders, 1);
        return SB_ECLOSED;
    }
    sb_mpsc_push(&t->inbox, &msg->qnode);
    uv_async_send(&t->async);
    atomic_fetch_sub(&t->senders, 1);
    return 0;
}

static int port_remote_send(void *ctx, unsigned shard, sb_msg_t *msg)
{
    (void)ctx;
    return push_to(shard, msg);
}

static void on_run(uv_idle_t *h);

/* The runtime has runnable actors or a new earliest timer: make sure the runner goes on the next iteration. */
static void port_wake(void *ctx)
{
    sb_shard_t *s = ctx;
    s->timer_dirty = true;
    if (!s->stopped)
        uv_idle_start(&s->runner, on_run);
}

int sb_shard_exec(unsigned target, sb_shard_fn fn, void *arg)
{
    sb_msg_t *msg = sb_msg_new(SYS_EXEC, sizeof(exec_call_t));
    exec_call_t call = {fn, arg};
    memcpy(msg->data, &call, sizeof call);
    msg->to = 0;
    int rc = push_to(target, msg);
    if (rc < 0)
        sb_msg_free(msg);
    return rc;
}

/* ---- the loop's handles --------------------------------------------------------------------------------------- */

static void arm_actor_timer(sb_shard_t *s);

static void on_run(uv_idle_t *h)
{
    sb_shard_t *s = h->data;
    sb_rt_set_time(s->rt, uv_now(&s->loop));
    sb_rt_run(s->rt, RUN_BUDGET);
    if (!sb_rt_has_work(s->rt))
        uv_idle_stop(h);
    if (s->timer_dirty)
        arm_actor_timer(s);
}

static void on_actor_timer(uv_timer_t *h)
{
    sb_shard_t *s = h->data;
    sb_rt_set_time(s->rt, uv_now(&s->loop));
    sb_rt_fire_timers(s->rt);
    s->timer_dirty = true;
    if (sb_rt_has_work(s->rt))
        uv_idle_start(&s->runner, on_run);
    else
        arm_actor_timer(s);
}

static void arm_actor_timer(sb_shard_t *s)
{
    s->timer_dirty = false;
    if (s->stopped)
        return;
    int64_t due = sb_rt_next_timer(s->rt);
    if (due < 0)
        uv_timer_stop(&s->actor_timer);
    else
        uv_timer_start(&s->actor_timer, on_actor_timer, (uint64_t)due, 0);
}

static void on_async(uv_async_t *h)
{
    sb_shard_t *s = h->data;
    sb_rt_set_time(s->rt, uv_now(&s->loop));
    for (sb_mpsc_node_t *n; (n = sb_mpsc_pop(&s->inbox));) {
        sb_msg_t *msg = msg_of(n);
        if (msg->to == 0 && !msg->kind) { /* an exec call (a keyed actor's message has a kind instead) */
            exec_call_t call;
            memcpy(&call, msg->data, sizeof call);
            sb_msg_free(msg);
            call.fn(s, call.arg);
        } else {
            s->remote_in++;
            sb_rt_deliver(s->rt, msg);
        }
    }
    if (sb_rt_has_work(s->rt) && !s->stopped)
        uv_idle_start(&s->runner, on_run);
}

static void publish_stats(sb_shard_t *s)
{
    sb_rt_stats_t st;
    sb_rt_get_stats(s->rt, &st);
    atomic_store_explicit(&s->stats.actors, st.actors, memory_order_relaxed);
    atomic_store_explicit(&s->stats.mailbox_depth, st.mailbox_depth, memory_order_relaxed);
    atomic_store_explicit(&s->stats.processed, st.processed, memory_order_relaxed);
    atomic_store_explicit(&s->stats.restarts, st.restarts, memory_order_relaxed);
    atomic_store_explicit(&s->stats.dead_letters, st.dead_letters, memory_order_relaxed);
    atomic_store_explicit(&s->stats.timers, st.timers, memory_order_relaxed);
    atomic_store_explicit(&s->stats.activations, st.activations, memory_order_relaxed);
    atomic_store_explicit(&s->stats.passivations, st.passivations, memory_order_relaxed);
    atomic_store_explicit(&s->stats.remote_in, s->remote_in, memory_order_relaxed);
}

static void on_tick(uv_timer_t *h)
{
    sb_shard_t *s = h->data;
    uint64_t now = uv_hrtime();
    uint64_t lag = now > s->tick_expected_ns ? (now - s->tick_expected_ns) / 1000 : 0;
    s->tick_expected_ns = now + (uint64_t)TICK_MS * 1000000;
    atomic_store_explicit(&s->stats.loop_lag_us, lag, memory_order_relaxed);
    publish_stats(s);
    sb_metrics_t *m = sb_metrics_shard(s->idx); /* for /metrics: the connections /readyz would ping */
    sb_gauge_add(&m->redis_up, (s->redis && sb_redis_connected(s->redis)) - sb_gauge_get(&m->redis_up));
    sb_gauge_add(&m->postgres_up, (s->pg && sb_pg_connected(s->pg) && s->ingest && sb_pg_connected(s->ingest)) -
                                      sb_gauge_get(&m->postgres_up));
}

/* ---- drain and stop ------------------------------------------------------------------------------------------- */

static void on_closed(uv_handle_t *h)
{
    (void)h;
}

static void shard_stop(sb_shard_t *s)
{
    if (s->stopped)
        return;
    s->stopped = true;
    /* No new sends; wait out the ones between their check and their uv_async_send, then take in what they sent while
     * the front doors are still there to handle it: sb_shard_exec promised its callers fn would run. (Dropped after
     * the stop hook instead, a call's arg leaked, and whatever it carried was never answered.) */
    atomic_store(&s->closed, 1);
    while (atomic_load(&s->senders))
        uv_sleep(0);
    on_async(&s->async);
    for (unsigned i = s->nstarted; i-- > 0;)
        if (s->mods[i]->stop)
            s->mods[i]->stop(s, s->states[i]);
    if (s->redis)
        sb_redis_close(s->redis);
    if (s->pg)
        sb_pg_close(s->pg);
    if (s->ingest)
        sb_pg_close(s->ingest);
    if (s->sweeper)
        sb_pg_close(s->sweeper);
    s->sweeper = NULL;
    s->redis = NULL;
    s->pg = s->ingest = NULL;
    publish_stats(s);
    uv_close((uv_handle_t *)&s->async, on_closed);
    uv_close((uv_handle_t *)&s->runner, on_closed);
    uv_close((uv_handle_t *)&s->actor_timer, on_closed);
    uv_close((uv_handle_t *)&s->tick, on_closed);
    uv_close((uv_handle_t *)&s->drain_timer, on_closed);
}

static void on_drain_poll(uv_timer_t *h)
{
    sb_shard_t *s = h->data;
    unsigned busy = 0;
    for (unsigned i = 0; i < s->nstarted; i++)
        busy += s->mods[i]->busy ? s->mods[i]->busy(s, s->states[i]) : 0;
    if (busy == 0 || uv_now(&s->loop) >= s->drain_deadline) {
        if (busy)
            sb_log_warn("drain deadline reached with %u connection(s) or send(s) under way; closing them", busy);
        uv_timer_stop(h);
        shard_stop(s);
    }
}

static void drain_on_shard(sb_shard_t *s, void *arg)
{
    uint64_t timeout_ms = (uint64_t)(uintptr_t)arg;
    if (s->draining || s->stopped)
        return;
    s->draining = true;
    s->drain_deadline = uv_now(&s->loop) + timeout_ms;
    sb_log_info("draining (at most %llu ms)", (unsigned long long)timeout_ms);
    for (unsigned i = 0; i < s->nstarted; i++)
        if (s->mods[i]->drain)
            s->mods[i]->drain(s, s->states[i]);
    uv_timer_start(&s->drain_timer, on_drain_poll, 0, DRAIN_POLL_MS);
}

void sb_shards_drain(uint64_t timeout_ms)
{
    for (unsigned i = 0; i < nshards; i++)
        sb_shard_exec(i, drain_on_shard, (void *)(uintptr_t)timeout_ms);
}

/* ---- the thread ----------------------------------------------------------------------------------------------- */

static void shard_main(void *arg)
{
    sb_shard_t *s = arg;
    char name[32];
    sigset_t set;

    /* Signals belong to the main thread. */
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    self = s;
    snprintf(name, sizeof name, "shard %u", s->idx);
    sb_log_set_context(name);
    snprintf(name, sizeof name, "sb-shard-%u", s->idx);
    pthread_setname_np(pthread_self(), name);

    if (s->start_rc == 0 && g_opts.redis_host)
        s->redis = sb_redis_create(&s->loop, g_opts.redis_host, g_opts.redis_port, g_opts.redis_db);
    if (s->start_rc == 0 && g_opts.pg_conninfo) {
        char app[64]; /* what pg_stat_activity shows */
        snprintf(app, sizeof app, "switchboard shard %u", s->idx);
        s->pg = sb_pg_create(&s->loop, g_opts.pg_conninfo, app);
        snprintf(app, sizeof app, "switchboard shard %u ingest", s->idx);
        s->ingest = sb_pg_create(&s->loop, g_opts.pg_conninfo, app);
        if (s->idx == 0)
            s->sweeper = sb_pg_create(&s->loop, g_opts.pg_conninfo, "switchboard sweeper");
        /* the connections requests wait on; the sweeper's background scans would only blur them */
        sb_pg_set_histogram(s->pg, &sb_metrics_shard(s->idx)->postgres_seconds);
        sb_pg_set_histogram(s->ingest, &sb_metrics_shard(s->idx)->postgres_seconds);
    }
    if (s->redis)
        sb_redis_set_histogram(s->redis, &sb_metrics_shard(s->idx)->redis_seconds);
    for (unsigned i = 0; i < s->nmods && s->start_rc == 0; i++) {
        s->start_rc = s->mods[i]->start(s, &s->states[i]);
        if (s->start_rc == 0)
            s->nstarted = i + 1;
        else
            sb_log_error("module %s did not start: %s", s->mods[i]->name, sb_strerror(s->start_rc));
    }
    s->tick_expected_ns = uv_hrtime() + (uint64_t)TICK_MS * 1000000;
    uv_sem_post(&s->started);
    if (s->start_rc < 0)
        shard_stop(s);

    uv_run(&s->loop, UV_RUN_DEFAULT);
    for (unsigned i = s->nstarted; i-- > 0;)
        if (s->mods[i]->finish)
            s->mods[i]->finish(s, s->states[i]);
    uv_run(&s->loop, UV_RUN_DEFAULT);

    /* Nothing arrives once shard_stop closed the inbox and took in what it held; should anything, it is dropped. */
    for (sb_mpsc_node_t *n; (n = sb_mpsc_pop(&s->inbox));)
        sb_msg_free(msg_of(n));
    int rc = uv_loop_close(&s->loop);
    if (rc)
        sb_log_warn("loop closed with handles still open: %s", uv_strerror(rc));
    sb_log_info("stopped");
    atomic_fetch_sub(&running, 1);
}

static sb_shard_t *shard_new(unsigned idx)
{
    sb_shard_t *s = sb_calloc(1, sizeof *s);
    s->idx = idx;
    SB_BUG_ON(uv_loop_init(&s->loop) != 0);
    sb_mpsc_init(&s->inbox);
    sb_rt_port_t port = {.ctx = s, .remote_send = port_remote_send, .wake = port_wake};
    s->rt = sb_rt_create(idx, &port);
    uv_async_init(&s->loop, &s->async, on_async);
    uv_idle_init(&s->loop, &s->runner);
    uv_timer_init(&s->loop, &s->actor_timer);
    uv_timer_init(&s->loop, &s->tick);
    uv_timer_init(&s->loop, &s->drain_timer);
    s->async.data = s->runner.data = s->actor_timer.data = s->tick.data = s->drain_timer.data = s;
    uv_timer_start(&s->tick, on_tick, TICK_MS, TICK_MS);
    uv_unref((uv_handle_t *)&s->tick);
    uv_sem_init(&s->started, 0);
    for (unsigned i = 0; i < g_opts.nmodules; i++)
        s->mods[s->nmods++] = g_opts.modules[i];
    return s;
}

int sb_shards_start(const sb_shards_opts_t *opts)
{
    SB_BUG_ON(nshards != 0 || opts->count == 0 || opts->count > SB_MAX_SHARDS ||
              opts->nmodules > SB_SHARD_MAX_MODULES);
    g_opts = *opts;
    g_opts.redis_host = g_redis_host = opts->redis_host ? sb_strdup(opts->redis_host) : NULL;
    g_opts.pg_conninfo = g_pg_conninfo = opts->pg_conninfo ? sb_strdup(opts->pg_conninfo) : NULL;

    for (unsigned i = 0; i < opts->count; i++)
        shards[i] = shard_new(i);
    nshards = opts->count;
    atomic_store(&running, nshards);
    int rc = 0;
    for (unsigned i = 0; i < nshards; i++) {
        if (uv_thread_create(&shards[i]->thread, shard_main, shards[i]) != 0)
            SB_BUG_ON(1);
    }
    for (unsigned i = 0; i < nshards; i++) {
        uv_sem_wait(&shards[i]->started);
        if (shards[i]->start_rc < 0 && rc == 0)
            rc = shards[i]->start_rc;
    }
    if (rc < 0) {
        sb_shards_drain(0);
        sb_shards_join();
    }
    return rc;
}

void sb_shards_join(void)
{
    for (unsigned i = 0; i < nshards; i++)
        uv_thread_join(&shards[i]->thread);
    for (unsigned i = 0; i < nshards; i++) {
        sb_rt_destroy(shards[i]->rt);
        uv_sem_destroy(&shards[i]->started);
        sb_free(shards[i]);
    }
    nshards = 0;
    sb_free(g_redis_host);
    sb_free(g_pg_conninfo);
    g_opts.redis_host = g_opts.pg_conninfo = NULL;
}

/* ---- accessors ------------------------------------------------------------------------------------------------ */

unsigned sb_shards_count(void) { return nshards; }
unsigned sb_shards_running(void) { return atomic_load(&running); }
sb_shard_t *sb_shard_get(unsigned idx) { return idx < nshards ? shards[idx] : NULL; }
sb_shard_t *sb_shard_self(void) { return self; }
unsigned sb_shard_index(const sb_shard_t *s) { return s->idx; }
uv_loop_t *sb_shard_loop(sb_shard_t *s) { return &s->loop; }
sb_rt_t *sb_shard_rt(sb_shard_t *s) { return s->rt; }
sb_redis_t *sb_shard_redis(sb_shard_t *s) { return s->redis; }
sb_pg_t *sb_shard_pg(sb_shard_t *s) { return s->pg; }
sb_pg_t *sb_shard_pg_ingest(sb_shard_t *s) { return s->ingest; }
sb_pg_t *sb_shard_pg_sweeper(sb_shard_t *s) { return s->sweeper; }
bool sb_shard_draining(const sb_shard_t *s) { return s->draining; }
void *sb_shard_state(sb_shard_t *s, const sb_shard_module_t *m)
{
    for (unsigned i = 0; i < s->nstarted; i++)
        if (s->mods[i] == m)
            return s->states[i];
    return NULL;
}

int sb_shard_spawn(sb_shard_t *s, const sb_actor_kind_t *kind, const void *arg, sb_actor_id_t *id)
{
    sb_rt_set_time(s->rt, uv_now(&s->loop));
    return sb_rt_spawn(s->rt, kind, arg, id);
}

void sb_shard_get_stats(unsigned idx, sb_shard_stats_t *out)
{
    memset(out, 0, sizeof *out);
    sb_shard_t *s = sb_shard_get(idx);
    if (!s)
        return;
    out->actors = atomic_load_explicit(&s->stats.actors, memory_order_relaxed);
    out->mailbox_depth = atomic_load_explicit(&s->stats.mailbox_depth, memory_order_relaxed);
    out->processed = atomic_load_explicit(&s->stats.processed, memory_order_relaxed);
    out->activations = atomic_load_explicit(&s->stats.activations, memory_order_relaxed);
    out->passivations = atomic_load_explicit(&s->stats.passivations, memory_order_relaxed);
    out->restarts = atomic_load_explicit(&s->stats.restarts, memory_order_relaxed);
    out->dead_letters = atomic_load_explicit(&s->stats.dead_letters, memory_order_relaxed);
    out->timers = atomic_load_explicit(&s->stats.timers, memory_order_relaxed);
    out->loop_lag_us = atomic_load_explicit(&s->stats.loop_lag_us, memory_order_relaxed);
    out->remote_in = atomic_load_explicit(&s->stats.remote_in, memory_order_relaxed);
}
