/* Tests of the Redis adapter's cluster mode and of its subscriber (adapters/redis.c), against the private
 * three-master cluster of ops/redis_cluster.sh (127.0.0.1:7101-7103, or $SB_RCLUSTER_PORTS), which the test brings up
 * itself, flushes, reshards and takes a master of away - and leaves as it found it: same slot layout, all three up,
 * empty. The subscriber is also tried against the local stack's single Redis (127.0.0.1:6390, or
 * $SB_TEST_REDIS_PORT), where only its own connection is killed and only channels of its own are used.
 *
 * The adapter is checked from outside: which node holds a key is asked of the nodes themselves (CLUSTER SLOTS,
 * CLUSTER KEYSLOT, a direct GET through a plain hiredis connection), and the adapter's stats say whether it had to
 * be redirected. (The counters' scripts on the cluster are tried by test_counters.) */
#include "adapters/redis.h"
#include "proto/err.h"
#include "tests/tap.h"
#include "tests/unit/redis_test.h"

#include <hiredis/hiredis.h>
#include <stdarg.h>
#include <stdlib.h>

#define NODES 3

static int ports[NODES] = {7101, 7102, 7103};
static redisContext *adm[NODES]; /* plain blocking connections, one per node: the test's own view */
static char ids[NODES][41];      /* CLUSTER MYID of each node */
static sb_redis_t *r;

static sb_redis_stats_t stats(void)
{
    sb_redis_stats_t s;
    sb_redis_get_stats(r, &s);
    return s;
}

/* Runs the loop until the adapter has n connections up and a slot map, or ms passed. */
static bool wait_nodes(int n, uint64_t ms)
{
    uint64_t deadline = uv_hrtime() + ms * 1000000ull;
    while ((stats().nodes_up != (uint64_t)n || stats().slot_maps == 0) && uv_hrtime() < deadline)
        uv_run(&loop, UV_RUN_ONCE);
    return stats().nodes_up == (uint64_t)n && stats().slot_maps > 0;
}

/* ---- the adapter, synchronously ------------------------------------------------------------------------------ */

static answer_t eval1(const sb_redis_script_t *s, int nkeys, const char **kv, int n)
{
    answer_t a = {0};
    size_t len[8];
    for (int i = 0; i < n; i++)
        len[i] = strlen(kv[i]);
    int rc = sb_redis_evalsha(r, s, nkeys, n - nkeys, kv, len, on_answer, &a);
    if (rc != 0)
        a.err = rc;
    else
        run_until(&a.done, 5000);
    return a;
}

/* ---- the nodes, directly ------------------------------------------------------------------------------------- */

/* A command on node i's own connection; the reply (free it) or NULL. */
static redisReply *on_node(int i, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *rep = redisvCommand(adm[i], fmt, ap);
    va_end(ap);
    return rep;
}

/* on_node, for an answer only checked as "not an error". */
static bool node_ok(int i, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *rep = redisvCommand(adm[i], fmt, ap);
    va_end(ap);
    bool good = rep && rep->type != REDIS_REPLY_ERROR;
    if (rep && !good)
        printf("# node %d: %s\n", ports[i], rep->str);
    freeReplyObject(rep);
    return good;
}

static int node_index(long long port)
{
    for (int i = 0; i < NODES; i++)
        if (ports[i] == port)
            return i;
    return -1;
}

/* The node that owns slot, as node 0 sees the cluster (-1: nobody). */
static int owner(unsigned slot)
{
    redisReply *rep = on_node(0, "CLUSTER SLOTS");
    int who = -1;
    for (size_t i = 0; rep && rep->type == REDIS_REPLY_ARRAY && i < rep->elements; i++) {
        redisReply *e = rep->element[i];
        if ((unsigned)e->element[0]->integer <= slot && slot <= (unsigned)e->element[1]->integer)
            who = node_index(e->element[2]->element[1]->integer);
    }
    freeReplyObject(rep);
    return who;
}

static long long keyslot(const char *key, size_t len)
{
    redisReply *rep = on_node(0, "CLUSTER KEYSLOT %b", key, len);
    long long s = rep && rep->type == REDIS_REPLY_INTEGER ? rep->integer : -1;
    freeReplyObject(rep);
    return s;
}

/* GET key on node i directly (no redirection followed): the value into out, or "(nil)", or the error. */
static void node_get(int i, const char *key, char *out, size_t size)
{
    redisReply *rep = on_node(i, "GET %s", key);
    snprintf(out, size, "%s", !rep ? "(no reply)" : rep->type == REDIS_REPLY_NIL ? "(nil)" : rep->str);
    freeReplyObject(rep);
}

