/* Actor runtime benchmark: prints figures, asserts nothing.
 *
 *   same-shard   messages/s between actors of one shard (pairs playing ping-pong on a real shard thread)
 *   cross-shard  messages/s from an actor on shard 0 to an actor on shard 1 (real threads, MPSC + uv_async),
 *                with credit-based flow control so the producer cannot outrun the consumer's memory
 *   idle actor   bytes per idle actor with 1M actors resident (heap bytes in use, and RSS growth)
 *
 * Each figure is the median of ROUNDS runs. Usage: bench_actors [messages] */
#include "actors/actor.h"
#include "gateway/log.h"
#include "proto/err.h"
#include "shards/shard.h"

#include <malloc.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define ROUNDS 5

static uint64_t target;
static _Atomic uint64_t handled;
static _Atomic int finished;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
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

/* ---- same shard: ping-pong pairs ------------------------------------------------------------------------------ */

enum { M_BALL = 1, M_DATA = 2, M_CREDIT = 3, M_GO = 4 };

typedef struct pp {
    sb_actor_id_t peer;
    uint64_t count;
} pp_t;

static int pp_ball(sb_actor_t *a, void *state, sb_msg_t *m)
{
    pp_t *s = state;
    (void)m;
    s->count++;
    if (++handled >= target) { /* relaxed enough: one thread */
        atomic_store(&finished, 1);
        return 0;
    }
    return sb_actor_send(a, s->peer, M_BALL, NULL, 0);
}

static int pp_peer(sb_actor_t *a, void *state, sb_msg_t *m)
{
    pp_t *s = state;
    (void)a;
    memcpy(&s->peer, m->data, sizeof s->peer);
    return 0;
}

static const sb_actor_handler_fn pp_handlers[] = {[M_BALL] = pp_ball, [M_GO] = pp_peer};
static const sb_actor_kind_t pp_kind = {.name = "pingpong", .state_size = sizeof(pp_t), .handlers = pp_handlers,
                                        .nhandlers = 5};

#define PAIRS 64

static void same_shard_setup(sb_shard_t *sh, void *arg)
{
    (void)arg;
    sb_rt_t *rt = sb_shard_rt(sh);
    for (int i = 0; i < PAIRS; i++) {
        sb_actor_id_t a, b;
        sb_shard_spawn(sh, &pp_kind, NULL, &a);
        sb_shard_spawn(sh, &pp_kind, NULL, &b);
        sb_rt_send(rt, 0, a, M_GO, &b, sizeof b);
        sb_rt_send(rt, 0, b, M_GO, &a, sizeof a);
        sb_rt_send(rt, 0, a, M_BALL, NULL, 0);
    }
}

typedef struct idlist {
    sb_actor_id_t *ids;
    size_t n, cap;
} idlist_t;

static bool collect_id(void *arg, const sb_actor_info_t *info)
{
    idlist_t *l = arg;
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 256;
        l->ids = realloc(l->ids, l->cap * sizeof *l->ids);
    }
    l->ids[l->n++] = info->id;
    return true;
}

/* Stops every actor of the shard between rounds. */
static void kill_all(sb_shard_t *sh, void *arg)
{
    (void)arg;
    idlist_t l = {0};
    sb_rt_foreach(sb_shard_rt(sh), collect_id, &l);
    for (size_t i = 0; i < l.n; i++)
        sb_rt_kill(sb_shard_rt(sh), l.ids[i]);
    free(l.ids);
    atomic_store(&finished, 1);
}

static void wait_finished(void)
{
    while (!atomic_load(&finished))
        usleep(200);
    atomic_store(&finished, 0);
}

static double run_same_shard(uint64_t n)
{
    target = n;
    atomic_store(&handled, 0);
    atomic_store(&finished, 0);
    double t0 = now_s();
    sb_shard_exec(0, same_shard_setup, NULL);
    wait_finished();
    double t = now_s() - t0;
    sb_shard_exec(0, kill_all, NULL);
    wait_finished();
    return (double)n / t;
}

/* ---- cross shard: producer on shard 0, consumer on shard 1 ---------------------------------------------------- */

#define BATCH 512
#define WINDOW (64 * 1024) /* messages in flight at most */
#define CREDIT_EVERY 8192

typedef struct prod {
    sb_actor_id_t consumer;
    uint64_t sent, acked;
} prod_t;

typedef struct cons {
    sb_actor_id_t producer;
    uint64_t got;
} cons_t;

static int prod_send_some(sb_actor_t *a, prod_t *s)
{
    while (s->sent < target && s->sent - s->acked < WINDOW) {
        for (int i = 0; i < BATCH && s->sent < target; i++, s->sent++) {
            int rc = sb_actor_send(a, s->consumer, M_DATA, &s->sent, sizeof s->sent);
            if (rc < 0)
                return rc;
        }
    }
    return 0;
}

