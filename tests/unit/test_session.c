/* Unit tests of the session actor (actors/session.c) with a fake port: receipts are handed over in arrival order as
 * batches of at most SB_SESSION_BATCH, at most SB_SESSION_WINDOW batches in flight, the next as soon as one
 * completes with everything that waited meanwhile; a receipt already waiting, or in a batch in flight, is not queued
 * twice; a failed or refused apply does not stall the rest; stopping frees what waits. */
#include "actors/session.h"
#include "proto/err.h"
#include "tests/tap.h"

#include <stdlib.h>
#include <string.h>

#define MAX_RECEIPTS 2048
#define MAX_BATCHES 64

typedef struct fake {
    int64_t order[MAX_RECEIPTS]; /* every receipt id handed over, in order */
    int n;
    size_t batch_size[MAX_BATCHES];
    int batches;
    int in_flight, max_in_flight;
    sb_session_done_fn done[MAX_BATCHES]; /* completions owed, oldest first from `next` */
    void *arg[MAX_BATCHES];
    int next, owed;
    int refuse_id; /* apply returns an error for a batch that holds this receipt */
} fake_t;

static int fake_apply(void *ctx, int64_t tenant, int64_t channel, const int64_t *ids, size_t n,
                      sb_session_done_fn done, void *arg)
{
    fake_t *f = ctx;
    if (tenant != 7 || channel != 9 || n == 0 || n > SB_SESSION_BATCH)
        return SB_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (ids[i] == f->refuse_id)
            return SB_EUNAVAIL;
    for (size_t i = 0; i < n; i++)
        f->order[f->n++] = ids[i];
    f->batch_size[f->batches++] = n;
    f->in_flight++;
    if (f->in_flight > f->max_in_flight)
        f->max_in_flight = f->in_flight;
    f->done[f->owed] = done;
    f->arg[f->owed++] = arg;
    return 0;
}

/* Completes the oldest apply in flight, as the database would later (in order, like one connection). */
static void complete(fake_t *f, int err)
{
    f->in_flight--;
    int i = f->next++;
    f->done[i](f->arg[i], err);
}

static void run(sb_rt_t *rt)
{
    while (sb_rt_has_work(rt))
        sb_rt_run(rt, 100);
}

static void send_receipt(sb_rt_t *rt, sb_actor_id_t id, int64_t r)
{
    sb_session_receipt_t m = {r};
    sb_rt_send(rt, 0, id, SB_SESSION_RECEIPT, &m, sizeof m);
}

/* A runtime with one session actor whose port is a fake refusing refuse_id. */
typedef struct fixture {
    fake_t f;
    sb_session_port_t port;
    sb_session_args_t args;
    sb_rt_t *rt;
    sb_actor_id_t id;
} fixture_t;

static fake_t *fixture_init(fixture_t *x, int refuse_id)
{
    memset(x, 0, sizeof *x);
    x->f.refuse_id = refuse_id;
    x->port = (sb_session_port_t){.ctx = &x->f, .apply = fake_apply};
    x->args = (sb_session_args_t){.tenant = 7, .channel = 9, .port = &x->port};
    x->rt = sb_rt_create(0, NULL);
    is_int(sb_rt_spawn(x->rt, &sb_session_kind, &x->args, &x->id), 0, "spawn");
    return &x->f;
}

TEST(batches_in_order)
{
    enum { N = SB_SESSION_BATCH * 3 + 10 };
    static fixture_t x; /* static: fake_t is large for a stack */
    fake_t *f = fixture_init(&x, -1);
    send_receipt(x.rt, x.id, 1);
    run(x.rt);
    ok(f->batches == 1 && f->batch_size[0] == 1, "an idle actor hands a lone receipt over at once");
    for (int i = 2; i <= N; i++)
        send_receipt(x.rt, x.id, i);
    run(x.rt);
    is_int(f->batches, SB_SESSION_WINDOW, "while the window is full, the rest waits");
    is_int((long long)f->batch_size[1], 1, "(the second went at once too: the window had room)");
    complete(f, 0);
    run(x.rt);
    ok(f->batches == 3 && f->batch_size[2] == SB_SESSION_BATCH, "one completion lets a full batch of what waited go");
    while (f->in_flight) {
        complete(f, f->next == 1 ? SB_EUNAVAIL : 0); /* one fails: the rest must go on */
        run(x.rt);
    }
    is_int(f->n, N, "all handed over");
    int in_order = 1;
    for (int i = 0; i < f->n; i++)
        in_order &= f->order[i] == i + 1;
    ok(in_order, "in arrival order");
    is_int(f->max_in_flight, SB_SESSION_WINDOW, "never more than the window in flight");
    sb_rt_destroy(x.rt);
}