static bool cluster_ok_everywhere(void)
{
    for (int i = 0; i < NODES; i++) {
        redisReply *rep = on_node(i, "CLUSTER INFO");
        bool good = rep && rep->type == REDIS_REPLY_STRING && strstr(rep->str, "cluster_state:ok");
        freeReplyObject(rep);
        if (!good)
            return false;
    }
    return true;
}

static bool connect_admin(int i)
{
    if (adm[i])
        redisFree(adm[i]);
    adm[i] = redisConnect("127.0.0.1", ports[i]);
    return adm[i] && !adm[i]->err;
}

/* Moves slot from node `from` to node `to` the way redis-cli --cluster reshard does: IMPORTING on the target,
 * MIGRATING on the source, the keys MIGRATEd, then SETSLOT NODE on every node. mid (may be NULL) runs after the first
 * key moved, while the slot is still MIGRATING. Returns whether every step was accepted. */
static bool move_slot(unsigned slot, int from, int to, void (*mid)(void))
{
    bool good = node_ok(to, "CLUSTER SETSLOT %u IMPORTING %s", slot, ids[from]) &&
                node_ok(from, "CLUSTER SETSLOT %u MIGRATING %s", slot, ids[to]);
    for (int round = 0; good; round++) {
        redisReply *keys = on_node(from, "CLUSTER GETKEYSINSLOT %u %d", slot, round == 0 ? 1 : 100);
        size_t n = keys && keys->type == REDIS_REPLY_ARRAY ? keys->elements : 0;
        for (size_t k = 0; k < n && good; k++)
            good = node_ok(from, "MIGRATE 127.0.0.1 %d %b 0 5000 KEYS %b", ports[to], "", (size_t)0,
                           keys->element[k]->str, keys->element[k]->len);
        freeReplyObject(keys);
        if (round == 0 && mid)
            mid();
        if (n == 0 && round > 0)
            break;
    }
    for (int i = 0; i < NODES && good; i++) /* the target first, as redis-cli does */
        good = node_ok((to + i) % NODES, "CLUSTER SETSLOT %u NODE %s", slot, ids[to]);
    return good;
}

/* ---- the tests ------------------------------------------------------------------------------------------------ */

TEST(setup)
{
    const char *p = getenv("SB_RCLUSTER_PORTS");
    if (p && sscanf(p, "%d %d %d", &ports[0], &ports[1], &ports[2]) != 3) {
        printf("Bail out! SB_RCLUSTER_PORTS must name three ports: %s\n", p);
        exit(1);
    }
    int rc = system("ops/redis_cluster.sh up >/dev/null");
    is_int(rc, 0, "ops/redis_cluster.sh up");
    bool all = true;
    for (int i = 0; i < NODES; i++) {
        all = all && connect_admin(i);
        redisReply *id = all ? on_node(i, "CLUSTER MYID") : NULL;
        all = all && id && id->type == REDIS_REPLY_STRING && id->len == 40;
        if (all)
            memcpy(ids[i], id->str, 41);
        freeReplyObject(id);
        all = all && node_ok(i, "FLUSHALL") && node_ok(i, "SCRIPT FLUSH");
        /* a run killed half-way through a resharding leaves its slots MIGRATING/IMPORTING: not this one's problem */
        all = all && node_ok(i, "CLUSTER SETSLOT %u STABLE", sb_redis_key_slot("{mv}", 4)) &&
              node_ok(i, "CLUSTER SETSLOT %u STABLE", sb_redis_key_slot("{loop}", 6));
    }
    if (!all) {
        printf("Bail out! the cluster on %d %d %d does not answer (ops/redis_cluster.sh up)\n", ports[0], ports[1],
               ports[2]);
        exit(1);
    }
    ok(all, "three masters, flushed");
    ok(cluster_ok_everywhere(), "cluster_state:ok on all three");
}

/* sb_redis_key_slot is the cluster's own hash: CRC16 of the key, or of the first non-empty {...}. */
TEST(key_slot)
{
    is_int(sb_redis_key_slot("123456789", 9), 0x31C3 % 16384, "CRC16/XMODEM check value");
    static const char *keys[] = {"foo",
                                 "{user1000}.following",
                                 "{user1000}.followers",
                                 "foo{}{bar}",
                                 "foo{{bar}}zap",
                                 "foo{bar}{zap}",
                                 "{}",
                                 "{",
                                 "}{x}",
                                 "sb:{t42}:rl:7",
                                 "sb:{calls}:fleet",
                                 "a\xff\x01"};
    int same = 0;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        same += (long long)sb_redis_key_slot(keys[i], strlen(keys[i])) == keyslot(keys[i], strlen(keys[i]));
    is_int(same, (int)(sizeof keys / sizeof keys[0]), "the same slot as CLUSTER KEYSLOT for every test key");
    is_int(sb_redis_key_slot("x\0y", 3), keyslot("x\0y", 3), "binary keys too");
    is_int(sb_redis_key_slot("{user1000}.following", 20), sb_redis_key_slot("{user1000}.followers", 20),
           "one hash tag, one slot");
}

