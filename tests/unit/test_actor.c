/* Unit tests of the actor runtime (actors/actor.c) and the MPSC queue (actors/mpsc.c): ordering, cross-shard
 * delivery over real threads, budget fairness, timers, supervision with backoff, stop, the actor table under
 * churn, and keyed actors: activation by key (also from another shard), passivation of the idle ones. The runtime is driven by hand with a fake clock and a fake cross-shard port. */
#include "actors/actor.h"
#include "actors/mpsc.h"
#include "proto/err.h"
#include "tests/tap.h"

#include <pthread.h>
#include <stdlib.h>

enum { MSG_NUM = 1, MSG_FAIL = 2, MSG_SELF_FLOOD = 3, MSG_STOP = 4 };

typedef struct rec {
    int inits, stops;
    uint64_t last, count, timer_ticks, last_tag;
    int order_errors;
    sb_actor_id_t peer;
} rec_t;

/* Every test actor records into a rec_t given as its spawn argument, so tests can look at it from outside. */
typedef struct st {
    rec_t *rec;
    int seen_since_init;
} st_t;

static int t_init(sb_actor_t *a, void *state, const void *arg)
{
    (void)a;
    st_t *s = state;
    s->rec = (rec_t *)arg;
    s->rec->inits++;
    return 0;
}

static void t_stop(sb_actor_t *a, void *state)
{
    (void)a;
    st_t *s = state;
    if (s->rec)
        s->rec->stops++;
}

static int h_timer(sb_actor_t *a, void *state, sb_msg_t *m)
{
    (void)a;
    st_t *s = state;
    s->rec->timer_ticks++;
    memcpy(&s->rec->last_tag, m->data, sizeof(uint64_t));
    return 0;
}

static int h_num(sb_actor_t *a, void *state, sb_msg_t *m)
{
    (void)a;
    st_t *s = state;
    uint64_t v;
    memcpy(&v, m->data, sizeof v);
    if (v != s->rec->last + 1)
        s->rec->order_errors++;
    s->rec->last = v;
    s->rec->count++;
    s->seen_since_init++;
    return 0;
}

static int h_fail(sb_actor_t *a, void *state, sb_msg_t *m)
{
    (void)a, (void)state, (void)m;
    return SB_EINVAL;
}

static int h_flood(sb_actor_t *a, void *state, sb_msg_t *m)
{
    st_t *s = state;
    s->rec->count++;
    return sb_actor_send(a, sb_actor_self(a), MSG_SELF_FLOOD, m->data, m->len);
}

static int h_stop(sb_actor_t *a, void *state, sb_msg_t *m)
{
    (void)state, (void)m;
    sb_actor_stop(a);
    return 0;
}

static const sb_actor_handler_fn handlers[] = {
    [SB_MSG_TIMER] = h_timer, [MSG_NUM] = h_num, [MSG_FAIL] = h_fail, [MSG_SELF_FLOOD] = h_flood,
    [MSG_STOP] = h_stop,
};
static const sb_actor_kind_t kind = {
    .name = "test", .state_size = sizeof(st_t), .init = t_init, .handlers = handlers,
    .nhandlers = sizeof handlers / sizeof handlers[0], .stop = t_stop,
};

static int send_num(sb_rt_t *rt, sb_actor_id_t to, uint64_t v)
{
    return sb_rt_send(rt, 0, to, MSG_NUM, &v, sizeof v);
}

TEST(same_shard_order)
{
    sb_rt_t *rt = sb_rt_create(0, NULL);
    rec_t r = {0};
    sb_actor_id_t id;
    is_int(sb_rt_spawn(rt, &kind, &r, &id), 0, "spawn");
    is_int(r.inits, 1, "init ran once");
    for (uint64_t i = 1; i <= 10000; i++)
        send_num(rt, id, i);
    sb_rt_stats_t st;
    sb_rt_get_stats(rt, &st);
    is_int(st.mailbox_depth, 10000, "mailbox depth counts queued messages");
    while (sb_rt_has_work(rt))
        sb_rt_run(rt, 1000);
    is_int(r.count, 10000, "every message handled");
    is_int(r.order_errors, 0, "in order");
    sb_rt_get_stats(rt, &st);
    is_int(st.mailbox_depth, 0, "mailboxes drained");
    is_int(st.processed, 10000, "processed counted");
    sb_rt_destroy(rt);
    is_int(r.stops, 1, "destroy runs stop()");
}