static int prod_go(sb_actor_t *a, void *state, sb_msg_t *m)
{
    prod_t *s = state;
    memcpy(&s->consumer, m->data, sizeof s->consumer);
    return prod_send_some(a, s);
}

static int prod_credit(sb_actor_t *a, void *state, sb_msg_t *m)
{
    prod_t *s = state;
    uint64_t n;
    memcpy(&n, m->data, sizeof n);
    s->acked = n;
    return prod_send_some(a, s);
}

static int cons_data(sb_actor_t *a, void *state, sb_msg_t *m)
{
    cons_t *s = state;
    s->got++;
    if (s->got % CREDIT_EVERY == 0)
        sb_actor_send(a, m->from, M_CREDIT, &s->got, sizeof s->got);
    if (s->got == target)
        atomic_store(&finished, 1);
    return 0;
}

static const sb_actor_handler_fn prod_handlers[] = {[M_CREDIT] = prod_credit, [M_GO] = prod_go};
static const sb_actor_kind_t prod_kind = {.name = "producer", .state_size = sizeof(prod_t),
                                          .handlers = prod_handlers, .nhandlers = 5};
static const sb_actor_handler_fn cons_handlers[] = {[M_DATA] = cons_data};
static const sb_actor_kind_t cons_kind = {.name = "consumer", .state_size = sizeof(cons_t),
                                          .handlers = cons_handlers, .nhandlers = 3};

static _Atomic sb_actor_id_t consumer_id, producer_id;

static void spawn_consumer(sb_shard_t *sh, void *arg)
{
    (void)arg;
    sb_actor_id_t id;
    sb_shard_spawn(sh, &cons_kind, NULL, &id);
    atomic_store(&consumer_id, id);
    atomic_store(&finished, 1);
}

static void start_producer(sb_shard_t *sh, void *arg)
{
    (void)arg;
    sb_actor_id_t id, c = atomic_load(&consumer_id);
    sb_shard_spawn(sh, &prod_kind, NULL, &id);
    atomic_store(&producer_id, id);
    sb_rt_send(sb_shard_rt(sh), 0, id, M_GO, &c, sizeof c);
}

static double run_cross_shard(uint64_t n)
{
    target = n;
    atomic_store(&finished, 0);
    sb_shard_exec(1, spawn_consumer, NULL);
    wait_finished();
    double t0 = now_s();
    sb_shard_exec(0, start_producer, NULL);
    wait_finished();
    double t = now_s() - t0;
    sb_shard_exec(0, kill_all, NULL);
    wait_finished();
    sb_shard_exec(1, kill_all, NULL);
    wait_finished();
    return (double)n / t;
}

/* ---- idle actors ---------------------------------------------------------------------------------------------- */

static long rss_kb(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, resident = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
            resident = 0;
        fclose(f);
    }
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static const sb_actor_kind_t idle_kind = {.name = "idle", .state_size = 0};

static void idle_actors(unsigned count)
{
    sb_rt_t *rt = sb_rt_create(7, NULL);
    malloc_trim(0);
    struct mallinfo2 m0 = mallinfo2();
    long r0 = rss_kb();
    for (unsigned i = 0; i < count; i++)
        sb_rt_spawn(rt, &idle_kind, NULL, NULL);
    struct mallinfo2 m1 = mallinfo2();
    long r1 = rss_kb();
    sb_rt_stats_t st;
    sb_rt_get_stats(rt, &st);
    printf("idle actors:  %llu resident; heap in use %.1f bytes/actor, RSS growth %.1f bytes/actor "
           "(target <= 256)\n",
           (unsigned long long)st.actors, (double)(m1.uordblks - m0.uordblks) / count,
           (double)(r1 - r0) * 1024.0 / count);
    sb_rt_destroy(rt);
}

int main(int argc, char **argv)
{
    uint64_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 20000000;
    sb_log_set_level(SB_LOG_WARN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    sb_shards_opts_t o = {.count = 2};
    if (sb_shards_start(&o) < 0) {
        fprintf(stderr, "cannot start shards\n");
        return 1;
    }
    double same[ROUNDS], cross[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        same[r] = run_same_shard(n);
        cross[r] = run_cross_shard(n / 4);
    }
    printf("same-shard:   %.2f M messages/s (median of %d runs of %llu; target >= 10 M/s per core)\n",
           median(same, ROUNDS) / 1e6, ROUNDS, (unsigned long long)n);
    printf("cross-shard:  %.2f M messages/s (median of %d runs of %llu; target >= 2 M/s)\n",
           median(cross, ROUNDS) / 1e6, ROUNDS, (unsigned long long)(n / 4));
    sb_shards_drain(0);
    sb_shards_join();
    idle_actors(1000000);
    return 0;
}