TEST(connect)
{
    r = sb_redis_create(&loop, "127.0.0.1", ports[0], 0);
    ok(wait_nodes(NODES, 10000), "connected to all three masters, slot map learned (%llu up)",
       (unsigned long long)stats().nodes_up);
    ok(sb_redis_connected(r), "sb_redis_connected");
}

/* Keys spread over the three masters: each goes straight to its master (no redirection), and is really there. */
TEST(spread)
{
    enum { N = 60 };
    int per[NODES] = {0}, stored = 0, read = 0;
    sb_redis_stats_t s0 = stats();
    for (int i = 0; i < N; i++) {
        char key[32], val[32];
        snprintf(key, sizeof key, "spread:%d", i);
        snprintf(val, sizeof val, "v%d", i);
        answer_t a = cmd(r, "SET", key, val, NULL);
        stored += a.err == 0 && strcmp(a.str, "OK") == 0;
        answer_t g = cmd(r, "GET", key, NULL);
        read += g.err == 0 && strcmp(g.str, val) == 0;
        int o = owner(sb_redis_key_slot(key, strlen(key)));
        char direct[64];
        node_get(o < 0 ? 0 : o, key, direct, sizeof direct);
        if (o >= 0 && strcmp(direct, val) == 0)
            per[o]++;
    }
    is_int(stored, N, "SET answered OK %d times", N);
    is_int(read, N, "GET read every value back");
    ok(per[0] > 0 && per[1] > 0 && per[2] > 0 && per[0] + per[1] + per[2] == N,
       "every key found on its slot's master, all three used (%d %d %d)", per[0], per[1], per[2]);
    sb_redis_stats_t s1 = stats();
    is_int(s1.moved - s0.moved, 0, "no MOVED: each command went to the right master at once");
    is_int(s1.asked - s0.asked, 0, "no ASK");
    is_int(s1.commands - s0.commands, 2 * N, "one command per call");
    answer_t t = cmd(r, "TIME", NULL);
    ok(t.err == 0 && t.type == REDIS_REPLY_ARRAY && t.elements == 2, "a keyless command (TIME) answered");
    answer_t pub = cmd(r, "PUBLISH", "nobody-listens", "x", NULL);
    ok(pub.err == 0 && pub.type == REDIS_REPLY_INTEGER, "PUBLISH answered");
}

static bool pinged;
static int ping_err = 1;
static void on_ping(void *arg, int err, const char *detail)
{
    (void)arg, (void)detail;
    ping_err = err;
    pinged = true;
}

TEST(ping)
{
    is_int(sb_redis_ping(r, 2000, on_ping, NULL), 0, "PING sent");
    run_until(&pinged, 3000);
    is_int(ping_err, 0, "PONG");
}

static const char *incr2_lua = "redis.call('INCR', KEYS[1]) return redis.call('INCR', KEYS[2]) -- cluster test";
static sb_redis_script_t incr2;

/* One key set per master, each under one hash tag: EVALSHA goes to its master, which does not know the script yet
 * (SCRIPT FLUSH at setup): NOSCRIPT, EVAL, on that node; the second round finds it loaded everywhere. */