TEST(unknown_target_and_type)
{
    sb_rt_t *rt = sb_rt_create(0, NULL);
    rec_t r = {0};
    sb_actor_id_t id;
    sb_rt_spawn(rt, &kind, &r, &id);
    is_int(send_num(rt, id + 1000, 1), SB_ENOENT, "send to a missing actor: ENOENT");
    is_int(sb_rt_send(rt, 0, id, 99, NULL, 0), 0, "unknown type is accepted");
    sb_rt_run(rt, 10);
    sb_rt_stats_t st;
    sb_rt_get_stats(rt, &st);
    is_int(st.dead_letters, 2, "both counted as dead letters");
    sb_rt_destroy(rt);
}

TEST(fairness)
{
    sb_rt_t *rt = sb_rt_create(0, NULL);
    rec_t flood = {0}, quiet = {0};
    sb_actor_id_t f, q;
    sb_rt_spawn(rt, &kind, &flood, &f);
    sb_rt_spawn(rt, &kind, &quiet, &q);
    sb_rt_send(rt, 0, f, MSG_SELF_FLOOD, "x", 1); /* refills its own mailbox forever */
    send_num(rt, q, 1);
    size_t n = sb_rt_run(rt, 10 * SB_RT_TURN_BUDGET);
    is_int(n, 10 * SB_RT_TURN_BUDGET, "run stops at its budget even with endless work");
    is_int(quiet.count, 1, "the quiet actor ran despite the flood");
    ok(flood.count <= 10 * SB_RT_TURN_BUDGET, "flooder bounded by the budget");
    /* The quiet actor gets its turn after at most one turn of the flooder. */
    send_num(rt, q, 2);
    uint64_t before = flood.count;
    while (quiet.count < 2)
        sb_rt_run(rt, 1);
    ok(flood.count - before <= SB_RT_TURN_BUDGET, "at most one flooder turn before the quiet actor (%llu)",
       (unsigned long long)(flood.count - before));
    sb_rt_destroy(rt);
}

TEST(actor_info)
{
    sb_rt_t *rt = sb_rt_create(0, NULL);
    rec_t r = {0};
    sb_actor_id_t id;
    sb_rt_set_time(rt, 1000);
    sb_rt_spawn(rt, &kind, &r, &id);
    is_int(sb_rt_next_timer(rt), -1, "no timer armed");
    sb_actor_info_t info;
    is_int(sb_rt_actor_info(rt, id, &info), 0, "actor info");
    is_str(info.kind, "test", "kind name");
    is_int(info.id, id, "id");
    ok(!info.suspended && info.mailbox == 0 && info.restarts == 0, "fresh actor");
    is_int(sb_rt_actor_info(rt, id + 1, &info), SB_ENOENT, "missing actor");
    sb_rt_destroy(rt);
}

/* A kind whose init arms timers: a one-shot (tag 1) at 50 ms, a repeating (tag 2) every 20 ms, and a one-shot
 * (tag 3) at 30 ms that it cancels at once. */
static int tm_init(sb_actor_t *a, void *state, const void *arg)
{
    t_init(a, state, arg);
    sb_actor_timer_start(a, 50, 0, 1);
    sb_actor_timer_start(a, 20, 20, 2);
    uint64_t t3 = sb_actor_timer_start(a, 30, 0, 3);
    if (sb_actor_timer_stop(a, t3) != 0 || sb_actor_timer_stop(a, t3) != SB_ENOENT)
        return SB_EINVAL;
    return 0;
}
static int tm_timer(sb_actor_t *a, void *state, sb_msg_t *m)
{
    st_t *s = state;
    uint64_t tag;
    memcpy(&tag, m->data, sizeof tag);
    if (tag == 3)
        s->rec->order_errors++;
    if (tag == 1)
        s->rec->count++;
    return h_timer(a, state, m);
}
static const sb_actor_handler_fn tm_handlers[] = {[SB_MSG_TIMER] = tm_timer, [MSG_FAIL] = h_fail};
static const sb_actor_kind_t tm_kind = {
    .name = "timed", .state_size = sizeof(st_t), .init = tm_init, .handlers = tm_handlers, .nhandlers = 3,
    .stop = t_stop,
};