TEST(twins_queued_once)
{
    static fixture_t x; /* static: fake_t is large for a stack */
    fake_t *f = fixture_init(&x, -1);
    for (int i = 1; i <= SB_SESSION_WINDOW; i++)
        send_receipt(x.rt, x.id, 100 + i); /* fill the window */
    send_receipt(x.rt, x.id, 1);
    send_receipt(x.rt, x.id, 2);
    send_receipt(x.rt, x.id, 1); /* the sweeper found 1 while it waited */
    send_receipt(x.rt, x.id, 3);
    run(x.rt);
    complete(f, 0);
    run(x.rt);
    ok(f->batches == SB_SESSION_WINDOW + 1 && f->batch_size[SB_SESSION_WINDOW] == 3, "three waited, not four");
    complete(f, 0);
    complete(f, 0);
    run(x.rt);
    send_receipt(x.rt, x.id, 1); /* once handed over, it may come again (the port's apply is idempotent) */
    run(x.rt);
    is_int(f->order[f->n - 1], 1, "an id no longer waiting is queued again");
    complete(f, 0);
    run(x.rt);
    sb_rt_destroy(x.rt);
}

/* The sweeper also finds receipts whose batch is with the database right now: those are not applied twice. Once the
 * batch has failed they are welcome again (the sweeper's next page brings them back). */
TEST(twins_in_flight_dropped)
{
    static fixture_t x; /* static: fake_t is large for a stack */
    fake_t *f = fixture_init(&x, -1);
    send_receipt(x.rt, x.id, 1);
    send_receipt(x.rt, x.id, 2);
    run(x.rt);
    is_int(f->batches, SB_SESSION_WINDOW, "1 and 2 are in flight, the window full");
    send_receipt(x.rt, x.id, 2); /* the sweeper found it unprocessed */
    send_receipt(x.rt, x.id, 3);
    run(x.rt);
    complete(f, SB_EUNAVAIL); /* 1's batch failed */
    run(x.rt);
    ok(f->batches == 3 && f->batch_size[2] == 1 && f->order[2] == 3, "the twin of 2 was dropped: 3 went on its own");
    complete(f, 0);
    complete(f, 0);
    run(x.rt);
    send_receipt(x.rt, x.id, 1);
    send_receipt(x.rt, x.id, 2);
    run(x.rt);
    ok(f->n == 5 && f->order[3] == 1 && f->order[4] == 2, "once their batches ended, 1 (failed) and 2 (applied) may "
                                                          "come again");
    complete(f, 0);
    complete(f, 0);
    run(x.rt);
    sb_rt_destroy(x.rt);
}

TEST(refused_does_not_stall)
{
    static fixture_t x; /* static: fake_t is large for a stack */
    fake_t *f = fixture_init(&x, 2);
    send_receipt(x.rt, x.id, 1);
    send_receipt(x.rt, x.id, 2);
    send_receipt(x.rt, x.id, 3);
    run(x.rt);
    is_int(f->n, 2, "a refused batch is skipped (left for the sweeper)");
    is_int(f->order[1], 3, "and the next one applied");
    sb_rt_send(x.rt, 0, x.id, SB_SESSION_RECEIPT, "x", 1);
    run(x.rt);
    sb_rt_stats_t st;
    sb_rt_get_stats(x.rt, &st);
    is_int(st.restarts, 0, "a malformed message is dropped, not a crash");
    complete(f, 0);
    complete(f, 0);
    run(x.rt);
    sb_rt_destroy(x.rt);
}