TEST(evalsha_per_node)
{
    sb_redis_script_init(&incr2, incr2_lua);
    char tags[NODES][16] = {{0}};
    for (int i = 0, found = 0; found < NODES && i < 1000; i++) {
        char tag[16];
        snprintf(tag, sizeof tag, "{t%d}", i);
        int o = owner(sb_redis_key_slot(tag, strlen(tag)));
        if (o >= 0 && !tags[o][0]) {
            memcpy(tags[o], tag, sizeof tag);
            found++;
        }
    }
    ok(tags[0][0] && tags[1][0] && tags[2][0], "a hash tag on each master: %s %s %s", tags[0], tags[1], tags[2]);
    for (int round = 1; round <= 2; round++) {
        sb_redis_stats_t s0 = stats();
        int good = 0;
        for (int n = 0; n < NODES; n++) {
            char k1[64], k2[64];
            snprintf(k1, sizeof k1, "sb:%s:a", tags[n]);
            snprintf(k2, sizeof k2, "sb:%s:b", tags[n]);
            const char *kv[2] = {k1, k2};
            answer_t a = eval1(&incr2, 2, kv, 2);
            good += a.err == 0 && a.type == REDIS_REPLY_INTEGER && a.integer == round;
            if (a.type == REDIS_REPLY_ERROR)
                printf("# %s\n", a.str);
        }
        is_int(good, NODES, "round %d: the script ran on each master", round);
        is_int(stats().noscript - s0.noscript, round == 1 ? NODES : 0, "round %d: NOSCRIPT %s", round,
               round == 1 ? "once per node" : "no more");
        is_int(stats().moved - s0.moved, 0, "round %d: no MOVED", round);
    }
    const char *none[1] = {"x"};
    answer_t k0 = eval1(&incr2, 0, none, 1); /* no key: any master; the script fails, the reply comes back */
    ok(k0.err == 0 && k0.type == REDIS_REPLY_ERROR, "EVALSHA with numkeys 0 goes to some master (%s)", k0.str);
}

/* ---- resharding: ASK while the slot migrates, MOVED after ------------------------------------------------------ */

static unsigned mv_slot;
static int mv_from, mv_to;
static int ask_checks, ask_good;

/* While the slot is MIGRATING, {mv}:0 is already on the target: */
static void during_migration(void)
{
    sb_redis_stats_t s0 = stats();
    answer_t g = cmd(r, "GET", "{mv}:0", NULL);
    ask_checks++, ask_good += g.err == 0 && strcmp(g.str, "v0") == 0;
    ok(g.err == 0 && strcmp(g.str, "v0") == 0, "a key already migrated is read (%s)", g.str);
    is_int(stats().asked - s0.asked, 1, "through one ASK");
    is_int(stats().moved - s0.moved, 0, "and no MOVED (the slot is still the source's)");
    answer_t g1 = cmd(r, "GET", "{mv}:1", NULL);
    ok(g1.err == 0 && strcmp(g1.str, "v1") == 0, "a key not yet migrated is read from the source (%s)", g1.str);
    is_int(stats().asked - s0.asked, 1, "without ASK");
    /* a script on a migrated key, on a target that does not know the script: ASKING must precede the EVAL too */
    static sb_redis_script_t get1;
    sb_redis_script_init(&get1, "return redis.call('GET', KEYS[1]) -- cluster test");
    node_ok(mv_to, "SCRIPT FLUSH");
    const char *kv[1] = {"{mv}:0"};
    sb_redis_stats_t s1 = stats();
    answer_t e = eval1(&get1, 1, kv, 1);
    ok(e.err == 0 && strcmp(e.str, "v0") == 0,
       "EVALSHA behind ASKING, NOSCRIPT on the target, EVAL behind ASKING again: the script ran there (%s)", e.str);
    is_int(stats().noscript - s1.noscript, 1, "one NOSCRIPT");
    is_int(stats().asked - s1.asked, 1, "one ASK");
    answer_t set = cmd(r, "SET", "{mv}:new", "fresh", NULL);
    ok(set.err == 0 && strcmp(set.str, "OK") == 0, "a new key in a migrating slot is written (ASK to the target)");
}