static void advance(sb_rt_t *rt, uint64_t to)
{
    for (uint64_t t = sb_rt_time(rt); t <= to; t++) {
        sb_rt_set_time(rt, t);
        sb_rt_fire_timers(rt);
        while (sb_rt_has_work(rt))
            sb_rt_run(rt, 100);
    }
}

TEST(timers_fire)
{
    sb_rt_t *rt = sb_rt_create(0, NULL);
    rec_t r = {0};
    sb_actor_id_t id;
    sb_rt_set_time(rt, 1000);
    is_int(sb_rt_spawn(rt, &tm_kind, &r, &id), 0, "spawn (stop of a cancelled timer works)");
    is_int(sb_rt_next_timer(rt), 20, "earliest timer in 20 ms");
    advance(rt, 1019);
    is_int(r.timer_ticks, 0, "nothing before it is due");
    advance(rt, 1020);
    is_int(r.timer_ticks, 1, "repeating timer fired once at 20 ms");
    advance(rt, 1100);
    is_int(r.count, 1, "one-shot fired exactly once");
    is_int(r.order_errors, 0, "cancelled timer never fired");
    is_int(r.timer_ticks, 1 + 5, "repeating: 20,40,60,80,100 plus the one-shot");
    /* A clock jump does not cause a burst of repeats. */
    sb_rt_set_time(rt, 5000);
    sb_rt_fire_timers(rt);
    while (sb_rt_has_work(rt))
        sb_rt_run(rt, 100);
    is_int(r.timer_ticks, 7, "one tick after a long stall, not a burst");
    sb_rt_stats_t st;
    sb_rt_get_stats(rt, &st);
    is_int(st.timers, 1, "only the repeating timer still armed");
    is_int(sb_rt_kill(rt, id), 0, "kill");
    sb_rt_get_stats(rt, &st);
    is_int(st.timers, 0, "kill cancels its timers");
    is_int(r.stops, 1, "kill runs stop()");
    is_int(sb_rt_kill(rt, id), SB_ENOENT, "second kill: ENOENT");
    sb_rt_destroy(rt);
}

TEST(supervision)
{
    sb_rt_t *rt = sb_rt_create(0, NULL);
    rec_t r = {0};
    sb_actor_id_t id;
    sb_rt_set_time(rt, 10000);
    sb_rt_spawn(rt, &tm_kind, &r, &id);
    sb_rt_stats_t st;
    sb_rt_get_stats(rt, &st);
    is_int(st.timers, 2, "two timers armed by init");

    sb_rt_send(rt, 0, id, MSG_FAIL, NULL, 0);
    sb_rt_run(rt, 10);
    is_int(r.inits, 2, "failure restarts from init");
    is_int(r.stops, 1, "stop() ran before the restart");
    sb_rt_get_stats(rt, &st);
    is_int(st.restarts, 1, "restart counted");
    is_int(st.timers, 2, "old timers cancelled, init re-armed its own");

    /* Three more quick failures: the fourth within a second suspends the actor. */
    for (int i = 0; i < 3; i++) {
        sb_rt_set_time(rt, 10001 + (uint64_t)i);
        sb_rt_send(rt, 0, id, MSG_FAIL, NULL, 0);
        sb_rt_run(rt, 10);
    }
    sb_actor_info_t info;
    sb_rt_actor_info(rt, id, &info);
    is_int(info.restarts, 4, "four restarts");
    ok(info.suspended, "suspended after repeated failures");
    uint64_t ticks = r.timer_ticks;
    sb_rt_send(rt, 0, id, MSG_FAIL, NULL, 0); /* waits in the mailbox */
    is_int(sb_rt_run(rt, 10), 0, "a suspended actor does not run");
    advance(rt, 10003 + 9);
    sb_rt_actor_info(rt, id, &info);
    ok(info.suspended, "still suspended before the 10 ms backoff ends");
    advance(rt, 10003 + 10);
    sb_rt_actor_info(rt, id, &info);
    is_int(info.restarts, 5, "resumed and handled the waiting message (failing again)");
    ok(info.suspended, "and backs off again");
    is_int(sb_rt_next_timer(rt), 20, "backoff doubled to 20 ms");
    is_int(r.timer_ticks, ticks, "no timer ticks while failing");

    /* Quiet for a while: the streak resets, one failure restarts without suspension. */
    advance(rt, 20000);
    sb_rt_actor_info(rt, id, &info);
    ok(!info.suspended, "resumed after backoff");
    sb_rt_send(rt, 0, id, MSG_FAIL, NULL, 0);
    sb_rt_run(rt, 10);
    sb_rt_actor_info(rt, id, &info);
    ok(!info.suspended, "an isolated failure later does not suspend");
    sb_rt_destroy(rt);
}

