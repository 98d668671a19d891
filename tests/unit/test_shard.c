/* Tests of the shards (shards/shard.c) without Redis or PostgreSQL: sb_shard_exec runs fn on the target shard's
 * thread, and keeps its promise through shutdown — every call it accepted (returned 0) runs exactly once, even one
 * that reached a shard in the moment it stopped; once a shard is stopped it refuses (SB_ECLOSED). */
#include "proto/err.h"
#include "shards/shard.h"
#include "tests/tap.h"

#include <stdatomic.h>
#include <stdlib.h>

static atomic_ulong ran, wrong_thread;

static void count(sb_shard_t *s, void *arg)
{
    unsigned *target = arg;
    if (!s || sb_shard_self() != s || sb_shard_index(s) != *target)
        atomic_fetch_add(&wrong_thread, 1);
    atomic_fetch_add(&ran, 1);
    free(target);
}

typedef struct sender {
    unsigned target;
    unsigned long accepted, refused;
    atomic_bool go;
} sender_t;

/* Another thread, calling into shard `target` as fast as it can until the shard refuses. */
static void send_loop(void *arg)
{
    sender_t *sd = arg;
    while (!atomic_load(&sd->go))
        ;
    for (;;) {
        unsigned *t = malloc(sizeof *t);
        *t = sd->target;
        if (sb_shard_exec(sd->target, count, t) == 0) {
            sd->accepted++;
            continue;
        }
        free(t);
        sd->refused++;
        break;
    }
}

/* One start-to-stop round; returns how many accepted calls did not run exactly once. */
static long round_trip(sender_t *sd)
{
    sb_shards_opts_t opts = {.count = 2};
    if (sb_shards_start(&opts) != 0)
        return -1;
    atomic_store(&ran, 0);
    *sd = (sender_t){.target = 1};
    uv_thread_t th;
    uv_thread_create(&th, send_loop, sd);
    atomic_store(&sd->go, true);
    while (atomic_load(&ran) < 1000) /* the calls are flowing */
        uv_sleep(1);
    sb_shards_drain(0); /* both stop while calls still pour into shard 1 */
    uv_thread_join(&th);
    sb_shards_join();
    return labs((long)sd->accepted - (long)atomic_load(&ran));
}

/* The race is narrow (the calls that reach a shard between its last wake-up and its stop), so it is run 20 times:
 * with the calls dropped at the stop, about one round in three lost some. */
TEST(exec_through_shutdown)
{
    long lost = 0, short_rounds = 0;
    sender_t sd;
    for (int i = 0; i < 20; i++) {
        long l = round_trip(&sd);
        if (l < 0) {
            ok(0, "round %d: shards started", i);
            return;
        }
        lost += l;
        short_rounds += sd.accepted < 1000 || sd.refused != 1;
    }
    is_int(short_rounds, 0, "each round: over 1000 calls accepted, and the sender stopped at its first refusal");
    is_int(lost, 0, "every accepted call ran, none twice, in all 20 rounds");
    is_int((long long)atomic_load(&wrong_thread), 0, "each on its target shard's thread");
    is_int(sb_shard_exec(0, count, NULL), SB_ENOENT, "after join: no such shard");
}

int main(void)
{
    RUN(exec_through_shutdown);
    return tap_done();
}