TEST(resharding)
{
    mv_slot = sb_redis_key_slot("{mv}", 4);
    mv_from = owner(mv_slot);
    mv_to = (mv_from + 1) % NODES;
    int set = 0;
    for (int i = 0; i < 8; i++) {
        char key[16], val[16];
        snprintf(key, sizeof key, "{mv}:%d", i);
        snprintf(val, sizeof val, "v%d", i);
        set += strcmp(cmd(r, "SET", key, val, NULL).str, "OK") == 0;
    }
    is_int(set, 8, "eight keys in slot %u on %d", mv_slot, ports[mv_from]);
    /* GETKEYSINSLOT returns keys in no promised order: the first one migrated must be {mv}:0 for the checks */
    ok(node_ok(mv_to, "CLUSTER SETSLOT %u IMPORTING %s", mv_slot, ids[mv_from]) &&
           node_ok(mv_from, "CLUSTER SETSLOT %u MIGRATING %s", mv_slot, ids[mv_to]) &&
           node_ok(mv_from, "MIGRATE 127.0.0.1 %d {mv}:0 0 5000", ports[mv_to]),
       "slot %u MIGRATING from %d to %d, {mv}:0 moved", mv_slot, ports[mv_from], ports[mv_to]);
    during_migration();
    sb_redis_stats_t s0 = stats();
    ok(move_slot(mv_slot, mv_from, mv_to, NULL), "the rest migrated, SETSLOT NODE on all three");
    int read = 0;
    for (int i = 0; i < 8; i++) {
        char key[16], val[16];
        snprintf(key, sizeof key, "{mv}:%d", i);
        snprintf(val, sizeof val, "v%d", i);
        read += strcmp(cmd(r, "GET", key, NULL).str, val) == 0;
    }
    is_int(read, 8, "every key read after the move");
    is_int(stats().moved - s0.moved, 1, "one MOVED, then the map knew");
    is_int(stats().asked - s0.asked, 0, "no ASK once the slot is stable");
    is_str(cmd(r, "GET", "{mv}:new", NULL).str, "fresh", "the key written during the migration is there");
    char direct[64];
    node_get(mv_to, "{mv}:3", direct, sizeof direct);
    is_str(direct, "v3", "the target holds the keys now");
    /* and back, so the layout is as ops/redis_cluster.sh made it */
    s0 = stats();
    ok(move_slot(mv_slot, mv_to, mv_from, NULL), "slot %u moved back to %d", mv_slot, ports[mv_from]);
    is_str(cmd(r, "GET", "{mv}:5", NULL).str, "v5", "read after moving back");
    is_int(stats().moved - s0.moved, 1, "one MOVED again");
    is_int(owner(mv_slot), mv_from, "the layout is restored");
}

/* A node that answers ASK toward a node that is not importing gets MOVED back: the command gives up after five
 * redirections and the caller gets the last error reply; the map stays right. */
TEST(redirect_loop_bounded)
{
    unsigned slot = sb_redis_key_slot("{loop}", 6);
    int from = owner(slot), to = (from + 1) % NODES;
    ok(node_ok(from, "CLUSTER SETSLOT %u MIGRATING %s", slot, ids[to]), "slot %u MIGRATING, target not importing",
       slot);
    sb_redis_stats_t s0 = stats();
    answer_t g = cmd(r, "GET", "{loop}:absent", NULL);
    ok(g.err == 0 && g.type == REDIS_REPLY_ERROR &&
           (strncmp(g.str, "ASK", 3) == 0 || strncmp(g.str, "MOVED", 5) == 0),
       "the caller gets the redirection as an error reply (%s)", g.str);
    is_int((stats().asked - s0.asked) + (stats().moved - s0.moved), 5, "after five redirections");
    ok(node_ok(from, "CLUSTER SETSLOT %u STABLE", slot), "slot %u stable again", slot);
    is_str(cmd(r, "SET", "{loop}:k", "1", NULL).str, "OK", "and commands of that slot work");
    cmd(r, "DEL", "{loop}:k", NULL);
}

/* ---- the subscriber ------------------------------------------------------------------------------------------- */

typedef struct inbox {
    int messages, ups, downs;
    char channel[64], payload[64];
    size_t chlen, len;
} inbox_t;

static void on_message(void *arg, const char *ch, size_t chlen, const char *payload, size_t len)
{
    inbox_t *b = arg;
    b->messages++;
    b->chlen = chlen < sizeof b->channel ? chlen : sizeof b->channel;
    memcpy(b->channel, ch, b->chlen);
    b->len = len < sizeof b->payload ? len : sizeof b->payload;
    memcpy(b->payload, payload, b->len);
}

static void on_state(void *arg, bool up)
{
    inbox_t *b = arg;
    if (up)
        b->ups++;
    else
        b->downs++;
}

static int wait_messages(inbox_t *b, int n, uint64_t ms)
{
    uint64_t deadline = uv_hrtime() + ms * 1000000ull;
    while (b->messages < n && uv_hrtime() < deadline)
        uv_run(&loop, UV_RUN_ONCE);
    return b->messages;
}

static bool wait_ups(inbox_t *b, int n, uint64_t ms)
{
    uint64_t deadline = uv_hrtime() + ms * 1000000ull;
    while (b->ups < n && uv_hrtime() < deadline)
        uv_run(&loop, UV_RUN_ONCE);
    return b->ups >= n;
}

/* PUBLISH on a plain connection; the number of receivers that node counted. */
static long long publish(redisContext *c, const char *ch, const char *payload, size_t len)
{
    redisReply *rep = redisCommand(c, "PUBLISH %s %b", ch, payload, len);
    long long n = rep && rep->type == REDIS_REPLY_INTEGER ? rep->integer : -1;
    freeReplyObject(rep);
    return n;
}