static int bad_init(sb_actor_t *a, void *state, const void *arg)
{
    (void)a, (void)state, (void)arg;
    return SB_EUNAVAIL;
}
static const sb_actor_kind_t bad_kind = {.name = "bad", .state_size = 8, .init = bad_init};

TEST(spawn_failure_and_stop)
{
    sb_rt_t *rt = sb_rt_create(3, NULL);
    sb_actor_id_t id = 42;
    is_int(sb_rt_spawn(rt, &bad_kind, NULL, &id), SB_EUNAVAIL, "init failure is returned");
    sb_rt_stats_t st;
    sb_rt_get_stats(rt, &st);
    is_int(st.actors, 0, "and no actor remains");

    rec_t r = {0};
    sb_rt_spawn(rt, &kind, &r, &id);
    is_int(sb_actor_id_shard(id), 3, "id carries the shard");
    send_num(rt, id, 1);
    sb_rt_send(rt, 0, id, MSG_STOP, NULL, 0);
    send_num(rt, id, 2);
    while (sb_rt_has_work(rt))
        sb_rt_run(rt, 10);
    is_int(r.count, 1, "messages after a self-stop are not handled");
    is_int(r.stops, 1, "stop() ran");
    is_int(send_num(rt, id, 3), SB_ENOENT, "a stopped actor is gone");
    sb_rt_get_stats(rt, &st);
    is_int(st.actors, 0, "no actors left");
    is_int(st.mailbox_depth, 0, "no messages left");
    sb_rt_destroy(rt);
}

TEST(table_churn)
{
    enum { N = 200000 };
    sb_rt_t *rt = sb_rt_create(0, NULL);
    static rec_t recs[N];
    sb_actor_id_t *ids = malloc(N * sizeof *ids);
    memset(recs, 0, sizeof recs);
    for (int i = 0; i < N; i++)
        sb_rt_spawn(rt, &kind, &recs[i], &ids[i]);
    int errors = 0;
    for (int i = 0; i < N; i += 2)
        if (sb_rt_kill(rt, ids[i]) != 0)
            errors++;
    for (int i = 0; i < N; i++) {
        int rc = send_num(rt, ids[i], 1);
        if ((i % 2 == 0) != (rc == SB_ENOENT))
            errors++;
    }
    while (sb_rt_has_work(rt))
        sb_rt_run(rt, 10000);
    for (int i = 1; i < N; i += 2)
        if (recs[i].count != 1)
            errors++;
    is_int(errors, 0, "every live actor found, every killed one gone, after %d spawns and %d kills", N, N / 2);
    sb_rt_stats_t st;
    sb_rt_get_stats(rt, &st);
    is_int(st.actors, N / 2, "count");
    free(ids);
    sb_rt_destroy(rt);
}

/* ---- cross-shard: two runtimes on two threads, joined by MPSC queues ----------------------------------------- */

typedef struct xshard {
    sb_mpsc_t q[2];
    sb_rt_t *rt[2];
    _Atomic int done;
} xshard_t;

static xshard_t xs;

static int x_remote_send(void *ctx, unsigned shard, sb_msg_t *msg)
{
    (void)ctx;
    if (shard > 1)
        return SB_ENOENT;
    sb_mpsc_push(&xs.q[shard], &msg->qnode);
    return 0;
}

static void *consumer(void *arg)
{
    rec_t *r = arg;
    while (r->count < 300000) {
        sb_mpsc_node_t *n;
        while ((n = sb_mpsc_pop(&xs.q[1])))
            sb_rt_deliver(xs.rt[1], (sb_msg_t *)((char *)n - offsetof(sb_msg_t, qnode)));
        sb_rt_run(xs.rt[1], 4096);
    }
    return NULL;
}

static void *producer(void *arg)
{
    sb_actor_id_t to = *(sb_actor_id_t *)arg;
    for (uint64_t i = 1; i <= 300000; i++)
        send_num(xs.rt[0], to, i);
    return NULL;
}