TEST(stop_frees_waiting)
{
    static fixture_t x; /* static: fake_t is large for a stack */
    fake_t *f = fixture_init(&x, -1);
    for (int i = 1; i <= SB_SESSION_WINDOW + 10; i++)
        send_receipt(x.rt, x.id, i);
    run(x.rt);
    is_int(sb_rt_kill(x.rt, x.id), 0, "kill with ten receipts waiting");
    while (f->in_flight)
        complete(f, 0); /* the applies in flight finish after the actor is gone */
    run(x.rt);
    sb_rt_stats_t st;
    sb_rt_get_stats(x.rt, &st);
    is_int(st.actors, 0, "actor gone; its completion was a dead letter, no crash");
    sb_rt_destroy(x.rt);
}

/* ---- outbound ---- */

typedef struct fake_send {
    int64_t ids[64];
    unsigned attempts[64];
    int n, refuse;
    sb_session_sent_fn sent;
    void *arg;
} fake_send_t;

static fake_send_t fs;

static int fake_send(void *ctx, int64_t tenant, int64_t channel, int64_t message_id, unsigned attempt,
                     sb_session_sent_fn sent, void *arg)
{
    (void)ctx;
    (void)tenant;
    (void)channel;
    if (message_id == fs.refuse)
        return SB_EUNAVAIL;
    fs.ids[fs.n] = message_id;
    fs.attempts[fs.n++] = attempt;
    fs.sent = sent;
    fs.arg = arg;
    return 0;
}

static void finish_send(int64_t id, bool again, uint64_t retry_ms)
{
    sb_session_outcome_t o = {.message_id = id, .again = again, .retry_ms = retry_ms};
    sb_session_sent_fn f = fs.sent;
    fs.sent = NULL;
    f(fs.arg, &o);
}

static void send_msg(sb_rt_t *rt, sb_actor_id_t id, int64_t m)
{
    sb_session_send_t s = {m};
    sb_rt_send(rt, 0, id, SB_SESSION_SEND, &s, sizeof s);
}

TEST(sends_in_order_one_at_a_time)
{
    memset(&fs, 0, sizeof fs);
    fs.refuse = 3;
    fake_t f = {.refuse_id = -1};
    sb_session_port_t port = {.ctx = &f, .apply = fake_apply, .send = fake_send};
    sb_session_args_t args = {.tenant = 7, .channel = 9, .port = &port};
    sb_rt_t *rt = sb_rt_create(0, NULL);
    sb_rt_set_time(rt, 1000);
    sb_actor_id_t id;
    sb_rt_spawn(rt, &sb_session_kind, &args, &id);
    send_msg(rt, id, 1);
    send_msg(rt, id, 2);
    send_msg(rt, id, 2); /* a repeat while it waits: held once */
    send_msg(rt, id, 3); /* refused by the port: dropped, left to the sweeper */
    send_msg(rt, id, 4);
    run(rt);
    is_int(fs.n, 1, "one send at a time");
    finish_send(1, true, 500); /* the provider was busy: try again in 500 ms */
    run(rt);
    is_int(fs.n, 1, "a retry holds the line: nothing else is sent meanwhile");
    sb_rt_set_time(rt, 1499);
    sb_rt_fire_timers(rt);
    run(rt);
    is_int(fs.n, 1, "not before the delay");
    sb_rt_set_time(rt, 1500);
    sb_rt_fire_timers(rt);
    run(rt);
    ok(fs.n == 2 && fs.ids[1] == 1 && fs.attempts[1] == 2, "then the same message again, attempt 2");
    finish_send(1, false, 0);
    run(rt);
    ok(fs.n == 3 && fs.ids[2] == 2 && fs.attempts[2] == 1, "the next message, attempt 1");
    finish_send(2, false, 0);
    run(rt);
    ok(fs.n == 4 && fs.ids[3] == 4, "a repeated id was held once, a refused one skipped");
    finish_send(4, false, 0);
    run(rt);
    is_int(fs.n, 4, "nothing more");
    sb_rt_destroy(rt);
}

int main(void)
{
    RUN(batches_in_order);
    RUN(twins_queued_once);
    RUN(twins_in_flight_dropped);
    RUN(refused_does_not_stall);
    RUN(stop_frees_waiting);
    RUN(sends_in_order_one_at_a_time);
    return tap_done();
}