/* The subscriber on one node, a message published through another, the channel shared by two users, its connection
 * killed: back up with every channel subscribed again. */
TEST(subscriber_cluster)
{
    inbox_t b = {0};
    sb_redis_sub_t *s = sb_redis_sub_create(&loop, "127.0.0.1", ports[0], on_message, on_state, &b);
    is_int(sb_redis_subscribe(s, "sb:test:a", 9), 0, "subscribed before the connection is up");
    ok(wait_ups(&b, 1, 5000) && sb_redis_sub_up(s), "up, subscription confirmed");
    is_int(sb_redis_subscribe(s, "sb:test:b", 9), 0, "a second channel");
    is_int(sb_redis_subscribe(s, "sb:test:b", 9), 0, "the same channel again (a second user)");
    is_int(sb_redis_subscribe(s, "", 0), SB_EINVAL, "an empty channel: SB_EINVAL");
    is_int(sb_redis_unsubscribe(s, "sb:test:zz", 10), SB_ENOENT, "unsubscribing an unknown channel: SB_ENOENT");
    cmd(r, "PING", NULL); /* a round trip elsewhere, so that the SUBSCRIBE has surely been read */
    pause_ms(50);
    publish(adm[2], "sb:test:a", "hello\0a", 7);
    is_int(wait_messages(&b, 1, 3000), 1, "a message published on another node arrived");
    ok(b.chlen == 9 && memcmp(b.channel, "sb:test:a", 9) == 0 && b.len == 7 && memcmp(b.payload, "hello\0a", 7) == 0,
       "channel and payload intact (binary)");
    publish(adm[1], "sb:test:b", "two", 3);
    is_int(wait_messages(&b, 2, 3000), 2, "the shared channel's message arrived once");
    is_int(sb_redis_unsubscribe(s, "sb:test:b", 9), 0, "one user leaves");
    publish(adm[1], "sb:test:b", "still", 5);
    ok(wait_messages(&b, 3, 3000) == 3 && b.len == 5, "the other still receives");
    is_int(sb_redis_unsubscribe(s, "sb:test:b", 9), 0, "the last user leaves");
    pause_ms(100);
    is_int(publish(adm[0], "sb:test:b", "gone", 4), 0, "UNSUBSCRIBE went out: no receiver left on the node");
    pause_ms(200);
    is_int(b.messages, 3, "nothing delivered after unsubscribing");

    redisReply *kill = on_node(0, "CLIENT KILL TYPE pubsub");
    ok(kill && kill->type == REDIS_REPLY_INTEGER && kill->integer >= 1, "the subscriber's connection killed");
    freeReplyObject(kill);
    uint64_t deadline = uv_hrtime() + 3000000000ull;
    while (b.downs < 1 && uv_hrtime() < deadline)
        uv_run(&loop, UV_RUN_ONCE);
    is_int(b.downs, 1, "on_state(down)");
    ok(wait_ups(&b, 2, 5000), "on_state(up) again, after resubscribing");
    publish(adm[2], "sb:test:a", "again", 5);
    ok(wait_messages(&b, 4, 3000) == 4 && b.len == 5 && memcmp(b.payload, "again", 5) == 0,
       "a message after the reconnection arrived");
    /* the last channel left and another taken in the same loop turn: the server's subscription count touches 0
     * between the two (hiredis 0.14 then leaves subscribe mode, and asserted on the next confirmation) */
    is_int(sb_redis_unsubscribe(s, "sb:test:a", 9), 0, "the last channel left");
    is_int(sb_redis_subscribe(s, "sb:test:c", 9), 0, "and another taken at once");
    pause_ms(100);
    publish(adm[1], "sb:test:c", "swap", 4);
    ok(wait_messages(&b, 5, 3000) == 5 && b.len == 4 && memcmp(b.payload, "swap", 4) == 0,
       "the new channel's message arrived");
    sb_redis_sub_close(s);
    publish(adm[0], "sb:test:a", "late", 4);
    pause_ms(100);
    is_int(b.messages, 5, "no callback after close");
}

/* Closing from inside a callback: the subscriber from its on_message (the next message, already read, is not
 * delivered), the adapter from a reply's callback (the command behind it is cancelled). ASan watches the rest. */
static sb_redis_sub_t *closing_sub;
static int closing_messages;

static void close_on_message(void *arg, const char *ch, size_t chlen, const char *payload, size_t len)
{
    (void)arg, (void)ch, (void)chlen, (void)payload, (void)len;
    closing_messages++;
    sb_redis_sub_close(closing_sub);
}