TEST(cross_shard)
{
    sb_rt_port_t port = {.remote_send = x_remote_send};
    sb_mpsc_init(&xs.q[0]);
    sb_mpsc_init(&xs.q[1]);
    xs.rt[0] = sb_rt_create(0, &port);
    xs.rt[1] = sb_rt_create(1, &port);
    rec_t r = {0};
    sb_actor_id_t id;
    sb_rt_spawn(xs.rt[1], &kind, &r, &id);
    is_int(send_num(xs.rt[0], ((sb_actor_id_t)7 << SB_ACTOR_LOCAL_BITS) | 1, 1), SB_ENOENT,
           "remote port error is returned");
    pthread_t c, p;
    pthread_create(&c, NULL, consumer, &r);
    pthread_create(&p, NULL, producer, &id);
    pthread_join(p, NULL);
    pthread_join(c, NULL);
    is_int(r.count, 300000, "every cross-thread message arrived");
    is_int(r.order_errors, 0, "in the order sent");
    sb_rt_destroy(xs.rt[0]);
    sb_rt_destroy(xs.rt[1]);
}

/* ---- keyed actors and passivation ---------------------------------------------------------------------------- */

typedef struct kst {
    uint64_t key, got, busy;
} kst_t;

typedef struct kenv {
    int inits, stops;
    uint64_t last_key;
} kenv_t;

static int k_init(sb_actor_t *a, void *state, const void *arg)
{
    kst_t *s = state;
    kenv_t *env = sb_rt_env(sb_actor_rt(a));
    s->key = sb_actor_key(a);
    env->inits++;
    env->last_key = s->key;
    return arg == NULL ? 0 : SB_EINVAL; /* keyed spawns get no argument */
}

static void k_stop(sb_actor_t *a, void *state)
{
    (void)state;
    ((kenv_t *)sb_rt_env(sb_actor_rt(a)))->stops++;
}

static int k_num(sb_actor_t *a, void *state, sb_msg_t *m)
{
    (void)a;
    kst_t *s = state;
    uint64_t v;
    memcpy(&v, m->data, sizeof v);
    s->got++;
    s->busy = v == 99; /* 99: "work in flight", refuses passivation */
    return 0;
}

static bool k_can_passivate(sb_actor_t *a, void *state)
{
    (void)a;
    return !((kst_t *)state)->busy;
}

static const sb_actor_handler_fn k_handlers[] = {[MSG_NUM] = k_num};
static const sb_actor_kind_t keyed_kind = {.name = "keyed", .state_size = sizeof(kst_t), .init = k_init,
                                           .handlers = k_handlers, .nhandlers = 2, .stop = k_stop,
                                           .can_passivate = k_can_passivate};
static const sb_actor_kind_t other_kind = {.name = "other", .state_size = sizeof(kst_t), .init = k_init,
                                           .handlers = k_handlers, .nhandlers = 2, .stop = k_stop};