static sb_redis_t *closing_r;

static void close_on_reply(void *arg, int err, const struct redisReply *rep)
{
    on_answer(arg, err, rep);
    sb_redis_close(closing_r);
}

TEST(close_inside_callbacks)
{
    inbox_t b = {0};
    closing_sub = sb_redis_sub_create(&loop, "127.0.0.1", ports[1], close_on_message, on_state, &b);
    sb_redis_subscribe(closing_sub, "sb:test:close", 13);
    ok(wait_ups(&b, 1, 5000), "a subscriber up");
    redisAppendCommand(adm[0], "PUBLISH sb:test:close one");
    redisAppendCommand(adm[0], "PUBLISH sb:test:close two");
    for (int i = 0; i < 2; i++) {
        redisReply *rep = NULL;
        redisGetReply(adm[0], (void **)&rep);
        freeReplyObject(rep);
    }
    pause_ms(300);
    is_int(closing_messages, 1, "closed from on_message: the second message is not delivered");

    closing_r = sb_redis_create(&loop, "127.0.0.1", ports[0], 0);
    uint64_t deadline = uv_hrtime() + 10000000000ull;
    sb_redis_stats_t st = {0};
    while ((st.nodes_up < NODES || st.slot_maps == 0) && uv_hrtime() < deadline) {
        uv_run(&loop, UV_RUN_ONCE);
        sb_redis_get_stats(closing_r, &st);
    }
    ok(st.nodes_up == NODES, "a second adapter up on the cluster");
    answer_t first = {0}, second = {0};
    const char *get[2] = {"GET", "spread:1"};
    size_t getlen[2] = {3, 8};
    is_int(sb_redis_command_argv(closing_r, 2, get, getlen, close_on_reply, &first), 0, "a command sent");
    is_int(sb_redis_command_argv(closing_r, 2, get, getlen, on_answer, &second), 0, "and another behind it");
    run_until(&second.done, 5000);
    ok(first.calls == 1 && first.err == 0, "the first answered, and closed the adapter");
    ok(second.calls == 1 && second.err == SB_ECANCELED, "the second cancelled (%d)", second.err);
    pause_ms(50);
}

/* The same against a single Redis: only this subscriber's connection is killed (found by its id). */
TEST(subscriber_single)
{
    int port = 6390;
    const char *p = getenv("SB_TEST_REDIS_PORT");
    if (p)
        port = atoi(p);
    redisContext *c = redisConnect("127.0.0.1", port);
    if (!c || c->err) {
        ok(0, "the local stack's Redis on %d answers (ops/stack.sh up)", port);
        redisFree(c);
        return;
    }
    char chan[64];
    snprintf(chan, sizeof chan, "sb:test:single:%d", (int)getpid());
    inbox_t b = {0};
    sb_redis_sub_t *s = sb_redis_sub_create(&loop, "127.0.0.1", port, on_message, on_state, &b);
    ok(wait_ups(&b, 1, 5000), "up (no channel yet)");
    is_int(sb_redis_subscribe(s, chan, strlen(chan)), 0, "subscribed");
    long long got = 0;
    for (int i = 0; i < 50 && got == 0; i++) { /* until the SUBSCRIBE has been processed */
        pause_ms(20);
        redisReply *n = redisCommand(c, "PUBSUB NUMSUB %s", chan);
        got = n && n->type == REDIS_REPLY_ARRAY && n->elements == 2 ? n->element[1]->integer : 0;
        freeReplyObject(n);
    }
    is_int(got, 1, "Redis counts one subscriber on the channel");
    is_int(publish(c, chan, "one", 3), 1, "published to one receiver");
    ok(wait_messages(&b, 1, 3000) == 1 && b.len == 3 && memcmp(b.payload, "one", 3) == 0, "received");
    /* our connection: the one subscribed to exactly one channel, whose name only we use; CLIENT LIST does not name
     * channels, so the candidate ids are those that vanish from PUBSUB NUMSUB when killed - one at most is tried */
    redisReply *list = redisCommand(c, "CLIENT LIST TYPE pubsub");
    long long id = -1;
    int candidates = 0;
    for (const char *q = list && list->type == REDIS_REPLY_STRING ? list->str : ""; (q = strstr(q, "id=")); q++) {
        const char *sub = strstr(q, " sub=");
        const char *nl = strchr(q, '\n');
        if (sub && (!nl || sub < nl) && atoll(sub + 5) == 1) {
            id = atoll(q + 3);
            candidates++;
        }
    }
    freeReplyObject(list);
    if (candidates == 1) {
        redisReply *k = redisCommand(c, "CLIENT KILL ID %lld", id);
        ok(k && k->type == REDIS_REPLY_INTEGER && k->integer == 1, "the subscriber's connection killed (id %lld)",
           id);
        freeReplyObject(k);
        ok(wait_ups(&b, 2, 5000) && b.downs == 1, "down, then up again after resubscribing");
        is_int(publish(c, chan, "two", 3), 1, "published again to one receiver");
        ok(wait_messages(&b, 2, 3000) == 2 && b.len == 3 && memcmp(b.payload, "two", 3) == 0, "received");
    } else {
        /* other subscribers with one channel share this Redis: killing a guess could hit them */
        ok(1, "%d single-channel subscribers on the shared Redis: reconnection checked on the cluster only",
           candidates);
    }
    is_int(sb_redis_unsubscribe(s, chan, strlen(chan)), 0, "unsubscribed");
    sb_redis_sub_close(s);
    redisFree(c);
}

/* A master goes away: the commands of its slots fail at once with SB_EUNAVAIL, the others still work; when it comes
 * back the adapter reconnects to it. */
TEST(master_killed)
{
    int victim = 2;
    char key[32] = "", other[32] = "";
    for (int i = 0; i < 1000 && (!key[0] || !other[0]); i++) {
        char k[32];
        snprintf(k, sizeof k, "victim:%d", i);
        int o = owner(sb_redis_key_slot(k, strlen(k)));
        if (o == victim && !key[0])
            memcpy(key, k, sizeof k);
        else if (o == 0 && !other[0])
            memcpy(other, k, sizeof k);
    }
    is_str(cmd(r, "SET", key, "1", NULL).str, "OK", "%s written on %d", key, ports[victim]);
    redisReply *rep = on_node(victim, "SHUTDOWN NOSAVE");
    freeReplyObject(rep);
    uint64_t deadline = uv_hrtime() + 5000000000ull;
    while (stats().nodes_up != NODES - 1 && uv_hrtime() < deadline)
        uv_run(&loop, UV_RUN_ONCE);
    is_int(stats().nodes_up, NODES - 1, "the adapter saw the master go");
    answer_t a = {0};
    const char *argv[2] = {"GET", key};
    size_t len[2] = {3, strlen(key)};
    is_int(sb_redis_command_argv(r, 2, argv, len, on_answer, &a), SB_EUNAVAIL, "a command of its slot: SB_EUNAVAIL");
    const char *kv[2] = {key, key};
    answer_t e = eval1(&incr2, 2, kv, 2);
    is_int(e.err, SB_EUNAVAIL, "a script of its slot too");
    ok(a.calls == 0 && e.calls == 0, "and no callback");
    answer_t o = cmd(r, "SET", other, "1", NULL);
    ok(o.err == 0 && o.type != REDIS_REPLY_NIL, "a command of another master still answered (%s)", o.str);
    ok(sb_redis_connected(r), "the adapter still counts as connected");
    is_int(system("ops/redis_cluster.sh up >/dev/null"), 0, "the master restarted (ops/redis_cluster.sh up)");
    ok(connect_admin(victim), "reachable again");
    ok(wait_nodes(NODES, 15000), "the adapter reconnected to it");
    answer_t w = {0};
    for (int i = 0; i < 100; i++) { /* until the cluster says ok again everywhere */
        w = cmd(r, "SET", key, "2", NULL);
        if (w.err == 0 && strcmp(w.str, "OK") == 0 && cluster_ok_everywhere())
            break;
        pause_ms(100);
    }
    is_str(w.str, "OK", "its slots work again");
}

TEST(teardown)
{
    sb_redis_close(r);
    uv_run(&loop, UV_RUN_DEFAULT);
    is_int(uv_loop_close(&loop), 0, "every handle closed");
    int flushed = 0;
    for (int i = 0; i < NODES; i++) {
        flushed += node_ok(i, "FLUSHALL");
        redisFree(adm[i]);
    }
    is_int(flushed, NODES, "the cluster left empty");
}

int main(void)
{
    uv_loop_init(&loop);
    RUN(setup);
    RUN(key_slot);
    RUN(connect);
    RUN(spread);
    RUN(ping);
    RUN(evalsha_per_node);
    RUN(resharding);
    RUN(redirect_loop_bounded);
    RUN(subscriber_cluster);
    RUN(subscriber_single);
    RUN(close_inside_callbacks);
    RUN(master_killed);
    RUN(teardown);
    return tap_done();
}