TEST(keyed_and_passivation)
{
    kenv_t env = {0};
    sb_rt_t *rt = sb_rt_create(0, NULL);
    sb_rt_set_env(rt, &env);
    sb_rt_set_idle_timeout(rt, 1000);
    sb_rt_set_time(rt, 10);
    ok(sb_rt_find(rt, &keyed_kind, 7) == 0, "no actor for key 7 yet");
    uint64_t one = 1;
    is_int(sb_rt_send_key(rt, 0, &keyed_kind, 7, MSG_NUM, &one, sizeof one), 0, "a message to key 7 activates it");
    sb_actor_id_t a7 = sb_rt_find(rt, &keyed_kind, 7);
    ok(a7 != 0 && env.inits == 1 && env.last_key == 7, "the actor exists, initialised with its key and no argument");
    sb_rt_send_key(rt, 0, &keyed_kind, 7, MSG_NUM, &one, sizeof one);
    sb_actor_id_t again;
    is_int(sb_rt_ensure(rt, &keyed_kind, 7, &again), 0, "ensure finds it");
    ok(again == a7 && env.inits == 1, "the same actor: one activation per key");
    sb_rt_ensure(rt, &other_kind, 7, NULL);
    ok(sb_rt_find(rt, &other_kind, 7) != a7 && env.inits == 2, "another kind's key 7 is another actor");
    sb_rt_run(rt, 100);
    sb_actor_info_t info;
    ok(sb_rt_actor_info(rt, a7, &info) == 0 && info.mailbox == 0, "both messages handled");

    uint64_t busy = 99;
    sb_rt_send_key(rt, 0, &keyed_kind, 8, MSG_NUM, &busy, sizeof busy);
    sb_rt_run(rt, 100);
    sb_rt_set_time(rt, 500);
    is_int((long long)sb_rt_passivate(rt), 0, "nobody idle long enough yet");
    sb_rt_send_key(rt, 0, &keyed_kind, 7, MSG_NUM, &one, sizeof one); /* 7 active at 500 */
    sb_rt_run(rt, 100);
    sb_rt_set_time(rt, 1200);
    is_int((long long)sb_rt_passivate(rt), 1, "at 1200: the other kind's actor (idle since 10) goes; 8 refuses (busy)");
    ok(sb_rt_find(rt, &other_kind, 7) == 0 && env.stops == 1, "passivated: stop() ran, the key is free");
    ok(sb_rt_find(rt, &keyed_kind, 8) != 0, "the busy one stays");
    sb_rt_set_time(rt, 1600);
    is_int((long long)sb_rt_passivate(rt), 1, "at 1600: 7 (idle since 500) goes");
    sb_rt_set_time(rt, 2300);
    is_int((long long)sb_rt_passivate(rt), 0, "8, asked again a timeout after it refused, is still busy");
    uint64_t done = 2;
    sb_rt_send_key(rt, 0, &keyed_kind, 8, MSG_NUM, &done, sizeof done);
    sb_rt_run(rt, 100);
    sb_rt_set_time(rt, 3400);
    is_int((long long)sb_rt_passivate(rt), 1, "no longer busy and idle: it goes");
    sb_rt_stats_t st;
    sb_rt_get_stats(rt, &st);
    ok(st.actors == 0 && st.activations == 3 && st.passivations == 3, "no actor left; 3 activations, 3 passivations");
    is_int(sb_rt_send_key(rt, 0, &keyed_kind, 7, MSG_NUM, &one, sizeof one), 0, "a message to 7 again");
    ok(sb_rt_find(rt, &keyed_kind, 7) != 0 && sb_rt_find(rt, &keyed_kind, 7) != a7 && env.inits == 4,
       "activates a new actor (a new id), which loads its state again");
    ok(sb_rt_send(rt, 0, a7, MSG_NUM, &one, sizeof one) == SB_ENOENT, "the old id misses");
    sb_rt_destroy(rt);
    is_int(env.stops, 4, "destroy stops the rest");
}

/* Keyed messages to another shard travel through the port and activate the actor there. */
static sb_rt_t *peer_rt;

static int to_peer(void *ctx, unsigned shard, sb_msg_t *msg)
{
    (void)ctx;
    if (shard != 1)
        return SB_ENOENT;
    sb_rt_deliver(peer_rt, msg);
    return 0;
}

TEST(keyed_cross_shard)
{
    kenv_t env0 = {0}, env1 = {0};
    sb_rt_port_t port = {.remote_send = to_peer};
    sb_rt_t *rt0 = sb_rt_create(0, &port);
    peer_rt = sb_rt_create(1, NULL);
    sb_rt_set_env(rt0, &env0);
    sb_rt_set_env(peer_rt, &env1);
    uint64_t one = 1;
    is_int(sb_rt_send_key(rt0, 1, &keyed_kind, 42, MSG_NUM, &one, sizeof one), 0, "sent to key 42 on shard 1");
    ok(env0.inits == 0 && env1.inits == 1 && sb_rt_find(peer_rt, &keyed_kind, 42) != 0,
       "activated on shard 1, with shard 1's environment");
    ok(sb_actor_id_shard(sb_rt_find(peer_rt, &keyed_kind, 42)) == 1, "its id names shard 1");
    is_int(sb_rt_send_key(rt0, 5, &keyed_kind, 1, MSG_NUM, &one, sizeof one), SB_ENOENT, "an unknown shard: error");
    sb_rt_destroy(rt0);
    sb_rt_destroy(peer_rt);
}

int main(void)
{
    RUN(same_shard_order);
    RUN(keyed_and_passivation);
    RUN(keyed_cross_shard);
    RUN(unknown_target_and_type);
    RUN(fairness);
    RUN(actor_info);
    RUN(timers_fire);
    RUN(supervision);
    RUN(spawn_failure_and_stop);
    RUN(table_churn);
    RUN(cross_shard);
    return tap_done();
}
